"""What the sync and follower tests share: an Orthanc of their own, and a request recorder."""

from __future__ import annotations

import io
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pydicom
import pytest

from metastore import MetaStore, sources
from metastore.outbox import Event
from metastore.sources import SourceConfig
from metastore.sources.dicomweb import DicomWebSource

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
from orthanc_local import LocalOrthanc, OrthancUnavailable, ct_study  # noqa: E402
from servers import IN_CI  # noqa: E402


def study_files(*, series: int, instances: int, study_uid: str | None = None) -> list[bytes]:
    return list(ct_study(series=series, instances=instances, study_uid=study_uid))


def uid_of(files: list[bytes], keyword: str = "StudyInstanceUID") -> str:
    """A UID of generated files (read back from the first one)."""
    return str(getattr(pydicom.dcmread(io.BytesIO(files[0]), stop_before_pixels=True), keyword))


@pytest.fixture
def archive(tmp_path: Path) -> Iterator[LocalOrthanc]:
    """A fresh Orthanc for one test (tests change what it holds), stable after 1 s."""
    try:
        server = LocalOrthanc(tmp_path / "orthanc", stable_age=1).start()
    except OrthancUnavailable as err:
        if IN_CI:
            pytest.fail(f"Orthanc is needed in CI: {err}")
        pytest.skip(str(err))
    try:
        yield server
    finally:
        server.stop()


class Recorder(httpx.BaseTransport):
    """A real HTTP transport that remembers every request (method, path, query)."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.requests: list[tuple[str, str, str]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append((request.method, request.url.path, request.url.query.decode()))
        return self.inner.handle_request(request)

    def paths(self, ending: str = "") -> list[str]:
        return [path for _method, path, _query in self.requests if path.endswith(ending)]

    def close(self) -> None:
        """Sources close their client (and so this) after each use: the pool stays open."""

    def shutdown(self) -> None:
        self.inner.close()


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> Iterator[Recorder]:
    """Every dicomweb source opened in this process sends its requests through one recorder."""
    recording = Recorder()

    def factory(config: SourceConfig) -> DicomWebSource:
        return DicomWebSource(config, transport=recording)

    monkeypatch.setitem(sources._registered, "dicomweb", factory)
    yield recording
    recording.shutdown()


def events_after(store: MetaStore, seq: int) -> list[Event]:
    return store.changes(after=seq, limit=100_000)


def last_seq(store: MetaStore) -> int:
    found = store.changes(after=0, limit=1_000_000)
    return found[-1].seq if found else 0
