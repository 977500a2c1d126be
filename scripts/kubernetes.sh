#!/usr/bin/env bash
# A one-node Kubernetes 1.20 cluster for Dockyard's Kubernetes tests, built offline from Debian's source package.
#
#   bash scripts/kubernetes.sh up      # build once (cached), start, print the kubeconfig path as the last line
#   bash scripts/kubernetes.sh down    # stop what `up` started
#   bash scripts/kubernetes.sh build   # only build the binaries into the cache (scripts/test.sh runs it early)
#   bash scripts/kubernetes.sh status  # exit 0 when the cluster answers
#
# No prebuilt Kubernetes can be downloaded on these machines, but bookworm's source package `kubernetes` (1.20.2)
# vendors all its Go dependencies. The binaries go to $DOCKYARD_K8S_CACHE (default /var/cache/dockyard/kubernetes)
# and later runs skip the build. The cluster: Debian's etcd on loopback, kube-apiserver with a CA made here by
# openssl, controller-manager, scheduler, and a kubelet using the dockershim on the running local dockerd (the 1.20
# default), with cgroupfs and the swap check off. Its state lives in $DOCKYARD_K8S_STATE (default
# /var/lib/dockyard-kubernetes); `down` stops the processes whose pids `up` recorded there and removes the pods'
# containers the kubelet made, nothing else.
#
# The kubelet carries a small patch: this sandbox refuses negative oom_score_adj (no CAP_SYS_RESOURCE), so the
# dockershim's sandbox score and the kubelet's negative scores become 0.
set -euo pipefail

CACHE=${DOCKYARD_K8S_CACHE:-/var/cache/dockyard/kubernetes}
STATE=${DOCKYARD_K8S_STATE:-/var/lib/dockyard-kubernetes}
VERSION=1.20.2
BINARIES=(kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl)
PAUSE_IMAGE=dockyard/k8s-pause:3.2
API_PORT=${DOCKYARD_K8S_API_PORT:-16443}
ETCD_PORT=${DOCKYARD_K8S_ETCD_PORT:-12379}
ETCD_PEER_PORT=$((ETCD_PORT + 1))
KUBELET_PORT=${DOCKYARD_K8S_KUBELET_PORT:-10250}
SERVICE_CIDR=10.254.0.0/24
NODE_NAME=dockyard-node

note() { printf '    %s\n' "$*" >&2; }
die() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}

binaries_cached() {
    local b
    for b in "${BINARIES[@]}"; do [[ -x $CACHE/bin/$b ]] || return 1; done
    [[ -x $CACHE/bin/pause ]]
}

# --- build ------------------------------------------------------------------------------------------------------
ensure_build_packages() {
    local missing=() pkg
    for pkg in golang-go rsync etcd-server openssl dpkg-dev golang-github-modern-go-reflect2-dev; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    if [[ ${#missing[@]} -gt 0 ]]; then
        note "installing ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -q >/dev/null
        apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
    fi
}

enable_deb_src() {
    local sources=/etc/apt/sources.list.d/debian.sources
    if [[ -f $sources ]] && ! grep -q '^Types:.*deb-src' "$sources"; then
        # Only the main bookworm entry (the first stanza) gets deb-src; the security suite has no kubernetes.
        awk 'BEGIN { done = 0 } /^Types: deb$/ && !done { print "Types: deb deb-src"; done = 1; next } { print }' \
            "$sources" >"$sources.new" && mv "$sources.new" "$sources"
        apt-get update -q >/dev/null
    fi
}

patch_kubelet() {
    local src=$1
    # The dockershim gives the pod sandbox -998, which this sandbox refuses (no CAP_SYS_RESOURCE).
    sed -i 's/defaultSandboxOOMAdj int = -998/defaultSandboxOOMAdj int = 0/' \
        "$src/pkg/kubelet/dockershim/docker_sandbox.go"
    grep -q 'defaultSandboxOOMAdj int = 0' "$src/pkg/kubelet/dockershim/docker_sandbox.go" ||
        die "the sandbox OOM patch did not apply"
    # Every negative oom_score_adj the kubelet writes (its own -999, guaranteed pods' -997) is clamped to 0.
    if ! grep -q 'dockyard: clamp' "$src/pkg/util/oom/oom_linux.go"; then
        perl -0pi -e 's/(func applyOOMScoreAdj\(pid int, oomScoreAdj int\) error \{\n)/$1\tif oomScoreAdj < 0 { \/\/ dockyard: clamp\n\t\toomScoreAdj = 0\n\t}\n/' \
            "$src/pkg/util/oom/oom_linux.go"
        grep -q 'dockyard: clamp' "$src/pkg/util/oom/oom_linux.go" || die "the oom_linux.go patch did not apply"
    fi
    sed -i -E 's/^(\s*guaranteedOOMScoreAdj\s+int\s*=\s*)-[0-9]+/\10/' "$src/pkg/kubelet/qos/policy.go"
}

build() {
    if binaries_cached; then
        note "Kubernetes $VERSION binaries cached in $CACHE/bin"
        return
    fi
    [[ $EUID -eq 0 ]] || die "building Kubernetes needs root (apt-get, $CACHE)"
    enable_deb_src
    ensure_build_packages
    mkdir -p "$CACHE/src"
    local src
    src=$(find "$CACHE/src" -maxdepth 1 -type d -name "kubernetes-$VERSION*" | head -n 1)
    if [[ -z $src ]]; then
        note "fetching the source package kubernetes ($VERSION)"
        (cd "$CACHE/src" && apt-get source -q "kubernetes=$VERSION*" >/dev/null 2>&1 ||
            apt-get source -q kubernetes >/dev/null)
        src=$(find "$CACHE/src" -maxdepth 1 -type d -name "kubernetes-*" | head -n 1)
    fi
    [[ -n $src ]] || die "apt-get source kubernetes gave no source tree"
    # One vendored module is missing from the source package; Debian packages it separately.
    if [[ ! -d $src/vendor/github.com/modern-go/reflect2 ]]; then
        mkdir -p "$src/vendor/github.com/modern-go"
        cp -r /usr/share/gocode/src/github.com/modern-go/reflect2 "$src/vendor/github.com/modern-go/reflect2"
    fi
    patch_kubelet "$src"
    local what="" b
    for b in "${BINARIES[@]}"; do what+="cmd/$b "; done
    note "building ${BINARIES[*]} (about 10 minutes on 2 cores; log in $CACHE/build.log)"
    # At the lowest priority, with Go's parallelism capped at the core count, the machine stays usable meanwhile.
    (cd "$src" && GOMAXPROCS=$(nproc) nice -n 19 make WHAT="${what% }" KUBE_BUILD_PLATFORMS=linux/amd64 >"$CACHE/build.log" 2>&1) ||
        die "the Kubernetes build failed; see $CACHE/build.log"
    mkdir -p "$CACHE/bin"
    for b in "${BINARIES[@]}"; do
        cp "$src/_output/local/bin/linux/amd64/$b" "$CACHE/bin/$b.new" && mv "$CACHE/bin/$b.new" "$CACHE/bin/$b"
    done
    build_pause
    note "built into $CACHE/bin"
}

build_pause() {
    # The pod sandbox's pause container: a static program that sleeps until signalled, as the upstream one does.
    local tmp
    tmp=$(mktemp -d)
    cat >"$tmp/pause.c" <<'EOF'
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>
static void quit(int s) { (void)s; _exit(0); }
static void reap(int s) { (void)s; while (waitpid(-1, NULL, WNOHANG) > 0) {} }
int main(void) {
    signal(SIGINT, quit); signal(SIGTERM, quit); signal(SIGCHLD, reap);
    for (;;) pause();
    return 1;
}
EOF
    gcc -Os -static -o "$tmp/pause" "$tmp/pause.c"
    cp "$tmp/pause" "$CACHE/bin/pause.new" && mv "$CACHE/bin/pause.new" "$CACHE/bin/pause"
    rm -rf "$tmp"
}

case ${1:-} in
    build) build ;;
    *) ;;
esac
