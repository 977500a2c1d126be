from __future__ import annotations

from pathlib import Path

import pytest

from dockyard.errors import NotFound, ValidationFailed
from dockyard.templates.devcontainer.discovery import ConfigLocation, absolute, find, named_configurations


def write(path: Path, text: str = '{"image": "x"}') -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_devcontainer_folder_comes_first(tmp_path: Path) -> None:
    first = write(tmp_path / ".devcontainer" / "devcontainer.json")
    write(tmp_path / ".devcontainer.json")
    write(tmp_path / ".devcontainer" / "python" / "devcontainer.json")
    assert find(str(tmp_path)) == ConfigLocation(str(first), discovered=True)


def test_then_the_dot_file_at_the_top(tmp_path: Path) -> None:
    second = write(tmp_path / ".devcontainer.json")
    write(tmp_path / ".devcontainer" / "python" / "devcontainer.json")
    assert find(str(tmp_path)).path == str(second)


def test_then_the_only_named_configuration(tmp_path: Path) -> None:
    only = write(tmp_path / ".devcontainer" / "python" / "devcontainer.json")
    assert find(str(tmp_path)).path == str(only)


def test_several_named_configurations_need_a_name(tmp_path: Path) -> None:
    write(tmp_path / ".devcontainer" / "python" / "devcontainer.json")
    node = write(tmp_path / ".devcontainer" / "node" / "devcontainer.json")
    (tmp_path / ".devcontainer" / "empty").mkdir()
    assert named_configurations(str(tmp_path)) == ["node", "python"]
    with pytest.raises(ValidationFailed) as caught:
        find(str(tmp_path))
    assert [(v.field, v.detail) for v in caught.value.validations] == [
        ("name", "choose one of: node, python")
    ]
    assert find(str(tmp_path), name="node").path == str(node)


def test_a_name_wins_over_the_default_locations(tmp_path: Path) -> None:
    write(tmp_path / ".devcontainer" / "devcontainer.json")
    named = write(tmp_path / ".devcontainer" / "go" / "devcontainer.json")
    assert find(str(tmp_path), name="go").path == str(named)


def test_an_unknown_name_lists_the_known_ones(tmp_path: Path) -> None:
    write(tmp_path / ".devcontainer" / "go" / "devcontainer.json")
    with pytest.raises(NotFound) as caught:
        find(str(tmp_path), name="rust")
    assert (
        caught.value.message
        == f"Dev container config ({tmp_path}/.devcontainer/rust/devcontainer.json) not found."
    )
    assert caught.value.detail == "configurations here: go"


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "../x"])
def test_names_cannot_leave_the_devcontainer_folder(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        find(str(tmp_path), name=name)
    assert caught.value.validations[0].field == "name"


def test_nothing_found_names_the_default_location(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match=r"\(.*/\.devcontainer/devcontainer\.json\) not found"):
        find(str(tmp_path))
    with pytest.raises(NotFound, match=r"Workspace folder .* not found"):
        find(str(tmp_path / "missing"))


def test_a_folder_named_like_the_file_is_not_a_configuration(tmp_path: Path) -> None:
    (tmp_path / ".devcontainer.json").mkdir()
    with pytest.raises(NotFound):
        find(str(tmp_path))


def test_absolute_is_lexical_like_node(tmp_path: Path) -> None:
    assert absolute("a/../b/./c", cwd="/x/y") == "/x/y/b/c"
    assert absolute("/p/q/", cwd="/x") == "/p/q"
