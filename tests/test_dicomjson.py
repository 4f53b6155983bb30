"""Ingesting and exporting launch files on real SQLite and PostgreSQL."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import orjson
import pytest
from launch_helpers import http_server, launch_instance, launch_study, table_rows, write_launch

from metastore import EVENTS, InvalidMetadata, MetaStore, SourceError
from metastore.ingest import ingest_launch_file
from metastore.launchfile import launch_study as export_study
from metastore.launchfile.export import export_launch_file
from metastore.sources import SourceConfig, open_source
from metastore.sources.dicomjson import DicomJsonSource

SAMPLE = Path(__file__).resolve().parent.parent / "metastore" / "data" / "sample.json.gz"


def sample_counts() -> tuple[int, int, int]:
    document = orjson.loads(gzip.decompress(SAMPLE.read_bytes()))
    studies = document["studies"]
    series = sum(len(s["series"]) for s in studies)
    sops = {
        (se["SeriesInstanceUID"], i["metadata"]["SOPInstanceUID"])
        for s in studies
        for se in s["series"]
        for i in se["instances"]
    }
    return len(studies), series, len(sops)


def test_ingest_the_bundled_sample(store: MetaStore) -> None:
    summary = ingest_launch_file(store, str(SAMPLE), progress=False)
    n_studies, n_series, n_instances = sample_counts()
    assert summary.ok and summary.source == "sample"
    assert (summary.studies, summary.series, summary.instances) == (
        n_studies,
        n_series,
        n_instances,
    )
    assert summary.inserted == n_instances
    rows = store.stats()
    assert sum(r["instances"] for r in rows) == n_instances
    assert {r["source"] for r in rows} == {"sample"}
    source = store.get_source("sample")
    assert source is not None and source.kind == "dicomjson"
    # One SERIES_ADDED per study, one INSTANCES_ADDED per series.
    events = store.changes(limit=10_000)
    assert sum(e.type == EVENTS.SERIES_ADDED for e in events) == n_studies
    assert sum(e.type == EVENTS.INSTANCES_ADDED for e in events) == n_series

    again = ingest_launch_file(store, str(SAMPLE), progress=False)
    assert again.unchanged == n_instances and again.inserted == again.updated == 0
    assert again.events == 0
    assert len(store.changes(limit=10_000)) == len(events)


def test_the_real_multiframe_instance_has_an_image_id_per_frame(store: MetaStore) -> None:
    ingest_launch_file(store, str(SAMPLE), progress=False)
    found = None
    for uid in ("2.25.96975534054447904995905761963464388233",):
        study = store.get_study(uid)
        assert study is not None
        for one in study["seriesLists"][0]["series"]:
            for instance in one["instances"]:
                if instance.get("NumberOfFrames") == 3360:
                    found = instance
    assert found is not None
    assert len(found["imageIds"]) == 3360
    assert found["imageIds"][0] == found["url"] + "?frame=1"
    for image_id in (found["imageIds"][0], found["imageIds"][1234], found["imageIds"][-1]):
        hit = store.get_instance_by_image_id(image_id)
        assert hit is not None and hit["SOPInstanceUID"] == found["SOPInstanceUID"]


def export_and_reingest(store: MetaStore, other: MetaStore, tmp_path: Path, source: str) -> None:
    out = tmp_path / "exported.json.gz"
    summary = export_launch_file(store, out, source=source)
    assert summary.studies > 0 and summary.skipped == 0
    back = ingest_launch_file(other, str(out), source=source, progress=False)
    assert back.ok
    assert table_rows(other) == table_rows(store)


def _fresh_postgres(request: pytest.FixtureRequest) -> str:
    server = request.getfixturevalue("postgres")
    return str(server.migrated_clone())


def fresh_url(store: MetaStore, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    if store.dialect == "sqlite":
        return f"sqlite:///{tmp_path / 'other.db'}"
    return _fresh_postgres(request)


def test_round_trip_of_the_real_sample(
    store: MetaStore, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    ingest_launch_file(store, str(SAMPLE), progress=False)
    with MetaStore(fresh_url(store, tmp_path, request)) as other:
        export_and_reingest(store, other, tmp_path, "sample")


def test_round_trip_of_generated_files_with_frames(
    store: MetaStore, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    studies = [launch_study(f"1.2.{n}", series=2, instances=4) for n in range(3)]
    # A multi-frame instance written OHIF's way, and one declared by NumberOfFrames.
    frames = []
    for frame in (1, 2, 3):
        entry = launch_instance("1.2.0", "1.2.0.1", 9)
        entry["url"] = f"dicomweb:https://host/mf.dcm?key=a%26b&frame={frame}"
        frames.append(entry)
    studies[0]["series"][0]["instances"] += frames
    studies[1]["series"][1]["instances"][0]["metadata"]["NumberOfFrames"] = 6
    path = write_launch(tmp_path / "generated.json", studies)
    ingest_launch_file(store, str(path), source="gen", progress=False)
    with MetaStore(fresh_url(store, tmp_path, request)) as other:
        export_and_reingest(store, other, tmp_path, "gen")
        folded = other.get_instance("1.2.0", "1.2.0.1", "1.2.0.1.9")
        assert folded is not None and folded["NumberOfFrames"] == 3
        assert folded["url"] == "dicomweb:https://host/mf.dcm?key=a%26b"
        assert folded["imageIds"][2] == "dicomweb:https://host/mf.dcm?key=a%26b&frame=3"


def test_export_writes_what_ohif_reads(store: MetaStore, tmp_path: Path) -> None:
    study = launch_study(series=1, instances=2)
    study["series"][0]["instances"][1]["metadata"]["NumberOfFrames"] = 3
    ingest_launch_file(store, str(write_launch(tmp_path / "in.json", [study])), progress=False)
    out = tmp_path / "out.json"
    export_launch_file(store, out, ["1.2.3"])
    document = orjson.loads(out.read_bytes())
    [written] = document["studies"]
    assert written["StudyInstanceUID"] == "1.2.3"
    assert written["PatientName"] == "Doe^Jane" and written["PatientID"] == "PAT001"
    assert written["NumInstances"] == 2 and written["Modalities"] == "CT"
    [one] = written["series"]
    assert one["SeriesInstanceUID"] == "1.2.3.1" and one["Modality"] == "CT"
    assert "StudyInstanceUID" not in one and "NumberOfSeriesRelatedInstances" not in one
    urls = [entry["url"] for entry in one["instances"]]
    base = "dicomweb:https://host/data/1.2.3.1/2.dcm"
    assert urls == ["dicomweb:https://host/data/1.2.3.1/1.dcm"] + [
        f"{base}?frame={n}" for n in (1, 2, 3)
    ]
    for entry in one["instances"]:
        assert set(entry) == {"metadata", "url"}
        assert not {"url", "imageId", "imageIds"} & set(entry["metadata"])
        assert entry["metadata"]["SOPClassUID"]


def test_export_refuses_unknown_studies_and_writes_nothing(
    store: MetaStore, tmp_path: Path
) -> None:
    out = tmp_path / "out.json"
    with pytest.raises(Exception, match="9.9.9 is not in the index"):
        export_launch_file(store, out, ["9.9.9"])
    assert not out.exists()


def test_export_by_source_takes_that_series_list(store: MetaStore) -> None:
    for name in ("b", "a"):
        store.add_instances(
            [
                {
                    **launch_instance("1.2.3", "1.2.3.1", n)["metadata"],
                    "url": f"dicomweb:{name}/{n}",
                }
                for n in (1, 2)
            ],
            source=name,
        )
    study = store.get_study("1.2.3")
    assert study is not None
    from_b = export_study(study, source="b")
    assert from_b is not None
    assert [e["url"] for e in from_b["series"][0]["instances"]] == ["dicomweb:b/1", "dicomweb:b/2"]
    merged = export_study(study)
    assert merged is not None and len(merged["series"]) == 1  # the same series once
    assert merged["series"][0]["instances"][0]["url"] == "dicomweb:a/1"


def test_a_bad_study_stores_nothing_of_itself(store: MetaStore, tmp_path: Path) -> None:
    bad = launch_study("1.2.4", series=3, instances=2)
    bad["series"][2]["instances"][1]["metadata"]["SOPInstanceUID"] = "x" * 65
    path = write_launch(
        tmp_path / "mixed.json", [launch_study("1.2.3"), bad, launch_study("1.2.5")]
    )
    with pytest.raises(InvalidMetadata) as caught:
        ingest_launch_file(store, str(path), progress=False)
    assert caught.value.path == "studies[1].series[2].instances[1].metadata.SOPInstanceUID"
    assert "mixed.json" in str(caught.value)
    assert store.get_study("1.2.3") is not None  # before the bad one: kept
    assert store.get_study("1.2.4") is None  # nothing of the bad study, not even series 0 and 1
    assert store.get_study("1.2.5") is None  # stopped there

    summary = ingest_launch_file(store, str(path), keep_going=True, progress=False)
    assert not summary.ok
    assert [f.study_uid for f in summary.failures] == ["1.2.4"]
    assert summary.studies == 2
    assert store.get_study("1.2.4") is None and store.get_study("1.2.5") is not None


def test_ingest_from_a_url_keeps_its_query_string(store: MetaStore, tmp_path: Path) -> None:
    body = gzip.compress(orjson.dumps({"studies": [launch_study()]}))
    with http_server() as served:
        served.routes["/launch/study.json?key=a%26b"] = (
            200,
            {"Content-Type": "application/json", "Content-Encoding": "gzip"},
            body,
        )
        url = f"{served.base}/launch/study.json?key=a%26b"
        summary = ingest_launch_file(
            store, url, headers={"Authorization": "Bearer t"}, progress=False
        )
    assert summary.ok and summary.instances == 6 and summary.source == "study"
    [(path, headers)] = served.requests
    assert path == "/launch/study.json?key=a%26b"
    assert headers.get("Authorization") == "Bearer t"
    source = store.get_source("study")
    assert source is not None and source.root_url == f"{served.base}/launch/study.json"  # no query


@pytest.mark.parametrize(
    ("status", "headers", "body", "message"),
    [
        (500, {}, b"boom", "HTTP 500"),
        (404, {}, b"", "HTTP 404"),
        (200, {"Content-Length": "100000"}, b'{"studies": [', "failed"),
    ],
)
def test_url_faults_are_source_errors(
    store: MetaStore, status: int, headers: dict[str, str], body: bytes, message: str
) -> None:
    with http_server() as served:
        served.routes["/x.json"] = (status, headers, body)
        with pytest.raises((SourceError, InvalidMetadata), match=message):
            ingest_launch_file(store, f"{served.base}/x.json", progress=False)
    assert store.stats() == []


def test_dicomjson_source_serves_one_study(tmp_path: Path) -> None:
    path = write_launch(
        tmp_path / "two.json", [launch_study("1.2.3"), launch_study("1.2.4", series=1)]
    )
    source = open_source(SourceConfig(name="two", kind="dicomjson", root=str(path)))
    assert isinstance(source, DicomJsonSource)
    try:
        rows = list(source.search_studies())
        assert [r["StudyInstanceUID"] for r in rows] == ["1.2.3", "1.2.4"]
        assert rows[1]["NumberOfStudyRelatedInstances"] == 3
        assert [
            r["StudyInstanceUID"] for r in source.search_studies({"StudyInstanceUID": "1.2.4"})
        ] == ["1.2.4"]
        series = source.search_series("1.2.4")
        assert [s["SeriesInstanceUID"] for s in series] == ["1.2.4.1"]
        instances = source.retrieve_series_metadata("1.2.4", "1.2.4.1")
        assert [i["SOPInstanceUID"] for i in instances] == ["1.2.4.1.1", "1.2.4.1.2", "1.2.4.1.3"]
        assert instances[0]["PatientID"] == "PAT001"
        assert source.get_image_ids({**instances[0], "NumberOfFrames": 2})[1].endswith("?frame=2")
        with pytest.raises(Exception, match="not in"):
            source.search_series("9.9")
    finally:
        source.close()


def test_writes_go_through_the_store_per_series(store: MetaStore, tmp_path: Path) -> None:
    seen: list[Any] = []
    store.subscribe(EVENTS.INSTANCES_ADDED, seen.append)
    path = write_launch(tmp_path / "s.json", [launch_study(series=3, instances=2)])
    ingest_launch_file(store, str(path), progress=False)
    assert [e.series_uid for e in seen] == ["1.2.3.1", "1.2.3.2", "1.2.3.3"]
