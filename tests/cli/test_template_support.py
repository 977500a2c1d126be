from __future__ import annotations

from pathlib import Path

from tests.cli.conftest import Cli
from tests.harness import manifest_yaml


def test_push_refuses_an_allow_list_entry_that_is_no_host_wildcard_or_cidr(
    logged_in: Cli, tmp_path: Path
) -> None:
    folder = tmp_path / "t"
    folder.mkdir()
    (folder / "dockyard.yaml").write_text(
        manifest_yaml(
            name="sandbox",
            network={"egress": "allowlist", "allow": ["github.com", "https://pypi.org/simple", "*.pypi.org"]},
        )
    )

    result = logged_in("templates", "push", str(folder))

    assert result.exit_code == 1
    lines = (folder / "dockyard.yaml").read_text().splitlines()
    entry = lines.index("  - https://pypi.org/simple") + 1
    assert result.stderr == (
        "error: dockyard.yaml is invalid.\n"
        f"  dockyard.yaml:{entry}: network.allow.1: 'https://pypi.org/simple' is a URL; write the host name "
        "alone, e.g. pypi.org\n"
    )
    assert logged_in.h.admin.list_templates() == []
