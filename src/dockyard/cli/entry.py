"""The `dockyard` program's entry point: the commands that must start fast go their own way before the rest of
the CLI is imported.

`ssh --stdio` (the ProxyCommand of every `ssh dockyard.NAME`) runs on the standard library alone
(`cli/proxy.py`); everything else goes to the Typer app in `cli/main.py`.
"""

from __future__ import annotations

import sys


def main() -> None:
    argv = sys.argv[1:]
    if argv[:2] == ["ssh", "--stdio"]:
        from dockyard.cli import proxy  # the point of this module

        if proxy.parse_args(argv) is not None:
            sys.exit(proxy.main(argv))
    from dockyard.cli.main import main as full

    full()
