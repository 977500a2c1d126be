"""`dockyard-sdk` is a distribution of its own: built as a wheel, installed into a fresh virtualenv, it works
without any of the server's dependencies."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVER_ONLY = ("fastapi", "sqlalchemy", "alembic", "docker", "asyncssh", "uvicorn", "typer", "rich", "yaml")

CHECK = f"""
import importlib.util, json
import dockyard_sdk
from dockyard_sdk import AsyncClient, Client, NotFound, RateLimited, Timeout, ValidationError, Workspace
from dockyard_sdk import models
client = Client("http://127.0.0.1:9", "dy_x")
try:
    client.create(42)
except TypeError as exc:
    refused = str(exc)
print(json.dumps({{
    "version": dockyard_sdk.__version__,
    "refused": refused,
    "present": [name for name in {SERVER_ONLY!r} if importlib.util.find_spec(name) is not None],
    "dockyard": importlib.util.find_spec("dockyard") is not None,
}}))
"""


def _uv() -> str:
    for candidate in (
        shutil.which("uv"),
        "/opt/dockyard-tools/bin/uv",
        str(Path.home() / ".local/share/dockyard-tools/bin/uv"),
    ):
        if candidate and Path(candidate).exists():
            return candidate
    pytest.fail("uv is not installed (scripts/test.sh installs it)")


@pytest.mark.timeout(300)
def test_the_wheel_installs_alone_in_a_fresh_virtualenv(tmp_path: Path) -> None:
    uv = _uv()
    built = subprocess.run(
        [uv, "build", "--wheel", "--out-dir", str(tmp_path / "dist"), str(ROOT / "sdk")],
        capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    [wheel] = list((tmp_path / "dist").glob("dockyard_sdk-*.whl"))
    venv = tmp_path / "venv"
    subprocess.run([uv, "venv", "--quiet", str(venv)], check=True, timeout=60)
    python = venv / "bin" / "python"
    installed = subprocess.run(
        [uv, "pip", "install", "--quiet", "--python", str(python), str(wheel)],
        capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert installed.returncode == 0, installed.stderr
    ran = subprocess.run([str(python), "-c", CHECK], capture_output=True, text=True, timeout=60)
    assert ran.returncode == 0, ran.stderr
    import json

    report = json.loads(ran.stdout)
    assert report == {
        "version": "0.1.0",
        "refused": "template must be a template id or name (a non-empty str)",
        "present": [],
        "dockyard": False,
    }
