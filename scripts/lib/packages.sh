# shellcheck shell=bash
# Debian/Ubuntu package installation shared by scripts/install.sh and scripts/test.sh.
# Expects the caller's `note` and `die` functions.

has_apt() { command -v apt-get >/dev/null && command -v dpkg-query >/dev/null; }

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

# Install whichever of the named packages are missing (apt-get update once, only when something is missing).
install_missing() {
    local missing=() pkg
    for pkg in "$@"; do installed "$pkg" || missing+=("$pkg"); done
    if [[ ${#missing[@]} -eq 0 ]]; then
        note "already installed: $*"
        return
    fi
    [[ $EUID -eq 0 ]] || die "missing packages: ${missing[*]}; run as root, or install them first"
    note "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    if [[ -z ${DOCKYARD_APT_UPDATED:-} ]]; then
        apt-get update -q >/dev/null
        DOCKYARD_APT_UPDATED=1
    fi
    apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
}
