"""A real HTTP server on 127.0.0.1 for download tests: a good agent, a wrong one, a 404, a
503 that recovers, a stall and a cut body."""

from __future__ import annotations

import hashlib
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable, Iterator

AGENT = Path("/bin/busybox").read_bytes()
AGENT_SHA = hashlib.sha256(AGENT).hexdigest()
BIG = bytes(20 << 20)  # large enough for progress reports


class Handler(BaseHTTPRequestHandler):
    hits: dict[str, int] = {}

    def log_message(self, *args: object) -> None:
        pass

    def _send(self, body: bytes, status: int = 200, length: int | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        path = self.path.split("?")[0]
        if path.startswith("http://"):  # asked as a proxy: the path is the whole URL
            path = "/" + path.split("/", 3)[3]
        self.hits[path] = self.hits.get(path, 0) + 1
        if path == "/agent":
            self._send(AGENT)
        elif path == "/big":
            self._send(BIG)
        elif path == "/wrong":
            self._send(AGENT + b"tampered")
        elif path == "/flaky":  # fails twice, then recovers
            self._send(AGENT) if self.hits[path] > 2 else self._send(b"busy", 503)
        elif path == "/stall":
            self.send_response(200)
            self.send_header("Content-Length", str(len(AGENT)))
            self.end_headers()
            self.wfile.write(AGENT[:1000])
            self.wfile.flush()
            time.sleep(3)  # the client's read timeout fires long before this
        elif path == "/slow-agent":  # about 5 s: long enough to be interrupted mid-download
            self.send_response(200)
            self.send_header("Content-Length", str(len(AGENT)))
            self.end_headers()
            for start in range(0, len(AGENT), 1 << 16):
                self.wfile.write(AGENT[start:start + (1 << 16)])
                self.wfile.flush()
                self.hits["/slow-agent:sent"] = self.hits.get("/slow-agent:sent", 0) + 1
                time.sleep(0.15)
        elif path == "/truncated":
            self._send(AGENT[: len(AGENT) // 2], length=len(AGENT))
        else:
            self._send(b"not here", 404)





def serve() -> Iterator[str]:
    Handler.hits = {}
    yield from serving(Handler)


def serving(handler: Callable[..., BaseHTTPRequestHandler]) -> Iterator[str]:
    """A real HTTP server on 127.0.0.1 with `handler`; yields its base URL, stops it after."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
