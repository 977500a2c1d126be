"""The `dockyard` command line. Client commands use only `dockyard_sdk`; `server` and `db` run the server."""

import sys

# httpx imports its own command line tool (click, Rich, pygments) with the package unless that import fails; a
# None entry makes it fail. It costs about a quarter of a second on every `dockyard` command otherwise.
if "httpx" not in sys.modules:
    sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
