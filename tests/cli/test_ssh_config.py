"""`config-ssh`'s block editing and `port-forward`'s port specs, as pure functions."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from dockyard.cli.forward import PortSpec, parse_port_spec, parse_port_specs
from dockyard.cli.proxy import parse_args, workspace_ref
from dockyard.cli.sshconfig import (
    BLOCK_END,
    BLOCK_START,
    SshConfigSettings,
    apply_block,
    parse_ssh_option,
    remove_block,
    render_block,
)
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
    block = render_block(dataclasses.replace(SETTINGS, options=("ForwardAgent no", "ConnectTimeout 5")))
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
    block = render_block(settings)
    assert "  ProxyCommand '/opt/my tools/dockyard' ssh --stdio --host-prefix dy- %h\n" in block
    assert '  UserKnownHostsFile "/home/a b/kh"\n' in block
    assert "  CertificateFile /home/100%%/cert\n" in block
    assert "Host dy-*\n" in block


def test_appends_to_existing_content_and_keeps_it_byte_for_byte() -> None:
    block = render_block(SETTINGS)
    updated = apply_block(USER_CONFIG, block)
    assert updated == USER_CONFIG + "\n" + block


def test_appends_a_newline_to_a_file_without_one() -> None:
    block = render_block(SETTINGS)
    assert apply_block("Host a", block) == "Host a\n\n" + block


def test_empty_file_gets_just_the_block() -> None:
    block = render_block(SETTINGS)
    assert apply_block("", block) == block
    assert block.startswith(BLOCK_START + "\n")
    assert block.endswith(BLOCK_END + "\n")


def test_is_idempotent() -> None:
    block = render_block(SETTINGS)
    once = apply_block(USER_CONFIG, block)
    assert apply_block(once, block) == once


def test_replaces_the_block_in_place() -> None:
    older = "\n".join([BLOCK_START, "Host dockyard.old", "  User old", BLOCK_END]) + "\n"
    before = USER_CONFIG + "\n" + older + "\nHost after\n  User x\n"
    after = apply_block(before, render_block(SETTINGS))
    assert "dockyard.old" not in after
    prefix, _, rest = after.partition(BLOCK_START)
    assert prefix == USER_CONFIG + "\n"
    assert rest.partition(BLOCK_END)[2] == "\n\nHost after\n  User x\n"


def test_remove_takes_out_the_block_and_the_blank_line_before_it() -> None:
    block = render_block(SETTINGS)
    assert remove_block(apply_block(USER_CONFIG, block)) == USER_CONFIG
    assert remove_block(block) == ""
    assert remove_block(USER_CONFIG + "\n" + block + "Host after\n") == USER_CONFIG + "\nHost after\n"
    assert remove_block(USER_CONFIG) == USER_CONFIG
    with pytest.raises(ValueError, match="markers are out of order"):
        remove_block(f"{BLOCK_START}\nHost x\n")


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("ForwardAgent=no", "ForwardAgent no"),
        ("ForwardAgent no", "ForwardAgent no"),
        ("  ConnectTimeout = 5 ", "ConnectTimeout 5"),
        ("SetEnv=A=1 B=2", "SetEnv A=1 B=2"),
    ],
)
def test_ssh_options(text: str, line: str) -> None:
    assert parse_ssh_option(text) == line


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("ForwardAgent", "'ForwardAgent' is not KEY=VALUE or KEY VALUE (e.g. ForwardAgent=no)"),
        ("=no", "'=no' is not KEY=VALUE or KEY VALUE (e.g. ForwardAgent=no)"),
        ("Forward-Agent=no", "'Forward-Agent=no' is not KEY=VALUE or KEY VALUE (e.g. ForwardAgent=no)"),
        ("User=x\nHost evil", "'User=x\\nHost evil' holds a control character"),
        ("Host=evil", "'Host=evil' would start a block of its own; only options go into the Dockyard block"),
        ("match all", "'match all' would start a block of its own; only options go into the Dockyard block"),
    ],
)
def test_bad_ssh_options(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        parse_ssh_option(text)


@pytest.mark.parametrize(
    ("argv", "parsed"),
    [
        (["ssh", "--stdio", "dev"], ("dev", "")),
        (["ssh", "--stdio", "--host-prefix", "dockyard.", "dockyard.dev"], ("dockyard.dev", "dockyard.")),
        (["ssh", "--stdio", "--host-prefix=dy-", "dy-dev"], ("dy-dev", "dy-")),
        (["ssh", "--stdio", "--help"], None),
        (["ssh", "--stdio", "dev", "extra"], None),
        (["ssh", "--stdio", "--debug", "dev"], None),
        (["ssh", "dev"], None),
    ],
)
def test_proxy_command_arguments(argv: list[str], parsed: tuple[str, str] | None) -> None:
    assert parse_args(argv) == parsed


def test_host_names_map_to_workspaces() -> None:
    assert workspace_ref("dockyard.dev", "dockyard.") == "dev"
    assert workspace_ref("dockyard.alice.dev", "dockyard.") == "alice/dev"
    assert workspace_ref("dev", "") == "dev"
    assert workspace_ref("other.dev", "dockyard.") == "other/dev"


def test_crlf_outside_the_block_is_preserved() -> None:
    before = "Host a\r\n  User b\r\n"
    after = apply_block(before, render_block(SETTINGS))
    assert after.startswith("Host a\r\n  User b\r\n\n")
    assert apply_block(after, render_block(SETTINGS)).startswith("Host a\r\n  User b\r\n\n")


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
        apply_block(broken, render_block(SETTINGS))


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
