#!/usr/bin/env bash
# Build the images of Dockyard on Kubernetes (deploy/kubernetes) into the local Docker engine, from the base image
# dockyard/base:bookworm, PyPI and Debian's packages (no registry is reachable here):
#
#   bash scripts/kubernetes-images.sh           # build what is missing; the last line: SERVER_IMAGE POSTGRES_IMAGE
#   bash scripts/kubernetes-images.sh --tags    # only print that line (nothing is built)
#
# dockyard/server:<tag>   this checkout's dockyard and dockyard-sdk wheels on dockyard/server-deps:<key>, a
#                         virtualenv with uv.lock's locked dependencies; <tag> is a digest of the sources. A new
#                         one replaces the checkout's older ones that no container uses.
# dockyard/postgres:<tag> Debian's postgresql-15 with a first-start entrypoint (deploy/images/postgres).
#
# The slow images (the dependencies, keyed by uv.lock, and PostgreSQL) are kept as `docker save` archives in
# $DOCKYARD_IMAGE_CACHE (default /var/cache/dockyard/images) and loaded from there into a fresh engine; the server
# image on top of them takes seconds. A one-node cluster whose kubelet uses this engine (scripts/kubernetes.sh)
# runs them as they are, with imagePullPolicy Never or IfNotPresent; elsewhere, push them to your registry.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
CACHE=${DOCKYARD_IMAGE_CACHE:-/var/cache/dockyard/images}
BASE=dockyard/base:bookworm
RECIPES=$REPO/deploy/images
UV=${UV:-$(command -v uv || echo /opt/dockyard-tools/bin/uv)}

note() { printf '    %s\n' "$*" >&2; }
die() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}
digest() { sha256sum | cut -c1-12; }

docker image inspect "$BASE" >/dev/null 2>&1 || die "the base image $BASE is missing (dockyard images build-base)"
base_key=$(docker image inspect "$BASE" --format '{{index .Config.Labels "dockyard.rootfs"}}')
[[ -n $base_key && $base_key != "<no value>" ]] || base_key=$(docker image inspect "$BASE" --format '{{.Id}}')

deps_key=$(cat uv.lock "$RECIPES/server/Dockerfile.deps" <(echo "$base_key") | digest)
# Every file that shapes the wheels (no bytecode: compiling the checkout must not change the tag).
server_key=$(
    {
        echo "$deps_key"
        cat "$RECIPES/server/Dockerfile" pyproject.toml sdk/pyproject.toml
        find src sdk/src -type f ! -name '*.pyc' ! -path '*/__pycache__/*' -print0 | sort -z | xargs -0 sha256sum
    } | digest
)
checkout_key=$(echo "$REPO" | digest)
postgres_key=$(cat "$RECIPES/postgres/Dockerfile" "$RECIPES/postgres/entrypoint.sh" <(echo "$base_key") | digest)
DEPS_IMAGE=dockyard/server-deps:$deps_key
SERVER_IMAGE=dockyard/server:$server_key
POSTGRES_IMAGE=dockyard/postgres:15-$postgres_key

if [[ ${1:-} == --tags ]]; then
    echo "$SERVER_IMAGE $POSTGRES_IMAGE"
    exit 0
fi

has() { docker image inspect "$1" >/dev/null 2>&1; }

# docker_build IMAGE ARGS...: quiet (the engine's legacy-builder notice too) unless it fails.
docker_build() {
    local image=$1 log
    shift
    log=$(mktemp)
    if ! docker build -q -t "$image" "$@" >"$log" 2>&1; then
        tail -n 40 "$log" >&2
        rm -f "$log"
        die "building $image failed"
    fi
    rm -f "$log"
}

# cached IMAGE NAME BUILD-FUNCTION: the engine's image, else the cached archive, else a build (then archived).
cached() {
    local image=$1 archive=$CACHE/$2.tar
    has "$image" && return
    if [[ -f $archive ]]; then
        note "loading $image from $archive"
        docker load -q -i "$archive" >/dev/null && has "$image" && return
    fi
    "$3" "$image"
    mkdir -p "$CACHE"
    # Under a temporary name, then renamed: an interrupted save never leaves a truncated archive.
    docker save -o "$archive.partial" "$image" && chmod 644 "$archive.partial" && mv "$archive.partial" "$archive"
    find "$CACHE" -maxdepth 1 -name "${2%-*}-*.tar" ! -name "$2.tar" -delete
}

build_deps() {
    local context
    context=$(mktemp -d)
    note "building $1: the locked dependencies of uv.lock from PyPI (a minute or two, once per lock file)"
    "$UV" export --frozen --no-dev --no-emit-workspace --quiet -o "$context/requirements.txt" >/dev/null
    cp "$RECIPES/server/Dockerfile.deps" "$context/Dockerfile"
    cp "$UV" "$context/uv"
    cp /etc/ssl/certs/ca-certificates.crt "$context/"
    docker_build "$1" --network host --build-arg "BASE=$BASE" "$context"
    rm -rf "$context"
}

build_postgres() {
    note "building $1 from Debian's postgresql-15 (a minute, once)"
    docker_build "$1" --network host --build-arg "BASE=$BASE" "$RECIPES/postgres"
}

build_server() {
    local context
    context=$(mktemp -d)
    note "building $1 from this checkout"
    "$UV" build --quiet --wheel --all-packages -o "$context/wheels" >/dev/null 2>&1 ||
        "$UV" build --wheel --all-packages -o "$context/wheels" || die "building the wheels failed"
    cp "$RECIPES/server/Dockerfile" "$context/Dockerfile"
    docker_build "$1" --build-arg "DEPS=$DEPS_IMAGE" --label "dockyard.deps=$deps_key" \
        --label "dockyard.checkout=$checkout_key" "$context"
    rm -rf "$context"
    drop_older_servers "$1"
}

# The server images this checkout built before (one per change of its sources), unless a container still uses
# one (`docker image rm` without force refuses): other checkouts' images on this engine are theirs to keep.
drop_older_servers() {
    local image
    for image in $(docker image ls --filter "label=dockyard.checkout=$checkout_key" \
        --format '{{.Repository}}:{{.Tag}}' dockyard/server); do
        [[ $image == "$1" ]] || docker image rm "$image" >/dev/null 2>&1 || true
    done
}

mkdir -p "$CACHE"
# One build at a time on this machine (scripts/test.sh builds in the background while a test may ask too).
exec 9>>"$CACHE/.kubernetes-images.lock"
flock 9
cached "$DEPS_IMAGE" "server-deps-$deps_key" build_deps
cached "$POSTGRES_IMAGE" "postgres-$postgres_key" build_postgres
has "$SERVER_IMAGE" || build_server "$SERVER_IMAGE"
echo "$SERVER_IMAGE $POSTGRES_IMAGE"
