"""``denaturalize`` with ``shared`` (a series' rendering): the same answer, byte for byte."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import orjson
import pytest
from helpers import real_studies

from metastore.dicom import denaturalize
from metastore.errors import InvalidMetadata
from metastore.service.metadata import render, render_instance, series_path

SAMPLE = Path(__file__).resolve().parent.parent / "metastore" / "data" / "sample.json.gz"
URL = series_path("http://service/dicomweb", "1.2.3", "1.2.3.4")


def _each_alone(items: list[dict[str, Any]]) -> bytes:
    return orjson.dumps([denaturalize(item) for item in items])


def _shared(items: list[dict[str, Any]]) -> bytes:
    shared: dict[Any, Any] = {}
    return orjson.dumps([denaturalize(item, shared) for item in items])


def _sample_series() -> list[list[dict[str, Any]]]:
    launch = orjson.loads(gzip.decompress(SAMPLE.read_bytes()))
    return [
        [instance["metadata"] for instance in one["instances"]]
        for study in launch["studies"]
        for one in study["series"]
    ]


def test_real_series_render_the_same() -> None:
    series = _sample_series() + [
        batch for _study, _rows, per_series in real_studies() for batch in per_series
    ]
    assert sum(len(s) for s in series) > 1000
    for items in series:
        assert _shared(items) == _each_alone(items)
        alone = render(render_instance(item, URL) for item in items)
        shared: dict[Any, Any] = {}
        together = render(render_instance(item, URL, shared) for item in items)
        assert together.json() == alone.json()
        assert together.etag == alone.etag


def test_values_that_are_equal_keys_but_written_differently() -> None:
    # 1 and 1.0 are equal dict keys; -0.0 and 0.0 too; a null _vrMap
    # entry is not an absent one; a keyword and its tag name the same attribute.
    items: list[dict[str, Any]] = [
        {"InstanceNumber": 1, "SliceLocation": 0.0, "RescaleSlope": 1.0},
        {"InstanceNumber": 1.0, "SliceLocation": -0.0, "RescaleSlope": 1},
        {"InstanceNumber": "1", "SliceLocation": -0.0, "RescaleSlope": "1"},
        {"Rows": 512, "_vrMap": {"Rows": None}},
        {"Rows": 512},
        {"Rows": 512, "_vrMap": {"Rows": "SS"}},
        {"00280010": 512, "PixelSpacing": [0.5, 0.5]},
        {"ReferencedSeriesSequence": [{"SeriesInstanceUID": "1.2", "Rows": 512}]},
        {"ReferencedSeriesSequence": [{"SeriesInstanceUID": "1.2", "Rows": 512}]},
    ]
    assert _shared(items) == _each_alone(items)
    assert _shared(items[::-1]) == _each_alone(items[::-1])


def test_errors_are_the_same_with_shared() -> None:
    shared: dict[Any, Any] = {}
    denaturalize({"Rows": 512}, shared)
    with pytest.raises(InvalidMetadata, match="two keys name the same tag") as caught:
        denaturalize({"Rows": 512, "00280010": 512}, shared)
    with pytest.raises(InvalidMetadata) as alone:
        denaturalize({"Rows": 512, "00280010": 512})
    assert (caught.value.path, str(caught.value)) == (alone.value.path, str(alone.value))
    with pytest.raises(InvalidMetadata, match="a VR must be a string or null"):
        denaturalize({"Rows": 512, "_vrMap": {"Rows": ["US"]}}, shared)
