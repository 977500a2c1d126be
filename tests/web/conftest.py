"""Fixtures for the dashboard: the harness app on a real loopback port, and Debian's Chromium via Playwright."""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn

from tests.harness import Harness, make_harness
from tests.live import free_port

CHROMIUM = "/usr/bin/chromium"
# Nothing but loopback: no Google services, no QUIC probes, no component updates.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PASSWORD = "correct-horse-battery"


@pytest.fixture
def wh(tmp_path: Path, database_url: str) -> Iterator[Harness]:
    harness = make_harness(tmp_path, database_url)
    yield harness
    harness.close()


@pytest.fixture
def served(wh: Harness) -> Iterator[str]:
    """The harness's app on a real loopback port (its lifespan already runs in the harness)."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(wh.app, host="127.0.0.1", port=port, lifespan="off", log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


@pytest.fixture(scope="session")
def chromium() -> Iterator[object]:
    if shutil.which(CHROMIUM) is None:
        # scripts/test.sh installs Chromium and sets this: there a missing browser fails the run.
        if os.environ.get("DOCKYARD_REQUIRE_DOCKER"):
            pytest.fail("Debian's chromium is missing, but scripts/test.sh should have installed it")
        pytest.skip("Debian's chromium is not installed (scripts/test.sh installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()
