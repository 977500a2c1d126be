"""Field descriptions for the OpenAPI document, read from the wire models' attribute docstrings.

The SDK's models leave their docstrings unread and their validators unbuilt until used, so that a CLI command
starts fast (see `dockyard_sdk.models.Model`). The server wants both: it reads every module's docstrings with one
parse, gives each field without an explicit `Field(description=...)` its docstring, and does this before a route
declares a model, since FastAPI builds a route's schemas when the route is declared.
"""

from __future__ import annotations

import ast
import inspect
import sys
from collections.abc import Iterable, Iterator
from functools import cache

from pydantic import BaseModel

from dockyard_sdk import manifest, models


@cache
def _module_docstrings(module_name: str) -> dict[str, dict[str, str]]:
    """Attribute docstrings per class name: a string statement right under an annotated assignment."""
    tree = ast.parse(inspect.getsource(sys.modules[module_name]))
    found: dict[str, dict[str, str]] = {}
    for node in ast.walk(tree):
        if not isinstance(node, ast.ClassDef):
            continue
        attributes: dict[str, str] = {}
        for statement, following in zip(node.body, node.body[1:], strict=False):
            if (
                isinstance(statement, ast.AnnAssign)
                and isinstance(statement.target, ast.Name)
                and isinstance(following, ast.Expr)
                and isinstance(following.value, ast.Constant)
                and isinstance(following.value.value, str)
            ):
                attributes[statement.target.id] = inspect.cleandoc(following.value.value)
        found.setdefault(node.name, attributes)
    return found


def _docstring(cls: type[BaseModel], field: str) -> str | None:
    for owner in cls.__mro__:
        if owner is BaseModel or not issubclass(owner, BaseModel):
            continue
        doc = _module_docstrings(owner.__module__).get(owner.__qualname__.rsplit(".", 1)[-1], {}).get(field)
        if doc is not None:
            return doc
    return None


def describe(classes: Iterable[type[BaseModel]]) -> None:
    """Give the fields of `classes` their attribute docstrings as descriptions (an explicit one wins), and build them.

    Every description is set before any model is built, since a model's schema embeds those of the models it
    holds. The server builds eagerly, as FastAPI expects: a type adapter it makes for a deferred model is built
    later, outside the warning filters FastAPI sets while declaring a route.
    """
    classes = list(classes)
    for cls in classes:
        cls.model_config["defer_build"] = False
        for name, field in cls.__pydantic_fields__.items():
            if field.description is None:
                field.description = _docstring(cls, name)
    for cls in classes:
        cls.model_rebuild(force=True)


def _wire_models() -> Iterator[type[BaseModel]]:
    for module in (manifest, models):
        for value in vars(module).values():
            if (
                isinstance(value, type)
                and issubclass(value, BaseModel)
                and value.__module__ == module.__name__
            ):
                yield value


def describe_wire_models() -> None:
    describe(_wire_models())
