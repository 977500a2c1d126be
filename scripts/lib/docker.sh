# shellcheck shell=bash
# Docker engine and base image setup shared by scripts/install.sh and scripts/test.sh.
# Expects the caller's `step`, `note` and `die` functions, $VENV (the project's virtualenv), and
# scripts/lib/packages.sh sourced.

docker_answers() { docker version --format '{{.Server.Version}}' >/dev/null 2>&1; }

# Make sure a Docker engine answers: use one that is reachable (DOCKER_HOST or the default socket), else install
# Debian's docker.io when dockerd is missing and start dockerd detached.
ensure_docker_engine() {
    step "Docker engine"
    if docker_answers; then
        note "engine $(docker version --format '{{.Server.Version}}') answers"
        return
    fi
    if ! command -v dockerd >/dev/null || ! command -v docker >/dev/null; then
        [[ $EUID -eq 0 ]] || die "no Docker engine answers and dockerd is not installed; run as root to install docker.io"
        install_missing docker.io
    fi
    [[ $EUID -eq 0 ]] || die "no Docker engine answers; start dockerd (it needs root)"
    note "starting dockerd (log /var/log/dockerd.log)"
    # setsid: dockerd outlives this script; nothing on these machines starts it at boot.
    setsid dockerd >>/var/log/dockerd.log 2>&1 </dev/null &
    for _ in $(seq 150); do
        docker_answers && break
        sleep 0.2
    done
    docker_answers || {
        tail -n 20 /var/log/dockerd.log >&2
        die "dockerd did not answer within 30 s; see /var/log/dockerd.log"
    }
    note "engine $(docker version --format '{{.Server.Version}}') answers"
}

# Build dockyard/base:bookworm from Debian's packages (mmdebstrap + docker import) unless it exists.
ensure_base_image() {
    step "Base image dockyard/base:bookworm"
    if docker image inspect dockyard/base:bookworm >/dev/null 2>&1; then
        note "already built"
        return
    fi
    if ! command -v mmdebstrap >/dev/null; then
        [[ $EUID -eq 0 ]] || die "mmdebstrap is missing; run as root to install it"
        install_missing mmdebstrap
    fi
    note "building it from Debian's packages (about a minute the first time)"
    "$VENV/bin/dockyard" images build-base
}
