"""A dev container's `customizations.vscode.extensions`, installed into the workspace's browser IDE.

The browser IDE here is code-server (the `code-server` image and template): when the workspace has it, each
extension is installed with `code-server --install-extension`, as the workspace user, so the `code` app finds
it in that user's extensions folder. An entry is a marketplace id (`publisher.name`, fetched from code-server's
marketplace, Open VSX) or a `.vsix` file, relative to the workspace folder. Nothing here fails the workspace:
each extension gets one line in the build log saying whether it was installed, and why not.
"""

from __future__ import annotations

from dockyard_sdk import models as wire

# The extensions arrive as arguments ("$@"), never inside the script's text, so no id can become shell code.
SCRIPT = r"""
if ! command -v code-server >/dev/null 2>&1; then
    echo "customizations.vscode.extensions: this workspace's image has no code-server (the browser IDE), so" \
         "$# extension(s) were not installed; base the image on dockyard/code-server:bookworm to get them"
    exit 0
fi
for ext in "$@"; do
    case $ext in
        -*) echo "extension $ext: not installed: not an extension id or .vsix path"; continue ;;
    esac
    out=$(timeout 300 code-server --install-extension "$ext" 2>&1)
    code=$?
    last=$(printf '%s\n' "$out" | grep -v '^[[:space:]]*$' | tail -n 1)
    if [ "$code" -eq 0 ] && ! printf '%s' "$out" | grep -qi 'failed\|not found\|error'; then
        echo "extension $ext: installed"
    else
        case $ext in
            *.vsix|*/*) echo "extension $ext: not installed: ${last:-exit code $code}" ;;
            *) echo "extension $ext: not installed: the extension marketplace (Open VSX) is not reachable" \
                    "from the workspace or does not have it (${last:-exit code $code}); a .vsix file in the" \
                    "repository can be listed instead" ;;
        esac
    fi
done
"""
# Extensions may come from a marketplace; the whole list gets this long.
TIMEOUT = 1800.0


def request(extensions: tuple[str, ...], *, cwd: str, env: dict[str, str]) -> wire.ExecRequest:
    """The exec that installs `extensions` in the workspace, one line of output per extension."""
    return wire.ExecRequest(
        command=["sh", "-c", SCRIPT, "dockyard-extensions", *extensions],
        cwd=cwd,
        env=env,
        timeout=TIMEOUT,
        max_output_bytes=64 * 1024,
    )
