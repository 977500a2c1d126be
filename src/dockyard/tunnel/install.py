"""The agent's program as the server ships it into workspaces: the script, its bytecode and how to launch it."""

from __future__ import annotations

import importlib.util
import os
import py_compile
from importlib import resources
from pathlib import Path

from dockyard.runtimes.plan import LAUNCHER


def install_agent(agent_dir: Path) -> Path:
    """Put this version's agent script where workspaces find it; running agents keep the copy they read.

    Its bytecode goes next to it, for workspaces whose Python is this server's version; hash-checked, so a
    stale or foreign file is ignored, and any other Python compiles the source as before.
    """
    agent_dir.mkdir(parents=True, exist_ok=True)
    # Workspace users read the agent through their mount: set, not left to the umask (which may be 000 or 077).
    os.chmod(agent_dir, 0o755)  # noqa: S103 - read by workspace users; the data dir around it is 0700
    # The mount point of each workspace's private link folder (tunnel/links.py): it must exist in this
    # read-only mount before a container can be started with the link mounted inside it.
    (agent_dir / "link").mkdir(exist_ok=True)
    os.chmod(agent_dir / "link", 0o755)  # noqa: S103 - an empty mount point
    source = resources.files("dockyard.agent").joinpath("agent.py").read_bytes()
    target = agent_dir / "agent.py"
    if not target.exists() or target.read_bytes() != source:
        staging = agent_dir / f".agent.py.{os.getpid()}"
        staging.write_bytes(source)
        staging.chmod(0o644)
        staging.replace(target)
    bytecode = Path(importlib.util.cache_from_source(str(target)))
    staging = bytecode.with_name(f".{bytecode.name}.{os.getpid()}")
    py_compile.compile(
        str(target),
        cfile=str(staging),
        doraise=True,
        invalidation_mode=py_compile.PycInvalidationMode.CHECKED_HASH,
    )
    bytecode.parent.chmod(0o755)
    staging.chmod(0o644)
    staging.replace(bytecode)
    _install_tools(agent_dir)
    return target


# `dockyard-agent report …` and git's credential helper in every workspace: the agent puts this folder first on
# its children's PATH. Launched as the agent is (runtimes/plan.py), from the server's bytecode: run as a script,
# Python compiled the whole agent at every call (0.3 s of CPU on a loaded host, paid by every task report and
# every git request that needs a credential, in each of a fleet's workspaces at once).
assert not set(LAUNCHER) & set('"$`\\'), "the launcher must survive the shell's double quotes"
AGENT_TOOL = f"""#!/bin/sh
exec python3 -I -c "{LAUNCHER}" "$(dirname "$0")/../agent.py" "$@"
"""


def _install_tools(agent_dir: Path) -> None:
    tools = agent_dir / "bin"
    tools.mkdir(exist_ok=True)
    tools.chmod(0o755)
    tool = tools / "dockyard-agent"
    if not tool.exists() or tool.read_text() != AGENT_TOOL:
        staging = tools / f".dockyard-agent.{os.getpid()}"
        staging.write_text(AGENT_TOOL)
        staging.chmod(0o755)
        staging.replace(tool)
