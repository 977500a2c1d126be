"""The in-workspace agent.

`agent.py` is a standalone script (standard library only, Python 3.9+) that the runtime copies into each
workspace; nothing here imports it. `AGENT_FILE` is where to copy it from.
"""

from __future__ import annotations

from pathlib import Path

AGENT_FILE = Path(__file__).with_name("agent.py")
