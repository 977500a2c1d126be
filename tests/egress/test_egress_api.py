"""The egress log through the API and the CLI, scoped like every workspace read; and the pieces of the proxy
that need no engine: the allow-list's matching, the DNS answer, the request head, the TLS server name and the
intercepting proxy's decision by address."""

from __future__ import annotations

import asyncio
import ipaddress
import ssl

import pytest

from dockyard.egress import dns, intercept, sni
from dockyard.egress.policy import Policy
from dockyard.egress.proxy import Attempt, BadRequest, parse_head
from dockyard.runtimes.plan import Capabilities, Egress, NetworkPolicy
from dockyard_sdk import ApiError
from dockyard_sdk import models as m
from tests.harness import Harness
from tests.plans import workspace_plan


def _log(h: Harness, workspace_id: str, *attempts: Attempt) -> None:
    egress = h.app.state.background.egress
    for attempt in attempts:
        egress.log.record(workspace_id, attempt)
    egress.log.flush()


def _error(call: object) -> ApiError:
    with pytest.raises(ApiError) as info:
        call()  # type: ignore[operator]
    return info.value


def test_the_egress_log_is_read_like_the_workspace_itself(h: Harness) -> None:
    alice = h.user("alice")
    h.template()
    ws = alice.create_workspace(m.CreateWorkspaceRequest(template="tmpl", name="ws1"))
    _log(
        h,
        ws.id,
        Attempt("dns", "github.com", 0, "allowed"),
        Attempt("connect", "github.com", 443, "allowed"),
        Attempt("connect", "evil.example", 443, "denied", "not in the allow-list"),
    )

    page = alice.egress_events("ws1")
    assert [(e.protocol, e.host, e.port, e.decision, e.reason) for e in page.events] == [
        ("connect", "evil.example", 443, "denied", "not in the allow-list"),
        ("connect", "github.com", 443, "allowed", ""),
        ("dns", "github.com", 0, "allowed", ""),
    ]
    assert page.count == 3
    second = alice.egress_events("ws1", limit=1, offset=1)
    assert ([e.host for e in second.events], second.count) == (["github.com"], 3)
    assert h.admin.egress_events(ws.id).count == 3

    anonymous = h.client().http.get(f"/api/v2/workspaces/{ws.id}/egress")
    assert (anonymous.status_code, anonymous.json()["message"]) == (401, "You are not logged in.")
    narrow = h.user("alice", scopes=[m.Scope.TEMPLATE_READ])
    error = _error(lambda: narrow.egress_events("ws1"))
    assert (error.status_code, error.message) == (403, "This token lacks the scope workspace:read.")
    assert _error(lambda: h.user("bob").egress_events(ws.id)).status_code == 404
    assert (
        _error(lambda: h.user("alice", allow_list=["workspace:other"]).egress_events(ws.id)).status_code
        == 404
    )
    bad = alice.http.get(f"/api/v2/workspaces/{ws.id}/egress", params={"limit": 0})
    assert bad.status_code == 422
    assert [v["field"] for v in bad.json()["validations"]] == ["limit"]


def test_the_policy_matches_names_wildcards_ports_and_addresses() -> None:
    policy = Policy.of(["github.com", "*.pypi.org", "10.1.0.0/16", "git.example:22", "192.0.2.7:443"])
    assert [
        policy.allows(host, port)
        for host, port in [
            ("github.com", 443),
            ("GitHub.com.", 80),
            ("api.github.com", 443),
            ("files.pypi.org", 443),
            ("a.b.pypi.org", 443),
            ("pypi.org", 443),
            ("evilpypi.org", 443),
            ("10.1.200.3", 5432),
            ("10.2.0.1", 80),
            ("git.example", 22),
            ("git.example", 443),
            ("192.0.2.7", 443),
            ("192.0.2.7", 80),
        ]
    ] == [True, True, False, True, True, False, False, True, False, True, False, True, False]
    assert [
        policy.resolves(n) for n in ("github.com", "x.pypi.org", "git.example", "pypi.org", "10.1.0.1")
    ] == [
        True,
        True,
        True,
        False,
        False,
    ]
    assert policy.networks == ("10.1.0.0/16",)


def test_dns_answers_echo_the_question() -> None:
    query = bytes.fromhex("abcd01000001000000000000") + b"\x07allowed\x04test\x00" + b"\x00\x01\x00\x01"
    question = dns.parse(query)
    assert (question.id, question.name, question.qtype) == (0xABCD, "allowed.test", dns.TYPE_A)
    answer = dns.answer(question, dns.NOERROR, ("10.9.8.7",))
    assert answer[:2] == b"\xab\xcd"
    assert answer[3] & 0x0F == dns.NOERROR
    assert int.from_bytes(answer[6:8], "big") == 1
    assert answer.endswith(ipaddress.IPv4Address("10.9.8.7").packed)
    refused = dns.answer(question, dns.NXDOMAIN)
    assert (refused[3] & 0x0F, int.from_bytes(refused[6:8], "big")) == (dns.NXDOMAIN, 0)
    with pytest.raises(dns.Malformed):
        dns.parse(query[:14])


def test_request_heads_name_their_upstream() -> None:
    connect = parse_head(b"CONNECT github.com:443 HTTP/1.1\r\nHost: github.com:443\r\n\r\n")
    assert (connect.protocol, connect.host, connect.port, connect.head) == ("connect", "github.com", 443, b"")
    plain = parse_head(
        b"GET http://Allowed.test:8080/a?b HTTP/1.1\r\nHost: allowed.test:8080\r\nProxy-Connection: keep-alive\r\n\r\n"
    )
    assert (plain.protocol, plain.host, plain.port) == ("http", "allowed.test", 8080)
    assert plain.head == b"GET /a?b HTTP/1.1\r\nHost: allowed.test:8080\r\nConnection: close\r\n\r\n"
    transparent = parse_head(b"GET / HTTP/1.1\r\nHost: example.org\r\n\r\n")
    assert (transparent.host, transparent.port) == ("example.org", 80)
    for head in (
        b"GET https://x.org/ HTTP/1.1\r\n\r\n",
        b"nonsense\r\n\r\n",
        b"GET http://u@x.org/ HTTP/1.1\r\n\r\n",
    ):
        with pytest.raises(BadRequest):
            parse_head(head)


def test_a_runtime_without_a_proxy_refuses_host_names_in_an_allow_list() -> None:
    addresses_only = Capabilities(egress=frozenset(Egress))
    plan = workspace_plan(
        workspace_id="w", name="w", owner="o", owner_id="u", template="t", build_id="b", image="i"
    )
    cidrs = plan.model_copy(
        update={"network": NetworkPolicy(egress=Egress.ALLOWLIST, allow=("10.1.0.0/16",))}
    )
    names = plan.model_copy(
        update={"network": NetworkPolicy(egress=Egress.ALLOWLIST, allow=("10.1.0.0/16", "github.com"))}
    )
    assert addresses_only.refusal(cidrs) == ""
    assert addresses_only.refusal(names) == (
        "This runtime's egress allow-lists match addresses and CIDRs only; 'github.com' names a host, which needs "
        "an egress proxy (the Docker runtime has one)."
    )
    assert Capabilities(egress=frozenset(Egress), egress_names=True).refusal(names) == ""
    assert Capabilities().refusal(cidrs) == "This runtime cannot enforce egress 'allowlist'."


def _client_hello(server_hostname: str) -> bytes:
    """The first bytes Python's TLS client sends (OpenSSL's ClientHello)."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    context = ssl.create_default_context()
    tls = context.wrap_bio(incoming, outgoing, server_hostname=server_hostname)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def _read_hello(data: bytes) -> tuple[bytes, str]:
    async def read() -> tuple[bytes, str]:
        reader = asyncio.StreamReader()
        reader.feed_data(data)
        reader.feed_eof()
        return await sni.read_hello(reader)

    return asyncio.run(read())


def test_the_tls_server_name_is_read_from_the_client_hello_and_kept_to_send_on() -> None:
    hello = _client_hello("Allowed.Test")
    assert _read_hello(hello + b"more") == (hello, "allowed.test")
    # A hello split over two records is read whole.
    body = hello[5:]
    split = b"\x16\x03\x01" + (40).to_bytes(2, "big") + body[:40]
    split += b"\x16\x03\x01" + (len(body) - 40).to_bytes(2, "big") + body[40:]
    assert _read_hello(split) == (split, "allowed.test")
    # Clients send no server name for an address: the proxy goes by the address then.
    assert _read_hello(_client_hello("10.1.2.3"))[1] == ""
    for data, problem in (
        (b"GET / HTTP/1.1\r\n\r\n", "the first record is not a TLS handshake"),
        (hello[:20], "the client ended inside a TLS record"),
    ):
        with pytest.raises(sni.NotTls) as info:
            _read_hello(data)
        # What was read is sent on as it came when the address allows the connection.
        assert (str(info.value), info.value.raw) == (problem, data[: len(info.value.raw)])
        assert info.value.raw


def test_an_intercepted_connection_is_allowed_by_a_cidr_or_a_name_dns_gave_out_for_it() -> None:
    policy = Policy.of(["10.1.0.0/16", "git.example:22", "allowed.test"])
    given = {"192.0.2.9": ("other.test", "git.example"), "192.0.2.10": ("allowed.test",)}

    def names(address: str) -> tuple[str, ...]:
        return given.get(address, ())

    assert intercept.by_address(policy, "10.1.2.3", 5432, names) == "10.1.2.3"
    assert intercept.by_address(policy, "192.0.2.9", 22, names) == "git.example"
    assert intercept.by_address(policy, "192.0.2.9", 443, names) == ""
    assert intercept.by_address(policy, "192.0.2.10", 8080, names) == "allowed.test"
    assert intercept.by_address(policy, "192.0.2.11", 22, names) == ""
