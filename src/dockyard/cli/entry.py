"""The `dockyard` program's entry point: the commands that must start fast go their own way before the rest of
the CLI is imported.

`ssh --stdio` (the ProxyCommand of every `ssh dockyard.NAME`, `cli/proxy.py`), `--help` (`cli/helptext.py`),
`list` (`cli/listing.py`), `create` (`cli/creation.py`) and `start`, `stop`, `restart` (`cli/transitions.py`) run on
the standard library alone; everything else, and any of these with arguments
they do not take, goes to the Typer app in `cli/main.py`, which also explains a bad argument.
"""

from __future__ import annotations

import sys


def main() -> None:
    argv = sys.argv[1:]
    if argv[:2] == ["ssh", "--stdio"]:
        from dockyard.cli import proxy  # the point of this module

        if proxy.parse_args(argv) is not None:
            sys.exit(proxy.main(argv))
    elif argv[:1] == ["list"]:
        from dockyard.cli import listing

        args = listing.parse_args(argv)
        if args is not None:
            sys.exit(listing.main(args))
    elif argv[:1] in (["start"], ["stop"], ["restart"]):
        from dockyard.cli import transitions

        transition = transitions.parse_args(argv)
        if transition is not None:
            sys.exit(transitions.main(transition))
    elif argv[:1] == ["create"]:
        from dockyard.cli import creation

        create = creation.parse_args(argv)
        if create is not None:
            code = creation.main(create)
            if code is not None:
                sys.exit(code)
            # The server refused the request as invalid: the Typer command validates it and says why.
    elif argv == ["--help"]:
        from dockyard.cli import helptext

        helptext.show(sys.stdout)
        # Then Click echoes the empty help its formatter got, as after Typer's own pages: one more line.
        sys.stdout.write("\n")
        sys.exit(0)
    from dockyard.cli.main import main as full

    full()
