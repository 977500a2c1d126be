"""What client commands print: data on stdout (a Rich table or the SDK model's JSON), messages on stderr.

Messages go through `typer.echo`, not Rich, so that a server message holding `[brackets]` is never read as
markup and a long line is never re-wrapped.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Generic, TypeVar

import typer
from pydantic import BaseModel

from dockyard.cli.errors import error_lines
from dockyard_sdk.models import ValidationDetail

if TYPE_CHECKING:
    # Rich loads when a table is printed: messages, errors and JSON output never need it.
    from rich.console import Console, RenderableType
    from rich.table import Table

T = TypeVar("T")
_PIPE_WIDTH = 1000


class OutputFormat(StrEnum):
    TABLE = "table"
    JSON = "json"


OutputOption = Annotated[
    OutputFormat,
    typer.Option("--output", "-o", case_sensitive=False, help="table, or json: the API's own JSON."),
]


@dataclass(frozen=True)
class Column(Generic[T]):
    header: str
    value: Callable[[T], str]


def console() -> Console:
    # Built per call, not at import, so that COLUMNS and NO_COLOR are read when the output is printed.
    from rich.console import Console

    result = Console(highlight=False)
    if not result.is_terminal and "COLUMNS" not in os.environ:
        # A pipe has no width; cutting rows at Rich's default 80 columns would hide data from a script.
        result.width = _PIPE_WIDTH
    return result


def print_rich(*renderables: RenderableType) -> None:
    """Print Rich renderables to stdout without the padding Rich adds to the end of each line."""
    con = console()
    with con.capture() as capture:
        con.print(*renderables)
    for line in capture.get().splitlines():
        typer.echo(line.rstrip())


def print_json(value: BaseModel | Sequence[BaseModel]) -> None:
    data = (
        value.model_dump(mode="json")
        if isinstance(value, BaseModel)
        else [v.model_dump(mode="json") for v in value]
    )
    typer.echo(json.dumps(data, indent=2))


def table(columns: Sequence[Column[T]], rows: Iterable[T]) -> Table:
    from rich.table import Table
    from rich.text import Text

    result = Table(box=None, pad_edge=False, header_style="bold")
    for column in columns:
        result.add_column(column.header)
    for row in rows:
        result.add_row(*(Text(column.value(row)) for column in columns))
    return result


def fields(pairs: Sequence[tuple[str, str]]) -> Table:
    """A two-column "LABEL  value" block for one object."""
    from rich.table import Table
    from rich.text import Text

    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    for label, value in pairs:
        grid.add_row(label, Text(value))
    return grid


def emit(
    value: BaseModel | Sequence[BaseModel],
    output: OutputFormat,
    *,
    columns: Sequence[Column[T]],
    rows: Sequence[T],
    empty: str = "",
) -> None:
    """Print `value` as JSON, or `rows` as a table; `empty` goes to stderr when there are no rows."""
    if output is OutputFormat.JSON:
        print_json(value)
    elif not rows and empty:
        message(empty)
    else:
        print_rich(table(columns, rows))


def message(text: str) -> None:
    typer.echo(text, err=True)


def warning(text: str) -> None:
    typer.echo(f"warning: {text}", err=True)


def error(
    message: str, *, detail: str = "", validations: Sequence[ValidationDetail] = (), hint: str = ""
) -> None:
    typer.echo("\n".join(error_lines(message, detail=detail, validations=validations, hint=hint)), err=True)


def when(moment: datetime | None, *, never: str = "never") -> str:
    """A timestamp to the minute, in UTC so that output does not depend on where it runs."""
    if moment is None:
        return never
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%MZ")
