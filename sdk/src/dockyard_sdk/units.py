"""Durations ("4h", "1h30m") and byte sizes ("4Gi", "512M"), shared by the server, the SDK and the CLI."""

from __future__ import annotations

import re
from datetime import timedelta

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_DURATION_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}

_SIZE = re.compile(r"^(\d+(?:\.\d+)?)\s*([KMGTP]i?|[kmgtp]i?)?[Bb]?$")
_SIZE_FACTORS = {
    "": 1,
    "k": 1000,
    "m": 1000**2,
    "g": 1000**3,
    "t": 1000**4,
    "p": 1000**5,
    "ki": 1024,
    "mi": 1024**2,
    "gi": 1024**3,
    "ti": 1024**4,
    "pi": 1024**5,
}


def parse_duration(text: str) -> timedelta:
    """Parse Go-style durations: ``"90s"``, ``"30m"``, ``"4h"``, ``"1h30m"``, ``"2d"``.

    A bare number is read as hours, because that is what people type into a "TTL" box.
    """
    value = text.strip().lower()
    if not value:
        raise ValueError("empty duration")
    if re.fullmatch(r"\d+(\.\d+)?", value):
        return timedelta(hours=float(value))
    position = 0
    seconds = 0.0
    for match in _DURATION_PART.finditer(value):
        if match.start() != position:
            break
        seconds += float(match.group(1)) * _DURATION_SECONDS[match.group(2)]
        position = match.end()
    if position != len(value):
        raise ValueError(f"{text!r} is not a duration (use e.g. 90s, 30m, 4h, 1h30m, 2d)")
    return timedelta(seconds=seconds)


def format_duration(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds == 0:
        return "0s"
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


def parse_size(text: str | int | float) -> int:
    """Parse a byte size: ``4Gi`` (binary), ``4G`` (decimal), or a plain number of bytes."""
    if isinstance(text, bool):
        raise ValueError("a size must be a number or a string such as 4Gi")
    if isinstance(text, int | float):
        if text < 0:
            raise ValueError("a size cannot be negative")
        return int(text)
    match = _SIZE.match(text.strip())
    if not match:
        raise ValueError(f"{text!r} is not a size (use e.g. 512Mi, 4Gi, 10G)")
    number, unit = match.groups()
    return int(float(number) * _SIZE_FACTORS[(unit or "").lower()])
