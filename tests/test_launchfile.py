"""Reading launch files: shape, checks with JSON paths, frames, streaming (no database)."""

from __future__ import annotations

import gzip
import io
import tracemalloc
from pathlib import Path
from typing import Any

import orjson
import pytest
from launch_helpers import launch_instance, launch_study, write_launch

from metastore import InvalidMetadata
from metastore.imageids import frame_image_ids, frame_number, instance_image_ids, strip_frame
from metastore.launchfile import LaunchStudy, StudyFailure, read_studies
from metastore.launchfile import spool as spool_module


def read(document: Any) -> list[LaunchStudy | StudyFailure]:
    raw = document if isinstance(document, bytes) else orjson.dumps(document)
    return list(read_studies(io.BytesIO(raw), name="test.json"))


def only_study(
    document: Any,
) -> tuple[LaunchStudy, list[tuple[dict[str, Any], list[dict[str, Any]]]]]:
    [study] = read(document)
    assert isinstance(study, LaunchStudy), study
    return study, list(study.series())


def failure(document: Any) -> InvalidMetadata:
    [item] = read(document)
    assert isinstance(item, StudyFailure), item
    assert isinstance(item.error, InvalidMetadata)
    return item.error


def test_reads_studies_series_and_instances_with_inherited_fields() -> None:
    study, series = only_study({"studies": [launch_study(series=2, instances=3)]})
    assert study.study_uid == "1.2.3"
    assert study.extras == {"NumInstances": 6, "Modalities": "CT"}
    assert "series" not in study.study and "NumInstances" not in study.study
    assert [s["SeriesInstanceUID"] for s, _ in series] == ["1.2.3.1", "1.2.3.2"]
    assert all(s["StudyInstanceUID"] == "1.2.3" for s in study.summaries)
    summary, instances = series[0]
    assert len(instances) == 3
    first = instances[0]
    # OHIF spreads study and series fields over each instance.
    assert first["PatientName"] == "Doe^Jane"
    assert first["SliceThickness"] == 2.5
    assert first["url"] == first["imageId"] == "dicomweb:https://host/data/1.2.3.1/1.dcm"
    # ...but not the launch file's own summary fields.
    assert "NumInstances" not in first and "Modalities" not in first


def test_instance_metadata_wins_over_study_and_series_fields() -> None:
    document = launch_study(series=1, instances=1)
    document["series"][0]["instances"][0]["metadata"]["PatientName"] = [{"Alphabetic": "Own^Name"}]
    _study, [(_summary, [instance])] = only_study({"studies": [document]})
    assert instance["PatientName"] == [{"Alphabetic": "Own^Name"}]


def test_study_fields_after_the_series_array_are_read() -> None:
    raw = (
        b'{"studies": [{"series": [{"SeriesInstanceUID": "1.2.3.1", "instances": ['
        + orjson.dumps(launch_instance("1.2.3", "1.2.3.1", 1))
        + b']}], "StudyInstanceUID": "1.2.3", "PatientID": "LATE"}]}'
    )
    study, [(_summary, [instance])] = only_study(raw)
    assert study.study["PatientID"] == "LATE"
    assert instance["PatientID"] == "LATE"


def test_frames_written_per_entry_fold_into_one_instance() -> None:
    # OHIF's generator: one entry per frame, ?frame=N, no NumberOfFrames (frames 1..N-1 of N).
    entries = []
    for frame in (1, 2, 3):
        entry = launch_instance("1.2.3", "1.2.3.1", 7)
        entry["url"] = f"dicomweb:https://host/mf.dcm?frame={frame}"
        entries.append(entry)
    document = launch_study(series=1, instances=1)
    document["series"][0]["instances"] = entries
    _study, [(_summary, [instance])] = only_study({"studies": [document]})
    assert instance["NumberOfFrames"] == 3
    assert instance["url"] == instance["imageId"] == "dicomweb:https://host/mf.dcm"
    assert instance_image_ids(instance) == [
        f"dicomweb:https://host/mf.dcm?frame={n}" for n in (1, 2, 3)
    ]


def test_declared_number_of_frames_is_kept_when_larger_than_the_entries() -> None:
    entries = []
    for frame in (1, 2):
        entry = launch_instance("1.2.3", "1.2.3.1", 7, NumberOfFrames=5)
        entry["url"] = f"dicomweb:https://host/mf.dcm?key=a%26b&frame={frame}"
        entries.append(entry)
    document = launch_study(series=1, instances=1)
    document["series"][0]["instances"] = entries
    _study, [(_summary, [instance])] = only_study({"studies": [document]})
    assert instance["NumberOfFrames"] == 5
    assert instance["url"] == "dicomweb:https://host/mf.dcm?key=a%26b"
    assert instance_image_ids(instance)[-1] == "dicomweb:https://host/mf.dcm?key=a%26b&frame=5"


def test_one_entry_with_number_of_frames_gets_an_image_id_per_frame() -> None:
    document = launch_study(series=1, instances=1)
    document["series"][0]["instances"][0]["metadata"]["NumberOfFrames"] = "4"
    _study, [(_summary, [instance])] = only_study({"studies": [document]})
    assert instance["url"] == "dicomweb:https://host/data/1.2.3.1/1.dcm"
    assert len(instance_image_ids(instance)) == 4
    assert instance_image_ids(instance)[0].endswith("1.dcm?frame=1")


@pytest.mark.parametrize("name", ["Doe^Jane", [{"Alphabetic": "Doe^Jane"}]])
def test_patient_name_as_string_or_person_name_object(name: Any) -> None:
    study, _series = only_study({"studies": [launch_study(PatientName=name)]})
    assert study.study["PatientName"] == name


@pytest.mark.parametrize(
    ("mutate", "path", "message"),
    [
        (lambda s: s.pop("StudyInstanceUID"), "studies[0].StudyInstanceUID", "missing"),
        (
            lambda s: s["series"][1]["instances"][2].pop("metadata"),
            "studies[0].series[1].instances[2].metadata",
            "missing",
        ),
        (
            lambda s: s["series"][1]["instances"][2].update(metadata=[1]),
            "studies[0].series[1].instances[2].metadata",
            "not an object",
        ),
        (
            lambda s: s["series"][0]["instances"][1]["metadata"].pop("SOPInstanceUID"),
            "studies[0].series[0].instances[1].metadata.SOPInstanceUID",
            "missing",
        ),
        (
            lambda s: s["series"][0]["instances"][1]["metadata"].update(SOPInstanceUID="1 2"),
            "studies[0].series[0].instances[1].metadata.SOPInstanceUID",
            "whitespace",
        ),
        (
            lambda s: s["series"][1]["instances"][0]["metadata"].update(SeriesInstanceUID="9.9"),
            "studies[0].series[1].instances[0].metadata.SeriesInstanceUID",
            "differs",
        ),
        (
            lambda s: s["series"][1]["instances"][0]["metadata"].update(StudyInstanceUID="9.9"),
            "studies[0].series[1].instances[0].metadata.StudyInstanceUID",
            "differs",
        ),
        (
            lambda s: s["series"][0]["instances"][0]["metadata"].update(InstanceNumber="x"),
            "studies[0].series[0].instances[0].metadata.InstanceNumber",
            "integer",
        ),
        (
            lambda s: s["series"][0]["instances"][0].update(url=5),
            "studies[0].series[0].instances[0].url",
            "string",
        ),
        (
            lambda s: s["series"][1].pop("SeriesInstanceUID"),
            "studies[0].series[1].SeriesInstanceUID",
            "missing",
        ),
        (
            lambda s: s["series"][1].pop("instances"),
            "studies[0].series[1].instances",
            "instances array",
        ),
        (
            lambda s: s["series"][0].update(SeriesNumber="one"),
            "studies[0].series[0].SeriesNumber",
            "integer",
        ),
        (lambda s: s.pop("series"), "studies[0].series", "series array"),
    ],
)
def test_bad_content_names_its_json_path(mutate: Any, path: str, message: str) -> None:
    document = launch_study(series=2, instances=3)
    mutate(document)
    error = failure({"studies": [document]})
    assert error.path == path
    assert message in str(error)
    assert "test.json" in str(error) and path in str(error)


def test_a_bad_study_does_not_stop_the_next() -> None:
    bad = launch_study("1.2.4")
    bad["series"][0]["instances"][0].pop("metadata")
    items = read({"studies": [launch_study("1.2.3"), bad, launch_study("1.2.5")]})
    assert [type(i).__name__ for i in items] == ["LaunchStudy", "StudyFailure", "LaunchStudy"]
    failed = items[1]
    assert isinstance(failed, StudyFailure)
    assert failed.index == 1 and failed.study_uid == "1.2.4"
    assert "studies[1].series[0].instances[0].metadata" in str(failed)


@pytest.mark.parametrize(
    ("raw", "path", "message"),
    [
        (b"not json at all", "$", "not valid JSON"),
        (b"[1, 2]", "$", "object with a studies array"),
        (b'{"patients": []}', "studies", "studies array"),
        (b'{"studies": {"a": 1}}', "studies", "must be an array"),
        (b'{"studies": [1]}', "studies[0]", "must be an object"),
        (b'{"studies": [{"series": {"a": 1}}]}', "studies[0].series", "must be an array"),
        (b'{"studies": [{"series": [7]}]}', "studies[0].series[0]", "must be an object"),
        (
            b'{"studies": [{"series": [{"instances": {"x": 1}}]}]}',
            "studies[0].series[0].instances",
            "must be an array",
        ),
    ],
)
def test_input_that_is_not_a_launch_file_raises(raw: bytes, path: str, message: str) -> None:
    with pytest.raises(InvalidMetadata) as caught:
        read(raw)
    assert caught.value.path == path
    assert message in str(caught.value)


def test_truncated_json_names_where_it_broke() -> None:
    raw = orjson.dumps({"studies": [launch_study("1.2.3"), launch_study("1.2.4")]})
    items = []
    with pytest.raises(InvalidMetadata) as caught:
        for item in read_studies(io.BytesIO(raw[: len(raw) - 200]), name="cut.json"):
            items.append(item)
    assert [i.study_uid for i in items if isinstance(i, LaunchStudy)] == ["1.2.3"]
    assert caught.value.path.startswith("studies[1]")
    assert "cut.json" in str(caught.value)


def test_truncated_gzip_is_reported_not_crashed(tmp_path: Path) -> None:
    from metastore.sources.stream import open_bytes

    path = write_launch(tmp_path / "x.json.gz", [launch_study()])
    path.write_bytes(path.read_bytes()[:-40])
    with open_bytes(str(path)) as stream, pytest.raises(InvalidMetadata) as caught:
        list(read_studies(stream, name=str(path)))
    assert "truncated or corrupt" in str(caught.value) or "not valid JSON" in str(caught.value)


def test_a_large_study_spills_to_disk_and_comes_back_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(spool_module, "SPOOL_INSTANCES", 5)
    study, series = only_study({"studies": [launch_study(series=4, instances=4)]})
    assert study._spool._file is not None  # spilled
    assert [len(instances) for _, instances in series] == [4, 4, 4, 4]
    assert series[3][1][3]["SOPInstanceUID"] == "1.2.3.4.4"
    study.close()


def test_memory_is_bounded_by_a_series_not_the_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(spool_module, "SPOOL_INSTANCES", 200)
    studies = [launch_study(f"1.2.{n}", series=5, instances=200) for n in range(8)]
    raw = orjson.dumps({"studies": studies})
    tracemalloc.start()
    whole = orjson.loads(raw)
    _current, whole_peak = tracemalloc.get_traced_memory()
    del whole
    tracemalloc.reset_peak()
    count = 0
    for item in read_studies(io.BytesIO(raw), name="big.json"):
        assert isinstance(item, LaunchStudy)
        with item:
            count += sum(len(instances) for _, instances in item.series())
    _current, streaming_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert count == 8 * 5 * 200
    # The whole file parsed at once holds 40 series; streaming holds about one.
    assert streaming_peak < whole_peak / 4


def test_gzip_files_are_read_whatever_their_name(tmp_path: Path) -> None:
    from metastore.sources.stream import open_bytes

    path = tmp_path / "plain-name.json"
    path.write_bytes(gzip.compress(orjson.dumps({"studies": [launch_study()]})))
    with open_bytes(str(path)) as stream:
        [study] = list(read_studies(stream, name=str(path)))
    assert isinstance(study, LaunchStudy) and study.instance_count == 6
    study.close()


@pytest.mark.parametrize(
    ("image_id", "frame", "stripped"),
    [
        ("dicomweb:https://h/a.dcm?frame=3", 3, "dicomweb:https://h/a.dcm"),
        ("dicomweb:https://h/a.dcm?key=a%26b&frame=2", 2, "dicomweb:https://h/a.dcm?key=a%26b"),
        ("wadouri:https://h/wado?objectUID=1&frame=1", 1, "wadouri:https://h/wado?objectUID=1"),
        (
            "wadors:https://h/studies/1/series/2/instances/3/frames/4",
            4,
            "wadors:https://h/studies/1/series/2/instances/3",
        ),
        ("dicomweb:https://h/a.dcm", None, "dicomweb:https://h/a.dcm"),
        ("dicomweb:https://h/a.dcm?frameset=2", None, "dicomweb:https://h/a.dcm?frameset=2"),
    ],
)
def test_frame_spellings(image_id: str, frame: int | None, stripped: str) -> None:
    assert frame_number(image_id) == frame
    assert strip_frame(image_id) == stripped


def test_frame_image_ids_are_one_based_in_both_spellings() -> None:
    assert frame_image_ids("dicomweb:https://h/a.dcm", 2) == [
        "dicomweb:https://h/a.dcm?frame=1",
        "dicomweb:https://h/a.dcm?frame=2",
    ]
    assert (
        frame_image_ids("wadors:https://h/instances/3", 2)[1]
        == "wadors:https://h/instances/3/frames/2"
    )
    assert frame_image_ids("dicomweb:https://h/a.dcm", 1) == ["dicomweb:https://h/a.dcm"]
