from __future__ import annotations

import pytest

from dockyard.templates.render import unquoted

BARE = "where `| quote` does not protect it; write it as a bare word"


@pytest.mark.parametrize(
    "script",
    [
        "echo {{ parameters.x | quote }}",
        'echo "a" {{ parameters.x | quote }} "b"',
        "x=$(echo {{ parameters.x | quote }})",
        "echo a#b {{ parameters.x | quote }}",
        'echo it\\"s {{ parameters.x | quote }}',
        "cat <<< {{ parameters.x | quote }}",
        "cat <<-'END' > f\n\tx {{ workspace.name }}\n\tEND\necho {{ parameters.x | quote }}",
        'echo "{{ workspace.name }}" "{{ parameters.n | int }}" {{ owner.username }} {{ "literal" }}',
        "{% if parameters.x %}git clone -- {{ parameters.x | quote }}{% endif %}",
        "{% for t in parameters.tags %}echo {{ t | quote }}{% endfor %}",
        "echo {{ parameters.brnach",  # a syntax error is rendering's to report
    ],
)
def test_safe_scripts(script: str) -> None:
    assert unquoted(script) == []


@pytest.mark.parametrize(
    ("script", "problem"),
    [
        (
            "echo {{ parameters.x }}",
            "line 1: parameters.x is not shell-quoted; write {{ parameters.x | quote }}",
        ),
        (
            "echo {{ owner.email }}",
            "line 1: owner.email is not shell-quoted; write {{ owner.email | quote }}",
        ),
        ("echo {{ parameters.x ~ 'y' }}", "line 1: an expression is not shell-quoted; end it with `| quote`"),
        ('echo "{{ parameters.x | quote }}"', f"line 1: parameters.x is inside double quotes, {BARE}"),
        ("echo '{{ parameters.x | quote }}'", f"line 1: parameters.x is inside single quotes, {BARE}"),
        ("true\n# see {{ parameters.x | quote }}", f"line 2: parameters.x is inside a comment, {BARE}"),
        (
            "cat <<EOF\n{{ parameters.x | quote }}\nEOF",
            f"line 2: parameters.x is inside a here-document, {BARE}",
        ),
        (
            "cat <<'E'\n{{ parameters.x | quote }}\nE",
            f"line 2: parameters.x is inside a here-document, {BARE}",
        ),
    ],
)
def test_refused_scripts(script: str, problem: str) -> None:
    assert unquoted(script) == [problem]
