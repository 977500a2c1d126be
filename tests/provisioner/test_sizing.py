"""How many provisioner workers a process runs (`--provisioner-workers auto`, a number, or 0)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from dockyard.cli.main import app
from dockyard.provisioner.sizing import (
    IDLE_POLLS_PER_SECOND,
    MAX_WORKERS,
    MIN_WORKERS,
    parse_workers,
    poll_interval,
    worker_count,
)


@pytest.mark.parametrize(("cpus", "expected"), [(0, MIN_WORKERS), (1, 32), (2, 64), (4, MAX_WORKERS)])
def test_auto_follows_the_hosts_cores_within_bounds(cpus: int, expected: int) -> None:
    assert worker_count(None, cpus=cpus) == expected


def test_a_burst_of_fifty_finds_a_worker_each_on_two_cores() -> None:
    assert worker_count(None, cpus=2) >= 50


@pytest.mark.parametrize(("workers", "seconds"), [(1, 1.0), (16, 1.0), (32, 2.0), (64, 4.0)])
def test_idle_workers_together_poll_the_queue_at_most_sixteen_times_a_second(
    workers: int, seconds: float
) -> None:
    assert poll_interval(workers) == seconds
    assert workers / poll_interval(workers) <= max(IDLE_POLLS_PER_SECOND, workers)


def test_a_number_is_taken_as_given_and_auto_is_none() -> None:
    assert worker_count(0, cpus=8) == 0
    assert worker_count(3, cpus=8) == 3
    assert [parse_workers(text) for text in ("auto", " AUTO ", "0", "12")] == [None, None, 0, 12]


@pytest.mark.parametrize("text", ["-1", "many", "2.5", ""])
def test_anything_else_is_refused_naming_the_value(text: str) -> None:
    with pytest.raises(ValueError, match="must be a whole number or 'auto'"):
        parse_workers(text)


def test_the_server_refuses_a_bad_count_before_starting(tmp_path: Path) -> None:
    result = CliRunner(env={"COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"}).invoke(
        app, ["server", "--data-dir", str(tmp_path), "--provisioner-workers", "lots"], catch_exceptions=False
    )
    assert result.exit_code == 2
    assert "--provisioner-workers" in result.output
    assert "must be a whole number or 'auto', not 'lots'" in result.output
    # Refused before anything was made: no database, no admin token.
    assert list(tmp_path.iterdir()) == []
