"""`dockyard --help`: the command list, drawn in the panels Typer draws for every other help page, on the
standard library alone.

Typer's help pages import Typer, Rich, a Markdown parser and pygments: about a quarter of a second before a line
is printed. The top-level page lists only the command table (cli/commands.py) and the root options, so
`dockyard.cli.entry` prints it from here before any of that is imported, and the Typer app prints the same text
(`DockyardGroup.format_help`) when it shows the page itself (`dockyard` with no command).
"""

from __future__ import annotations

import contextlib
import os
import sys
import textwrap
from collections.abc import Callable
from typing import TextIO

from dockyard.cli.commands import COMMANDS, DEBUG_HELP, SUMMARY

USAGE = "dockyard [OPTIONS] COMMAND [ARGS]..."
# Typer's own root options, with its words; a test holds them to the Typer app's.
ROOT_OPTIONS = (
    ("--debug", DEBUG_HELP),
    ("--install-completion", "Install completion for the current shell."),
    ("--show-completion", "Show completion for the current shell, to copy it or customize the installation."),
    ("--help", "Show this message and exit."),
)
_FLAG = "<bool>"
_DEFAULT_PANEL = "Commands"
_DEFAULT_WIDTH = 80
_NARROWEST_HELP = 20

# The styles of Typer's help (typer/rich_utils.py), as ANSI SGR codes.
_BOLD_CYAN, _BOLD_YELLOW, _YELLOW, _DIM, _BOLD = "1;36", "1;33", "33", "2", "1"


def width(stream: TextIO) -> int:
    """The width Rich would give Typer's help: TERMINAL_WIDTH, COLUMNS, the terminal's, else 80."""
    for name in ("TERMINAL_WIDTH", "COLUMNS"):
        value = os.environ.get(name, "")
        if value.isdigit() and int(value) > 0:
            return int(value)
    with contextlib.suppress(OSError, ValueError):  # no terminal behind it after all
        if stream.isatty():
            return os.get_terminal_size(stream.fileno()).columns
    return _DEFAULT_WIDTH


def colored(stream: TextIO) -> bool:
    """Whether Rich would colour Typer's help on `stream` (its NO_COLOR, FORCE_COLOR and TERM rules)."""
    if os.environ.get("NO_COLOR"):
        return False
    if os.environ.get("FORCE_COLOR") or os.environ.get("PY_COLORS"):
        return True
    try:
        tty = stream.isatty()
    except ValueError:
        return False
    return tty and os.environ.get("TERM", "") not in ("dumb", "unknown")


def render(*, columns: int = _DEFAULT_WIDTH, color: bool = False) -> str:
    """The whole page, `columns` wide (lines carry no trailing spaces)."""

    def style(text: str, code: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if color and text else text

    inner = max(columns - 4, 40)  # inside "│ " and " │"
    lines = ["", f" {style('Usage:', _YELLOW)} {style(USAGE, _BOLD)}", "", f" {SUMMARY}", ""]

    option_width = max(len(name) for name, _ in ROOT_OPTIONS)
    option_rows = [
        (style(name.ljust(option_width), _BOLD_CYAN) + "  " + style(_FLAG, _BOLD_YELLOW), help_text)
        for name, help_text in ROOT_OPTIONS
    ]
    lines += _panel("Options", option_rows, lead=option_width + 2 + len(_FLAG), inner=inner, style=style)

    panels: dict[str, list[tuple[str, str]]] = {_DEFAULT_PANEL: []}
    for name, entry in COMMANDS.items():
        panels.setdefault(entry.panel or _DEFAULT_PANEL, []).append((name, entry.summary))
    name_width = max(len(name) for name in COMMANDS)
    for title, commands in panels.items():
        rows = [(style(name.ljust(name_width), _BOLD_CYAN), summary) for name, summary in commands]
        lines += _panel(title, rows, lead=name_width, inner=inner, style=style)
    return "\n".join(line.rstrip() for line in lines) + "\n"


def _panel(
    title: str, rows: list[tuple[str, str]], *, lead: int, inner: int, style: Callable[[str, str], str]
) -> list[str]:
    """A rounded box titled `title`; each row is a styled first column `lead` wide and help text wrapped beside
    it (Rich, too, wraps at spaces and never at hyphens)."""
    help_width = max(inner - lead - 2, _NARROWEST_HELP)
    border = f"─ {title} "
    out = [style("╭" + border + "─" * max(inner + 2 - len(border), 0) + "╮", _DIM)]
    left, right = style("│", _DIM) + " ", " " + style("│", _DIM)
    for first, help_text in rows:
        wrapped = textwrap.wrap(help_text, help_width, break_on_hyphens=False) or [""]
        for index, part in enumerate(wrapped):
            cell = first if index == 0 else " " * lead
            out.append(left + cell + "  " + part + " " * max(help_width - len(part), 0) + right)
    out.append(style("╰" + "─" * (inner + 2) + "╯", _DIM))
    return out


def show(stream: TextIO = sys.stdout) -> None:
    stream.write(render(columns=width(stream), color=colored(stream)))
    stream.flush()
