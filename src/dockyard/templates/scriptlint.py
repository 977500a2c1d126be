"""Checking, at push, that a template's scripts can only receive parameter values as literal shell words.

`{{ value | quote }}` is one literal word only where the shell reads words: written bare. Inside double quotes
(`"{{ x | quote }}"`), single quotes, a here-document or a comment, the quoting characters it adds are literal
or end early, and `$(…)` in the value runs. So every `{{ … }}` in a script must be a value Dockyard checked
itself, a literal, a number (`| int`, `| float`), or `| quote` written as a bare word; anything else is refused
with its line and the fix. The shell reading here is a small approximation of POSIX sh's quoting rules (quotes,
backslashes, comments, here-documents), enough to tell which of those a `{{ … }}` sits in.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from jinja2 import TemplateError, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

_TAG = re.compile(r"\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}", re.S)
# Filters whose output is digits and signs whatever their input: harmless in any context.
_NUMERIC_FILTERS = {"int", "float"}
_QUOTE_FILTERS = {"quote", "shquote"}
# Values Dockyard itself checked (names and ids); everything else may come from whoever creates the workspace,
# or from a loop or `set` over such values.
_TRUSTED = {"workspace.name", "workspace.id", "workspace.owner", "owner.username"}
_WORD_END = set(" \t\n;&|<>()")


def problems(env: ImmutableSandboxedEnvironment, source: str) -> list[str]:
    """One message per `{{ … }}` in a shell script that could let a value's text become code."""
    if "{{" not in source:
        return []
    try:
        env.parse(source)
    except TemplateError:
        return []  # rendering reports syntax errors, with a better message
    shell = _Shell()
    found = []
    position = 0
    for match in _TAG.finditer(source):
        shell.feed(source[position : match.start()])
        position = match.end()
        tag = match.group(0)
        if not tag.startswith("{{"):
            continue
        line = source.count("\n", 0, match.start()) + 1
        kind, spelled = _classify(env, tag)
        if kind == "unquoted":
            found.append(
                f"line {line}: {spelled} is not shell-quoted; write {{{{ {spelled} | quote }}}}"
                if spelled
                else f"line {line}: an expression is not shell-quoted; end it with `| quote`"
            )
        elif kind == "quoted" and shell.context:
            found.append(
                f"line {line}: {spelled or 'a value'} is inside {shell.context}, where `| quote` does not "
                "protect it; write it as a bare word"
            )
        shell.feed("x")
    return found


def _classify(env: ImmutableSandboxedEnvironment, tag: str) -> tuple[str, str]:
    """("safe" | "quoted" | "unquoted", how the value is spelled) for one `{{ … }}`."""
    try:
        tree = env.parse(tag)
    except TemplateError:
        return "unquoted", ""
    outputs = list(tree.find_all(nodes.Output))
    expression = outputs[0].nodes[0] if outputs and outputs[0].nodes else None
    if expression is None or isinstance(expression, nodes.Const):
        return "safe", ""
    if isinstance(expression, nodes.Filter) and expression.name in _NUMERIC_FILTERS:
        return "safe", ""
    if isinstance(expression, nodes.Filter) and expression.name in _QUOTE_FILTERS:
        return "quoted", _spelled(expression.node) if expression.node is not None else ""
    spelled = _spelled(expression)
    return ("safe" if spelled in _TRUSTED else "unquoted"), spelled


def _spelled(node: nodes.Node) -> str:
    if isinstance(node, nodes.Name):
        return node.name
    if isinstance(node, nodes.Getattr):
        inner = _spelled(node.node)
        return f"{inner}.{node.attr}" if inner else ""
    if isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
        inner = _spelled(node.node)
        return f"{inner}[{node.arg.value!r}]" if inner else ""
    return ""


@dataclass
class _Shell:
    """Where the shell is in a script read so far: a bare word, or inside something that is not one."""

    state: str = "word"  # word | single | double | comment | heredoc | delimiter
    escaped: bool = False
    previous: str = "\n"
    delimiter: str = ""
    strip_tabs: bool = False
    pending: list[tuple[str, bool]] = field(default_factory=list)
    heredoc: tuple[str, bool] = ("", False)
    line: str = ""

    @property
    def context(self) -> str:
        return {
            "single": "single quotes",
            "double": "double quotes",
            "comment": "a comment",
            "heredoc": "a here-document",
        }.get(self.state, "")

    def feed(self, text: str) -> None:
        for char in text:
            self._step(char)
            self.previous = char

    def _step(self, char: str) -> None:
        if self.state == "heredoc":
            if char != "\n":
                self.line += char
                return
            delimiter, strip = self.heredoc
            if (self.line.lstrip("\t") if strip else self.line) == delimiter:
                self._next_heredoc()
            self.line = ""
        elif self.state == "delimiter":
            self._delimiter(char)
        elif self.escaped:
            self.escaped = False
        elif self.state == "single":
            if char == "'":
                self.state = "word"
        elif self.state == "double":
            if char == "\\":
                self.escaped = True
            elif char == '"':
                self.state = "word"
        elif self.state == "comment":
            if char == "\n":
                self.state = "word"
                self._next_heredoc()
        elif char == "\\":
            self.escaped = True
        elif char == "'":
            self.state = "single"
        elif char == '"':
            self.state = "double"
        elif char == "#" and self.previous in _WORD_END:
            self.state = "comment"
        elif char == "<" and self.previous == "<":
            self.state, self.delimiter, self.strip_tabs = "delimiter", "", False
        elif char == "\n":
            self._next_heredoc()

    def _delimiter(self, char: str) -> None:
        if not self.delimiter and char == "<":
            self.state = "word"  # `<<<`: a here-string, one word
        elif not self.delimiter and char == "-" and not self.strip_tabs:
            self.strip_tabs = True
        elif not self.delimiter and char in " \t":
            pass
        elif char in _WORD_END:
            self.pending.append((self.delimiter, self.strip_tabs))
            self.state = "word"
            if char == "\n":
                self._next_heredoc()
        elif char not in "'\"\\":
            self.delimiter += char

    def _next_heredoc(self) -> None:
        if self.pending:
            self.heredoc = self.pending.pop(0)
            self.state, self.line = "heredoc", ""
        else:
            self.state = "word"
