"""A real HTTP server on 127.0.0.1 (stdlib `http.server`, port 0, in a thread) for download tests.

It serves files from memory and can misbehave on demand: cut a response short, ignore `Range`,
answer an error status. Every request is recorded.
"""

from __future__ import annotations

import hashlib
import re
import socket
import threading
from collections import defaultdict
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator


class ServerState:
    """What the server serves, how it misbehaves, and every request it saw."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.requests: list[dict] = []
        self.cuts: dict[str, list[int]] = defaultdict(list)  # path -> bytes to send before dropping
        self.statuses: dict[str, list[int]] = defaultdict(list)  # path -> error statuses to answer
        self.ignore_range = False
        self.lock = threading.Lock()
        self.url = ""

    def etag(self, path: str) -> str:
        return '"' + hashlib.sha256(self.files[path]).hexdigest()[:16] + '"'

    def seen(self, path: str) -> list[dict]:
        with self.lock:
            return [r for r in self.requests if r["path"] == path]


class Handler(BaseHTTPRequestHandler):
    timeout = 10  # a stuck client cannot hold a server thread for longer

    def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
        state: ServerState = self.server.state  # type: ignore[attr-defined]
        with state.lock:
            state.requests.append(
                {"path": self.path, "range": self.headers.get("Range"), "if_range": self.headers.get("If-Range")}
            )
            status = state.statuses[self.path].pop(0) if state.statuses[self.path] else None
            cut = state.cuts[self.path].pop(0) if state.cuts[self.path] else None
        if status is not None:
            self.send_error(status)
            return
        if self.path not in state.files:
            self.send_error(404)
            return
        body, etag = state.files[self.path], state.etag(self.path)
        start, status = 0, 200
        requested = self.headers.get("Range")
        if_range = self.headers.get("If-Range")
        if requested and not state.ignore_range and if_range in (None, etag):
            start = int(re.fullmatch(r"bytes=(\d+)-", requested).group(1))
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206
        payload = body[start:]
        self.send_response(status)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("ETag", etag)
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        self.end_headers()
        if cut is not None:  # announce the whole length, send part of it, hang up
            self.wfile.write(payload[:cut])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(payload)

    def log_message(self, format: str, *args) -> None:  # keep test output quiet
        pass


@contextmanager
def serving(handler: type[BaseHTTPRequestHandler] = Handler, state: object | None = None) -> Iterator:
    """Run a server in a thread; yields its state (with `.url`), stops it on exit."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    httpd.state = state if state is not None else ServerState()  # type: ignore[attr-defined]
    httpd.state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield httpd.state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)
        assert not thread.is_alive(), "the test server did not stop"
