"""`config-ssh`'s block editing and `port-forward`'s port specs, as pure functions."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from dockyard.cli.forward import PortSpec, parse_port_spec, parse_port_specs
from dockyard.cli.sshconfig import BLOCK_END, BLOCK_START, SshConfigSettings, apply_block, render_block
from tests.cli.conftest import TESTDATA

SETTINGS = SshConfigSettings(
    server="https://dockyard.example.com",
    command="/usr/local/bin/dockyard",
    prefix="dockyard.",
    host_key_alias="dockyard",
    known_hosts=Path("/home/me/.config/dockyard/ssh/known_hosts"),
    certificate=Path("/home/me/.config/dockyard/ssh/id_ed25519-cert.pub"),
    identity=Path("/home/me/.config/dockyard/ssh/id_ed25519"),
)

USER_CONFIG = (
    "# my hosts\n"
    "Host work\n"
    "  HostName work.example.com\n"
    "  User me\r\n"  # a stray CRLF line must survive untouched
    "\n"
    "Include ~/.ssh/config.d/*\n"
)


def test_block_golden(request: pytest.FixtureRequest) -> None:
    block = render_block(["web", "dev"], SETTINGS)
    path = TESTDATA / "config_ssh_block.golden"
    if request.config.getoption("--update-golden"):
        path.write_text(block)
    assert block == path.read_text()


def test_block_quotes_paths_with_spaces_and_escapes_percent() -> None:
    settings = SshConfigSettings(
        server="http://x",
        command="'/opt/my tools/dockyard'",
        prefix="dy-",
        host_key_alias="dockyard",
        known_hosts=Path("/home/a b/kh"),
        certificate=Path("/home/100%/cert"),
        identity=Path("/home/a b/id"),
    )
    block = render_block(["dev"], settings)
    assert "  ProxyCommand '/opt/my tools/dockyard' ssh --stdio dev\n" in block
    assert '  UserKnownHostsFile "/home/a b/kh"\n' in block
    assert "  CertificateFile /home/100%%/cert\n" in block
    assert "Host dy-dev\n" in block
    assert "Host dy-*\n" in block


def test_appends_to_existing_content_and_keeps_it_byte_for_byte() -> None:
    block = render_block(["dev"], SETTINGS)
    updated = apply_block(USER_CONFIG, block)
    assert updated == USER_CONFIG + "\n" + block


def test_appends_a_newline_to_a_file_without_one() -> None:
    block = render_block(["dev"], SETTINGS)
    assert apply_block("Host a", block) == "Host a\n\n" + block


def test_empty_file_gets_just_the_block() -> None:
    block = render_block([], SETTINGS)
    assert apply_block("", block) == block
    assert block.startswith(BLOCK_START + "\n")
    assert block.endswith(BLOCK_END + "\n")


def test_is_idempotent() -> None:
    block = render_block(["dev", "web"], SETTINGS)
    once = apply_block(USER_CONFIG, block)
    assert apply_block(once, block) == once


def test_replaces_the_block_in_place_removing_stale_workspaces() -> None:
    before = USER_CONFIG + "\n" + render_block(["dev", "old"], SETTINGS) + "\nHost after\n  User x\n"
    after = apply_block(before, render_block(["dev"], SETTINGS))
    assert "dockyard.old" not in after
    assert "Host dockyard.dev\n" in after
    prefix, _, rest = after.partition(BLOCK_START)
    assert prefix == USER_CONFIG + "\n"
    assert rest.partition(BLOCK_END)[2] == "\n\nHost after\n  User x\n"


def test_crlf_outside_the_block_is_preserved() -> None:
    before = "Host a\r\n  User b\r\n"
    after = apply_block(before, render_block(["dev"], SETTINGS))
    assert after.startswith("Host a\r\n  User b\r\n\n")
    assert apply_block(after, render_block([], SETTINGS)).startswith("Host a\r\n  User b\r\n\n")


@pytest.mark.parametrize(
    "broken",
    [
        f"{BLOCK_START}\nHost x\n",
        f"Host x\n{BLOCK_END}\n",
        f"{BLOCK_END}\n{BLOCK_START}\n",
        f"{BLOCK_START}\n{BLOCK_END}\n{BLOCK_START}\n{BLOCK_END}\n",
    ],
)
def test_broken_markers_are_refused(broken: str) -> None:
    with pytest.raises(ValueError, match="markers are out of order"):
        apply_block(broken, render_block([], SETTINGS))


# --- port specs ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "spec"),
    [("8080:80", PortSpec(8080, 80)), ("3000", PortSpec(3000, 3000)), ("1:65535", PortSpec(1, 65535))],
)
def test_port_specs(text: str, spec: PortSpec) -> None:
    assert parse_port_spec(text) == spec


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "'' is not LOCAL:REMOTE (e.g. 8080:80) or PORT"),
        ("abc", "'abc' is not LOCAL:REMOTE (e.g. 8080:80) or PORT"),
        ("80:", "'80:' is not LOCAL:REMOTE (e.g. 8080:80) or PORT"),
        ("1:2:3", "'1:2:3' is not LOCAL:REMOTE (e.g. 8080:80) or PORT"),
        ("-1:80", "'-1:80' is not LOCAL:REMOTE (e.g. 8080:80) or PORT"),
        ("0:80", "'0:80': port 0 is not between 1 and 65535"),
        ("8080:70000", "'8080:70000': port 70000 is not between 1 and 65535"),
        ("123456", "'123456' is not LOCAL:REMOTE (e.g. 8080:80) or PORT"),
    ],
)
def test_bad_port_specs(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        parse_port_spec(text)


def test_a_local_port_may_be_used_once() -> None:
    with pytest.raises(ValueError, match="local port 8080 is given more than once"):
        parse_port_specs(["8080:80", "8081:81", "8080:82"])
    assert parse_port_specs(["8080:80", "8081:80"]) == [PortSpec(8080, 80), PortSpec(8081, 80)]
