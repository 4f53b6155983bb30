"""Faults around the service: the archive down, slow, stalling; clients going away; load.

The archive here is a small local server that misbehaves on purpose (a
fake only for fault injection); the service runs on a real uvicorn.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from helpers import instances
from service_helpers import free_socket, serving, wait_ready

from metastore import MetaStore
from metastore.service import Settings, create_app

STUDY, SERIES = "1.2.3", "1.2.3.1"
SECRET = "Basic c2VjcmV0LXVzZXI6c2VjcmV0LXBhc3N3b3Jk"


class Archive:
    """A local 'archive' whose frames answer as ``mode`` says; records what it saw."""

    def __init__(self) -> None:
        self.mode = "ok"
        self.release = threading.Event()
        self.closed = threading.Event()
        self.requests: list[dict[str, str]] = []
        archive = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                archive.requests.append({"path": self.path, **dict(self.headers)})
                if archive.mode in ("drop", "drop-once"):  # the connection closed, no answer
                    archive.mode = "ok" if archive.mode == "drop-once" else "drop"
                    self.close_connection = True
                    return
                if archive.mode == "slow":
                    archive.release.wait(30)
                    return
                if archive.mode == "held":  # answers ok once released
                    archive.release.wait(30)
                    archive.mode = "ok"
                if archive.mode == "ok":
                    body = b"frame-bytes"
                    self.send_response(200)
                    self.send_header("Content-Type", "application/octet-stream")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                # "stall" and "endless": headers and a first chunk, then more or nothing.
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(1 << 30))
                self.end_headers()
                try:
                    self.wfile.write(b"x" * 65536)
                    self.wfile.flush()
                    while archive.mode == "endless":
                        self.wfile.write(b"x" * 65536)
                        self.wfile.flush()
                        time.sleep(0.01)
                    archive.release.wait(30)
                except OSError:
                    archive.closed.set()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.root = f"http://127.0.0.1:{self.server.server_address[1]}/dicomweb"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Archive:
        self.thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.mode = "done"
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


def _index(store: MetaStore, root: str, count: int = 2) -> str:
    store.register_source("archive", "dicomweb", root_url=root)
    items = instances(STUDY, SERIES, count)
    for item in items:
        sop = item["SOPInstanceUID"]
        item["url"] = f"{root}/studies/{STUDY}/series/{SERIES}/instances/{sop}"
    store.add_instances(items, source="archive")
    return f"/dicomweb/studies/{STUDY}/series/{SERIES}/instances/{SERIES}.1"


@pytest.fixture
def archive() -> Iterator[Archive]:
    with Archive() as running:
        yield running


@pytest.fixture
def credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("METASTORE_SOURCE_AUTH_ARCHIVE", SECRET)


def _app(store: MetaStore, **settings: Any) -> Any:
    return create_app(store, Settings.from_mapping({"upstream_timeout": 1.0, **settings}))


@pytest.mark.usefixtures("credentials")
def test_frames_reach_the_archive_with_its_credentials(store: MetaStore, archive: Archive) -> None:
    path = _index(store, archive.root)
    with serving(_app(store)) as base:
        response = httpx.get(f"{base}{path}/frames/1", headers={"Accept": "application/x-test"})
    assert response.status_code == 200 and response.content == b"frame-bytes"
    (seen,) = archive.requests
    assert seen["path"].endswith(f"/instances/{SERIES}.1/frames/1")
    assert seen["Authorization"] == SECRET and seen["Accept"] == "application/x-test"


@pytest.mark.usefixtures("credentials")
def test_archive_down_is_a_clear_502_without_credentials(
    store: MetaStore, caplog: pytest.LogCaptureFixture
) -> None:
    closed = free_socket()  # bound, never listening: connections are refused
    root = f"http://127.0.0.1:{closed.getsockname()[1]}/dicomweb"
    path = _index(store, root)
    try:
        with caplog.at_level(logging.INFO), serving(_app(store)) as base:
            response = httpx.get(f"{base}{path}/frames/1")
    finally:
        closed.close()
    assert response.status_code == 502
    assert "archive of source 'archive'" in response.text and "unreachable" in response.text
    for text in (response.text, caplog.text):
        assert SECRET not in text and "c2VjcmV0" not in text


def test_a_connection_the_archive_drops_unanswered_is_asked_again_once(
    store: MetaStore, archive: Archive
) -> None:
    # What an archive that times kept-alive connections out does to a request sent
    # as it closes one (Orthanc: 1 s idle): the connection ends with no answer.
    path = _index(store, archive.root)
    with serving(_app(store)) as base:
        archive.mode = "drop-once"
        response = httpx.get(f"{base}{path}/frames/1")
        assert response.status_code == 200 and response.content == b"frame-bytes"
        assert len(archive.requests) == 2
        archive.mode = "drop"  # every time: a clear 502 after the second try
        response = httpx.get(f"{base}{path}/frames/1")
        assert response.status_code == 502 and "unreachable" in response.text
        assert len(archive.requests) == 4


def test_slow_archive_is_a_504_not_a_hang(store: MetaStore, archive: Archive) -> None:
    archive.mode = "slow"
    path = _index(store, archive.root)
    with serving(_app(store, upstream_timeout=0.5)) as base:
        response = httpx.get(f"{base}{path}/frames/1", timeout=20)
        assert response.status_code == 504
        assert "did not answer in time" in response.text
        rendered = httpx.get(f"{base}{path}/rendered", timeout=20)
        assert rendered.status_code == 504


def test_archive_stalling_mid_stream_cuts_the_client_off(
    store: MetaStore, archive: Archive
) -> None:
    archive.mode = "stall"
    path = _index(store, archive.root)
    with serving(_app(store, upstream_timeout=0.5)) as base:
        with pytest.raises(httpx.RemoteProtocolError):
            httpx.get(f"{base}{path}/frames/1", timeout=20)
        # The service still answers.
        assert httpx.get(f"{base}/changefeed/latest").status_code == 200


def test_a_client_leaving_mid_stream_closes_the_archive_stream(
    store: MetaStore, archive: Archive
) -> None:
    archive.mode = "endless"
    path = _index(store, archive.root)
    with serving(_app(store, upstream_timeout=5.0)) as base:
        with httpx.stream("GET", f"{base}{path}/frames/1", timeout=20) as response:
            assert response.status_code == 200
            received = 0
            for chunk in response.iter_raw():
                received += len(chunk)
                if received > 200_000:
                    break
        # Leaving the block closed our connection; the archive must see its own close.
        assert archive.closed.wait(20), "the archive stream stayed open after the client left"


def test_eight_clients_while_an_ingest_writes(store: MetaStore) -> None:
    """No 500s, and every answer is a state some commit left (whole batches, in order)."""
    batch, batches = 10, 12
    series_uids = [f"1.2.3.{n}" for n in range(1, 4)]
    for uid in series_uids:
        store.add_instances(instances(STUDY, uid, batch), source="pacs")
    stop = threading.Event()

    def ingest() -> None:
        for round_ in range(1, batches):
            for uid in series_uids:
                more = instances(STUDY, uid, batch * (round_ + 1))[batch * round_ :]
                store.add_instances(more, source="pacs")
        stop.set()

    def reader(base: str, worker: int) -> list[str]:
        problems: list[str] = []
        seen_etags: dict[str, int] = {}
        with httpx.Client(base_url=base, timeout=30) as client:
            while not stop.is_set():
                uid = series_uids[worker % len(series_uids)]
                response = client.get(f"/dicomweb/studies/{STUDY}/series/{uid}/metadata")
                if response.status_code != 200:
                    problems.append(f"{response.status_code} {response.text}")
                    continue
                numbers = sorted(d["00200013"]["Value"][0] for d in response.json())
                if numbers != list(range(1, len(numbers) + 1)) or len(numbers) % batch:
                    problems.append(f"series {uid}: partial state {len(numbers)} instances")
                etag = response.headers["etag"]
                if seen_etags.setdefault(etag, len(numbers)) != len(numbers):
                    problems.append(f"ETag {etag} named two different answers")
                feed = client.get("/changefeed?after=0&limit=1000")
                study = client.get(f"/dicomweb/studies/{STUDY}/metadata")
                for other in (feed, study):
                    if other.status_code != 200:
                        problems.append(f"{other.status_code} {other.text}")
                seqs = [e["seq"] for e in feed.json()["events"]]
                if seqs != sorted(seqs):
                    problems.append("change feed out of order")
        return problems

    with serving(create_app(store)) as base, ThreadPoolExecutor(9) as pool:
        readers = [pool.submit(reader, base, n) for n in range(8)]
        writing = pool.submit(ingest)
        writing.result(timeout=300)
        problems = [p for r in readers for p in r.result(timeout=60)]
        final = httpx.get(f"{base}/dicomweb/studies/{STUDY}/series/1.2.3.1/metadata")
    assert problems == []
    assert len(final.json()) == batch * batches


@pytest.mark.usefixtures("credentials")
def test_bulkdata_is_fetched_from_the_uri_the_archive_gave(
    store: MetaStore, archive: Archive
) -> None:
    path = _index(store, archive.root)
    sop = f"{SERIES}.1"
    item = store.get_instance(STUDY, SERIES, sop)
    assert item is not None
    bulk = f"{archive.root}/studies/{STUDY}/series/{SERIES}/instances/{sop}/bulk"
    item["ReferencedImageSequence"] = [{"00091001": {"BulkDataURI": f"{bulk}/nested"}}]
    item["PixelData"] = {"BulkDataURI": f"{bulk}/7fe00010"}
    store.add_instances([item], source="archive")
    with serving(_app(store)) as base:
        nested = httpx.get(f"{base}{path}/bulk/00081140/0/00091001")
        pixels = httpx.get(f"{base}{path}/bulk/7FE00010")
        missing = httpx.get(f"{base}{path}/bulk/00081140/1/00091001")
    assert nested.status_code == pixels.status_code == 200
    assert nested.content == b"frame-bytes"
    assert [r["path"] for r in archive.requests] == [
        f"/dicomweb/studies/{STUDY}/series/{SERIES}/instances/{sop}/bulk/nested",
        f"/dicomweb/studies/{STUDY}/series/{SERIES}/instances/{sop}/bulk/7fe00010",
    ]
    assert all(r["Authorization"] == SECRET for r in archive.requests)
    assert missing.status_code == 404 and "no bulk data at 00081140/1/00091001" in missing.text


def test_credentials_go_only_to_the_sources_origin(store: MetaStore, archive: Archive) -> None:
    other = Archive()
    with other:
        _index(store, archive.root)
        sop = f"{SERIES}.1"
        item = store.get_instance(STUDY, SERIES, sop)
        assert item is not None
        item["PixelData"] = {"BulkDataURI": f"{other.root}/somewhere/else"}
        store.add_instances([item], source="archive")
        with pytest.MonkeyPatch.context() as env:
            env.setenv("METASTORE_SOURCE_AUTH_ARCHIVE", SECRET)
            with serving(_app(store)) as base:
                path = f"/dicomweb/studies/{STUDY}/series/{SERIES}/instances/{sop}"
                assert httpx.get(f"{base}{path}/bulk/7FE00010").status_code == 200
                assert httpx.get(f"{base}{path}/frames/1").status_code == 200
    ((seen_other,), (seen_archive,)) = other.requests, archive.requests
    assert "Authorization" not in seen_other
    assert seen_archive["Authorization"] == SECRET


def test_single_worker_serve_finishes_requests_then_exits_0_on_sigterm(
    db_url: str, archive: Archive
) -> None:
    """SIGTERM to a one-worker ``metastore serve``: the request in flight completes, exit 0."""
    archive.mode = "held"
    with MetaStore(db_url) as store:
        path = _index(store, archive.root)
    sock = free_socket()
    port = sock.getsockname()[1]
    sock.close()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "METASTORE_DATABASE_URL": db_url, "METASTORE_SERVE_PORT": str(port)}
    process = subprocess.Popen(
        [sys.executable, "-m", "metastore.cli", "serve", "--workers", "1"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_ready(process, f"{base}/changefeed/latest", {})
        with ThreadPoolExecutor(1) as pool:
            in_flight = pool.submit(httpx.get, f"{base}{path}/frames/1", timeout=60)
            deadline = time.monotonic() + 30
            while not archive.requests:  # the service is inside the request
                assert not in_flight.done(), in_flight.result()
                assert time.monotonic() < deadline, "the request never reached the archive"
                time.sleep(0.05)
            process.send_signal(signal.SIGTERM)
            while _accepting(port):  # shutting down: no new connections
                assert time.monotonic() < deadline, "the service kept accepting after SIGTERM"
                time.sleep(0.05)
            archive.release.set()
            answer = in_flight.result(timeout=60)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert answer.status_code == 200 and answer.content == b"frame-bytes"
    assert process.returncode == 0, stderr
    assert "Traceback" not in stderr


def _accepting(port: int) -> bool:
    try:
        httpx.get(f"http://127.0.0.1:{port}/changefeed/latest", timeout=5)
    except httpx.TransportError:
        return False
    return True
