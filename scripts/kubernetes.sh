#!/usr/bin/env bash
# A one-node Kubernetes 1.20 cluster for Dockyard's Kubernetes tests, built offline from Debian's source package.
#
#   bash scripts/kubernetes.sh up      # build once (cached), start, print the kubeconfig path as the last line
#   bash scripts/kubernetes.sh down    # stop what `up` started
#   bash scripts/kubernetes.sh build   # only build the binaries into the cache (scripts/test.sh runs it early)
#   bash scripts/kubernetes.sh status  # exit 0 when the cluster answers
#   bash scripts/kubernetes.sh cached  # exit 0 when the binaries are built already (`up` then starts in ~30 s)
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
# The node is named by its address: the API server reaches the kubelet by it (a loopback node IP is refused).
NODE_NAME=127.0.0.1

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
    src=$(find "$CACHE/src" -maxdepth 1 -type d -name "kubernetes-*" | head -n 1)
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
    # KUBE_STATIC_OVERRIDES: the kubelet built without cgo like the others shares their compiled packages (a
    # cgo kubelet recompiles most of the tree), and the dockershim needs no cgo.
    (cd "$src" && GOMAXPROCS=$(nproc) KUBE_STATIC_OVERRIDES=kubelet nice -n 19 \
        make WHAT="${what% }" KUBE_BUILD_PLATFORMS=linux/amd64 >"$CACHE/build.log" 2>&1) ||
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

# --- certificates and configuration ----------------------------------------------------------------------------
cert() { # cert NAME CN [O] [SAN]: a key and a certificate signed by the cluster's CA
    local name=$1 cn=$2 org=${3:-} san=${4:-} subject
    subject="/CN=$cn"
    [[ -n $org ]] && subject="/O=$org$subject"
    openssl genrsa -out "$STATE/pki/$name.key" 2048 2>/dev/null
    openssl req -new -key "$STATE/pki/$name.key" -subj "$subject" -out "$STATE/pki/$name.csr" 2>/dev/null
    local ext="$STATE/pki/$name.ext"
    {
        echo "basicConstraints=CA:FALSE"
        echo "keyUsage=critical,digitalSignature,keyEncipherment"
        echo "extendedKeyUsage=serverAuth,clientAuth"
        [[ -z $san ]] || echo "subjectAltName=$san"
    } >"$ext"
    openssl x509 -req -in "$STATE/pki/$name.csr" -CA "$STATE/pki/ca.crt" -CAkey "$STATE/pki/ca.key" \
        -CAcreateserial -days 3650 -extfile "$ext" -out "$STATE/pki/$name.crt" 2>/dev/null
    rm -f "$STATE/pki/$name.csr" "$ext"
}

kubeconfig() { # kubeconfig FILE CERT-NAME
    local file=$1 name=$2
    cat >"$file" <<CONFIG
apiVersion: v1
kind: Config
clusters:
- name: dockyard
  cluster:
    server: https://127.0.0.1:$API_PORT
    certificate-authority: $STATE/pki/ca.crt
users:
- name: $name
  user:
    client-certificate: $STATE/pki/$name.crt
    client-key: $STATE/pki/$name.key
contexts:
- name: dockyard
  context: {cluster: dockyard, user: $name}
current-context: dockyard
CONFIG
    chmod 600 "$file"
}

make_pki() {
    [[ -f $STATE/pki/admin.crt && -f $STATE/pki/limited.crt ]] && return
    mkdir -p "$STATE/pki"
    chmod 700 "$STATE" "$STATE/pki"
    openssl genrsa -out "$STATE/pki/ca.key" 2048 2>/dev/null
    openssl req -x509 -new -key "$STATE/pki/ca.key" -subj "/CN=dockyard-test-ca" -days 3650 \
        -out "$STATE/pki/ca.crt" 2>/dev/null
    cert apiserver kube-apiserver "" \
        "IP:127.0.0.1,IP:10.254.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc"
    # One identity in system:masters for the control plane's parts, the kubelet and the tests.
    cert admin admin system:masters
    # An identity RBAC grants nothing: what a server with a wrong role sees (tests of `dockyard server`'s checks).
    cert limited dockyard-limited
    openssl genrsa -out "$STATE/pki/sa.key" 2048 2>/dev/null
    openssl rsa -in "$STATE/pki/sa.key" -pubout -out "$STATE/pki/sa.pub" 2>/dev/null
    kubeconfig "$STATE/admin.kubeconfig" admin
    kubeconfig "$STATE/limited.kubeconfig" limited
}

pause_image() {
    docker image inspect "$PAUSE_IMAGE" >/dev/null 2>&1 && return
    local tmp
    tmp=$(mktemp -d)
    cp "$CACHE/bin/pause" "$tmp/pause"
    printf 'FROM scratch\nCOPY pause /pause\nENTRYPOINT ["/pause"]\n' >"$tmp/Dockerfile"
    docker build -q -t "$PAUSE_IMAGE" "$tmp" >/dev/null
    rm -rf "$tmp"
}

# --- processes --------------------------------------------------------------------------------------------------
start_process() { # start_process NAME COMMAND...: detached, its pid in $STATE/run/NAME.pid
    local name=$1
    shift
    mkdir -p "$STATE/run" "$STATE/log"
    setsid "$@" >"$STATE/log/$name.log" 2>&1 </dev/null &
    echo $! >"$STATE/run/$name.pid"
}

alive() { [[ -f $STATE/run/$1.pid ]] && kill -0 "$(cat "$STATE/run/$1.pid")" 2>/dev/null; }

wait_for() { # wait_for SECONDS WHAT COMMAND...
    local seconds=$1 what=$2 i
    shift 2
    for ((i = 0; i < seconds * 4; i++)); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.25
    done
    die "$what did not come up within ${seconds}s; see $STATE/log/"
}

kubectl_() { "$CACHE/bin/kubectl" --kubeconfig "$STATE/admin.kubeconfig" "$@"; }

node_ready() {
    kubectl_ get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null |
        grep -q True
}

status() { alive kube-apiserver && alive kubelet && kubectl_ get --raw /readyz >/dev/null 2>&1 && node_ready; }

up() {
    build
    if status; then
        echo "$STATE/admin.kubeconfig"
        return
    fi
    # Leftovers of a cluster that died (a reboot): stop what is left before starting afresh.
    down >/dev/null 2>&1 || true
    docker version >/dev/null 2>&1 || die "the Docker engine is not running"
    make_pki
    pause_image
    local pki=$STATE/pki
    note "starting etcd on 127.0.0.1:$ETCD_PORT"
    start_process etcd etcd --name dockyard --data-dir "$STATE/etcd" \
        --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
        --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
        --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
        --initial-cluster "dockyard=http://127.0.0.1:$ETCD_PEER_PORT"
    wait_for 30 etcd curl -sf "http://127.0.0.1:$ETCD_PORT/health"
    note "starting kube-apiserver on 127.0.0.1:$API_PORT"
    start_process kube-apiserver "$CACHE/bin/kube-apiserver" --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
        --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$API_PORT" --insecure-port 0 \
        --service-cluster-ip-range "$SERVICE_CIDR" --client-ca-file "$pki/ca.crt" \
        --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
        --service-account-key-file "$pki/sa.pub" --service-account-signing-key-file "$pki/sa.key" \
        --service-account-issuer https://kubernetes.default.svc.cluster.local \
        --kubelet-client-certificate "$pki/admin.crt" --kubelet-client-key "$pki/admin.key" \
        --kubelet-preferred-address-types Hostname --authorization-mode Node,RBAC --allow-privileged=true \
        --endpoint-reconciler-type none
    wait_for 120 kube-apiserver kubectl_ get --raw /readyz
    note "starting kube-controller-manager and kube-scheduler"
    start_process kube-controller-manager "$CACHE/bin/kube-controller-manager" \
        --kubeconfig "$STATE/admin.kubeconfig" --leader-elect=false --port 0 --secure-port 0 \
        --service-account-private-key-file "$pki/sa.key" --root-ca-file "$pki/ca.crt" \
        --use-service-account-credentials=false --controllers '*,-nodeipam,-cloud-node-lifecycle' \
        --kube-api-qps 100 --kube-api-burst 200
    # The clients' default rate limits (20/s for the controllers, 5/s for the kubelet) queue a burst of pod
    # starts behind each other on a test machine; a real cluster's control plane is sized for its load.
    start_process kube-scheduler "$CACHE/bin/kube-scheduler" --kubeconfig "$STATE/admin.kubeconfig" \
        --leader-elect=false --port 0 --secure-port 0 --kube-api-qps 100 --kube-api-burst 200
    note "starting the kubelet (dockershim on the local dockerd)"
    mkdir -p "$STATE/kubelet"
    cat >"$STATE/kubelet.yaml" <<CONFIG
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: 127.0.0.1
port: $KUBELET_PORT
readOnlyPort: 0
healthzPort: 0
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $pki/ca.crt}
authorization: {mode: Webhook}
cgroupDriver: cgroupfs
failSwapOn: false
clusterDomain: cluster.local
evictionHard: {memory.available: 100Mi, nodefs.available: 2%, imagefs.available: 2%}
kubeAPIQPS: 100
kubeAPIBurst: 200
CONFIG
    start_process kubelet "$CACHE/bin/kubelet" --config "$STATE/kubelet.yaml" \
        --kubeconfig "$STATE/admin.kubeconfig" --container-runtime docker \
        --docker-endpoint unix:///var/run/docker.sock --pod-infra-container-image "$PAUSE_IMAGE" \
        --hostname-override "$NODE_NAME" --root-dir "$STATE/kubelet" \
        --cert-dir "$STATE/kubelet/pki"
    wait_for 120 "the node" status
    # Pods are refused until the namespace's default service account exists (the controller makes it).
    wait_for 60 "the default service account" kubectl_ get serviceaccount default
    echo "$STATE/admin.kubeconfig"
}

down() {
    local name pid
    for name in kubelet kube-scheduler kube-controller-manager kube-apiserver etcd; do
        if alive "$name"; then
            pid=$(cat "$STATE/run/$name.pid")
            kill "$pid" 2>/dev/null || true
            for _ in $(seq 40); do
                kill -0 "$pid" 2>/dev/null || break
                sleep 0.25
            done
            kill -9 "$pid" 2>/dev/null || true
            note "stopped $name"
        fi
        rm -f "$STATE/run/$name.pid"
    done
    # The pods' containers (and their pause sandboxes) that this kubelet made on the engine; nothing else.
    if docker version >/dev/null 2>&1; then
        local ids
        ids=$(docker ps -aq --filter "label=io.kubernetes.docker.type" 2>/dev/null || true)
        if [[ -n $ids ]]; then
            # shellcheck disable=SC2086 # one id per word
            docker rm -f $ids >/dev/null 2>&1 || true
        fi
    fi
    # Mounts the kubelet made under its root dir (volumes) go with it.
    grep -o " $STATE/kubelet[^ ]*" /proc/mounts 2>/dev/null | sort -r | while read -r mount; do
        umount "$mount" 2>/dev/null || true
    done
}

case ${1:-} in
    build) build ;;
    up) up ;;
    down) down ;;
    status) status ;;
    cached) binaries_cached ;;
    -h | --help | "") sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//' ;;
    *) die "unknown command $1 (up, down, build, status, cached)" ;;
esac
