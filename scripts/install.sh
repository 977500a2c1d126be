#!/usr/bin/env bash
# Install Dockyard from this checkout and start its server (Debian 12 / Ubuntu, as root).
#
#   bash scripts/install.sh [--postgres] [--restart] [--listen HOST:PORT]
#
# What it does, skipping whatever is already in place, so that a second run is quick and changes nothing:
#   1. apt-get installs python3, python3-venv, git, curl, ca-certificates (and postgresql with --postgres);
#   2. installs uv (pip, into a small tools venv) when it is not on PATH;
#   3. `uv sync --frozen` installs Dockyard and its locked dependencies into .venv/;
#   4. links /usr/local/bin/dockyard to .venv/bin/dockyard;
#   5. starts `dockyard server` in the background, unless a server it started earlier is still healthy;
#   6. logs the CLI in with the admin token;
#   7. creates the workspace `dev` from the built-in `base` template (or starts it) and prints how to use it.
# Before 5 it makes sure a Docker engine answers (installing docker.io and starting dockerd if needed) and that
# the base image dockyard/base:bookworm exists (built from Debian's packages with mmdebstrap).
#
# Environment: DOCKYARD_DATA_DIR (default /var/lib/dockyard), DOCKYARD_LISTEN (default 127.0.0.1:3000),
# DOCKYARD_DATABASE_URL (default: SQLite in the data dir, or the database --postgres set up earlier).
set -euo pipefail
set -o errtrace # the ERR trap below also fires inside functions

usage() {
    cat <<'EOF'
Usage: bash scripts/install.sh [options]

Install Dockyard from this checkout and start its server; safe to run again.

Options:
  --postgres        use PostgreSQL: install it, start the local cluster, create a `dockyard` role and database
  --restart         restart the server even if it is running and healthy
  --listen H:P      address for the API (default 127.0.0.1:3000; use 0.0.0.0:3000 to serve other machines)
  --data-dir DIR    where Dockyard keeps its state (default /var/lib/dockyard)
  -h, --help        show this help
EOF
}

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${UV_PROJECT_ENVIRONMENT:-$REPO/.venv}
WITH_POSTGRES=0
RESTART=0
LISTEN=${DOCKYARD_LISTEN:-127.0.0.1:3000}
if [[ $EUID -eq 0 ]]; then
    DEFAULT_DATA_DIR=/var/lib/dockyard
    BIN_DIR=/usr/local/bin
else
    DEFAULT_DATA_DIR=$HOME/.local/share/dockyard
    BIN_DIR=$HOME/.local/bin
fi
DATA_DIR=${DOCKYARD_DATA_DIR:-$DEFAULT_DATA_DIR}

while [[ $# -gt 0 ]]; do
    case $1 in
        --postgres) WITH_POSTGRES=1 ;;
        --restart) RESTART=1 ;;
        --listen) LISTEN=${2:?--listen needs HOST:PORT}; shift ;;
        --listen=*) LISTEN=${1#*=} ;;
        --data-dir) DATA_DIR=${2:?--data-dir needs a folder}; shift ;;
        --data-dir=*) DATA_DIR=${1#*=} ;;
        -h | --help) usage; exit 0 ;;
        *) echo "error: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

DATA_DIR=$(realpath -m "$DATA_DIR")
# The system installation logs where admins look; any other data dir keeps its log beside its data.
if [[ $EUID -eq 0 && $DATA_DIR == "$DEFAULT_DATA_DIR" ]]; then
    LOG_DIR=/var/log/dockyard
else
    LOG_DIR=$DATA_DIR
fi
LOG_FILE=$LOG_DIR/server.log
PID_FILE=$DATA_DIR/server.pid
DB_URL_FILE=$DATA_DIR/database-url
PORT=${LISTEN##*:}
HOST=${LISTEN%:*}
HOST=${HOST#[}
HOST=${HOST%]}
case $HOST in "" | 0.0.0.0 | "::") CHECK_HOST=127.0.0.1 ;; *) CHECK_HOST=$HOST ;; esac
[[ $CHECK_HOST == *:* ]] && CHECK_HOST="[$CHECK_HOST]"
URL=http://$CHECK_HOST:$PORT

if [[ -t 2 ]]; then bold=$'\033[1m' plain=$'\033[0m'; else bold="" plain=""; fi
step() { printf '%s==> %s%s\n' "$bold" "$*" "$plain" >&2; }
note() { printf '    %s\n' "$*" >&2; }
warn() { printf 'warning: %s\n' "$*" >&2; }
die() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}

on_error() {
    local status=$? line=$1
    printf '\nerror: install failed (exit %s at scripts/install.sh line %s)\n' "$status" "$line" >&2
    if [[ -f $LOG_FILE ]]; then
        printf '\nlast lines of %s:\n' "$LOG_FILE" >&2
        tail -n 30 "$LOG_FILE" >&2 || true
    fi
    exit "$status"
}
trap 'on_error $LINENO' ERR

[[ $LISTEN == *:* && $PORT =~ ^[0-9]+$ ]] || die "--listen must be HOST:PORT, got '$LISTEN'"

# --- 1. system packages -----------------------------------------------------------------------------------------
# shellcheck source=scripts/lib/packages.sh
source "$REPO/scripts/lib/packages.sh"
# openssh-client: `dockyard ssh` runs OpenSSH through the gateway.
packages=(python3 python3-venv git curl ca-certificates openssh-client)
[[ $WITH_POSTGRES -eq 1 ]] && packages+=(postgresql)
step "System packages"
if has_apt; then
    install_missing "${packages[@]}"
else
    for cmd in python3 git curl; do
        command -v "$cmd" >/dev/null || die "$cmd is missing and this is not a Debian/Ubuntu system: install it first"
    done
    note "no apt-get here; using the python3, git and curl already installed"
fi

# shellcheck source=scripts/lib/uv.sh
source "$REPO/scripts/lib/uv.sh"
find_python

# --- 2. uv ------------------------------------------------------------------------------------------------------
ensure_uv

# --- 3. Dockyard into .venv -------------------------------------------------------------------------------------
step "Dockyard into $VENV"
cd "$REPO"
# --no-dev: a server needs no test tools. --inexact: leave a developer's test tools in place if .venv has them.
# --compile-bytecode, and compileall for Dockyard's own (editable) sources: every CLI command and every
# `ssh dockyard.<ws>` starts a Python process, which must not compile its imports from source each time when
# bytecode cannot be written (a read-only tree, PYTHONDONTWRITEBYTECODE).
"$UV" sync --frozen --no-dev --inexact --quiet --compile-bytecode
"$VENV/bin/python" -m compileall -q "$REPO/src" "$REPO/sdk/src" >/dev/null
DOCKYARD=$VENV/bin/dockyard
[[ -x $DOCKYARD ]] || die "$DOCKYARD is missing after uv sync"
note "$("$VENV/bin/python" -c 'import dockyard; print("dockyard", dockyard.__version__)')"

# --- 4. the command on PATH -------------------------------------------------------------------------------------
step "dockyard on PATH"
mkdir -p "$BIN_DIR"
link=$BIN_DIR/dockyard
if [[ -e $link && ! -L $link ]]; then
    warn "$link exists and is not a link; leaving it alone (use $DOCKYARD)"
else
    ln -sfn "$DOCKYARD" "$link"
    note "$link -> $DOCKYARD"
    case ":$PATH:" in *":$BIN_DIR:"*) ;; *) warn "$BIN_DIR is not on your PATH" ;; esac
fi

# --- Docker engine and base image --------------------------------------------------------------------------------
# shellcheck source=scripts/lib/docker.sh
source "$REPO/scripts/lib/docker.sh"
ensure_docker_engine
ensure_base_image

# --- PostgreSQL (optional) --------------------------------------------------------------------------------------
setup_postgres() {
    local line version cluster pgport status password
    line=$(pg_lsclusters -h 2>/dev/null | head -n 1 || true)
    if [[ -z $line ]]; then
        version=$(find /usr/lib/postgresql -mindepth 1 -maxdepth 1 -printf '%f\n' | sort -V | tail -n 1)
        [[ -n $version ]] || die "PostgreSQL is not installed"
        note "creating cluster $version/main"
        pg_createcluster "$version" main >/dev/null
        line=$(pg_lsclusters -h | head -n 1)
    fi
    read -r version cluster pgport status _ <<<"$line"
    if [[ $status != online* ]]; then
        note "starting PostgreSQL $version/$cluster"
        pg_ctlcluster "$version" "$cluster" start
    fi
    psql_admin() { runuser -u postgres -- psql -p "$pgport" -v ON_ERROR_STOP=1 -qtAX "$@"; }
    if [[ -s $DB_URL_FILE ]] && psql_admin -c "SELECT 1 FROM pg_database WHERE datname = 'dockyard'" | grep -q 1; then
        note "database dockyard already set up ($DB_URL_FILE)"
        return
    fi
    password=$("$python" -c 'import secrets; print(secrets.token_urlsafe(24))')
    if psql_admin -c "SELECT 1 FROM pg_roles WHERE rolname = 'dockyard'" | grep -q 1; then
        psql_admin -c "ALTER ROLE dockyard LOGIN PASSWORD '$password'"
    else
        psql_admin -c "CREATE ROLE dockyard LOGIN PASSWORD '$password'"
    fi
    if ! psql_admin -c "SELECT 1 FROM pg_database WHERE datname = 'dockyard'" | grep -q 1; then
        runuser -u postgres -- createdb -p "$pgport" -O dockyard dockyard
    fi
    (umask 077 && printf 'postgresql://dockyard:%s@127.0.0.1:%s/dockyard\n' "$password" "$pgport" >"$DB_URL_FILE")
    note "created role and database dockyard on port $pgport; URL in $DB_URL_FILE"
}

mkdir -p "$DATA_DIR"
chmod 700 "$DATA_DIR"
mkdir -p "$LOG_DIR"
if [[ $WITH_POSTGRES -eq 1 ]]; then
    step "PostgreSQL"
    [[ $EUID -eq 0 ]] || die "--postgres needs root (it starts the system cluster and creates a role)"
    setup_postgres
fi
database_url=${DOCKYARD_DATABASE_URL:-}
if [[ -z $database_url && -s $DB_URL_FILE ]]; then
    database_url=$(<"$DB_URL_FILE")
fi

# --- 5. the server ----------------------------------------------------------------------------------------------
healthy() { curl -fsS --max-time 2 "$URL/healthz" >/dev/null 2>&1; }

running_pid() {
    local pid
    [[ -s $PID_FILE ]] || return 1
    pid=$(<"$PID_FILE")
    # A pid can be reused after a reboot: only a dockyard process serving this data dir counts.
    [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 1
    tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null | grep -qxF -- "$DATA_DIR" || return 1
    echo "$pid"
}

stop_server() {
    local pid=$1
    note "stopping the server (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 150); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        warn "pid $pid did not stop in 15 s; killing it"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$PID_FILE"
}

wait_healthy() {
    local pid=$1 seconds=$2
    for _ in $(seq $((seconds * 5))); do
        healthy && return 0
        kill -0 "$pid" 2>/dev/null || return 2
        sleep 0.2
    done
    return 1
}

step "Server on $URL"
pid=$(running_pid || true)
if [[ -n $pid && $RESTART -eq 1 ]]; then
    stop_server "$pid"
    pid=""
fi
if [[ -n $pid ]]; then
    if wait_healthy "$pid" 10; then
        note "already running and healthy (pid $pid); --restart restarts it"
    else
        die "the server (pid $pid) is running but $URL/healthz does not answer; see $LOG_FILE, or rerun with --restart"
    fi
else
    if healthy; then
        die "something already answers on $URL, but not a server this script started (no live pid in $PID_FILE); stop it or pick another --listen"
    fi
    note "starting dockyard server (data dir $DATA_DIR, log $LOG_FILE)"
    printf '\n--- %s: scripts/install.sh starts dockyard server\n' "$(date -u +%FT%TZ)" >>"$LOG_FILE"
    # setsid: its own session, so the server outlives this shell and a Ctrl-C here does not reach it.
    # The database URL goes through the environment, not argv, so that its password stays out of `ps`.
    DOCKYARD_DATABASE_URL=$database_url setsid "$DOCKYARD" server --listen "$LISTEN" --data-dir "$DATA_DIR" \
        --log-format json >>"$LOG_FILE" 2>&1 </dev/null &
    pid=$!
    echo "$pid" >"$PID_FILE"
    if wait_healthy "$pid" 60; then
        note "healthy (pid $pid, pid file $PID_FILE)"
    else
        code=$?
        [[ $code -eq 2 ]] && reason="exited" || reason="did not answer $URL/healthz within 60 s"
        [[ $code -eq 1 ]] && stop_server "$pid"
        rm -f "$PID_FILE"
        printf 'error: the server %s; last lines of %s:\n' "$reason" "$LOG_FILE" >&2
        tail -n 40 "$LOG_FILE" >&2 || true
        trap - ERR
        exit 1
    fi
fi

TOKEN_FILE=$DATA_DIR/admin-token
PASSWORD_FILE=$DATA_DIR/admin-password
[[ -s $TOKEN_FILE ]] || die "the server is up but $TOKEN_FILE is missing; was this data dir set up by another database?"

# --- 6. the CLI -------------------------------------------------------------------------------------------------
step "CLI login"
if help=$("$DOCKYARD" login --help 2>&1); then
    if grep -q stdin <<<"$help"; then
        # `--token -` reads stdin: the token stays out of the process list.
        "$DOCKYARD" login "$URL" --token - <"$TOKEN_FILE"
    else
        "$DOCKYARD" login "$URL" --token "$(<"$TOKEN_FILE")"
    fi
else
    warn "this build of the CLI has no \`dockyard login\` yet; skipped (log in later with the command below)"
fi

# --- 7. a workspace -----------------------------------------------------------------------------------------------
step "Workspace dev (template base)"
workspace_json() { "$DOCKYARD" show dev -o json 2>/dev/null; }
field() { "$VENV/bin/python" -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }
if current=$(workspace_json); then
    state=$(field status <<<"$current")
    case $state in
        running) note "already running" ;;
        stopped | failed | canceled)
            note "it is $state; starting it"
            "$DOCKYARD" start dev
            ;;
        *) note "it is $state" ;;
    esac
else
    "$DOCKYARD" create dev --template base
fi
current=$(workspace_json) || die "workspace dev was not created; see \`dockyard logs dev\`"
step "SSH into dev"
# The same path a user takes: OpenSSH with the CLI's certificate, through `dockyard ssh --stdio`.
if answer=$("$DOCKYARD" ssh dev -- echo ssh-ok 2>&1) && [[ $answer == *ssh-ok* ]]; then
    note "\`dockyard ssh dev\` works"
else
    warn "\`dockyard ssh dev\` failed: $answer"
fi
WORKSPACE_ID=$(field id <<<"$current")
WORKSPACE_STATUS=$(field status <<<"$current")

trap - ERR
again="bash $REPO/scripts/install.sh"
[[ $LISTEN != 127.0.0.1:3000 ]] && again+=" --listen $LISTEN"
[[ $DATA_DIR != "$DEFAULT_DATA_DIR" ]] && again+=" --data-dir $DATA_DIR"
cat <<EOF

Dockyard is running at $URL   (pid $(<"$PID_FILE"), log $LOG_FILE)

  Data dir         $DATA_DIR   ($([[ -n $database_url ]] && echo "PostgreSQL, URL in $DB_URL_FILE" || echo "SQLite: $DATA_DIR/dockyard.db"))
  Admin user       admin
  Admin password   $PASSWORD_FILE
  Admin API token  $TOKEN_FILE

  Workspace dev    $WORKSPACE_STATUS   (dockyard show dev)

Try:
  dockyard ssh dev                            # a shell in the workspace, through the SSH gateway
  dockyard exec dev -- uname -a               # a command over the API; its exit code is yours
  dockyard config-ssh --yes && ssh dockyard.dev   # plain OpenSSH, VS Code Remote-SSH, JetBrains Gateway
  dockyard port-forward dev --tcp 8080:8080   # a workspace port on localhost
  dockyard list
  dockyard stop dev && dockyard start dev     # the home directory is kept
  dockyard create agent-1 --template ai-agent-sandbox --param task="fix the flaky test" --ttl 2h
  dockyard templates list
  curl -H "Authorization: Bearer \$(cat $TOKEN_FILE)" $URL/api/v2/templates

  Log in elsewhere:  dockyard login $URL --token -  < $TOKEN_FILE
  API docs:          $URL/api/v2/docs
  Stop the server:   kill \$(cat $PID_FILE)
  Restart it:        $again --restart
EOF
