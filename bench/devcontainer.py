"""Benchmark: `read-configuration` of the 274 devcontainer.json files of the reference corpus.

    .venv/bin/python bench/devcontainer.py                 # in-process rounds, then one CLI process per case
    .venv/bin/python bench/devcontainer.py --quick         # in-process rounds, and the CLI on 20 cases
    .venv/bin/python bench/devcontainer.py --processes 0   # in-process rounds only
    .venv/bin/python bench/devcontainer.py --reference /path/to/node_modules/.bin/devcontainer
    .venv/bin/python bench/devcontainer.py --processes 0 --up 3    # and `dockyard up` vs a plain template

With `--up N` a real `dockyard server` on the Docker engine times, N times each and alternating,
`dockyard up DIR` of a small folder whose devcontainer.json names `dockyard/base:bookworm` (its image layer
built once before, so cached) against `dockyard create --template base` of the same image: both CLI processes
that return when the workspace is ready. The target is up <= 1.2x create.

The corpus (`../shared/data/devcontainer-oracle/`, or `--corpus`) is copied to a temporary folder outside any git
work tree, as its README asks. Printed: the time to read all 274 cases in one process (best and median of
`--rounds`, and per case), checked against the reference's recorded output (a mismatch is reported and makes
`--check` fail); the time for `dockyard devcontainer read-configuration` run once per case, as a script would run
it (total, p50 and p95 per process); and with `--reference`, the same for the reference CLI
(`@devcontainers/cli`, which also asks the Docker engine for existing containers on each run). Per-process figures
include the CLI's start-up (Python and the CLI's imports), which dominates them; CPU time is printed next to wall
time because a busy 2-core machine stretches wall time.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from dockyard.templates.devcontainer import read_configuration  # noqa: E402
from dockyard.templates.devcontainer.workspace import git_root  # noqa: E402

NOT_PRODUCED = ("ociAuthDiagnostics",)


def find_corpus(given: str | None) -> Path:
    candidates = [
        given,
        ROOT.parent / "shared/data/devcontainer-oracle",
        ROOT.parent.parent / "shared/data/devcontainer-oracle",
    ]
    for candidate in candidates:
        if candidate and (Path(candidate) / "manifest.json").is_file():
            return Path(candidate)
    sys.exit("error: the devcontainer oracle corpus was not found; pass --corpus DIR")


def copy_corpus(corpus: Path, target: Path) -> list[str]:
    cases = [c["case"] for c in json.loads((corpus / "manifest.json").read_text())["cases"]]
    for case in cases:
        shutil.copytree(corpus / "cases" / case, target / case, ignore=shutil.ignore_patterns("expected.*"))
    return cases


def expected_text(corpus: Path, case: str, *, case_dir: Path, home: Path) -> str:
    text = (corpus / "cases" / case / "expected.json").read_text()
    text = text.replace("${CASE_DIR}", str(case_dir)).replace("${HOME}", str(home))
    expected = json.loads(text)
    for key in NOT_PRODUCED:
        expected.pop(key, None)
    return json.dumps(expected, separators=(",", ":"), ensure_ascii=False)


def in_process(
    cases: list[str], folder: Path, env: dict[str, str], rounds: int
) -> tuple[list[float], dict[str, str]]:
    durations = []
    outputs: dict[str, str] = {}
    for _ in range(rounds):
        start = time.perf_counter()
        for case in cases:
            outputs[case] = read_configuration(str(folder / case), env=env).reference_json()
        durations.append(time.perf_counter() - start)
    return durations, outputs


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def per_process(
    command: list[str], cases: list[str], folder: Path, env: dict[str, str]
) -> tuple[list[float], float]:
    """Wall time per process, and the CPU time all of them used (steadier than wall time on a busy machine)."""
    durations = []
    cpu_before = _children_cpu()
    for case in cases:
        start = time.perf_counter()
        done = subprocess.run(
            [*command, "read-configuration", "--workspace-folder", str(folder / case)],
            cwd=folder / case,
            env=env,
            capture_output=True,
            check=False,
        )
        durations.append(time.perf_counter() - start)
        if done.returncode != 0:
            sys.exit(f"error: {command[0]} failed on {case}: {done.stderr.decode()[-500:]}")
    return durations, _children_cpu() - cpu_before


def report_processes(label: str, measured: tuple[list[float], float]) -> tuple[float, float]:
    durations, cpu = measured
    ordered = sorted(durations)
    p95 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]
    total = sum(durations)
    print(
        f"{label}: {len(durations)} processes in {total:.2f} s wall, {cpu:.2f} s CPU; per process p50 "
        f"{statistics.median(durations) * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms, "
        f"{cpu / len(durations) * 1000:.0f} ms CPU"
    )
    return total, cpu


def time_processes(sample: list[str], folder: Path, env: dict[str, str], *, reference: str | None) -> None:
    dockyard = Path(sys.executable).parent / "dockyard"
    cli_env = {**env, "PATH": f"{dockyard.parent}:{env['PATH']}"}
    ours = report_processes(
        "dockyard devcontainer read-configuration",
        per_process([str(dockyard), "devcontainer"], sample, folder, cli_env),
    )
    if reference:
        theirs = report_processes(
            "reference devcontainer read-configuration", per_process([reference], sample, folder, env)
        )
        print(
            f"dockyard / reference, one process per case: {ours[0] / theirs[0]:.2f}x wall, "
            f"{ours[1] / theirs[1]:.2f}x CPU"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--corpus", help="the devcontainer-oracle folder")
    parser.add_argument("--rounds", type=int, default=5, help="in-process rounds over all cases (default 5)")
    parser.add_argument("--quick", action="store_true", help="run the CLI on 20 cases instead of all")
    parser.add_argument("--processes", type=int, help="run the CLI on this many cases (0: only in-process)")
    parser.add_argument("--reference", help="the reference CLI's `devcontainer` executable, to time it too")
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if any output differs from the reference's"
    )
    parser.add_argument(
        "--up", type=int, default=0, help="time `dockyard up` against a plain template N times"
    )
    args = parser.parse_args()
    if args.up:
        time_up(args.up)

    corpus = find_corpus(args.corpus)
    with tempfile.TemporaryDirectory(prefix="dockyard-bench-devcontainer-") as temp:
        folder = Path(temp) / "cases"
        folder.mkdir()
        if git_root(str(folder)) is not None:
            sys.exit(f"error: {folder} is inside a git work tree; set TMPDIR to a folder outside one")
        home = Path(temp) / "home"
        home.mkdir()
        cases = copy_corpus(corpus, folder)
        env = {"HOME": str(home), "LOCAL_ENV_TEST": "hello", "PATH": "/usr/local/bin:/usr/bin:/bin"}

        durations, outputs = in_process(cases, folder, env, args.rounds)
        mismatched = [
            c for c in cases if outputs[c] != expected_text(corpus, c, case_dir=folder / c, home=home)
        ]
        best, median = min(durations), statistics.median(durations)
        print(f"corpus: {len(cases)} cases from {corpus}")
        print(
            f"in one process: all {len(cases)} cases in {best * 1000:.0f} ms (best of {args.rounds}; "
            f"median {median * 1000:.0f} ms), {best / len(cases) * 1e6:.0f} us per case"
        )
        print(
            f"outputs equal to the reference's: {len(cases) - len(mismatched)} of {len(cases)}"
            + (f" (differ: {', '.join(mismatched)})" if mismatched else "")
        )

        count = args.processes if args.processes is not None else 20 if args.quick else len(cases)
        sample = cases[:: max(1, len(cases) // count)][:count] if count > 0 else []
        if sample:
            time_processes(sample, folder, env, reference=args.reference)
    if args.check and mismatched:
        sys.exit(1)


def time_up(rounds: int) -> None:
    sys.path.insert(0, str(ROOT / "bench"))
    from livesrv import start_live_server, stop_live_server

    dockyard = str(Path(sys.executable).parent / "dockyard")
    server = start_live_server(subnets="10.219.0.0/16")
    try:
        with tempfile.TemporaryDirectory(prefix="dockyard-bench-up-") as temp:
            home = Path(temp) / "home"
            home.mkdir()
            env = {"PATH": f"{Path(dockyard).parent}:/usr/local/bin:/usr/bin:/bin", "HOME": str(home)}
            repo = Path(temp) / "small-repo"
            (repo / ".devcontainer").mkdir(parents=True)
            (repo / ".devcontainer/devcontainer.json").write_text(
                '{"image": "dockyard/base:bookworm", "postCreateCommand": "true"}\n'
            )
            (repo / "README.md").write_text("a small repository\n")

            def run(*args: str) -> float:
                start = time.perf_counter()
                subprocess.run([dockyard, *args], env=env, check=True, capture_output=True)
                return time.perf_counter() - start

            run("login", server.url, "--token", server.token)
            warm = run("up", str(repo), "--name", "warm-up")  # builds the dev container layer once
            run("create", "--template", "base", "warm-plain")
            print(f"dockyard up, first (builds the image layer): {warm:.2f} s")
            up_times, plain_times = [], []
            for index in range(rounds):
                up_times.append(run("up", str(repo), "--name", f"up-{index}"))
                plain_times.append(run("create", "--template", "base", f"plain-{index}"))
            up, plain = statistics.median(up_times), statistics.median(plain_times)
            print(
                f"dockyard up (cached image) to ready: median {up:.2f} s of {rounds} "
                f"({', '.join(f'{t:.2f}' for t in up_times)})"
            )
            print(
                f"dockyard create --template base to ready: median {plain:.2f} s of {rounds} "
                f"({', '.join(f'{t:.2f}' for t in plain_times)})"
            )
            print(f"up / plain template: {up / plain:.2f}x (target <= 1.2x)")
    finally:
        stop_live_server(server)


if __name__ == "__main__":
    main()
