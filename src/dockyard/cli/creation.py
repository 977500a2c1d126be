"""`dockyard create`, on the standard library alone, and the wait for a workspace's agent that it ends with.

A workspace is ready a second or less after its create request, and importing Typer, pydantic, httpx and Rich
took half a second more. So `dockyard.cli.entry` runs the forms `parse_args` understands here, with the SDK's
standard-library client (`dockyard_sdk.plain`): the build is followed to its end event as `start` follows it
(`transitions.wait_build`), then `GET /workspaces/{id}?wait=ready` returns when the agent has run its startup
script. The Typer command (`cli/workspaces.py`) takes every other form (`--help`, a value it refuses, a
terminal to draw a spinner on) and prints the same lines, built by the functions below and `cli/details.py`.

The request is not validated here: a 422 from the server hands the same arguments to the Typer command, which
validates them as it always does and names each bad value after its option (nothing was created).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any, NamedTuple

from dockyard.cli import details, transitions
from dockyard.cli.errors import CliError
from dockyard.cli.transitions import message, parse_time, seconds_text, segment
from dockyard_sdk.plain import PlainClient
from dockyard_sdk.units import format_duration, parse_duration

STARTUP_STAGE = "startup_script"
# Dev container lifecycle hooks (run by the control plane) log under their own stage, the clone under `git`.
HOOK_STAGE = "devcontainer"
GIT_STAGE = "git"
AGENT_STAGES = (STARTUP_STAGE, HOOK_STAGE)
SETTLED = frozenset({"ready", "start_error", "start_timeout"})
WAITING = "waiting for the agent"
LOG_TAIL = 20
# The longest single `wait=ready` read: between reads the agent's state and startup-script lines are shown.
# The read itself returns as soon as the agent is ready, so this is no delay at the end.
_READ_SECONDS = 1.0
_OPTIONS = {
    "--template": "template",
    "-t": "template",
    "--param": "params",
    "-p": "params",
    "--param-file": "param_file",
    "--ttl": "ttl",
    "--version": "version",
    "--timeout": "timeout",
    "--output": "output",
    "-o": "output",
}


class CreateArgs(NamedTuple):
    template: str
    name: str | None = None
    params: tuple[str, ...] = ()
    param_file: str | None = None
    ttl: str | None = None
    version: str | None = None
    wait: bool = True
    timeout: float = 30 * 60.0
    output: str = "table"


class Handover(Exception):
    """The server refused the request as invalid: the Typer command is to explain it (nothing was created)."""


# --- arguments ----------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str]) -> CreateArgs | None:
    """`create [NAME] --template T [-p K=V]… [--param-file F] [--ttl D] [--version V] [--wait|--no-wait]
    [--timeout D] [-o table|json]`; None for anything else (`--help`, a value Typer would refuse, a setting
    that makes Rich draw on a non-tty), which the Typer command then parses and explains."""
    if not argv or argv[0] != "create" or transitions.forced_terminal():
        return None
    values: dict[str, Any] = {"params": ()}
    timeout = "30m"
    rest = list(argv[1:])
    while rest:
        arg = rest.pop(0)
        if arg in ("--wait", "--no-wait"):
            values["wait"] = arg == "--wait"
            continue
        name, equals, value = arg.partition("=")
        option = _OPTIONS.get(name if equals and name.startswith("--") else arg)
        if option is None:
            if arg.startswith("-") or "name" in values:
                return None
            values["name"] = arg
            continue
        if not equals:
            if not rest or rest[0].startswith("-"):
                return None
            value = rest.pop(0)
        if option == "params":
            key, has_equals, _ = value.partition("=")
            if not has_equals or not key.strip():
                return None  # the Typer command names the bad --param
            values["params"] += (value,)
        elif option == "timeout":
            timeout = value
        elif option == "output":
            if value.lower() not in ("table", "json"):
                return None
            values["output"] = value.lower()
        elif option == "param_file" and os.path.isdir(value):
            return None  # Click refuses a folder before the command runs
        else:
            values[option] = value
    if "template" not in values:
        return None
    try:
        seconds = parse_duration(timeout).total_seconds()
    except ValueError:
        return None
    if seconds <= 0:
        return None
    return CreateArgs(**values, timeout=seconds)


def parameters(pairs: Sequence[str], file: Path | None) -> dict[str, Any]:
    """The values of --param-file, then the --param pairs over them (each already KEY=VALUE), as strings: the
    server coerces each to its parameter's type."""
    values = parameter_file(file) if file is not None else {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        values[key.strip()] = value
    return values


def parameter_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"cannot read {path}: {exc}") from exc
    import yaml  # only --param-file needs it, and it costs every command its import

    try:
        # BaseLoader keeps every scalar a string, as --param does: YAML's own typing would read a branch
        # named 1.10 as the number 1.1 before the server could type it by the parameter's declaration.
        data = yaml.load(text, Loader=yaml.BaseLoader)  # noqa: S506 - BaseLoader builds only str, list, dict
    except yaml.YAMLError as exc:
        raise CliError(f"{path} is not valid YAML", detail=str(exc)) from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise CliError(f"{path} must map parameter names to values", hint="e.g. `branch: main`")
    return dict(data)


# --- the lines both paths print -----------------------------------------------------------------------------


def creating_text(workspace: dict[str, Any]) -> str:
    return (
        f"Creating workspace {workspace['name']} from {workspace['template_name']} "
        f"{workspace['template_version_name']} (build #{workspace['latest_build']['number']})"
    )


def agent_state(agent: dict[str, Any] | None) -> str:
    if agent is None or agent.get("status") != "connected":
        return WAITING
    if agent.get("lifecycle") == "starting":
        return "running the startup script"
    return f"agent {agent.get('lifecycle')}"


def ready_text(name: str, agent: dict[str, Any]) -> str:
    started, ready = agent.get("started_at"), agent.get("ready_at")
    took = (
        f" (startup script took {seconds_text((parse_time(ready) - parse_time(started)).total_seconds())})"
        if started and ready
        else ""
    )
    return f"Workspace {name} is ready{took}"


def not_ready(
    name: str, agent: dict[str, Any], lines: Sequence[dict[str, Any]]
) -> tuple[str, list[dict[str, Any]]]:
    """Why the agent did not get ready, and the end of the output that tells (from the build's log `lines`)."""
    problem = (
        # The agent's own reason (a failed clone names the host and `dockyard git-auth add`) says more.
        f"{name} did not start: {agent['error']}"
        if agent.get("error")
        else f"the startup script of {name} failed with exit code {agent.get('exit_code')}"
        if agent.get("lifecycle") == "start_error"
        else f"the startup script of {name} did not finish within its startup timeout"
    )
    stages = (GIT_STAGE,) if agent.get("error") else AGENT_STAGES
    tail = [line for line in lines if line["stage"] in stages][-LOG_TAIL:]
    hook = next((line for line in reversed(tail) if line["stage"] == HOOK_STAGE), None)
    if hook is not None and agent.get("lifecycle") == "start_error" and "failed" in hook["output"]:
        # A dev container lifecycle hook failed, not the startup script; its own line names it.
        problem = f"{name}: {hook['output'].splitlines()[-1]}"
    return problem, tail


def tail_heading(agent: dict[str, Any]) -> str:
    return (
        "Last lines of the clone's output:"
        if agent.get("error")
        else "Last lines of the startup script's output:"
    )


def _log_text(line: dict[str, Any]) -> str:
    return transitions.log_line_text(parse_time(line["time"]), line["stage"], line["output"])


# --- the command --------------------------------------------------------------------------------------------


def wait_ready(client: PlainClient, workspace: dict[str, Any], *, ref: str, timeout: float) -> dict[str, Any]:
    """`connect.wait_ready(strict=True, whole_script=True)` without the wire models: every line of the startup
    script, then the workspace once its agent is ready; a startup script that failed is a `CliError`."""
    deadline = time.monotonic() + timeout
    name, build_id = workspace["name"], workspace["latest_build"]["id"]
    logs_path = f"/api/v2/workspacebuilds/{segment(build_id)}/logs"
    cursor, state = 0, ""
    current = workspace

    def show_new_lines() -> None:
        nonlocal cursor
        for line in client.get_json(logs_path, {"after": cursor}):
            cursor = line["id"]
            if line["stage"] in AGENT_STAGES:
                if shown is not None:
                    shown.add(_log_text(line))
                else:
                    message(_log_text(line))

    try:
        # On a terminal the agent's state is the spinner's label and its lines scroll under it; elsewhere each
        # change and line is printed.
        with transitions.display(lambda: f"{name}: {state or WAITING}") as shown:
            while current.get("agent") is None or current["agent"]["lifecycle"] not in SETTLED:
                if current["status"] != "running":
                    raise CliError(
                        f"{name} is {current['status']}, not running",
                        detail=current.get("status_reason") or "",
                        hint=f"see its builds with `dockyard builds {ref}`",
                    )
                if agent_state(current.get("agent")) != state:
                    state = agent_state(current.get("agent"))
                    if shown is None:
                        message(f"{name}: {state}")
                show_new_lines()
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise CliError(
                        f"timed out after {format_duration(timedelta(seconds=timeout))} waiting for the agent "
                        f"of {name} ({state})",
                        hint=f"see its log with `dockyard logs {ref}`",
                    )
                current = client.get_json(
                    f"/api/v2/workspaces/{segment(workspace['id'])}",
                    {"wait": "ready", "timeout": max(0.1, min(_READ_SECONDS, remaining))},
                )
            agent = current["agent"]
            if agent["lifecycle"] == "ready":
                show_new_lines()
    except KeyboardInterrupt:
        message("Stopped waiting for the agent.")
        raise
    if agent["lifecycle"] == "ready":
        message(ready_text(name, agent))
        return dict(current)
    problem, tail = not_ready(name, agent, client.get_json(logs_path))
    if tail:
        message(tail_heading(agent))
        for line in tail:
            message(_log_text(line))
    raise CliError(problem, hint=f"see the whole log with `dockyard logs {ref}`")


def run(client: PlainClient, args: CreateArgs, values: dict[str, Any]) -> None:
    started = time.monotonic()
    body = {
        "template": args.template,
        "name": args.name,
        "template_version_id": args.version,
        "parameters": values or None,
        "ttl": args.ttl,
    }
    from dockyard_sdk.errors import ValidationError

    try:
        created = client.post_json("/api/v2/workspaces", {k: v for k, v in body.items() if v is not None})
    except ValidationError as exc:
        raise Handover from exc
    message(creating_text(created))
    if args.wait:
        build = created["latest_build"]
        final = transitions.wait_build(client, created, build, ref=created["name"], timeout=args.timeout)
        # The build ends when the container runs; the workspace is usable once its agent has connected and run
        # the startup script.
        final = wait_ready(
            client,
            final,
            ref=created["name"],
            timeout=max(1.0, args.timeout - (time.monotonic() - started)),
        )
    else:
        final = created
        message(transitions.follow_text(created["name"]))
    if args.output == "json":
        sys.stdout.write(json.dumps(final, indent=2) + "\n")
        sys.stdout.flush()
    else:
        details.show(final)


def main(args: CreateArgs) -> int | None:
    """The command before Typer is imported: exit code 0, 1 after an `error: …` on stderr, 130 on Ctrl-C; None
    when the server refused the request as invalid, for the Typer command to explain."""
    from dockyard.cli import config, fastpath

    try:
        config.credentials()
    except CliError:
        return None  # the Typer command checks its arguments before it says that nobody is logged in
    try:
        values = parameters(args.params, Path(args.param_file) if args.param_file is not None else None)
    except CliError as exc:
        return fastpath.report(exc)
    try:
        return fastpath.run(lambda client: run(client, args, values))
    except Handover:
        return None
