"""Naming rules shared by the server, the CLI and the SDK so that all three reject the same names."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator

NAME_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,30}[a-z0-9])?$")
PARAMETER_NAME_RE = re.compile(r"^[a-z_][a-z0-9_]{0,63}$")


def check_name(value: str) -> str:
    if not NAME_RE.match(value):
        raise ValueError(
            f"{value!r} is not a valid name: use 1-32 characters from a-z, 0-9 and '-', "
            "not starting or ending with '-'"
        )
    return value


def check_parameter_name(value: str) -> str:
    if not PARAMETER_NAME_RE.match(value):
        raise ValueError(
            f"{value!r} is not a valid parameter name: use a-z, 0-9 and '_', starting with a letter"
        )
    return value


Name = Annotated[str, AfterValidator(check_name)]
ParameterName = Annotated[str, AfterValidator(check_parameter_name)]
