"""A stdlib-only app for the workspace: GET /headers echoes the request headers as JSON, /ws is a WebSocket
echo (text and binary), anything else a small page. Copied into the workspace by the test template."""

import base64
import hashlib
import json
import struct
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        if self.path.startswith("/ws") and self.headers.get("Upgrade", "").lower() == "websocket":
            return self.websocket()
        if self.path.startswith("/headers"):
            body = json.dumps({"path": self.path, "headers": dict(self.headers.items())}).encode()
            kind = "application/json"
        else:
            body = b"<!doctype html><title>echo</title><h1>echo app</h1>"
            kind = "text/html"
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Set-Cookie", "dockyard_session=planted; Path=/")
        self.send_header("Set-Cookie", "app_cookie=kept; Path=/")
        self.end_headers()
        self.wfile.write(body)
        return None

    def websocket(self):
        key = self.headers["Sec-WebSocket-Key"]
        accept = base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()  # noqa: S324 - RFC 6455
        self.send_response(101)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept)
        self.end_headers()
        self.wfile.flush()
        read = self.rfile.read
        while True:
            head = read(2)
            if len(head) < 2:
                return
            opcode, length = head[0] & 0x0F, head[1] & 0x7F
            if length == 126:
                length = struct.unpack(">H", read(2))[0]
            elif length == 127:
                length = struct.unpack(">Q", read(8))[0]
            mask = read(4) if head[1] & 0x80 else b"\0\0\0\0"
            data = bytes(b ^ mask[i % 4] for i, b in enumerate(read(length)))
            if opcode == 8:
                self.wfile.write(b"\x88\x00")
                self.wfile.flush()
                return
            if opcode in (1, 2):
                if opcode == 1:
                    data = b"echo:" + data
                n = len(data)
                header = bytes([0x80 | opcode]) + (
                    bytes([n])
                    if n < 126
                    else bytes([126]) + struct.pack(">H", n)
                    if n < 65536
                    else bytes([127]) + struct.pack(">Q", n)
                )
                self.wfile.write(header + data)
                self.wfile.flush()


ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
