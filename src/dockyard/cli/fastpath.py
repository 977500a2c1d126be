"""How the standard-library commands (`list`, `create`, `start`, `stop`, `restart`) run before Typer is imported: one
connection to the logged-in server, and the same `error: …` lines and exit codes as the Typer commands."""

from __future__ import annotations

import sys
from collections.abc import Callable

from dockyard.cli.errors import CliError, error_lines, unreachable
from dockyard_sdk.plain import PlainClient


def run(work: Callable[[PlainClient], None]) -> int:
    """Exit code 0, 1 after an `error: …` on stderr, or 130 on Ctrl-C."""
    from dockyard.cli import config
    from dockyard_sdk.errors import ApiError, ConnectionFailed, Timeout

    try:
        credentials = config.credentials()
        try:
            plain = PlainClient(credentials.url, credentials.token)
        except ValueError as exc:  # a URL that is not http(s)
            raise CliError(str(exc), hint="run `dockyard login URL` with an http:// or https:// URL") from exc
        with plain as client:
            try:
                work(client)
            except ConnectionFailed as exc:
                raise unreachable(credentials.url, exc) from exc
    except ApiError as exc:
        _print(error_lines(exc.message, detail=exc.detail, validations=exc.validations, hint=exc.hint))
        return 1
    except CliError as exc:
        return report(exc)
    except Timeout as exc:
        _print(error_lines(str(exc)))
        return 1
    except BrokenPipeError:
        return 0  # `dockyard list | head`: not an error
    except KeyboardInterrupt:
        return 130
    return 0


def report(exc: CliError) -> int:
    """Print a `CliError` as the Typer commands print it; exit code 1."""
    _print(error_lines(exc.message, detail=exc.detail, validations=exc.validations, hint=exc.hint))
    return 1


def _print(lines: list[str]) -> None:
    sys.stderr.write("\n".join(lines) + "\n")
    sys.stderr.flush()
