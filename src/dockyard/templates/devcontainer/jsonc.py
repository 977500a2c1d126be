"""JSONC as devcontainer.json uses it: JSON plus `//` and `/* */` comments and trailing commas.

Written here rather than taken from PyPI: `commentjson` has had no release since 2020 and `json5` reads a much
looser language (unquoted keys, single quotes), and neither says where a value was. This parser remembers the
offset of every property and array item, so an error further on can name the line. Strings are decoded by the
standard library's `scanstring` (the same code `json.loads` uses), so escapes mean exactly what they mean in
JSON; unlike the reference's error-tolerant parser, a syntax error is refused rather than guessed around.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from json import JSONDecodeError, decoder
from typing import Any

PathPart = str | int
Path = tuple[PathPart, ...]

# The C string scanner `json.loads` itself uses; typeshed does not declare it.
_scanstring: Callable[[str, int, bool], tuple[str, int]] = decoder.scanstring  # type: ignore[attr-defined]

# Deep enough for any real configuration; shallow enough that a hostile file cannot exhaust the stack.
MAX_DEPTH = 100

_SKIP = re.compile(r"(?:[ \t\r\n]+|//[^\n\r]*|/\*.*?\*/)*", re.DOTALL)
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?")
_LITERALS = {"true": True, "false": False, "null": None}
# Integers JavaScript (and so the reference) holds exactly; a float with an integral value within them is
# written as an integer, as JavaScript writes it.
_SAFE_INTEGER = 2**53


class JsoncError(ValueError):
    def __init__(self, message: str, *, line: int, column: int) -> None:
        super().__init__(f"line {line} column {column}: {message}")
        self.message = message
        self.line = line
        self.column = column


@dataclass(frozen=True)
class Document:
    """A parsed file: its value, and where each property and item of it starts."""

    value: Any
    text: str
    offsets: dict[Path, int] = field(repr=False)

    def line_of(self, path: Sequence[PathPart]) -> int | None:
        """The 1-based line of the property at `path`, or of its nearest ancestor the file has."""
        parts = tuple(path)
        while parts:
            offset = self.offsets.get(parts)
            if offset is not None:
                return line_at(self.text, offset)
            parts = parts[:-1]
        return None


def truthy(value: Any) -> bool:
    """JavaScript's truthiness of a parsed value, which the reference's checks use: `[]` and `{}` count,
    `""`, `0`, `false` and `null` do not."""
    if value is None or isinstance(value, bool):
        return bool(value)
    if isinstance(value, int | float):
        return value != 0
    return bool(value != "")


def line_at(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def _column_at(text: str, offset: int) -> int:
    return offset - (text.rfind("\n", 0, offset) + 1) + 1


def parse(text: str) -> Document:
    """Parse one JSONC document; raises `JsoncError` with line and column for anything that is not JSONC."""
    # A UTF-8 byte order mark is not part of the content (editors on Windows write one).
    start = 1 if text.startswith("\ufeff") else 0
    parser = _Parser(text)
    index = parser.skip(start)
    if index >= len(text):
        raise parser.error("the file has no value (it is empty or only comments)", index)
    value, index = parser.value(index, (), 0)
    index = parser.skip(index)
    if index < len(text):
        raise parser.error(f"unexpected {_describe(text, index)} after the end of the value", index)
    return Document(value=value, text=text, offsets=parser.offsets)


def _describe(text: str, index: int) -> str:
    if index >= len(text):
        return "end of file"
    char = text[index]
    return repr(char) if char.isprintable() else f"character U+{ord(char):04X}"


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.offsets: dict[Path, int] = {}

    def error(self, message: str, index: int) -> JsoncError:
        return JsoncError(message, line=line_at(self.text, index), column=_column_at(self.text, index))

    def skip(self, index: int) -> int:
        match = _SKIP.match(self.text, index)
        end = match.end() if match else index
        if self.text.startswith("/*", end):
            raise self.error("unterminated block comment", end)
        return end

    def value(self, index: int, path: Path, depth: int) -> tuple[Any, int]:
        text = self.text
        char = text[index] if index < len(text) else ""
        if char == "{":
            return self.object(index, path, depth + 1)
        if char == "[":
            return self.array(index, path, depth + 1)
        if char == '"':
            return self.string(index)
        match = _NUMBER.match(text, index)
        if match:
            return _number(match.group(0), is_float=bool(match.group(1) or match.group(2))), match.end()
        for word, literal in _LITERALS.items():
            if text.startswith(word, index):
                return literal, index + len(word)
        raise self.error(f"expected a value, found {_describe(text, index)}", index)

    def string(self, index: int) -> tuple[str, int]:
        try:
            return _scanstring(self.text, index + 1, True)
        except JSONDecodeError as exc:
            message = exc.msg.lower().removesuffix(" at").removesuffix(" starting")
            if message == "invalid control character":
                message = "a control character (such as a line break) in a string must be escaped, e.g. \\n"
            raise self.error(message, exc.pos) from None

    def object(self, index: int, path: Path, depth: int) -> tuple[dict[str, Any], int]:
        if depth > MAX_DEPTH:
            raise self.error(f"nested more than {MAX_DEPTH} levels deep", index)
        result: dict[str, Any] = {}
        index = self.skip(index + 1)
        if self.text.startswith("}", index):
            return result, index + 1
        while True:
            if not self.text.startswith('"', index):
                raise self.error(
                    f"expected a property name in double quotes, found {self._here(index)}", index
                )
            key_at = index
            key, index = self.string(index)
            index = self.skip(index)
            if not self.text.startswith(":", index):
                raise self.error(f"expected ':' after property {key!r}, found {self._here(index)}", index)
            index = self.skip(index + 1)
            member = (*path, key)
            # A repeated key keeps its first place and its last value, as JavaScript objects do.
            self.offsets.setdefault(member, key_at)
            result[key], index = self.value(index, member, depth)
            index = self.skip(index)
            if self.text.startswith(",", index):
                index = self.skip(index + 1)
                if self.text.startswith("}", index):
                    return result, index + 1
                continue
            if self.text.startswith("}", index):
                return result, index + 1
            raise self.error(f"expected ',' or '}}' after property {key!r}, found {self._here(index)}", index)

    def array(self, index: int, path: Path, depth: int) -> tuple[list[Any], int]:
        if depth > MAX_DEPTH:
            raise self.error(f"nested more than {MAX_DEPTH} levels deep", index)
        result: list[Any] = []
        index = self.skip(index + 1)
        if self.text.startswith("]", index):
            return result, index + 1
        while True:
            item = (*path, len(result))
            self.offsets[item] = index
            value, index = self.value(index, item, depth)
            result.append(value)
            index = self.skip(index)
            if self.text.startswith(",", index):
                index = self.skip(index + 1)
                if self.text.startswith("]", index):
                    return result, index + 1
                continue
            if self.text.startswith("]", index):
                return result, index + 1
            raise self.error(f"expected ',' or ']' after an item, found {self._here(index)}", index)

    def _here(self, index: int) -> str:
        return _describe(self.text, index)


def _number(literal: str, *, is_float: bool) -> int | float:
    if not is_float:
        return int(literal)
    number = float(literal)
    if math.isfinite(number) and number.is_integer() and abs(number) <= _SAFE_INTEGER:
        return int(number)
    return number
