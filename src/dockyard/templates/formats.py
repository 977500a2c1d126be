"""String parameter formats: what a value must look like before it may reach a template's scripts.

Quoting (`{{ value | quote }}`) keeps a value one shell word; these checks keep that word from being read as an
option by the program it is handed to (`git clone --upload-pack=…`) or as a transport that runs commands
(`ext::sh -c …`). They also normalize: `github.com/org/backend`, as the product brief writes a repository,
becomes `https://github.com/org/backend`.
"""

from __future__ import annotations

import re

from dockyard_sdk.manifest import ParameterFormat

# Transports git runs without asking; `ext::`, `fd::` and other remote helpers (`<name>::<address>`) are not.
_SCHEMES = ("https", "http", "ssh", "git", "file")
_URL = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?P<rest>.*)$")
# user@host:path, as ssh and git write it; neither user nor host may start with `-` (ssh would read an option).
_SCP = re.compile(
    r"^(?:(?P<user>[A-Za-z0-9._][A-Za-z0-9._-]*)@)?(?P<host>[A-Za-z0-9][A-Za-z0-9.-]*):(?P<path>.+)$"
)
# A URL's authority: neither its user nor its host may start with `-` (ssh would read either as an option).
_HOST = re.compile(
    r"^(?:[A-Za-z0-9._~%!$&'()*+,;=][A-Za-z0-9._~%!$&'()*+,;=:-]*@)?"
    r"(?:[A-Za-z0-9][A-Za-z0-9.-]*|\[[0-9A-Fa-f:.]+\])(?::\d{1,5})?$"
)
# A host written without a scheme: it must look like a domain name (a dot) or be localhost.
_BARE_HOST = re.compile(
    r"^(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.)+[A-Za-z]{2,}(?::\d{1,5})?$|^localhost(?::\d{1,5})?$"
)
_LOCAL = ("/", "./", "../", "~/")
# git check-ref-format's rules, as one pattern of forbidden pieces.
_BAD_REF = re.compile(
    r"(^[-./])|(\.\.)|(//)|(@\{)|([\x00-\x20\x7f~^:?*\[\\])|([./]$)|(\.lock$)|(/\.)|(\.lock/)"
)

_URL_HELP = (
    "expected https://host/org/repo, host/org/repo, user@host:org/repo or a local path such as /srv/repo"
)


def check(kind: ParameterFormat, value: str) -> str:
    """The value, normalized; raises ValueError naming what is wrong."""
    if kind == ParameterFormat.GIT_URL:
        return git_url(value)
    return git_ref(value)


def git_url(value: str) -> str:
    if value == "":
        return value
    if value.startswith("-"):
        raise ValueError(f"{value!r} starts with '-' and would be read as an option, not a repository")
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise ValueError("a repository URL cannot contain spaces or control characters")
    if "::" in value.split("/", 1)[0]:
        raise ValueError(f"{value!r} names a git remote helper; {_URL_HELP}")
    url = _URL.match(value)
    if url is not None:
        scheme = url["scheme"].lower()
        if scheme not in _SCHEMES:
            raise ValueError(
                f"{scheme}:// is not a git transport Dockyard allows (use {', '.join(_SCHEMES)})"
            )
        host = url["rest"].split("/", 1)[0]
        if scheme != "file" and not _HOST.match(host):
            raise ValueError(f"{host!r} is not a host name")
        return value
    if value.startswith(_LOCAL):
        return value
    scp = _SCP.match(value)
    if scp is not None and "/" not in value.split(":", 1)[0]:
        if scp["path"].startswith("-"):
            raise ValueError(f"the path {scp['path']!r} starts with '-'")
        return value
    host, _, path = value.partition("/")
    if _BARE_HOST.match(host) and path:
        return f"https://{value}"
    # Anything else is a path relative to the workspace's home, as git itself would read it.
    return value


def git_ref(value: str) -> str:
    if value == "":
        return value
    if value.startswith("-"):
        raise ValueError(f"{value!r} starts with '-' and would be read as an option, not a branch")
    bad = _BAD_REF.search(value)
    if bad is not None or len(value) > 250:
        raise ValueError(f"{value!r} is not a valid branch or tag name")
    return value
