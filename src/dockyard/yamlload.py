"""Safe YAML loading that remembers where every value came from, so errors can name file and line."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import yaml

from dockyard.errors import Validation, ValidationFailed


class _NoAliasLoader(yaml.SafeLoader):
    """SafeLoader without aliases: `*ref` is how "billion laughs" documents blow up memory."""

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
            raise yaml.constructor.ConstructorError(
                None, None, "YAML aliases (*name) are not allowed in a template manifest", mark
            )
        node: yaml.Node | None = super().compose_node(parent, index)
        return node


def load(text: str, *, filename: str) -> tuple[Any, yaml.Node | None]:
    """Parse one YAML document; returns the data and its node tree (for line lookups)."""
    loader = _NoAliasLoader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        problem = " ".join(p for p in (exc.context, exc.problem) if p) or "invalid YAML"
        raise ValidationFailed(
            f"{filename} is not valid YAML.",
            [Validation("(yaml)", problem, file=filename, line=line)],
        ) from exc
    except yaml.YAMLError as exc:
        raise ValidationFailed(
            f"{filename} is not valid YAML.", [Validation("(yaml)", str(exc), file=filename)]
        ) from exc
    finally:
        loader.dispose()
    return data, node


def line_of(node: yaml.Node | None, path: Sequence[str | int]) -> int | None:
    """The 1-based line of the deepest node along `path` that exists."""
    if node is None:
        return None
    line = node.start_mark.line + 1
    for part in path:
        child: yaml.Node | None = None
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode) and key.value == str(part):
                    child = value
                    line = key.start_mark.line + 1
                    break
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
            child = node.value[part]
            line = child.start_mark.line + 1
        if child is None:
            break
        node = child
    return line
