from __future__ import annotations

from dockyard.templates.devcontainer.legacy import migrate
from dockyard.templates.devcontainer.model import DockerfileSource, build_source


def test_extensions_settings_and_dev_port_move_under_customizations_vscode() -> None:
    config = {"image": "x", "extensions": ["a.b"], "settings": {"s": 1}, "devPort": 8000, "name": "n"}
    migrated, problems = migrate(config)
    assert problems == []
    assert list(migrated.items()) == [
        ("image", "x"),
        ("name", "n"),
        ("customizations", {"vscode": {"extensions": ["a.b"], "settings": {"s": 1}, "devPort": 8000}}),
    ]
    assert config["extensions"] == ["a.b"], "the input is not changed"


def test_existing_customizations_keep_their_place_and_win_on_settings() -> None:
    config = {
        "customizations": {
            "vscode": {"extensions": ["first"], "settings": {"s": "new", "t": 1}},
            "other": {},
        },
        "extensions": ["second"],
        "settings": {"s": "old", "u": 2},
        "image": "x",
    }
    migrated, _ = migrate(config)
    assert list(migrated) == ["customizations", "image"]
    assert migrated["customizations"] == {
        "vscode": {"extensions": ["first", "second"], "settings": {"s": "new", "u": 2, "t": 1}},
        "other": {},
    }


def test_dev_port_stays_when_customizations_already_have_one() -> None:
    migrated, _ = migrate({"devPort": 1, "customizations": {"vscode": {"devPort": 2}}})
    assert migrated == {"devPort": 1, "customizations": {"vscode": {"devPort": 2}}}


def test_empty_lists_count_but_empty_strings_do_not() -> None:
    # JavaScript truthiness, as in the reference: [] and {} are moved, "" and null are left.
    assert migrate({"extensions": []})[0] == {"customizations": {"vscode": {"extensions": []}}}
    assert migrate({"extensions": "", "settings": None}) == ({"extensions": "", "settings": None}, [])


def test_nothing_to_migrate_returns_the_same_object() -> None:
    config = {"image": "x"}
    assert migrate(config)[0] is config


def test_legacy_values_of_the_wrong_shape_are_reported() -> None:
    _, problems = migrate({"extensions": "a.b", "settings": ["x"]})
    assert problems == [
        (("extensions",), "must be a list of extension ids"),
        (("settings",), "must be an object of VS Code settings"),
    ]
    assert migrate({"extensions": ["a"], "customizations": "x"})[1] == [
        (("customizations",), "must be an object to take the legacy extensions/settings/devPort")
    ]
    assert migrate({"settings": {"a": 1}, "customizations": {"vscode": []}})[1] == [
        (("customizations", "vscode"), "must be an object to take the legacy extensions/settings/devPort")
    ]


def test_docker_file_and_context_read_as_build() -> None:
    # The reference keeps `dockerFile` in its output and builds from it; the typed model says what it means.
    config = {"dockerFile": "Dockerfile", "context": "..", "build": {"args": {"A": "1"}, "target": "dev"}}
    assert build_source(config) == DockerfileSource(
        dockerfile="Dockerfile", context="..", args={"A": "1"}, target="dev"
    )
