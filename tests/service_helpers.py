"""Running the DICOMweb service in tests: a real uvicorn server on loopback, data from Orthanc."""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, cast

import httpx
import pytest
import uvicorn
from dicomweb_client.api import DICOMwebClient
from servers import Orthanc
from starlette.applications import Starlette
from starlette.types import ASGIApp

from metastore.ingest import ingest_source
from metastore.sources import SourceConfig

SOURCE = "orthanc"
AUTH_ENV = "METASTORE_SOURCE_AUTH_ORTHANC"


def orthanc_config(orthanc: Orthanc) -> SourceConfig:
    return SourceConfig(
        name=SOURCE,
        kind="dicomweb",
        root=orthanc.root,
        headers={"Authorization": orthanc.authorization},
    )


def ingest_orthanc(db_url: str, orthanc: Orthanc, monkeypatch: pytest.MonkeyPatch) -> None:
    """Index everything the test Orthanc holds; the service finds its credentials in the env."""
    summary = ingest_source(db_url, orthanc_config(orthanc), workers=1, lease=30)
    assert summary.failures == 0 and summary.instances > 0
    monkeypatch.setenv(AUTH_ENV, orthanc.authorization)


def orthanc_client(orthanc: Orthanc) -> DICOMwebClient:
    return DICOMwebClient(url=orthanc.root, headers={"Authorization": orthanc.authorization})


def free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@contextmanager
def serving(app: ASGIApp | Callable[[str], ASGIApp]) -> Iterator[str]:
    """Run an app on uvicorn in a thread on a free loopback port; yields its base URL.

    Given a function, calls it with the base URL to make the app.
    dicomweb-client sends ``Host`` without the port, so an app it talks to
    must be told its public URL to write BulkDataURIs that reach it.
    """
    sock = free_socket()
    host, port = sock.getsockname()
    if not isinstance(app, Starlette):
        app = cast(Callable[[str], ASGIApp], app)(f"http://{host}:{port}")
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


def strip_bulkdata(dataset: Any) -> Any:
    """A DICOM JSON data set with each BulkDataURI replaced by a marker (they name servers)."""
    if isinstance(dataset, list):
        return [strip_bulkdata(item) for item in dataset]
    if not isinstance(dataset, dict):
        return dataset
    out: dict[str, Any] = {}
    for key, value in dataset.items():
        if isinstance(value, dict) and "BulkDataURI" in value:
            out[key] = {**value, "BulkDataURI": "<bulk>"}
        else:
            out[key] = strip_bulkdata(value)
    return out


def by_sop(datasets: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {d["00080018"]["Value"][0]: d for d in datasets}


def wait_ready(process: subprocess.Popen[str], url: str, headers: dict[str, str]) -> None:
    """Wait until the served process answers ``url`` with 200."""
    deadline = time.monotonic() + 60
    while True:
        assert process.poll() is None, process.communicate()[1]
        try:
            if httpx.get(url, headers=headers).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "metastore serve did not start"
        time.sleep(0.2)
