"""The SSH REST routes through the in-process server: keys, certificates, gateway info, and their refusals."""

from __future__ import annotations

import subprocess
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import WebSocketDenialResponse

from dockyard.gateway import ca
from dockyard.gateway.server import Gateway
from dockyard_sdk import Client
from dockyard_sdk import models as m
from tests.gateway.conftest import make_key
from tests.harness import Harness


def _add(
    client: Client, public_key: str, name: str = "laptop", user: str = "me"
) -> tuple[int, dict[str, Any]]:
    response = client.http.post(
        f"/api/v2/users/{user}/sshkeys", json={"name": name, "public_key": public_key}
    )
    return response.status_code, response.json() if response.content else {}


def _keys(client: Client, user: str = "me") -> list[m.SshKey]:
    response = client.http.get(f"/api/v2/users/{user}/sshkeys")
    assert response.status_code == 200, response.text
    return [m.SshKey.model_validate(item) for item in response.json()]


def test_add_list_remove_with_audit(h: Harness, gw: Gateway, tmp_path: Path) -> None:
    alice = h.user("alice")
    key = make_key(tmp_path)
    status, body = _add(alice, key.public_text + "  \n")
    assert status == 201, body
    added = m.SshKey.model_validate(body)
    printed = subprocess.run(
        ["ssh-keygen", "-l", "-f", str(key.public)], check=True, capture_output=True, text=True
    ).stdout.split()[1]
    assert (added.name, added.fingerprint, added.last_used_at) == ("laptop", printed, None)
    assert added.public_key == " ".join(key.public_text.split()[:2])
    assert _keys(alice) == [added]
    assert _keys(h.admin, "alice") == [added]
    response = alice.http.delete(f"/api/v2/users/me/sshkeys/{added.id}")
    assert response.status_code == 204
    assert _keys(alice) == []
    entries = h.admin.audit(resource_type="ssh_key").audit_logs
    assert sorted((e.action, e.username, e.resource_name, e.status_code) for e in entries) == [
        ("sshkey.create", "alice", "laptop", 201),
        ("sshkey.delete", "alice", "laptop", 200),
    ]


def test_remove_by_name_and_unknown_is_404(h: Harness, gw: Gateway, tmp_path: Path) -> None:
    alice = h.user("alice")
    first = m.SshKey.model_validate(_add(alice, make_key(tmp_path / "1").public_text, "one")[1])
    _add(alice, make_key(tmp_path / "2").public_text, "two")
    assert alice.http.delete("/api/v2/users/me/sshkeys/one").status_code == 204
    assert [k.name for k in _keys(alice)] == ["two"]
    response = alice.http.delete(f"/api/v2/users/me/sshkeys/{first.id}")
    assert (response.status_code, response.json()["message"]) == (404, f"SSH key {first.id!r} not found.")


def test_duplicates_are_409_and_change_nothing(h: Harness, gw: Gateway, tmp_path: Path) -> None:
    alice, bob = h.user("alice"), h.user("bob")
    key = make_key(tmp_path / "a")
    assert _add(alice, key.public_text)[0] == 201
    # The same key for another user: one key identifies one user.
    status, body = _add(bob, key.public_text)
    assert (status, body["message"], body["validations"][0]["field"]) == (
        409,
        "This SSH key is already registered.",
        "public_key",
    )
    assert "alice" not in str(body)
    status, body = _add(alice, make_key(tmp_path / "b").public_text)
    assert (status, body["message"], body["validations"]) == (
        409,
        "An SSH key named 'laptop' already exists.",
        [{"field": "name", "detail": "'laptop' is taken"}],
    )
    assert _keys(bob) == []
    assert [k.name for k in _keys(alice)] == ["laptop"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (
            {"name": "x", "public_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFalbI1Xx6saz2j7TAbnf5LBM"},
            "public_key",
        ),
        ({"name": "bad name", "public_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFal"}, "name"),
        ({"name": "x"}, "public_key"),
    ],
)
def test_bad_keys_name_the_field(h: Harness, gw: Gateway, body: dict[str, str], field: str) -> None:
    response = h.admin.http.post("/api/v2/users/me/sshkeys", json=body)
    assert response.status_code == 422
    assert [v["field"] for v in response.json()["validations"]] == [field]
    assert _keys(h.admin) == []


def test_key_routes_auth_ladder(h: Harness, gw: Gateway, tmp_path: Path) -> None:
    alice, bob = h.user("alice"), h.user("bob")
    reader = h.user("alice", scopes=[m.Scope.USER_READ])
    key = make_key(tmp_path)
    anonymous = h.client()
    assert _add(anonymous, key.public_text)[0] == 401
    assert anonymous.http.get("/api/v2/users/alice/sshkeys").status_code == 401
    # A token without user:write may list but not change keys.
    status, body = _add(reader, key.public_text)
    assert (status, body["message"]) == (403, "This token lacks the scope user:write.")
    assert reader.http.get("/api/v2/users/me/sshkeys").status_code == 200
    # Someone else's keys are not even visible to a member.
    assert _add(bob, key.public_text, user="alice")[0] == 404
    assert bob.http.get("/api/v2/users/alice/sshkeys").status_code == 404
    # An owner manages anyone's keys.
    status, body = _add(h.admin, key.public_text, user="alice")
    assert status == 201
    assert [k.id for k in _keys(alice)] == [body["id"]]
    assert bob.http.delete(f"/api/v2/users/alice/sshkeys/{body['id']}").status_code == 404
    assert h.admin.http.delete(f"/api/v2/users/alice/sshkeys/{body['id']}").status_code == 204


def _cert(client: Client, public_key: str, user: str = "me", **extra: str) -> tuple[int, dict[str, Any]]:
    response = client.http.post(f"/api/v2/users/{user}/sshcert", json={"public_key": public_key, **extra})
    return response.status_code, response.json()


def test_certificate_for_yourself(h: Harness, gw: Gateway, tmp_path: Path) -> None:
    alice = h.user("alice")
    key = make_key(tmp_path)
    status, body = _cert(alice, key.public_text, valid_for="2h")
    assert status == 200, body
    cert = m.SshCertificate.model_validate(body)
    assert cert.principals == ["alice"]
    assert cert.ca_public_key == gw.authority.ca_public_key
    (tmp_path / "id_ed25519-cert.pub").write_text(cert.certificate + "\n")
    described = subprocess.run(
        ["ssh-keygen", "-L", "-f", str(tmp_path / "id_ed25519-cert.pub")],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    token = alice.http.get("/api/v2/users/me/tokens").json()[0]
    assert f'Key ID: "dockyard:alice:{token["id"]}"' in described
    tokens_expiry = m.ApiToken.model_validate(token).expires_at
    assert cert.valid_before <= tokens_expiry
    assert cert.valid_before - timedelta(hours=2) < tokens_expiry
    [entry] = h.admin.audit(action="sshcert.create").audit_logs
    assert (entry.username, entry.resource_id) == ("alice", token["id"])
    # Also by name, and with the default validity.
    assert _cert(alice, key.public_text, user="alice")[0] == 200


def test_certificate_refusals(h: Harness, gw: Gateway, tmp_path: Path) -> None:
    key = make_key(tmp_path)
    h.user("alice")
    no_connect = h.user("bob", scopes=[m.Scope.USER_READ, m.Scope.USER_WRITE])
    anonymous = h.client()
    assert _cert(anonymous, key.public_text)[0] == 401
    status, body = _cert(no_connect, key.public_text)
    assert (status, body["message"]) == (403, "This token lacks the scope workspace:connect.")
    status, body = _cert(h.admin, key.public_text, user="alice")
    assert (status, body["message"]) == (403, "You can only get an SSH certificate for yourself.")
    status, body = _cert(h.admin, key.public_text, valid_for="8d")
    assert (status, body["validations"]) == (
        422,
        [{"field": "valid_for", "detail": "8d is outside 5s to 7d"}],
    )
    status, body = _cert(h.admin, "not a key")
    assert (status, body["validations"][0]["field"]) == (422, "public_key")
    assert h.admin.audit(action="sshcert.create").audit_logs == []


def test_gateway_info(h: Harness, gw: Gateway) -> None:
    response = h.admin.http.get("/api/v2/deployment/ssh")
    assert response.status_code == 200
    info = m.SshGateway.model_validate(response.json())
    # The harness turns the TCP listener off: port 0 says "only through `dockyard ssh --stdio`".
    expected = ("127.0.0.1", 0) if not gw.settings.ssh_listen else ca.parse_listen(gw.settings.ssh_listen)
    assert (info.host, info.port, info.host_key_alias) == (*expected, "dockyard")
    assert info.ca_public_key == gw.authority.ca_public_key
    assert info.known_hosts == f"@cert-authority dockyard {info.ca_public_key}"
    # Any valid token may ask, whatever its scopes; nobody else.
    assert (
        h.user("carol", scopes=[m.Scope.TEMPLATE_READ]).http.get("/api/v2/deployment/ssh").status_code == 200
    )
    assert h.client().http.get("/api/v2/deployment/ssh").status_code == 401


def test_websocket_needs_a_token_with_connect_and_a_visible_workspace(h: Harness, gw: Gateway) -> None:
    ws = h.workspace(name="dev")
    reader = h.user("alice", scopes=[m.Scope.WORKSPACE_READ])
    owner_reader = h.user("admin", scopes=[m.Scope.WORKSPACE_READ])
    cases = [
        ({}, f"/api/v2/workspaces/{ws.id}/ssh", 401),
        ({"Authorization": f"Bearer {owner_reader.token}"}, f"/api/v2/workspaces/{ws.id}/ssh", 403),
        ({"Authorization": f"Bearer {reader.token}"}, f"/api/v2/workspaces/{ws.id}/ssh", 404),
        ({"Authorization": f"Bearer {h.admin.token}"}, "/api/v2/workspaces/nope/ssh", 404),
    ]
    for headers, path, code in cases:
        with (
            pytest.raises(WebSocketDenialResponse) as info,
            h.lifespan.websocket_connect(path, headers=headers),
        ):
            pass
        assert info.value.status_code == code, path
