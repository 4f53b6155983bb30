"""A real webhook receiver on loopback for the relay tests, with faults on demand."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

SIGNATURE_HEADER = "X-Metastore-Signature"  # spelled out: the receiver does not import ours


class Endpoint:
    """A webhook receiver on 127.0.0.1: fails the next ``fail_next`` requests with 503,
    checks the HMAC-SHA256 signature itself, and can go down (connections refused)
    and come back on the same port."""

    def __init__(self, secret: bytes | None) -> None:
        self.secret = secret
        self.accepted: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.refused_signatures = 0
        self.failed = 0
        self.fail_next = 0
        self.port = 0
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/metastore?token=t0ps3cret"

    def start(self) -> None:
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                status = endpoint.receive(self.path, dict(self.headers), body)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def receive(self, path: str, headers: dict[str, str], body: bytes) -> int:
        with self._lock:
            assert path == "/hooks/metastore?token=t0ps3cret"
            self.headers.append(headers)
            if self.fail_next > 0:
                self.fail_next -= 1
                self.failed += 1
                return 503
            if self.secret is not None:
                expected = "sha256=" + hmac.new(self.secret, body, hashlib.sha256).hexdigest()
                if not hmac.compare_digest(expected, headers.get(SIGNATURE_HEADER, "")):
                    self.refused_signatures += 1
                    return 401
            event = json.loads(body)
            assert headers["X-Metastore-Seq"] == str(event["seq"])
            assert headers["Content-Type"] == "application/json"
            self.accepted.append(event)
            return 204
