"""Servers the DICOMweb tests talk to, all on loopback.

- ``orthanc``: a real Orthanc with its DICOMweb plugin (Debian packages
  ``orthanc`` and ``orthanc-dicomweb``), started once per session on a free
  port with a throw-away storage folder and HTTP basic authentication,
  loaded with DICOM files pydicom ships and a generated multi-series CT
  study. Where Orthanc is missing the tests skip, except with ``CI=true``,
  where they fail.
- ``static_tree``: the bundled static DICOMweb tree served as static hosts
  serve it (gzip-encoded files, query parameters ignored), recording each
  request so tests can assert on what was asked.
"""

from __future__ import annotations

import os
import secrets
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pydicom
import pytest
from helpers import DATA

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
from orthanc_local import LocalOrthanc, OrthancUnavailable, ct_study  # noqa: E402

# Files pydicom ships inside its wheel (none needs a download): CT, MR, a
# JPEG 2000 MR, an RT plan, a 12-lead ECG waveform and a 15-frame RT dose.
PYDICOM_FILES = (
    "CT_small.dcm",
    "MR_small.dcm",
    "JPEG2000.dcm",
    "rtplan.dcm",
    "waveform_ecg.dcm",
    "rtdose.dcm",
)
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
GENERATED_SERIES = 3
GENERATED_INSTANCES = 12


@dataclass
class Orthanc:
    """The running test Orthanc: its DICOMweb root and its basic-auth credentials."""

    server: LocalOrthanc
    user: str
    password: str

    @property
    def root(self) -> str:
        return self.server.root

    @property
    def authorization(self) -> str:
        return self.server.basic_header()


def pydicom_files() -> list[bytes]:
    folder = Path(pydicom.__file__).resolve().parent / "data" / "test_files"
    return [(folder / name).read_bytes() for name in PYDICOM_FILES]


@pytest.fixture(scope="session")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Orthanc]:
    """A real Orthanc with DICOMweb on loopback, loaded with test data, for the session."""
    password = secrets.token_urlsafe(16)
    try:
        server = LocalOrthanc(
            tmp_path_factory.mktemp("orthanc"), users={"metastore": password}
        ).start()
    except OrthancUnavailable as err:
        if IN_CI:
            pytest.fail(f"Orthanc is needed in CI: {err}")
        pytest.skip(str(err))
    try:
        server.upload(pydicom_files())
        server.upload(
            ct_study(series=GENERATED_SERIES, instances=GENERATED_INSTANCES, patient="GEN-CT")
        )
        yield Orthanc(server=server, user="metastore", password=password)
    finally:
        server.stop()


@dataclass
class StaticTree:
    """The bundled static DICOMweb tree on a local HTTP server."""

    root: str
    requests: list[str] = field(default_factory=list)


def _tree_file(path: str, tree: Path = DATA) -> Path | None:
    """The file of the static tree that answers a request path."""
    parts = [unquote(p) for p in path.strip("/").split("/")]
    if not parts or parts[0] != "studies":
        return None
    base = tree.joinpath(*parts)
    candidates = {
        1: base / "index.json.gz",  # /studies
        2: base / "index.json.gz",  # /studies/{s}
        3: base / "index.json.gz",  # /studies/{s}/series
        5: base / "index.json.gz",  # /studies/{s}/series/{r}/instances
    }
    if len(parts) == 5 and parts[4] == "metadata":
        found = tree.joinpath(*parts[:4]) / "metadata.gz"
        return found if found.is_file() else None
    found = candidates.get(len(parts))
    return found if found is not None and found.is_file() else None


@contextmanager
def serve_tree(tree_dir: Path) -> Iterator[StaticTree]:
    """Serve a static DICOMweb tree (a directory laid out as the bundled one) the way a static host does."""
    tree = StaticTree(root="")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            tree.requests.append(self.path)
            found = _tree_file(urlsplit(self.path).path, tree_dir)
            if found is None:
                self.send_error(404)
                return
            body = found.read_bytes()
            self.send_response(200)
            self.send_header("Content-Type", "application/dicom+json")
            self.send_header("Content-Encoding", "gzip")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    tree.root = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield tree
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture(scope="session")
def static_tree() -> Iterator[StaticTree]:
    """Serve metastore/data/static-dicomweb the way a static host does."""
    with serve_tree(DATA) as tree:
        yield tree
