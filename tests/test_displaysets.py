"""Display sets from the index: real data on SQLite and PostgreSQL, stable UIDs, few queries."""

from __future__ import annotations

import re
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pydicom.uid
import pytest
import sqlalchemy as sa
from displaysets_helpers import EXPECTED, load_real, summary, with_image_ids
from helpers import instance_meta, instances, real_studies, series_meta, study_meta

from metastore import MetaStore
from metastore.displaysets import (
    UID_NAMESPACE,
    display_set_uid,
    get_display_sets,
    sopclasses,
    study_display_sets,
)
from metastore.displaysets.handlers import SEGMENTATION, STACK

UID_SHAPE = re.compile(r"^2\.25\.(0|[1-9][0-9]*)$")


@pytest.fixture(
    scope="module",
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres),
    ],
)
def real_store(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MetaStore]:
    """Every bundled real study, indexed once per backend for this module's read-only tests."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('real') / 'metastore.db'}"
    else:
        url = request.getfixturevalue("postgres").migrated_clone()
    with MetaStore(url) as opened:
        load_real(opened)
        yield opened


def by_series(display_sets: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    grouped: dict[str, list[dict[str, Any]]] = {}
    for display_set in display_sets:
        grouped.setdefault(display_set["SeriesInstanceUID"], []).append(display_set)
    return grouped


@contextmanager
def counted_statements(store: MetaStore) -> Iterator[list[str]]:
    statements: list[str] = []

    def count(*args: Any) -> None:
        if str(args[2]).lstrip().upper().startswith("SELECT"):
            statements.append(args[2])

    sa.event.listen(store.engine, "before_cursor_execute", count)
    try:
        yield statements
    finally:
        sa.event.remove(store.engine, "before_cursor_execute", count)


# -- real data through the store ------------------------------------------------------


def test_every_real_series_gives_the_display_sets_a_viewer_shows(real_store: MetaStore) -> None:
    studies = [study["StudyInstanceUID"] for study, _, _ in real_studies()]
    seen: dict[str, list[tuple[str, int, int, bool | None]]] = {}
    for study_uid in studies:
        display_sets = get_display_sets(real_store, study_uid)
        assert display_sets is not None
        study = real_store.get_study(study_uid)
        assert study is not None
        stored = {
            i["SOPInstanceUID"]
            for series in study["seriesLists"][0]["series"]
            for i in series["instances"]
        }
        shown = Counter(uid for ds in display_sets for uid in ds["SOPInstanceUIDs"])
        assert set(shown) == stored, "every instance is shown"
        assert set(shown.values()) == {1}, "and shown once"
        for series_uid, made in by_series(display_sets).items():
            seen[series_uid] = [summary(ds) for ds in made]
        for display_set in display_sets:
            assert display_set["StudyInstanceUID"] == study_uid
            assert display_set["source"] == "real"
            assert "unsupported" not in display_set
            assert UID_SHAPE.match(display_set["displaySetInstanceUID"])
            assert len(display_set["displaySetInstanceUID"]) <= 64
            if display_set["numImageFrames"] and display_set["SOPClassHandlerId"] == STACK:
                assert len(display_set["imageIds"]) == display_set["numImageFrames"]
    assert seen == EXPECTED


def test_real_display_sets_carry_their_handlers_fields(real_store: MetaStore) -> None:
    sets: dict[str, list[dict[str, Any]]] = {}
    for study, _, _ in real_studies():
        sets.update(by_series(get_display_sets(real_store, study["StudyInstanceUID"]) or []))

    [flair] = sets["1.2.826.0.13251432571622157432418024103657242430176808"]
    assert flair["missingFrames"] == 11
    assert flair["averageSpacingBetweenFrames"] == pytest.approx(3.0)
    assert flair["messages"] == ["MISSING_FRAMES"]

    [localizer] = sets["1.2.840.113619.2.5.1762583153.215519.978957063.79"]
    assert localizer["messages"] == ["INCONSISTENT_ORIENTATIONS"]

    [pdf] = sets["1.2.826.0.1.3680043.8.498.12922197173025695370821667732613712885"]
    assert pdf["MIMETypeOfEncapsulatedDocument"] == "application/pdf"
    assert pdf["Modality"] == "DOC"
    assert pdf["imageIds"] == [pdf["imageIds"][0]] and pdf["imageIds"][0].startswith("wadors:")

    [ecg] = sets["1.3.6.1.4.1.20029.40.20130125105919.5407.1"]
    assert [(g["label"], g["channels"], g["durationSeconds"]) for g in ecg["multiplexGroups"]] == [
        ("RHYTHM", 12, 10.0),
        ("MEDIAN BEAT", 12, 1.2),
    ]

    stack, video = sets["2.25.15054212212536476297201250326674987992"]
    assert video["TransferSyntaxUID"] == sopclasses.MPEG4HP41BD
    assert (video["FrameTime"], video["CineRate"], video["numImageFrames"]) == (16.17, 60, 3360)
    assert video["videoURI"].endswith("pixeldata.mp4?length=47363258&offset=0")
    assert stack["SOPClassUID"] == sopclasses.SecondaryCaptureImageStorage
    assert stack["sopClassUids"] == sorted(
        [
            sopclasses.SecondaryCaptureImageStorage,
            sopclasses.MultiFrameTrueColorSecondaryCaptureImageStorage,
        ]
    )
    assert stack["messages"] == ["NO_POSITION_INFORMATION", "NO_ORIENTATION_INFORMATION"]

    [dx] = sets["1.3.46.670589.30.1.3.1.1625260923.1632320560703.1"]
    assert dx["SOPInstanceUID"] == dx["SOPInstanceUIDs"][0]
    assert dx["messages"] == ["SINGLE_IMAGE"]


def test_real_reports_point_at_the_display_sets_they_measure(real_store: MetaStore) -> None:
    sella = by_series(
        get_display_sets(real_store, "1.2.840.113619.2.5.1762583153.215519.978957063.78") or []
    )
    [coronal] = sella["1.2.840.113619.2.5.1762583153.215519.978957063.135"]
    [sagittal] = sella["1.2.840.113619.2.5.1762583153.215519.978957063.121"]
    [arrow] = sella["2.25.419303365440983205264849749108051206092"]
    [length] = sella["2.25.944308842816891584999489364426779656922"]
    assert arrow["isImagingMeasurementReport"] is True
    assert arrow["referencedDisplaySetInstanceUIDs"] == [coronal["displaySetInstanceUID"]]
    assert length["referencedDisplaySetInstanceUIDs"] == [sagittal["displaySetInstanceUID"]]
    nlst = by_series(
        get_display_sets(real_store, "1.2.840.113654.2.55.242841386983064378162007136685545369722")
        or []
    )
    [ct] = nlst["1.2.840.113654.2.55.214483182570512319377495527619089952642"]
    [sr3d] = nlst["1.2.826.0.1.3680043.8.498.47502524225961833066018243059961648991"]
    assert sr3d["referencedDisplaySetInstanceUIDs"] == [ct["displaySetInstanceUID"]]
    assert sr3d["title"] == "Imaging Measurement Report"


def test_volumes_are_ordered_along_the_normal_and_the_rest_by_instance_number(
    real_store: MetaStore,
) -> None:
    petct = by_series(
        get_display_sets(real_store, "1.3.6.1.4.1.25403.345050719074.3824.20170125113417.1") or []
    )
    [ct] = petct["1.3.6.1.4.1.25403.345050719074.3824.20170125113545.4"]
    series = real_store.get_series(ct["StudyInstanceUID"], ct["SeriesInstanceUID"])
    assert series is not None
    z = {i["SOPInstanceUID"]: i["ImagePositionPatient"][2] for i in series["instances"]}
    heights = [z[uid] for uid in ct["SOPInstanceUIDs"]]
    assert heights == sorted(heights, reverse=True)  # axial: the normal is +z, head first
    assert [image_id.split("/instances/")[1] for image_id in ct["imageIds"]] == [
        f"{uid}/frames/1" for uid in ct["SOPInstanceUIDs"]
    ]
    sella = by_series(
        get_display_sets(real_store, "1.2.840.113619.2.5.1762583153.215519.978957063.78") or []
    )
    [localizer] = sella["1.2.840.113619.2.5.1762583153.215519.978957063.79"]
    series = real_store.get_series(localizer["StudyInstanceUID"], localizer["SeriesInstanceUID"])
    assert series is not None
    numbers = {i["SOPInstanceUID"]: i["InstanceNumber"] for i in series["instances"]}
    shown = [numbers[uid] for uid in localizer["SOPInstanceUIDs"]]
    assert shown == sorted(numbers.values()) and len(shown) == 26


def test_uids_are_the_same_from_the_store_and_from_a_plain_study_dict(
    real_store: MetaStore,
) -> None:
    """The same index gives the same UIDs: here, two databases and no database at all."""
    for study, series_rows, per_series in real_studies():
        from_store = get_display_sets(real_store, study["StudyInstanceUID"]) or []
        plain = {
            "StudyInstanceUID": study["StudyInstanceUID"],
            "seriesLists": [
                {
                    "source": "real",
                    "series": [
                        {**row, "instances": with_image_ids(batch)}
                        for row, batch in zip(
                            sorted(series_rows, key=lambda r: r["SeriesInstanceUID"]),
                            sorted(per_series, key=lambda b: b[0]["SeriesInstanceUID"]),
                            strict=True,
                        )
                    ],
                }
            ],
        }
        computed = study_display_sets(plain)
        assert sorted(d["displaySetInstanceUID"] for d in from_store) == sorted(
            d["displaySetInstanceUID"] for d in computed
        )


def test_the_uid_is_the_documented_name_based_uuid() -> None:
    name = "\n".join(
        (
            STACK,
            "real",
            "1.3.6.1.4.1.25403.345050719074.3824.20170125113417.1",
            "1.3.6.1.4.1.25403.345050719074.3824.20170125113545.4",
            sopclasses.CTImageStorage,
            "stack",
        )
    )
    expected = f"2.25.{uuid.uuid5(UID_NAMESPACE, name).int}"
    got = display_set_uid(
        handler_id=STACK,
        source="real",
        study_uid="1.3.6.1.4.1.25403.345050719074.3824.20170125113417.1",
        series_uid="1.3.6.1.4.1.25403.345050719074.3824.20170125113545.4",
        sop_class_uid=sopclasses.CTImageStorage,
        key="stack",
    )
    assert got == expected
    # Pinned: a change here changes every UID every index has handed out.
    assert got == "2.25.31725109226146251985341678874774555387"


def test_a_stack_keeps_its_uid_as_the_series_grows(store: MetaStore) -> None:
    store.add_instances(instances(count=5), source="pacs")
    [before] = get_display_sets(store, "1.2.3") or []
    store.add_instances([instance_meta(number=6)], source="pacs")
    [after] = get_display_sets(store, "1.2.3") or []
    assert after["displaySetInstanceUID"] == before["displaySetInstanceUID"]
    assert (before["numImageFrames"], after["numImageFrames"]) == (5, 6)


def test_one_study_is_read_with_a_fixed_number_of_queries(store: MetaStore) -> None:
    store.add_instances(instances(study="1.1", series="1.1.1", count=2), source="pacs")
    for k in range(6):
        store.add_instances(instances(study="2.2", series=f"2.2.{k}", count=40), source="pacs")
    with counted_statements(store) as small:
        assert len(get_display_sets(store, "1.1") or []) == 1
    with counted_statements(store) as large:
        assert len(get_display_sets(store, "2.2") or []) == 6
    assert len(small) == len(large) == 3


def test_each_source_has_its_own_display_sets(store: MetaStore) -> None:
    for source in ("pacs", "mirror"):
        store.add_series_metadata([series_meta()], source=source)
        store.add_instances(instances(count=3), source=source)
    both = get_display_sets(store, "1.2.3") or []
    assert [d["source"] for d in both] == ["mirror", "pacs"]
    assert len({d["displaySetInstanceUID"] for d in both}) == 2
    only = get_display_sets(store, "1.2.3", source="pacs") or []
    assert [d["displaySetInstanceUID"] for d in only] == [both[1]["displaySetInstanceUID"]]


def test_an_unknown_study_has_no_display_sets(store: MetaStore) -> None:
    assert get_display_sets(store, "9.9.9") is None
    store.add_study(study_meta("9.9.9"))
    assert get_display_sets(store, "9.9.9") == []


def test_a_segmentation_points_at_the_stack_it_segments(store: MetaStore) -> None:
    axial = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    store.add_instances(instances(count=4, ImageOrientationPatient=axial), source="pacs")
    seg = instance_meta(
        series="1.2.3.9",
        number=1,
        Modality="SEG",
        SeriesNumber=9,
        SOPClassUID=sopclasses.SegmentationStorage,
        NumberOfFrames=8,
        ReferencedSeriesSequence=[{"SeriesInstanceUID": "1.2.3.1"}],
        SegmentSequence=[
            {"SegmentNumber": 1, "SegmentLabel": "liver"},
            {"SegmentNumber": 2, "SegmentLabel": "spleen"},
        ],
    )
    del seg["ImagePositionPatient"]
    store.add_instances([seg], source="pacs")
    stack, segmentation = get_display_sets(store, "1.2.3") or []
    assert segmentation["SOPClassHandlerId"] == SEGMENTATION
    assert segmentation["Modality"] == "SEG"
    assert segmentation["referencedDisplaySetInstanceUID"] == stack["displaySetInstanceUID"]
    assert segmentation["isReconstructable"] is True  # as the stack it segments
    assert segmentation["numImageFrames"] == len(segmentation["imageIds"]) == 8
    assert segmentation["imageIds"][7] == f"{seg['url']}?frame=8"
    assert [s["SegmentLabel"] for s in segmentation["segments"]] == ["liver", "spleen"]


def test_sop_class_constants_are_the_standards() -> None:
    names = [name for name in dir(sopclasses) if name[0].isupper() and name[1].islower()]
    names += [name for name in dir(sopclasses) if name.startswith(("MPEG4", "HEVC"))]
    assert len(names) > 60
    for name in names:
        value = getattr(sopclasses, name)
        if name == "LabelMapSegmentationStorage":
            continue  # newer than pydicom's dictionary
        assert pydicom.uid.UID(value).keyword == name, name
