#!/usr/bin/env bash
# Set up this machine for Dockyard's tests and run every check: the README's second command, and what CI runs.
#
#   bash scripts/test.sh                  # everything (about 35 minutes on 2 cores the first time)
#   bash scripts/test.sh --fast           # leave out tests marked `slow` (the API fuzzer)
#   bash scripts/test.sh -- -x -k tokens  # arguments after `--` go to both pytest runs
#   bash scripts/test.sh --no-kubernetes  # leave out the Kubernetes cluster and its tests
#
# Setup, skipped when already satisfied so that a second run starts at once:
#   apt-get: postgresql (tests/pg.py starts a throwaway cluster with initdb/pg_ctl as the postgres user; the
#   Debian package's own cluster does not need to run), openssh-client, git, python3, python3-venv, curl;
#   docker-registry (a real OCI registry for the dev container feature tests; the tests run its binary on loopback);
#   uv (pip, into a small tools venv) when it is not on PATH; `uv sync --frozen` into .venv/.
# Checks, all run even when one fails: lock file current, ruff check, ruff format --check, mypy, the import
# rules of docs/ARCHITECTURE.md (import-linter, contracts in pyproject.toml), pytest on
# SQLite (the whole suite), pytest on PostgreSQL (the database-facing folders, without `sqlite_only` tests),
# pytest on Kubernetes (tests marked `kubernetes`, against the one-node cluster of scripts/kubernetes.sh, which
# is started in the background while the other checks run, then stopped at the end; the first run builds its
# binaries, about 10 minutes at low priority, and caches them in /var/cache/dockyard/kubernetes).
# The workspace images of the built-in code-server and desktop templates (`dockyard images build`, from Debian's
# mirrors, PyPI and npm; many minutes the first time, then loaded from /var/cache/dockyard/images) are built
# in the background from the start; their browser tests (tests/web/test_ide_browser.py) wait for the build.
# With the Kubernetes pass, the images of Dockyard on Kubernetes (scripts/kubernetes-images.sh: the server of this
# checkout and PostgreSQL; the slow layers cached in /var/cache/dockyard/images) are built in the background too.
# Exits non-zero when any of them fails.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
VENV=${UV_PROJECT_ENVIRONMENT:-$REPO/.venv}
FAST=0
# 1: build the cluster's binaries if they are not cached (10 minutes at low priority, overlapping the other
# checks: a fresh machine's whole run stays well within CI's time); auto: only if they are; 0: never.
KUBERNETES=${DOCKYARD_KUBERNETES:-1}
[[ $KUBERNETES == auto || $KUBERNETES == 0 ]] || KUBERNETES=1
PYTEST_ARGS=()
while [[ $# -gt 0 ]]; do
    case $1 in
        --fast) FAST=1 ;;
        --kubernetes) KUBERNETES=1 ;;
        --no-kubernetes) KUBERNETES=0 ;;
        --) shift; PYTEST_ARGS=("$@"); break ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "error: unknown option $1 (pytest arguments go after --)" >&2; exit 2 ;;
    esac
    shift
done
# The folders whose tests reach the database; the CLI tests talk to the API through the SDK only.
POSTGRES_PATHS=(tests/api tests/workspaces tests/store tests/accounts tests/templates tests/gateway tests/e2e tests/lifecycle tests/events tests/tunnel)

if [[ -t 1 ]]; then bold=$'\033[1m' red=$'\033[31m' green=$'\033[32m' plain=$'\033[0m'; else bold="" red="" green="" plain=""; fi
step() { printf '\n%s==> %s%s\n' "$bold" "$*" "$plain"; }
note() { printf '    %s\n' "$*"; }
die() {
    printf '%serror:%s %s\n' "$red" "$plain" "$*" >&2
    exit 1
}
now() { printf '%s' "${EPOCHREALTIME/,/.}"; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
STARTED=$(now)

# --- setup ------------------------------------------------------------------------------------------------------
step "System packages"
# shellcheck source=scripts/lib/packages.sh
source "$REPO/scripts/lib/packages.sh"
if has_apt; then
    # The OpenSSH client, sftp-server and rsync are the real clients of the SSH gateway tests.
    install_missing postgresql openssh-client openssh-sftp-server rsync git python3 python3-venv curl ca-certificates e2fsprogs mount chromium etcd-server openssl docker-registry
else
    note "no apt-get here; expecting PostgreSQL's initdb, ssh and git to be installed already"
fi
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || command -v initdb >/dev/null ||
    die "PostgreSQL's initdb is missing (apt-get install postgresql)"
[[ $EUID -ne 0 ]] || id postgres >/dev/null 2>&1 || die "the postgres user is missing (it comes with the postgresql package)"

# shellcheck source=scripts/lib/uv.sh
source "$REPO/scripts/lib/uv.sh"
find_python
ensure_uv

step "Dependencies (uv sync --frozen)"
# Compiled as the install does (scripts/install.sh): the tests start the CLI as a process hundreds of times.
"$UV" sync --frozen --quiet --compile-bytecode
"$VENV/bin/python" -m compileall -q "$REPO/src" "$REPO/sdk/src" >/dev/null
note "$("$VENV/bin/python" -V), $("$VENV/bin/pytest" --version 2>&1 | head -n 1)"

# The Docker tests (tests/runtimes, tests/e2e) run against a real engine and the base image.
# shellcheck source=scripts/lib/docker.sh
source "$REPO/scripts/lib/docker.sh"
ensure_docker_engine
ensure_base_image
# The engine is up now: a Docker test that cannot reach it must fail, not skip.
export DOCKYARD_REQUIRE_DOCKER=1

# --- checks -----------------------------------------------------------------------------------------------------
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
# Started first so that it overlaps with everything else; the builds hold a lock that the IDE tests wait on.
step "Workspace images code-server and desktop (in the background: dockyard images build)"
(
    started=$(now)
    status=0
    nice -n 10 "$VENV/bin/dockyard" images build desktop &&
        nice -n 10 "$VENV/bin/dockyard" images build code-server || status=$?
    elapsed "$started" >"$WORK/images.seconds"
    exit "$status"
) >"$WORK/images.log" 2>&1 &
IMAGES_PID=$!
# The cluster starts (and, when asked to, builds: about 10 minutes the first time, at low priority) while the
# other checks run.
K8S_PID=""
K8S_SKIPPED=""
if [[ $KUBERNETES == auto ]]; then
    if bash "$REPO/scripts/kubernetes.sh" cached >/dev/null 2>&1; then
        KUBERNETES=1
    else
        KUBERNETES=0
        K8S_SKIPPED="Kubernetes end-to-end tests skipped: the cluster's binaries are not cached in ${DOCKYARD_K8S_CACHE:-/var/cache/dockyard/kubernetes}; run \`bash scripts/test.sh --kubernetes\` (or DOCKYARD_KUBERNETES=1) to build them (10+ minutes) and run the tests"
    fi
fi
K8S_IMAGES_PID=""
if [[ $KUBERNETES -eq 1 ]]; then
    step "Kubernetes cluster (in the background: bash scripts/kubernetes.sh up)"
    bash "$REPO/scripts/kubernetes.sh" up >"$WORK/kubernetes-up.log" 2>&1 &
    K8S_PID=$!
    # The images of Dockyard on Kubernetes (tests/kubernetes/test_deploy.py): minutes once per uv.lock, then
    # loaded from /var/cache/dockyard/images; the server image of this checkout on top takes seconds.
    step "Dockyard's server and PostgreSQL images (in the background: bash scripts/kubernetes-images.sh)"
    UV=$UV nice -n 10 bash "$REPO/scripts/kubernetes-images.sh" >"$WORK/kubernetes-images.log" 2>&1 &
    K8S_IMAGES_PID=$!
    trap 'if [[ -n $K8S_PID ]]; then bash "$REPO/scripts/kubernetes.sh" down >/dev/null 2>&1 || true; fi; rm -rf "$WORK"' EXIT
fi
RESULTS=()
FAILED=0

# run_check NAME COMMAND...: runs it with its output shown and kept, and records "status, time, last line".
run_check() {
    local name=$1 start status summary log
    shift
    log=$WORK/check-${#RESULTS[@]}.log
    step "$name"
    printf '    $ %s\n' "$*"
    start=$(now)
    if "$@" 2>&1 | tee "$log"; then status=0; else status=${PIPESTATUS[0]}; fi
    # pytest's closing line ("12 passed, 1 skipped in 3.2s") or the tool's last words.
    summary=$(grep -E '^=*.*\b(passed|failed|errors?|no tests ran)\b.* in [0-9.]+s' "$log" | tail -n 1 | tr -d '=' || true)
    [[ -n $summary ]] || summary=$(grep -v '^\s*$' "$log" | tail -n 1 || true)
    if [[ $status -eq 5 && $name == *PostgreSQL* ]]; then
        # pytest's "no tests collected": nothing here touches the database yet, which is not a failure.
        status=0
    fi
    if [[ $status -ne 0 ]]; then FAILED=$((FAILED + 1)); fi
    RESULTS+=("$status|$(elapsed "$start")|$name|${summary:0:90}")
}

markers=(-m "not kubernetes")
[[ $FAST -eq 1 ]] && markers=(-m "not slow and not kubernetes")
# engine_only: the dev container builds and the agent in a container test the engine, not the database; they run
# once, in the SQLite pass (the PostgreSQL pass is for what the database changes).
postgres_markers=(-m "not sqlite_only and not engine_only and not kubernetes")
[[ $FAST -eq 1 ]] && postgres_markers=(-m "not sqlite_only and not engine_only and not slow and not kubernetes")

run_check "uv.lock matches pyproject.toml" "$UV" lock --check
run_check "ruff check" "$VENV/bin/ruff" check --output-format concise .
run_check "ruff format --check" "$VENV/bin/ruff" format --check .
run_check "mypy" "$VENV/bin/mypy"
run_check "import rules (lint-imports)" "$VENV/bin/lint-imports" --no-cache
run_check "pytest on SQLite" "$VENV/bin/pytest" -q "${markers[@]}" "${PYTEST_ARGS[@]}"
run_check "pytest on PostgreSQL" "$VENV/bin/pytest" -q --db postgres "${postgres_markers[@]}" \
    "${POSTGRES_PATHS[@]}" "${PYTEST_ARGS[@]}"

images_built() {
    local seconds
    seconds=$(cat "$WORK/images.seconds")
    grep -E '^(Image|Loading|Building|Saving|error)' "$WORK/images.log" || true
    if [[ $IMAGES_STATUS -ne 0 ]]; then
        tail -n 30 "$WORK/images.log"
        echo "error: dockyard images build failed"
        return 1
    fi
    echo "images ready after $seconds s (in the background)"
}
# The tests waited for the build already (its lock); this reports how it went.
IMAGES_STATUS=0
wait "$IMAGES_PID" || IMAGES_STATUS=$?
run_check "workspace images (background)" images_built

kubernetes_tests() {
    if [[ $K8S_STATUS -ne 0 ]]; then
        tail -n 30 "$WORK/kubernetes-up.log"
        echo "error: bash scripts/kubernetes.sh up failed"
        return 1
    fi
    if [[ $K8S_IMAGES_STATUS -ne 0 ]]; then
        tail -n 30 "$WORK/kubernetes-images.log"
        echo "error: bash scripts/kubernetes-images.sh failed"
        return 1
    fi
    echo "images $(tail -n 1 "$WORK/kubernetes-images.log") (built in the background)"
    local kubeconfig
    kubeconfig=$(tail -n 1 "$WORK/kubernetes-up.log")
    DOCKYARD_KUBECONFIG=$kubeconfig DOCKYARD_REQUIRE_KUBERNETES=1 \
        "$VENV/bin/pytest" -q -m kubernetes tests/kubernetes tests/runtimes/conformance "${PYTEST_ARGS[@]}"
}
if [[ -n $K8S_PID ]]; then
    # Waited for here: run_check runs its command in a pipeline's subshell, which cannot wait for it.
    K8S_STATUS=0
    wait "$K8S_PID" || K8S_STATUS=$?
    K8S_IMAGES_STATUS=0
    wait "$K8S_IMAGES_PID" || K8S_IMAGES_STATUS=$?
    run_check "pytest on Kubernetes" kubernetes_tests
fi

[[ -z $K8S_SKIPPED ]] || { step "pytest on Kubernetes"; note "$K8S_SKIPPED"; }

# --- summary ----------------------------------------------------------------------------------------------------
step "Summary ($(elapsed "$STARTED") s)"
for result in "${RESULTS[@]}"; do
    IFS='|' read -r status seconds name summary <<<"$result"
    if [[ $status -eq 0 ]]; then mark="${green}ok  ${plain}"; else mark="${red}FAIL${plain}"; fi
    printf '  %s  %-32s %7s s   %s\n' "$mark" "$name" "$seconds" "$summary"
done
passed=$((${#RESULTS[@]} - FAILED))
echo
echo "checks: $passed passed, $FAILED failed"
[[ -z $K8S_SKIPPED ]] || echo "$K8S_SKIPPED"
[[ $FAILED -eq 0 ]]
