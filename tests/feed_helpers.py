"""Helpers for the change-feed tests: events, cursors, waiting, and a webhook receiver."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from helpers import instances

from metastore import MetaStore
from metastore.events import list_consumers

SIGNATURE_HEADER = "X-Metastore-Signature"  # spelled out: the receiver does not import ours
WAIT = 30.0  # the longest a test waits for something to happen


def add_events(store: MetaStore, count: int, start: int = 0) -> list[int]:
    """``count`` INSTANCES_ADDED events (one new series each); their sequence numbers."""
    return [
        event.seq
        for n in range(start, start + count)
        for event in store.add_instances(instances(series=f"1.2.3.{n}", count=1)).events
    ]


def cursor(store: MetaStore, name: str) -> int:
    """A consumer's cursor as stored in ``consumers`` (read on its own connection)."""
    for info in list_consumers(store):
        if info.name == name:
            return info.last_seq
    raise AssertionError(f"no consumer {name}")


def until(condition: Callable[[], bool], what: str) -> None:
    """Wait until ``condition()`` holds, for at most ``WAIT`` seconds."""
    deadline = time.monotonic() + WAIT
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


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
