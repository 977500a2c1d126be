# shellcheck shell=bash
# Python and uv discovery shared by scripts/install.sh and scripts/test.sh.
# Expects the caller's `step`, `note` and `die` functions; sets $python and $UV.

find_python() {
    python=""
    local candidate
    for candidate in python3 python3.13 python3.12 python3.11; do
        if command -v "$candidate" >/dev/null && "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            python=$(command -v "$candidate")
            return
        fi
    done
    die "Dockyard needs Python 3.11 or newer; python3 is $(python3 -V 2>&1). Debian 12 and Ubuntu 24.04 have it."
}

# uv from PATH, or from a tools venv of its own (installed there with pip the first time).
ensure_uv() {
    local tools
    if [[ $EUID -eq 0 ]]; then tools=/opt/dockyard-tools; else tools=$HOME/.local/share/dockyard-tools; fi
    step "uv"
    if command -v uv >/dev/null && uv --version >/dev/null 2>&1; then
        UV=$(command -v uv)
    elif [[ -x $tools/bin/uv ]]; then
        UV=$tools/bin/uv
    else
        # A venv of its own: Debian's Python is "externally managed" and refuses a plain `pip install`.
        note "installing uv with pip into $tools"
        "$python" -m venv "$tools"
        "$tools/bin/python" -m pip install -q --disable-pip-version-check uv
        UV=$tools/bin/uv
    fi
    note "$("$UV" --version) at $UV"
}
