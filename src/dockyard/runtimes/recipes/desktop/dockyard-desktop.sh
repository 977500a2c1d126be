#!/bin/bash
# Start the desktop on display :1 and serve noVNC on 127.0.0.1:PORT (default 6080); runs in the foreground, as
# the template's `desktop` app command. Everything listens on loopback only: Dockyard's app proxy is the way in.
set -euo pipefail
port=${1:-6080}
geometry=${DOCKYARD_DESKTOP_GEOMETRY:-1280x800}
export DISPLAY=:1
rm -f /tmp/.X1-lock /tmp/.X11-unix/X1
Xvfb :1 -screen 0 "${geometry}x24" -nolisten tcp &
for _ in $(seq 50); do xdpyinfo >/dev/null 2>&1 && break; sleep 0.1; done
openbox &
xterm -geometry 100x30+40+40 &
x11vnc -display :1 -localhost -rfbport 5901 -nopw -forever -shared -quiet &
for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/5901) 2>/dev/null && break; sleep 0.1; done
exec websockify --web /usr/share/novnc "127.0.0.1:${port}" 127.0.0.1:5901
