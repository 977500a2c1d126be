"""The setup step a workspace container runs as root before it becomes the workspace user.

The script is the container's entrypoint (`/bin/sh -c SCRIPT`), so a container needs nothing copied into it
before its first start: `put_archive` costs the engine a helper process per container, which shows when many
workspaces start at once. The script holds nothing secret (user, uid, paths and the command), though anyone in
the container can read it as PID 1's arguments. The spec's files, which may, travel with `put_archive` into
`/.dockyard/`, which only root can read, and only when there are any. On every start the script makes sure the
user exists, that the home volume belongs to it, sets up sudo if asked, puts the files in place, prints
`READY`, and then replaces itself with the workspace command run as the user (`setpriv`, or `runuser` where
there is no setpriv).

Exit codes: 3 means the image cannot host a workspace (no useradd, no setpriv/runuser, no sudo when asked),
4 means another setup failure. Both print one line starting with `ERROR`.
"""

from __future__ import annotations

import io
import posixpath
import re
import shlex
import tarfile

from dockyard.runtimes.docker import bridge
from dockyard.runtimes.docker.spec import WorkspaceSpec

STAGING = "/.dockyard"
# $0 of the setup script: what `ps` shows for it while it runs.
SCRIPT_NAME = "dockyard-setup"
READY = "dockyard-setup: ready"
ERROR = "dockyard-setup: error:"
EXIT_UNUSABLE_IMAGE = 3
EXIT_SETUP_FAILED = 4
_USER = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")

_TEMPLATE = r"""# Dockyard workspace setup: runs as root under docker-init, then execs the workspace command
# as the workspace user.
set -u
user=__USER__
uid=__UID__
home=__HOME__
sudo=__SUDO__

unusable() { echo "__ERROR__ $*" >&2; exit __UNUSABLE__; }
failed() { echo "__ERROR__ $*" >&2; exit __FAILED__; }

if command -v setpriv >/dev/null 2>&1; then
    drop=setpriv
elif command -v runuser >/dev/null 2>&1; then
    drop=runuser
else
    unusable "the image has neither setpriv nor runuser (util-linux), needed to run as user $user"
fi
as_user() {
    if [ "$drop" = setpriv ]; then
        setpriv --reuid="$uid" --regid="$gid" --init-groups -- "$@"
    else
        runuser -u "$user" -- "$@"
    fi
}

# The user's uid, gid and shell from /etc/passwd with the shell's own `read`: a setup step that forks `id`,
# `grep` and `cut` pays a process start for each, times every workspace of a burst. `id` is the fallback for a
# user that only NSS knows.
entry() {
    while IFS=: read -r name _ actual gid _ _ shell; do
        [ "$name" = "$user" ] && return 0
    done < /etc/passwd
    actual=$(id -u "$user" 2>/dev/null) && gid=$(id -g "$user") && shell=
}

if ! entry; then
    command -v useradd >/dev/null 2>&1 \
        || unusable "the image has no useradd (package passwd), needed to create user $user"
    shell=/bin/sh
    [ -x /bin/bash ] && shell=/bin/bash
    # -o: another name may hold the uid already (ubuntu images have "ubuntu" as 1000); the uid is what counts.
    if grep -q "^$user:" /etc/group 2>/dev/null; then
        useradd -o -u "$uid" -g "$user" -M -d "$home" -s "$shell" "$user" || failed "useradd $user failed"
    else
        useradd -o -u "$uid" -U -M -d "$home" -s "$shell" "$user" || failed "useradd $user failed"
    fi
    entry || failed "useradd made no user $user"
fi
[ "$actual" = "$uid" ] || failed "user $user exists in the image with uid $actual, the template asks for $uid"
[ -n "$shell" ] || shell=/bin/sh

# The home volume's top folder is root's when the volume is new and the image had no such home to copy in.
# Only the top is changed: everything below was written by the user (or copied from the image as theirs).
if [ "$(stat -c %u "$home")" != "$uid" ]; then
    chown "$uid:$gid" "$home" || failed "cannot hand $home to $user"
    if [ ! -e "$home/.profile" ] && [ -d /etc/skel ]; then
        as_user cp -R /etc/skel/. "$home/" 2>/dev/null || true
    fi
fi

# A new dev container volume is an empty folder of root's, as the home is: its top goes to the user too.
hand_over() {
    if [ "$(stat -c %u "$1")" = 0 ] && [ -z "$(ls -A "$1")" ]; then
        chown "$uid:$gid" "$1" || failed "cannot hand $1 to $user"
    fi
}
__VOLUMES__

if [ "$sudo" = 1 ]; then
    command -v sudo >/dev/null 2>&1 || unusable "the template asks for sudo but the image has no sudo"
    mkdir -p /etc/sudoers.d
    printf '%s ALL=(ALL:ALL) NOPASSWD: ALL\n' "$user" > /etc/sudoers.d/dockyard-workspace \
        && chmod 0440 /etc/sudoers.d/dockyard-workspace || failed "cannot write the sudoers drop-in"
elif [ -e /etc/sudoers.d/dockyard-workspace ]; then
    rm -f /etc/sudoers.d/dockyard-workspace
fi

__HOSTS__
__NETWORK__

# Files under the home are written by the user, never by root: the user controls that tree (a symlink there
# must not let a root write land in /etc). Files elsewhere are root's, readable by everyone.
place_root() {
    mkdir -p "$(dirname "$2")" && cp "$1" "$2" && chmod "$3" "$2" || failed "cannot write $2"
}
place_user() {
    as_user mkdir -p "$(dirname "$2")" && as_user sh -c 'cat > "$1" && chmod "$2" "$1"' sh "$2" "$3" < "$1" \
        || failed "cannot write $2 as $user"
}
__FILES__
__REQUIRE__
export HOME="$home" USER="$user" LOGNAME="$user" SHELL="$shell"
cd "$home" || failed "cannot enter $home"
echo "__READY__"
if [ "$drop" = setpriv ]; then
    exec setpriv --reuid="$uid" --regid="$gid" --init-groups -- __COMMAND__
fi
exec runuser -u "$user" -- __COMMAND__
"""


# A container with its network disabled (loopback only) gets no /etc/hosts from the engine, and without a
# `localhost` line there the name resolves nowhere (no DNS either). The lines a Debian install writes are added
# when the image lacks them; the image's own lines stay.
_HOSTS = r"""named() {
    [ -r /etc/hosts ] || return 1
    while read -r _ names; do
        for name in $names; do [ "$name" = "$1" ] && return 0; done
    done < /etc/hosts
    return 1
}
named localhost || printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n' >> /etc/hosts \
    || failed "cannot write /etc/hosts"
named __HOSTNAME__ || printf '127.0.1.1\t%s\n' __HOSTNAME__ >> /etc/hosts || failed "cannot write /etc/hosts"
"""


# A container on the deployment bridge starts without a network: the runtime plugs its interface in right after
# the start. Nothing after this step may need the network before it is there (the workspace command, the
# startup script). The shell's own `read` looks for the default route, so the wait forks only `sleep`.
_NETWORK = r"""routed() {
    while read -r iface destination _; do
        [ "$iface" = __INSIDE__ ] && [ "$destination" = 00000000 ] && return 0
    done < /proc/net/route
    return 1
}
waited=0
tick=1
until routed; do
    [ "$waited" -lt __WAIT__ ] || failed "the workspace's network interface did not arrive within __SECONDS__ s"
    if [ "$tick" = 1 ]; then sleep 0.01 2>/dev/null || tick=100; fi
    [ "$tick" = 100 ] && sleep 1
    waited=$((waited + tick))
done
# A symlink (systemd-resolved's stub) would point where nothing is: the file replaces it.
rm -f /etc/resolv.conf && printf 'nameserver %s\n' __SERVERS__ > /etc/resolv.conf \
    || failed "cannot write /etc/resolv.conf"
# The container's name resolves to its address, as on Docker's networks (`hostname -i`). The MAC carries the
# address (02:42 and its four bytes, `bridge.mac_of`); a start may plug in another one, so the line is written
# again on every start.
IFS=: read -r _ _ a b c d < /sys/class/net/__INSIDE__/address
address=$((0x$a)).$((0x$b)).$((0x$c)).$((0x$d))
{
    while IFS= read -r line; do
        case "$line" in *"	"__HOSTNAME__) ;; *) printf '%s\n' "$line" ;; esac
    done < /etc/hosts
    printf '%s\t%s\n' "$address" __HOSTNAME__
} > /etc/hosts.dockyard && cat /etc/hosts.dockyard > /etc/hosts && rm -f /etc/hosts.dockyard \
    || failed "cannot write /etc/hosts"
"""


# The interpreter's file name usually tells its version; starting Python only to ask costs tens of milliseconds
# of CPU per start, which adds up when many workspaces start at once.
_PYTHON_CHECK = """too_old() { unusable "the image has no python3 3.9 or newer, which the Dockyard agent runs on"; }
python=$(command -v python3) || too_old
case "$(readlink -f "$python" 2>/dev/null || echo "$python")" in
    */python3.[0-8]) too_old ;;
    */python3.9 | */python3.[1-9][0-9]) ;;
    *) python3 -I -S -c 'import sys; sys.exit(sys.version_info < (3, 9))' 2>/dev/null || too_old ;;
esac"""


def _q(value: str) -> str:
    return shlex.quote(value)


def hostname(spec: WorkspaceSpec) -> str:
    return spec.name[:63]


def home_of(spec: WorkspaceSpec) -> str:
    return f"/home/{spec.user}"


def file_destination(spec: WorkspaceSpec, path: str) -> str:
    """Absolute path of a spec file; a relative path is relative to the user's home."""
    if "\0" in path or "\n" in path:
        raise ValueError(f"file path {path!r} has a NUL or newline")
    full = posixpath.normpath(path if path.startswith("/") else posixpath.join(home_of(spec), path))
    if ".." in path.split("/") or full == "/":
        raise ValueError(f"file path {path!r} is not a plain path")
    return full


def _require(program: str) -> str:
    """A check that the workspace command can run in this image, failing the build with a plain reason."""
    if program == "python3":
        return _PYTHON_CHECK
    return f'command -v {_q(program)} >/dev/null 2>&1 || unusable "the image has no {_q(program)}"'


def script(spec: WorkspaceSpec) -> str:
    if not _USER.match(spec.user):
        raise ValueError(f"user name {spec.user!r} is not a valid Linux user name")
    if spec.uid <= 0:
        # A root workload would keep the container's capabilities; sudo is the way to root.
        raise ValueError(f"the workspace user must not be root (uid {spec.uid}); use sudo instead")
    home = home_of(spec)
    lines = []
    for index, path in enumerate(sorted(spec.files)):
        dest = file_destination(spec, path)
        mode = "0755" if spec.files[path].startswith(b"#!") else "0644"
        place = "place_user" if dest.startswith(home + "/") else "place_root"
        lines.append(f"{place} {STAGING}/files/{index} {_q(dest)} {mode}")
    if not spec.command:
        raise ValueError("the workspace command is empty")
    replacements = {
        "__USER__": _q(spec.user),
        "__UID__": str(int(spec.uid)),
        "__HOME__": _q(home),
        "__SUDO__": "1" if spec.sudo else "0",
        "__ERROR__": ERROR,
        "__READY__": READY,
        "__UNUSABLE__": str(EXIT_UNUSABLE_IMAGE),
        "__FAILED__": str(EXIT_SETUP_FAILED),
        "__FILES__": "\n".join(lines),
        "__VOLUMES__": "\n".join(f"hand_over {_q(v.target)}" for v in spec.volumes if not v.read_only),
        "__COMMAND__": " ".join(_q(arg) for arg in spec.command),
        "__REQUIRE__": _require(spec.command[0]),
        "__HOSTS__": _HOSTS.replace("__HOSTNAME__", _q(hostname(spec)))
        if spec.egress == "none" or spec.bridged
        else "",
        "__NETWORK__": _network(spec) if spec.bridged else "",
    }
    # One pass, so a placeholder-like string inside a file path or the command is left alone.
    return re.sub(r"__[A-Z]+__", lambda m: replacements.get(m.group(0), m.group(0)), _TEMPLATE)


def _network(spec: WorkspaceSpec) -> str:
    # Ticks of 10 ms, or of a second where `sleep` takes no fractions.
    return (
        _NETWORK.replace("__INSIDE__", bridge.INSIDE)
        .replace("__WAIT__", str(bridge.WAIT_SECONDS * 100))
        .replace("__SECONDS__", str(bridge.WAIT_SECONDS))
        .replace("__SERVERS__", " ".join(_q(server) for server in spec.dns))
        .replace("__HOSTNAME__", _q(hostname(spec)))
    )


def entrypoint(spec: WorkspaceSpec) -> list[str]:
    return ["/bin/sh", "-c", script(spec), SCRIPT_NAME]


def archive(spec: WorkspaceSpec) -> bytes | None:
    """The tar `put_archive` unpacks at `/`: the spec's files, readable by root only; None without files."""
    if not spec.files:
        return None
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:

        def add(name: str, mode: int, data: bytes | None = None) -> None:
            info = tarfile.TarInfo(name)
            info.mode = mode
            if data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))

        add(STAGING.lstrip("/"), 0o700)
        add(f"{STAGING.lstrip('/')}/files", 0o700)
        for index, path in enumerate(sorted(spec.files)):
            add(f"{STAGING.lstrip('/')}/files/{index}", 0o600, spec.files[path])
    return buffer.getvalue()
