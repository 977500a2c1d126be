"""Dockyard's reading of 274 real devcontainer.json files against the reference CLI's output for each.

The corpus (`../shared/data/devcontainer-oracle/`, see its README) holds each configuration with what
`@devcontainers/cli` 0.89.0 `read-configuration` printed, run from the case folder with a fixed environment.
Each case is copied to a folder of the same name outside any git work tree (inside one the reference mounts the
git root instead), read with that environment, and compared field by field, then as text (key order included).

Differences Dockyard accepts are listed in EXPECTED_DIFFERENCES with their reason; a listed field must still
differ (so the list cannot go stale), and every other field must match.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from dockyard.errors import ValidationFailed
from dockyard.templates.devcontainer import read_configuration
from dockyard.templates.devcontainer.workspace import git_root

_REPO = Path(__file__).resolve().parents[3]


def _oracle_folder() -> Path | None:
    candidates = [
        os.environ.get("DOCKYARD_DEVCONTAINER_ORACLE"),
        _REPO.parent / "shared/data/devcontainer-oracle",
        # A git worktree of the repository sits one level further down (/work/wt/NAME).
        _REPO.parent.parent / "shared/data/devcontainer-oracle",
    ]
    for candidate in candidates:
        if candidate and (Path(candidate) / "manifest.json").is_file():
            return Path(candidate)
    return None


ORACLE = _oracle_folder()
CASES: list[dict[str, Any]] = (
    json.loads((ORACLE / "manifest.json").read_text())["cases"] if ORACLE is not None else []
)

# Fields of the reference's output that Dockyard does not produce at all; not part of any comparison.
NOT_PRODUCED = {
    # The reference's report on how it would authenticate to OCI registries for features; reading a
    # configuration here never contacts a registry, so there is nothing to report.
    "ociAuthDiagnostics": "a diagnostic of the reference's registry authentication, not configuration",
}

# case -> {"section.field": reason}. Empty: every field Dockyard produces matches in all 274 cases.
EXPECTED_DIFFERENCES: dict[str, dict[str, str]] = {}

# Cases whose `${templateOption:…}` placeholders are a template's, filled in only when the template is
# applied; a strict read (creating a workspace) refuses them, naming the variable and its line.
UNRESOLVED_TEMPLATES = {
    c["case"] for c in CASES if "var:templateOption" in c["tags"] and not c["case"].endswith("-resolved")
}

ENV_BASE = {"LOCAL_ENV_TEST": "hello", "PATH": "/usr/local/bin:/usr/bin:/bin"}


def test_corpus_is_present_and_complete() -> None:
    assert ORACLE is not None, (
        "the devcontainer oracle corpus was not found: put it at ../shared/data/devcontainer-oracle "
        "or set DOCKYARD_DEVCONTAINER_ORACLE"
    )
    assert len(CASES) == 274
    assert all(c["exit_code"] == 0 and c["expected_json"] for c in CASES)
    assert set(EXPECTED_DIFFERENCES) <= {c["case"] for c in CASES}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """All cases copied once under one folder outside any git work tree, and an empty HOME."""
    assert ORACLE is not None
    root = tmp_path_factory.mktemp("devcontainer-oracle")
    if git_root(str(root)) is not None:
        pytest.fail(f"{root} is inside a git work tree; the reference's output assumes it is not")
    home = root / "home"
    home.mkdir()
    for case in CASES:
        shutil.copytree(
            ORACLE / "cases" / case["case"],
            root / case["case"],
            ignore=shutil.ignore_patterns("expected.json", "expected.err"),
        )
    return root, home


def _expected(case: str, *, case_dir: Path, home: Path) -> tuple[dict[str, Any], str]:
    assert ORACLE is not None
    text = (ORACLE / "cases" / case / "expected.json").read_text()
    # The README's placeholders for the machine-dependent paths; JSON-escaped, as they appear inside strings.
    text = text.replace("${CASE_DIR}", json.dumps(str(case_dir))[1:-1]).replace(
        "${HOME}", json.dumps(str(home))[1:-1]
    )
    expected = json.loads(text)
    for key in NOT_PRODUCED:
        expected.pop(key, None)
    return expected, json.dumps(expected, separators=(",", ":"), ensure_ascii=False)


def _fields(output: dict[str, Any]) -> dict[str, Any]:
    return {
        f"{section}.{key}": value
        for section in ("configuration", "workspace")
        for key, value in (output.get(section) or {}).items()
    }


@pytest.mark.parametrize("case", [c["case"] for c in CASES])
def test_case_matches_the_reference(case: str, corpus: tuple[Path, Path]) -> None:
    root, home = corpus
    case_dir = root / case
    result = read_configuration(str(case_dir), env={**ENV_BASE, "HOME": str(home)})
    expected, expected_text = _expected(case, case_dir=case_dir, home=home)

    ours = _fields(result.reference_output())
    theirs = _fields(expected)
    allowed = EXPECTED_DIFFERENCES.get(case, {})
    differing = {
        f for f in ours.keys() | theirs.keys() if ours.get(f, "<absent>") != theirs.get(f, "<absent>")
    }
    assert differing == set(allowed), {
        f: (ours.get(f, "<absent>"), theirs.get(f, "<absent>")) for f in differing
    }
    if not allowed:
        # Byte for byte, property order included (the reference prints JavaScript's order).
        assert result.reference_json() == expected_text


@pytest.mark.parametrize("case", sorted(UNRESOLVED_TEMPLATES))
def test_strict_read_refuses_template_placeholders(case: str, corpus: tuple[Path, Path]) -> None:
    root, home = corpus
    with pytest.raises(ValidationFailed) as caught:
        read_configuration(str(root / case), env={**ENV_BASE, "HOME": str(home)}, strict=True)
    problems = caught.value.validations
    assert problems
    source = (root / case / ".devcontainer" / "devcontainer.json").read_text().splitlines()
    for problem in problems:
        assert problem.file == ".devcontainer/devcontainer.json"
        assert problem.detail.startswith("unknown variable ${templateOption:")
        assert problem.line is not None
        # The line named is the one that holds the placeholder.
        assert problem.detail.removeprefix("unknown variable ") in source[problem.line - 1]


def test_strict_read_accepts_every_other_case(corpus: tuple[Path, Path]) -> None:
    root, home = corpus
    refused = []
    for case in CASES:
        if case["case"] in UNRESOLVED_TEMPLATES:
            continue
        try:
            read_configuration(str(root / case["case"]), env={**ENV_BASE, "HOME": str(home)}, strict=True)
        except ValidationFailed as exc:
            refused.append((case["case"], exc.detail))
    assert refused == []
    assert len(UNRESOLVED_TEMPLATES) == 16
