"""Builders of realistic naturalized metadata for tests."""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from metastore import naturalize

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
DATA = Path(__file__).resolve().parent.parent / "metastore" / "data" / "static-dicomweb"


def study_meta(study: str = "1.2.3", **extra: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "StudyInstanceUID": study,
        "PatientID": "PAT001",
        "PatientName": [{"Alphabetic": "Doe^Jane"}],
        "StudyDate": "20240102",
        "StudyTime": "101500",
        "AccessionNumber": "ACC1",
        "StudyDescription": "CT chest",
    }
    meta.update(extra)
    return meta


def series_meta(study: str = "1.2.3", series: str = "1.2.3.1", **extra: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "StudyInstanceUID": study,
        "SeriesInstanceUID": series,
        "Modality": "CT",
        "SeriesNumber": 1,
        "SeriesDescription": "axial",
    }
    meta.update(extra)
    return meta


def instance_meta(
    study: str = "1.2.3", series: str = "1.2.3.1", number: int = 1, **extra: Any
) -> dict[str, Any]:
    sop = f"{series}.{number}"
    meta: dict[str, Any] = {
        **study_meta(study),
        "SeriesInstanceUID": series,
        "Modality": "CT",
        "SeriesNumber": 1,
        "SOPInstanceUID": sop,
        "SOPClassUID": CT_IMAGE,
        "InstanceNumber": number,
        "Rows": 512,
        "Columns": 512,
        "ImagePositionPatient": [0.0, 0.0, float(number)],
        "url": f"dicomweb:http://archive/studies/{study}/series/{series}/instances/{sop}",
    }
    meta.update(extra)
    return meta


def instances(
    study: str = "1.2.3", series: str = "1.2.3.1", count: int = 3, **extra: Any
) -> list[dict[str, Any]]:
    return [instance_meta(study, series, n, **extra) for n in range(1, count + 1)]


def read_gz(path: Path) -> Any:
    return orjson.loads(gzip.decompress(path.read_bytes()))


def real_studies() -> Iterator[
    tuple[dict[str, Any], list[dict[str, Any]], list[list[dict[str, Any]]]]
]:
    """(study row, series rows, instances per series) of each bundled real study, naturalized."""
    for study_dir in sorted(p for p in (DATA / "studies").iterdir() if p.is_dir()):
        study = naturalize(read_gz(study_dir / "index.json.gz")[0])
        series_rows = [naturalize(r) for r in read_gz(study_dir / "series" / "index.json.gz")]
        per_series = [
            [naturalize(i) for i in read_gz(d / "metadata.gz")]
            for d in sorted(p for p in (study_dir / "series").iterdir() if p.is_dir())
        ]
        yield study, series_rows, per_series
