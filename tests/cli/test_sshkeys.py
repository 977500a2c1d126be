"""`dockyard ssh-keys`, `ssh-cert`, `config-ssh` and the certificate `login` fetches, against the in-process
server."""

from __future__ import annotations

import stat
import subprocess
from pathlib import Path

import pytest

from dockyard.cli import sshconfig, sshkeys
from dockyard_sdk import models as m
from tests.cli.conftest import URL, Cli, Golden
from tests.harness import Harness

DOCKYARD = "/usr/local/bin/dockyard"


def _public_key(tmp_path: Path, name: str, comment: str = "") -> Path:
    path = tmp_path / name
    subprocess.run(
        ["ssh-keygen", "-t", "ed25519", "-N", "", "-q", "-C", comment, "-f", str(path)], check=True
    )
    return path.with_name(f"{name}.pub")


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty home folder for ~/.ssh/config, and a fixed path for this program in ProxyCommands."""
    folder = tmp_path / "home"
    folder.mkdir()
    monkeypatch.setenv("HOME", str(folder))
    monkeypatch.setattr(sshconfig, "dockyard_command", lambda: DOCKYARD)
    return folder


# --- ssh-keys --------------------------------------------------------------------------------------------------


def test_ssh_keys_list(logged_in: Cli, h: Harness, tmp_path: Path, golden: Golden) -> None:
    for name in ("laptop", "desktop"):
        h.admin.add_ssh_key(
            "me",
            m.CreateSshKeyRequest(name=name, public_key=_public_key(tmp_path, name).read_text().strip()),
        )
    keys = {k.name: k for k in h.admin.list_ssh_keys()}
    golden(
        "ssh_keys_list",
        logged_in,
        "ssh-keys",
        "list",
        replace={keys["laptop"].fingerprint: "<LAPTOP_FP>", keys["desktop"].fingerprint: "<DESKTOP_FP>"},
    )


def test_ssh_keys_list_json_and_empty(logged_in: Cli, tmp_path: Path) -> None:
    empty = logged_in.ok("ssh-keys", "list")
    assert (empty.stdout, empty.stderr) == (
        "",
        "No SSH keys; add one with `dockyard ssh-keys add ~/.ssh/id_ed25519.pub`.\n",
    )
    assert logged_in.ok("ssh-keys", "list", "-o", "json").stdout == "[]\n"


def test_ssh_keys_add_names_the_key_by_its_comment_or_file(
    logged_in: Cli, h: Harness, tmp_path: Path
) -> None:
    commented = _public_key(tmp_path, "id_one", comment="me@laptop")
    plain = _public_key(tmp_path, "id_two")

    first = logged_in.ok("ssh-keys", "add", str(commented))
    second = logged_in.ok("ssh-keys", "add", str(plain), "-o", "json")
    third = logged_in.ok(
        "ssh-keys", "add", "-", "--name", "piped", input=_public_key(tmp_path, "k3").read_text()
    )

    keys = {k.name: k for k in h.admin.list_ssh_keys()}
    assert sorted(keys) == ["id_two", "me@laptop", "piped"]
    assert first.stderr == f"Added SSH key me@laptop ({keys['me@laptop'].fingerprint})\n"
    assert m.SshKey.model_validate_json(second.stdout) == keys["id_two"]
    assert third.stderr == f"Added SSH key piped ({keys['piped'].fingerprint})\n"


def test_ssh_keys_add_refuses_bad_input(logged_in: Cli, h: Harness, tmp_path: Path) -> None:
    public = _public_key(tmp_path, "id_x")
    private = public.with_suffix("")
    result = logged_in("ssh-keys", "add", str(private))
    assert result.exit_code == 1
    assert result.stderr.startswith("error: ")
    nameless = logged_in("ssh-keys", "add", "-", input=public.read_text().rsplit(" ", 1)[0] + "\n")
    assert nameless.stderr == (
        "error: the key has no comment to name it by\nhint: give it a name with --name\n"
    )
    missing = logged_in("ssh-keys", "add", str(tmp_path / "nope.pub"))
    assert missing.exit_code == 1
    assert missing.stderr.startswith(f"error: cannot read {tmp_path / 'nope.pub'}: ")
    garbage = logged_in("ssh-keys", "add", "-", "--name", "bad", input="not a key at all\n")
    assert garbage.exit_code == 1
    assert h.admin.list_ssh_keys() == []


def test_ssh_keys_remove_by_name_or_id(logged_in: Cli, h: Harness, tmp_path: Path) -> None:
    for name in ("a", "b"):
        logged_in.ok("ssh-keys", "add", str(_public_key(tmp_path, name)), "--name", name)
    keys = {k.name: k for k in h.admin.list_ssh_keys()}

    by_name = logged_in.ok("ssh-keys", "remove", "a")
    by_id = logged_in.ok("ssh-keys", "remove", keys["b"].id)
    unknown = logged_in("ssh-keys", "remove", "a")

    assert by_name.stderr == f"Removed SSH key a ({keys['a'].fingerprint})\n"
    assert by_id.stderr == f"Removed SSH key b ({keys['b'].fingerprint})\n"
    assert (unknown.exit_code, unknown.stderr) == (
        1,
        "error: you have no SSH key 'a'\nhint: list them with `dockyard ssh-keys list`\n",
    )
    assert h.admin.list_ssh_keys() == []


# --- ssh-cert and login ----------------------------------------------------------------------------------------


def test_ssh_cert_makes_the_key_and_a_certificate(logged_in: Cli, h: Harness) -> None:
    result = logged_in.ok("ssh-cert", "--valid-for", "2h", "-o", "json")

    certificate = m.SshCertificate.model_validate_json(result.stdout)
    files = sshkeys.key_files()
    assert files.certificate.read_text() == certificate.certificate.strip() + "\n"
    info = sshkeys.parse_certificate(files.certificate.read_text())
    assert info.principals == certificate.principals
    assert abs((info.valid_before - certificate.valid_before).total_seconds()) < 2
    gateway = h.admin.ssh_gateway()
    assert sshkeys.certificate_usable(files, ca_public_key=gateway.ca_public_key, margin=sshkeys.RENEW_BEFORE)
    assert files.known_hosts.read_text() == gateway.known_hosts.strip() + "\n"
    key_before = files.private_key.read_bytes()

    again = logged_in.ok("ssh-cert")
    assert again.stderr.startswith("SSH certificate for ")
    assert files.private_key.read_bytes() == key_before  # the same key, a new certificate
    assert files.certificate.read_text() != certificate.certificate.strip() + "\n"


def test_ssh_cert_rejects_a_bad_lifetime(logged_in: Cli) -> None:
    before = sshkeys.key_files().certificate.read_text()  # the one `login` got
    result = logged_in("ssh-cert", "--valid-for", "forever")
    assert result.exit_code == 2
    assert "'forever' is not a duration" in result.stderr
    assert sshkeys.key_files().certificate.read_text() == before


def test_login_fetches_a_certificate(cli: Cli) -> None:
    result = cli.ok("login", URL, "--token", cli.admin_token)
    assert result.stderr == f"Logged in to {URL} as admin\n"
    files = sshkeys.key_files()
    for path in (files.private_key, files.public_key, files.certificate, files.known_hosts):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_login_with_a_token_that_cannot_connect_still_succeeds(cli: Cli, h: Harness) -> None:
    reader = h.user("reader", scopes=[m.Scope.WORKSPACE_READ])
    result = cli.ok("login", URL, "--token", reader.token or "")
    assert result.stderr == f"Logged in to {URL} as reader\n"
    assert not sshkeys.key_files().certificate.exists()


# --- config-ssh ------------------------------------------------------------------------------------------------


def test_config_ssh_writes_a_block_and_is_idempotent(
    logged_in: Cli, h: Harness, home: Path, golden: Golden
) -> None:
    h.workspace(name="dev")
    h.workspace(name="web")
    config_dir = logged_in.config_home / "dockyard" / "ssh"

    golden("config_ssh_yes", logged_in, "config-ssh", "--yes", replace={str(config_dir): "<SSH_DIR>"})

    written = home / ".ssh" / "config"
    assert stat.S_IMODE(written.stat().st_mode) == 0o600
    assert stat.S_IMODE(written.parent.stat().st_mode) == 0o700
    assert f"Host dockyard.*\n  ProxyCommand {DOCKYARD} ssh --stdio --host-prefix dockyard. %h\n" in (
        written.read_text()
    )
    again = logged_in.ok("config-ssh", "--yes")
    assert again.stderr == f"No changes to {written}\n"


def test_config_ssh_keeps_other_content_and_names_no_workspace(
    logged_in: Cli, h: Harness, home: Path, tmp_path: Path
) -> None:
    path = tmp_path / "ssh_config"
    mine = "Host other\n  User me\r\n# trailing comment without newline"
    path.write_bytes(mine.encode())
    path.chmod(0o644)
    h.workspace(name="dev")
    logged_in.ok("config-ssh", "--ssh-config", str(path), "--yes")
    first = path.read_bytes().decode()
    assert first.startswith(mine + "\n\n# ------------START-DOCKYARD------------\n")
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    # One wildcard entry: workspaces made or deleted later change nothing in the file.
    assert "dockyard.dev" not in first
    h.workspace(name="new")
    old = h.admin.get_workspace("dev")
    h.admin.delete_workspace(old.id)
    h.await_build(old.id)
    path.write_bytes(first.encode() + b"Host after\n")
    again = logged_in.ok("config-ssh", "--ssh-config", str(path), "--yes")
    assert again.stderr == f"No changes to {path}\n"
    assert path.read_bytes().decode() == first + "Host after\n"


def test_config_ssh_options_go_first_and_bad_ones_are_refused(
    logged_in: Cli, home: Path, tmp_path: Path
) -> None:
    path = tmp_path / "ssh_config"
    logged_in.ok(
        "config-ssh",
        "--ssh-config",
        str(path),
        "--yes",
        "-o",
        "ForwardAgent=no",
        "--ssh-option",
        "ConnectTimeout 5",
    )
    assert "Host dockyard.*\n  ForwardAgent no\n  ConnectTimeout 5\n  ProxyCommand " in path.read_text()
    written = path.read_text()
    result = logged_in("config-ssh", "--ssh-config", str(path), "--yes", "-o", "User=x\nHost *", "-o", "Nope")
    assert (result.exit_code, result.stderr) == (
        1,
        "error: Invalid request.\n"
        "  --ssh-option: 'User=x\\nHost *' holds a control character\n"
        "  --ssh-option: 'Nope' is not KEY=VALUE or KEY VALUE (e.g. ForwardAgent=no)\n",
    )
    assert path.read_text() == written


def test_config_ssh_remove(logged_in: Cli, home: Path, tmp_path: Path) -> None:
    path = tmp_path / "ssh_config"
    path.write_text("Host other\n  User me\n")
    logged_in.ok("config-ssh", "--ssh-config", str(path), "--yes")
    assert "START-DOCKYARD" in path.read_text()
    dry = logged_in.ok("config-ssh", "--ssh-config", str(path), "--remove", "--dry-run")
    assert "-Host dockyard.*" in dry.stdout.splitlines()
    assert "START-DOCKYARD" in path.read_text()
    removed = logged_in.ok("config-ssh", "--ssh-config", str(path), "--remove", "--yes")
    assert removed.stderr == f"Removed the Dockyard block from {path}\n"
    assert path.read_text() == "Host other\n  User me\n"
    again = logged_in.ok("config-ssh", "--ssh-config", str(path), "--remove", "--yes")
    assert again.stderr == f"No changes to {path}\n"


def test_config_ssh_dry_run_prints_a_diff_and_writes_nothing(
    logged_in: Cli, h: Harness, home: Path, tmp_path: Path
) -> None:
    h.workspace(name="dev")
    path = tmp_path / "ssh_config"
    path.write_text("Host other\n")
    sshkeys.key_files().certificate.unlink()  # the one `login` got

    result = logged_in.ok("config-ssh", "--ssh-config", str(path), "--dry-run")

    assert path.read_text() == "Host other\n"
    assert not sshkeys.key_files().certificate.exists()
    lines = result.stdout.splitlines()
    assert lines[:3] == [f"--- {path}", f"+++ {path}", "@@ -1 +1,15 @@"]
    assert "+Host dockyard.*" in lines
    assert f"+  ProxyCommand {DOCKYARD} ssh --stdio --host-prefix dockyard. %h" in lines
    assert result.stderr == ""


def test_config_ssh_needs_yes_without_a_terminal(logged_in: Cli, h: Harness, home: Path) -> None:
    result = logged_in("config-ssh")
    assert (result.exit_code, result.stderr) == (
        1,
        f"error: not changing {home / '.ssh' / 'config'} without confirmation\n"
        "hint: pass --yes, or --dry-run to see the change\n",
    )
    assert not (home / ".ssh").exists()


def test_config_ssh_refuses_broken_markers(logged_in: Cli, home: Path, tmp_path: Path) -> None:
    path = tmp_path / "ssh_config"
    path.write_text("# ------------START-DOCKYARD------------\nHost x\n")
    result = logged_in("config-ssh", "--ssh-config", str(path), "--yes")
    assert result.exit_code == 1
    assert result.stderr == (
        f"error: cannot update {path}: its Dockyard markers are out of order: 1 START and 0 END line(s)\n"
        "hint: fix the markers by hand, then run this again\n"
    )
    assert path.read_text() == "# ------------START-DOCKYARD------------\nHost x\n"


def test_config_ssh_rejects_a_bad_prefix(logged_in: Cli, home: Path) -> None:
    result = logged_in("config-ssh", "--host-prefix", "a b", "--yes")
    assert result.exit_code == 2
    assert "must be non-empty, without spaces or special characters" in result.stderr
