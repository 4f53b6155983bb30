"""Builders of DICOM JSON launch files, and a small loopback HTTP server, for tests."""

from __future__ import annotations

import gzip
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa

from metastore import MetaStore

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"


def launch_instance(study: str, series: str, number: int, **extra: Any) -> dict[str, Any]:
    sop = f"{series}.{number}"
    metadata: dict[str, Any] = {
        "StudyInstanceUID": study,
        "SeriesInstanceUID": series,
        "SOPInstanceUID": sop,
        "SOPClassUID": CT_IMAGE,
        "Modality": "CT",
        "InstanceNumber": number,
        "Rows": 512,
        "Columns": 512,
        "PixelSpacing": [0.5, 0.5],
        "ImagePositionPatient": [0.0, 0.0, float(number)],
    }
    metadata.update(extra)
    return {"metadata": metadata, "url": f"dicomweb:https://host/data/{series}/{number}.dcm"}


def launch_study(
    study: str = "1.2.3", *, series: int = 2, instances: int = 3, **extra: Any
) -> dict[str, Any]:
    document: dict[str, Any] = {
        "StudyInstanceUID": study,
        "StudyDate": "20240102",
        "StudyTime": "101500",
        "PatientName": "Doe^Jane",
        "PatientID": "PAT001",
        "AccessionNumber": "ACC1",
        "PatientAge": "050Y",
        "PatientSex": "F",
        "NumInstances": series * instances,
        "Modalities": "CT",
        "series": [
            {
                "SeriesInstanceUID": f"{study}.{s}",
                "SeriesNumber": s,
                "Modality": "CT",
                "SliceThickness": 2.5,
                "instances": [
                    launch_instance(study, f"{study}.{s}", n) for n in range(1, instances + 1)
                ],
            }
            for s in range(1, series + 1)
        ],
    }
    document.update(extra)
    return document


def write_launch(path: Path, studies: list[dict[str, Any]]) -> Path:
    data = orjson.dumps({"studies": studies})
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


def table_rows(store: MetaStore) -> dict[str, list[tuple[Any, ...]]]:
    """The index's rows by content (no ids, times or source), for comparing two databases.

    ``metadata`` compares as JSON values (jsonb on PostgreSQL, text on SQLite).
    """
    with store.engine.connect() as connection:
        study_rows = connection.execute(
            sa.text(
                "SELECT study_uid, patient_id, patient_name, study_date, study_time,"
                " accession_number, study_description, modalities_in_study, num_series,"
                " num_instances, metadata FROM studies ORDER BY study_uid"
            )
        ).all()
        series_rows = connection.execute(
            sa.text(
                "SELECT st.study_uid, se.series_uid, se.modality, se.series_number,"
                " se.series_description, se.num_instances, se.metadata"
                " FROM series se JOIN studies st ON st.id = se.study_id"
                " ORDER BY st.study_uid, se.series_uid"
            )
        ).all()
        instance_rows = connection.execute(
            sa.text(
                "SELECT se.series_uid, i.sop_uid, i.sop_class_uid, i.instance_number,"
                " i.number_of_frames, i.rows, i.columns, i.url, i.image_id, i.version,"
                " i.metadata FROM instances i JOIN series se ON se.id = i.series_id"
                " ORDER BY se.series_uid, i.sop_uid"
            )
        ).all()
    return {
        "studies": [tuple(r) for r in study_rows],
        "series": [tuple(r) for r in series_rows],
        "instances": [tuple(r) for r in instance_rows],
    }


@dataclass
class Served:
    """What the loopback server answers, and the requests it saw."""

    routes: dict[str, tuple[int, dict[str, str], bytes]] = field(default_factory=dict)
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    base: str = ""


@contextmanager
def http_server() -> Iterator[Served]:
    """A real HTTP server on 127.0.0.1 answering ``routes`` by raw request path."""
    served = Served()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            served.requests.append((self.path, dict(self.headers.items())))
            status, headers, body = served.routes.get(self.path, (404, {}, b"not found"))
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            if "Content-Length" not in headers:
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    served.base = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield served
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
