"""How exec output bytes become the result's text: exact in base64, or UTF-8 with a flag when it was lossy."""

from __future__ import annotations

import pytest

from dockyard.tunnel.streams import encode_output


@pytest.mark.parametrize(
    ("data", "truncated", "expected"),
    [
        (b"plain\n", False, ("plain\n", False)),
        (b"caf\xc3\xa9", False, ("café", False)),
        (b"\xff\xfe", False, ("\ufffd\ufffd", True)),
        # A character cut at max_output_bytes: the half is dropped, nothing was lost to decoding.
        (b"caf\xc3", True, ("caf", False)),
        (b"\xe2\x82", True, ("", False)),
        (b"\xf0\x9f\x98", True, ("", False)),
        # The same half character when nothing was cut is in the output itself: lossy.
        (b"caf\xc3", False, ("caf\ufffd", True)),
        # A cut after a whole character keeps it.
        (b"\xe2\x82\xac", True, ("€", False)),
        (b"bad\xff", True, ("bad\ufffd", True)),
    ],
)
def test_utf8_text_says_when_it_is_lossy(data: bytes, truncated: bool, expected: tuple[str, bool]) -> None:
    assert encode_output(data, base64=False, truncated=truncated) == expected


def test_base64_is_exact() -> None:
    assert encode_output(b"\x00\xff\xc3", base64=True, truncated=True) == ("AP/D", False)
    assert encode_output(b"", base64=True, truncated=False) == ("", False)
