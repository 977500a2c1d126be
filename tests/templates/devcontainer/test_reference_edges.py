"""Edge cases the corpus does not reach, against the reference CLI's recorded output.

`testdata/reference_edge_cases.json` holds each input with what `@devcontainers/cli` 0.89.0 `read-configuration`
printed for it (recorded on this machine from the npm package; paths written as `${CASE_DIR}` and `${HOME}`):
legacy properties with empty and falsy values, variables with defaults, escapes and unknown names, JavaScript's
key order, repeated keys, workspace folders and mounts set, unset, null or self-referencing, Compose with an image.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from dockyard.templates.devcontainer import read_configuration

RECORDED: dict[str, Any] = json.loads(
    (Path(__file__).parent / "testdata" / "reference_edge_cases.json").read_text()
)


@pytest.mark.parametrize("name", sorted(RECORDED["cases"]))
def test_matches_the_reference(name: str, tmp_path: Path) -> None:
    case = RECORDED["cases"][name]
    folder = tmp_path / name
    folder.mkdir()
    (folder / ".devcontainer.json").write_text(case["devcontainer.json"])
    home = tmp_path / "home"
    env = {key: value.replace("${HOME}", str(home)) for key, value in RECORDED["env"].items()}

    expected = json.loads(case["stdout"].replace("${CASE_DIR}", str(folder)).replace("${HOME}", str(home)))
    expected.pop("ociAuthDiagnostics")
    result = read_configuration(str(folder), env=env)
    assert result.reference_json() == json.dumps(expected, separators=(",", ":"), ensure_ascii=False)
