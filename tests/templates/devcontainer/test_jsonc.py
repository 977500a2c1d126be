from __future__ import annotations

import pytest

from dockyard.templates.devcontainer.jsonc import MAX_DEPTH, JsoncError, parse


def test_comments_of_both_kinds_are_ignored() -> None:
    document = parse(
        """// leading
        {
          /* block
             over lines */ "image": "debian", // trailing
          "x": /* inline */ 1
        }
        /* after */"""
    )
    assert document.value == {"image": "debian", "x": 1}


def test_comment_markers_inside_strings_are_text() -> None:
    document = parse('{"url": "http://example.test/a", "glob": "/* not a comment */", "q": "say \\"//\\""}')
    assert document.value == {"url": "http://example.test/a", "glob": "/* not a comment */", "q": 'say "//"'}


def test_trailing_commas_at_every_level() -> None:
    document = parse('{"a": [1, [2, 3,], {"b": {"c": [],},},], "d": {"e": 1,},}')
    assert document.value == {"a": [1, [2, 3], {"b": {"c": []}}], "d": {"e": 1}}


def test_trailing_comma_followed_by_a_comment() -> None:
    assert parse('{"a": 1, // last\n}').value == {"a": 1}


@pytest.mark.parametrize(
    ("text", "line", "column", "message"),
    [
        ('{\n  "a": 1\n  "b": 2\n}', 3, 3, "expected ',' or '}' after property 'a', found '\"'"),
        ("[,]", 1, 2, "expected a value, found ','"),
        ('{,"a": 1}', 1, 2, "expected a property name in double quotes, found ','"),
        ('{"a": 1,,}', 1, 9, "expected a property name in double quotes, found ','"),
        ("{'a': 1}", 1, 2, 'expected a property name in double quotes, found "\'"'),
        ('{"a": 1} /* never closed', 1, 10, "unterminated block comment"),
        ('{"a": tru}', 1, 7, "expected a value, found 't'"),
        ('{"a": "line\nbreak"}', 1, 12, "a control character (such as a line break) in a string must be"),
        ('{"a": "open', 1, 7, "unterminated string"),
        ('{"a": "\\q"}', 1, 8, "invalid \\escape"),
        ('{"a": 1} {"b": 2}', 1, 10, "unexpected '{' after the end of the value"),
        ("// only a comment\n", 2, 1, "the file has no value (it is empty or only comments)"),
        ("", 1, 1, "the file has no value (it is empty or only comments)"),
        ('{"a": 01}', 1, 8, "expected ',' or '}' after property 'a', found '1'"),
    ],
)
def test_syntax_errors_name_line_and_column(text: str, line: int, column: int, message: str) -> None:
    with pytest.raises(JsoncError) as caught:
        parse(text)
    assert (caught.value.line, caught.value.column) == (line, column)
    assert caught.value.message.startswith(message)


def test_nesting_is_limited() -> None:
    parse("[" * MAX_DEPTH + "]" * MAX_DEPTH)
    with pytest.raises(JsoncError, match=f"nested more than {MAX_DEPTH} levels deep"):
        parse("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1))


def test_values_and_escapes_are_json() -> None:
    document = parse('{"n": -1.5e2, "i": 42, "f": 2.0, "t": true, "no": false, "z": null, "u": "\\u00e9\\n"}')
    assert document.value == {"n": -150, "i": 42, "f": 2, "t": True, "no": False, "z": None, "u": "é\n"}
    # Integral floats become integers, as JavaScript prints them.
    assert isinstance(document.value["f"], int)
    assert parse("0.5").value == 0.5


def test_byte_order_mark_is_skipped() -> None:
    assert parse('\ufeff{"a": 1}').value == {"a": 1}


def test_repeated_key_keeps_first_place_and_last_value() -> None:
    assert list(parse('{"a": 1, "b": 2, "a": 3}').value.items()) == [("a", 3), ("b", 2)]


def test_lines_of_properties_and_items() -> None:
    document = parse('{\n  "image": "x",\n  "mounts": [\n    "a",\n    {"target": "/t"}\n  ]\n}')
    assert document.line_of(("image",)) == 2
    assert document.line_of(("mounts",)) == 3
    assert document.line_of(("mounts", 1)) == 5
    assert document.line_of(("mounts", 1, "target")) == 5
    # A path the file does not have falls back to its nearest ancestor.
    assert document.line_of(("mounts", 1, "source")) == 5
    assert document.line_of(("nothing",)) is None
