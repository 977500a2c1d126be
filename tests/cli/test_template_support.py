from __future__ import annotations

from pathlib import Path

from tests.cli.conftest import Cli
from tests.harness import manifest_yaml


def test_push_refuses_unsupported_fields_before_uploading(logged_in: Cli, tmp_path: Path) -> None:
    folder = tmp_path / "t"
    folder.mkdir()
    (folder / "dockyard.yaml").write_text(
        manifest_yaml(
            name="sandbox",
            network={"egress": "allowlist", "allow": ["github.com"]},
        )
    )

    result = logged_in("templates", "push", str(folder))

    assert result.exit_code == 1
    lines = (folder / "dockyard.yaml").read_text().splitlines()
    egress = lines.index("  egress: allowlist") + 1
    assert result.stderr == (
        "error: dockyard.yaml uses what Dockyard does not support yet.\n"
        f"  dockyard.yaml:{egress}: network.egress: not supported yet: `allowlist` (with `allow` hosts) is not "
        "enforced yet; use `none` or `all`\n"
    )
    assert logged_in.h.admin.list_templates() == []
