"""A real git smart-HTTP server for tests: `git http-backend` (CGI) behind HTTP basic auth.

Standard library only, so the same file also runs inside a container (`python3 gitserver.py ROOT PORT USER
PASSWORD`). Every request needs the credential, as a private repository on a git host would.
"""

from __future__ import annotations

import base64
import os
import socketserver
import subprocess
import sys
import threading
from collections.abc import Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server


class GitApp:
    def __init__(self, root: str, user: str, password: str) -> None:
        self.root = root
        self.expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        self.user = user
        self.requests: list[tuple[str, str, bool]] = []

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        authorized = environ.get("HTTP_AUTHORIZATION", "") == self.expected
        self.requests.append((environ["REQUEST_METHOD"], environ.get("PATH_INFO", ""), authorized))
        if not authorized:
            start_response("401 Unauthorized", [("WWW-Authenticate", 'Basic realm="git"')])
            return [b"authentication required\n"]
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        cgi = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "GIT_PROJECT_ROOT": self.root,
            "GIT_HTTP_EXPORT_ALL": "1",
            "REMOTE_USER": self.user,
            "REQUEST_METHOD": environ["REQUEST_METHOD"],
            "PATH_INFO": environ.get("PATH_INFO", ""),
            "QUERY_STRING": environ.get("QUERY_STRING", ""),
            "CONTENT_TYPE": environ.get("CONTENT_TYPE", ""),
            "CONTENT_LENGTH": str(len(body)),
            "HTTP_CONTENT_ENCODING": environ.get("HTTP_CONTENT_ENCODING", ""),
            "GIT_PROTOCOL": environ.get("HTTP_GIT_PROTOCOL", ""),
        }
        done = subprocess.run(["git", "http-backend"], input=body, env=cgi, capture_output=True, check=False)
        head, _, content = done.stdout.partition(b"\r\n\r\n")
        status = "200 OK"
        headers = []
        for line in head.decode("latin-1").split("\r\n"):
            name, _, value = line.partition(":")
            if name.lower() == "status":
                status = value.strip()
            elif name:
                headers.append((name, value.strip()))
        start_response(status, headers)
        return [content]


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Threaded(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True
    # socketserver's default listen queue is 5: a fleet of 200 cloning at once overflowed it (dropped SYNs).
    request_queue_size = 256


def serve(root: str, *, host: str, port: int, user: str, password: str) -> tuple[WSGIServer, GitApp]:
    """Start serving on a thread; returns the server (`.shutdown()` it) and the app (its `requests`)."""
    app = GitApp(root, user, password)
    server = make_server(host, port, app, server_class=_Threaded, handler_class=_Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, app


if __name__ == "__main__":
    root, port, user, password = sys.argv[1:5]
    make_server("0.0.0.0", int(port), GitApp(root, user, password), server_class=_Threaded).serve_forever()
