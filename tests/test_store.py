"""MetaStore semantics on real SQLite and PostgreSQL (every test runs on both)."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from helpers import instance_meta, instances, real_studies, series_meta, study_meta

from metastore import EVENTS, Event, InvalidMetadata, MetaStore, StoreClosed
from metastore.schema import instances as instances_table
from metastore.schema import series, studies


def count(store: MetaStore, table: sa.Table) -> int:
    with store.engine.connect() as connection:
        return int(connection.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())


def test_add_and_get_study_with_series_lists(store: MetaStore) -> None:
    store.add_study(study_meta(), source="pacs")
    store.add_series_metadata([series_meta()], source="pacs")
    store.add_instances(instances(count=3), source="pacs")
    study = store.get_study("1.2.3")
    assert study is not None
    assert study["PatientID"] == "PAT001"
    assert study["ModalitiesInStudy"] == "CT"
    assert study["NumberOfStudyRelatedSeries"] == 1
    assert study["NumberOfStudyRelatedInstances"] == 3
    [series_list] = study["seriesLists"]
    assert series_list["source"] == "pacs"
    [one] = series_list["series"]
    assert one["SeriesInstanceUID"] == "1.2.3.1"
    assert one["NumberOfSeriesRelatedInstances"] == 3
    assert [i["InstanceNumber"] for i in one["instances"]] == [1, 2, 3]
    assert one["instances"][0]["url"].startswith("dicomweb:http://archive/")
    assert one["instances"][0]["imageId"] == one["instances"][0]["url"]


def test_same_study_from_two_sources_keeps_two_lists(store: MetaStore) -> None:
    store.add_instances(instances(count=2), source="b-archive")
    store.add_instances(instances(count=3), source="a-cache")
    study = store.get_study("1.2.3")
    assert study is not None
    lists = {lst["source"]: lst["series"] for lst in study["seriesLists"]}
    assert set(lists) == {"a-cache", "b-archive"}
    assert len(lists["a-cache"][0]["instances"]) == 3
    assert len(lists["b-archive"][0]["instances"]) == 2
    assert study["NumberOfStudyRelatedSeries"] == 2  # series rows, every source
    assert study["NumberOfStudyRelatedInstances"] == 5
    assert (
        store.get_series("1.2.3", "1.2.3.1", source="b-archive")["NumberOfSeriesRelatedInstances"]
        == 2
    )  # type: ignore[index]


def test_get_of_something_absent_is_none(store: MetaStore) -> None:
    store.add_instances(instances(count=1))
    assert store.get_study("9.9") is None
    assert store.get_series("1.2.3", "9.9") is None
    assert store.get_series("9.9", "1.2.3.1") is None
    assert store.get_instance("1.2.3", "1.2.3.1", "9.9") is None
    assert store.get_instance_by_image_id("wadors:nowhere") is None


def test_get_instance_and_by_image_id(store: MetaStore) -> None:
    store.add_instances(
        [
            instance_meta(number=1),
            instance_meta(number=2, imageId="wadouri:http://x/2", url="http://x/retrieve/2"),
        ]
    )
    first = store.get_instance("1.2.3", "1.2.3.1", "1.2.3.1.1")
    assert first is not None and first["InstanceNumber"] == 1
    by_url = store.get_instance_by_image_id(first["url"])
    assert by_url is not None and by_url["SOPInstanceUID"] == "1.2.3.1.1"
    second = store.get_instance_by_image_id("wadouri:http://x/2")
    assert second is not None and second["SOPInstanceUID"] == "1.2.3.1.2"
    again = store.get_instance_by_image_id("http://x/retrieve/2")
    assert again is not None and again["imageId"] == "wadouri:http://x/2"
    framed = store.get_instance_by_image_id("wadouri:http://x/2&frame=3")
    assert framed is not None and framed["SOPInstanceUID"] == "1.2.3.1.2"


def test_instances_added_one_event_per_series_and_call(store: MetaStore) -> None:
    batch = instances(series="1.2.3.1", count=2) + instances(series="1.2.3.2", count=3)
    result = store.add_instances(batch, source="pacs")
    assert result.inserted == 5
    events = store.changes()
    assert [e.type for e in events] == [EVENTS.INSTANCES_ADDED] * 2
    assert {e.series_uid for e in events} == {"1.2.3.1", "1.2.3.2"}
    for event in events:
        assert event.payload["StudyInstanceUID"] == "1.2.3"
        assert event.payload["SeriesInstanceUID"] == event.series_uid
        assert event.payload["source"] == "pacs"
        assert event.source == "pacs"
    assert events[0].seq < events[1].seq


def test_series_added_one_event_per_study(store: MetaStore) -> None:
    store.add_series_metadata(
        [
            series_meta("1.2.3", "1.2.3.1"),
            series_meta("1.2.3", "1.2.3.2", Modality="SR"),
            series_meta("4.5.6", "4.5.6.1"),
        ],
        source="pacs",
    )
    events = store.changes()
    assert [e.type for e in events] == [EVENTS.SERIES_ADDED] * 2
    by_study = {e.study_uid: e for e in events}
    assert by_study["1.2.3"].payload["SeriesInstanceUIDs"] == ["1.2.3.1", "1.2.3.2"]
    assert by_study["4.5.6"].payload["SeriesInstanceUIDs"] == ["4.5.6.1"]
    study = store.get_study("1.2.3")
    assert study is not None and study["ModalitiesInStudy"] == ["CT", "SR"]


def test_made_in_client_stores_rows_without_events(store: MetaStore) -> None:
    store.add_series_metadata([series_meta()], made_in_client=True)
    store.add_instances(instances(count=4), made_in_client=True)
    assert count(store, instances_table) == 4
    assert store.changes() == []
    study = store.get_study("1.2.3")
    assert study is not None and study["NumberOfStudyRelatedInstances"] == 4


def test_readding_identical_data_changes_nothing(store: MetaStore) -> None:
    store.add_study(study_meta())
    store.add_series_metadata([series_meta()])
    store.add_instances(instances(count=3))
    before = store.changes()
    with store.engine.connect() as connection:
        stamps = connection.execute(sa.select(instances_table.c.updated_at)).scalars().all()
    again = store.add_instances(instances(count=3))
    assert (again.inserted, again.updated, again.unchanged) == (0, 0, 3)
    assert store.add_series_metadata([series_meta()]).unchanged == 1
    assert store.add_study(study_meta()).unchanged == 1
    assert store.changes() == before
    with store.engine.connect() as connection:
        assert connection.execute(sa.select(instances_table.c.updated_at)).scalars().all() == stamps
        assert connection.execute(sa.select(instances_table.c.version)).scalars().all() == [1, 1, 1]


def test_changed_instance_updated_in_place_and_announced(store: MetaStore) -> None:
    store.add_instances(instances(count=2))
    changed = instance_meta(number=2, SliceThickness=2.5)
    result = store.add_instances([changed])
    assert (result.inserted, result.updated) == (0, 1)
    assert count(store, instances_table) == 2
    got = store.get_instance("1.2.3", "1.2.3.1", "1.2.3.1.2")
    assert got is not None and got["SliceThickness"] == 2.5
    last = store.changes()[-1]
    assert last.type == EVENTS.INSTANCES_ADDED and last.payload["updated"] == 1
    study = store.get_study("1.2.3")
    assert study is not None and study["NumberOfStudyRelatedInstances"] == 2


def test_changed_url_is_a_change(store: MetaStore) -> None:
    store.add_instances(instances(count=1))
    result = store.add_instances([instance_meta(number=1, url="dicomweb:http://moved/1")])
    assert result.updated == 1


def test_changed_series_summary_is_announced(store: MetaStore) -> None:
    store.add_series_metadata([series_meta()])
    store.add_series_metadata([series_meta(SeriesDescription="coronal", Modality="MR")])
    events = store.changes()
    assert len(events) == 2
    study = store.get_study("1.2.3")
    assert study is not None and study["ModalitiesInStudy"] == "MR"
    assert study["NumberOfStudyRelatedSeries"] == 1


def test_duplicate_sop_in_one_batch_last_wins(store: MetaStore) -> None:
    result = store.add_instances([instance_meta(number=1), instance_meta(number=1, Rows=256)])
    assert result.inserted == 1
    got = store.get_instance("1.2.3", "1.2.3.1", "1.2.3.1.1")
    assert got is not None and got["Rows"] == 256


def test_counts_agree_with_rows_after_updates_and_deletes(store: MetaStore) -> None:
    store.add_series_metadata([series_meta("1.2.3", "1.2.3.9", Modality="SR")])
    store.add_instances(instances(series="1.2.3.1", count=5))
    store.add_instances(instances(series="1.2.3.1", count=7))  # 2 new
    store.add_instances(instances(series="1.2.3.2", count=2, Modality="PT"))
    store.add_instances(instances(study="7.7", series="7.7.1", count=1))
    with store.engine.connect() as connection:
        for study_id, n_series, n_instances, modalities in connection.execute(
            sa.select(
                studies.c.id,
                studies.c.num_series,
                studies.c.num_instances,
                studies.c.modalities_in_study,
            )
        ):
            series_rows = connection.execute(
                sa.select(series.c.id, series.c.num_instances, series.c.modality).where(
                    series.c.study_id == study_id
                )
            ).all()
            assert n_series == len(series_rows)
            real = 0
            for series_id, n, _ in series_rows:
                rows = connection.execute(
                    sa.select(sa.func.count()).where(instances_table.c.series_id == series_id)
                ).scalar_one()
                assert n == rows
                real += rows
            assert n_instances == real
            assert modalities == "\\".join(sorted({m for _, _, m in series_rows if m}))
    assert store.get_study("1.2.3")["ModalitiesInStudy"] == ["CT", "PT", "SR"]  # type: ignore[index]
    assert store.delete_study("1.2.3") is True
    assert store.get_study("1.2.3") is None
    assert count(store, instances_table) == 1
    assert count(store, series) == 1


def test_delete_study_writes_study_deleted(store: MetaStore) -> None:
    store.add_instances(instances(count=2))
    assert store.delete_study("1.2.3")
    last = store.changes()[-1]
    assert last.type == EVENTS.STUDY_DELETED
    assert last.study_uid == "1.2.3"
    assert last.payload["numInstances"] == 2
    assert store.delete_study("1.2.3") is False
    assert store.changes()[-1].seq == last.seq


def test_subscribe_and_unsubscribe(store: MetaStore) -> None:
    seen: list[Event] = []
    unsubscribe = store.subscribe(EVENTS.INSTANCES_ADDED, seen.append)
    other: list[Event] = []
    store.subscribe(EVENTS.SERIES_ADDED, other.append)
    store.add_instances(instances(count=1))
    assert [e.type for e in seen] == [EVENTS.INSTANCES_ADDED]
    assert seen[0].seq == store.changes()[0].seq
    assert other == []
    unsubscribe()
    store.add_instances(instances(series="1.2.3.5", count=1))
    assert len(seen) == 1


def test_failing_listener_does_not_undo_the_write(
    store: MetaStore, caplog: pytest.LogCaptureFixture
) -> None:
    def boom(event: Event) -> None:
        raise RuntimeError("listener bug")

    store.subscribe(EVENTS.INSTANCES_ADDED, boom)
    store.add_instances(instances(count=1))
    assert count(store, instances_table) == 1
    assert "listener" in caplog.text


def test_changes_pages_in_order(store: MetaStore) -> None:
    for n in range(5):
        store.add_instances(instances(series=f"1.2.3.{n + 1}", count=1))
    first = store.changes(limit=2)
    rest = store.changes(after=first[-1].seq)
    seqs = [e.seq for e in first + rest]
    assert len(seqs) == 5 and seqs == sorted(seqs) and len(set(seqs)) == 5
    with pytest.raises(AttributeError):
        first[0].seq = 99  # type: ignore[misc]


def test_source_created_on_first_use_as_client(store: MetaStore) -> None:
    store.add_instances(instances(count=1), source="new-one")
    info = store.get_source("new-one")
    assert info is not None and info.kind == "client"
    store.register_source(
        "pacs", "dicomweb", root_url="http://pacs/dicom-web", settings={"limit": 100}
    )
    store.add_instances(instances(count=1), source="pacs")
    pacs = store.get_source("pacs")
    assert pacs is not None and pacs.kind == "dicomweb" and pacs.settings == {"limit": 100}
    assert [s.name for s in store.list_sources()] == ["new-one", "pacs"]


# -- bad input ----------------------------------------------------------------

BAD_UIDS: list[Any] = ["", "1" * 65, "1.2 3", "1.2\\3", "1.2\n3", "1.2\x003", None, 123]


def test_nul_in_a_string_is_refused_naming_where_and_nothing_stored(store: MetaStore) -> None:
    """PostgreSQL keeps no U+0000 in text or JSONB: refused on every engine, by path."""
    good = instances(count=2)
    broken = instance_meta(number=3)
    broken["ImageComments"] = ["fine", "stray\x00byte"]
    with pytest.raises(InvalidMetadata) as caught:
        store.add_instances([*good, broken])
    assert caught.value.field == "metadata.ImageComments[1]"
    assert caught.value.sop_uid == broken["SOPInstanceUID"]
    assert "NUL" in str(caught.value)
    assert count(store, instances_table) == 0
    assert store.changes() == []
    # A backslash followed by "u0000" is text, not a NUL: kept.
    fine = instance_meta(number=4)
    fine["ImageComments"] = "C:\\u0000 is a path"
    store.add_instances([fine])
    kept = store.get_instance(
        fine["StudyInstanceUID"], fine["SeriesInstanceUID"], fine["SOPInstanceUID"]
    )
    assert kept is not None and kept["ImageComments"] == "C:\\u0000 is a path"


@pytest.mark.parametrize("bad", BAD_UIDS, ids=repr)
def test_malformed_sop_uid_is_refused_and_nothing_stored(store: MetaStore, bad: Any) -> None:
    good = instances(count=2)
    broken = instance_meta(number=3)
    broken["SOPInstanceUID"] = bad
    with pytest.raises(InvalidMetadata) as caught:
        store.add_instances([*good, broken])
    assert caught.value.field == "SOPInstanceUID"
    assert caught.value.item == 2
    assert caught.value.series_uid == "1.2.3.1"
    assert "item 2" in str(caught.value)
    assert count(store, instances_table) == 0
    assert count(store, studies) == 0
    assert store.changes() == []


@pytest.mark.parametrize(
    "uid", ["1.2.840.10008.1", "a3f9c2e1d4b5a6978812cc0ffee0123456789abc", "01.002.3"]
)
def test_non_conformant_but_usable_uids_are_taken(store: MetaStore, uid: str) -> None:
    store.add_instances([instance_meta(study=uid, series=uid + ".1", number=1)])
    assert store.get_study(uid) is not None


def test_pydicom_uid_objects_are_uids(store: MetaStore) -> None:
    from pydicom.uid import UID

    study, series_uid = UID("1.2.826.0.1.3680043.8.498.1"), UID("1.2.826.0.1.3680043.8.498.1.2")
    store.add_instances([instance_meta(study=study, series=series_uid, number=1)])
    got = store.get_series(str(study), str(series_uid))
    assert got is not None and got["NumberOfSeriesRelatedInstances"] == 1


def test_study_uid_mismatch_with_series_study(store: MetaStore) -> None:
    store.add_instances(instances(study="1.2.3", series="1.2.3.1", count=1))
    with pytest.raises(InvalidMetadata) as caught:
        store.add_instances([instance_meta(study="4.5.6", series="1.2.3.1", number=2)])
    assert caught.value.field == "StudyInstanceUID"
    assert caught.value.series_uid == "1.2.3.1"
    assert store.get_study("4.5.6") is None
    assert count(store, instances_table) == 1


def test_metadata_not_a_mapping(store: MetaStore) -> None:
    with pytest.raises(InvalidMetadata) as caught:
        store.add_instances([instance_meta(), ["not", "a", "dict"]])  # type: ignore[list-item]
    assert caught.value.item == 1
    with pytest.raises(InvalidMetadata):
        store.add_study("1.2.3")  # type: ignore[arg-type]
    assert count(store, instances_table) == 0


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("InstanceNumber", "abc"),
        ("Rows", [1, 2]),
        ("NumberOfFrames", True),
        ("Columns", 1.5),
        ("url", 5),
    ],
)
def test_wrong_type_for_key_column(store: MetaStore, field: str, value: Any) -> None:
    with pytest.raises(InvalidMetadata) as caught:
        store.add_instances([instance_meta(**{field: value})])
    assert caught.value.field == field
    assert count(store, instances_table) == 0


def test_wrong_type_for_series_key_column(store: MetaStore) -> None:
    with pytest.raises(InvalidMetadata) as caught:
        store.add_series_metadata(
            [series_meta(), series_meta(series="1.2.3.2", SeriesNumber="first")]
        )
    assert caught.value.field == "SeriesNumber" and caught.value.item == 1
    assert count(store, series) == 0


def test_numeric_strings_are_taken_for_integer_columns(store: MetaStore) -> None:
    store.add_instances([instance_meta(InstanceNumber="7", Rows=512.0)])
    with store.engine.connect() as connection:
        row = connection.execute(
            sa.select(instances_table.c.instance_number, instances_table.c.rows)
        ).one()
    assert tuple(row) == (7, 512)


def test_failed_call_leaves_index_as_it_was(store: MetaStore) -> None:
    store.add_instances(instances(count=2))
    before = store.get_study("1.2.3")
    events = store.changes()
    batch = instances(series="1.2.3.7", count=2) + [
        instance_meta(series="1.2.3.8", number=1, Rows="x")
    ]
    with pytest.raises(InvalidMetadata):
        store.add_instances(batch)
    assert store.get_study("1.2.3") == before
    assert store.changes() == events


def test_database_failure_rolls_back_rows_and_events(store: MetaStore) -> None:
    from metastore.errors import DatabaseError

    store.add_instances(instances(count=1))
    before = store.get_study("1.2.3")
    # Make the outbox insert, the last statement of a write, fail.
    with store.engine.begin() as connection:
        connection.execute(sa.text("ALTER TABLE outbox RENAME TO outbox_gone"))
    with pytest.raises(DatabaseError):
        store.add_instances(instances(series="1.2.3.2", count=2))
    with store.engine.begin() as connection:
        connection.execute(sa.text("ALTER TABLE outbox_gone RENAME TO outbox"))
    assert count(store, instances_table) == 1
    assert store.get_series("1.2.3", "1.2.3.2") is None
    assert store.get_study("1.2.3") == before
    assert len(store.changes()) == 1


def test_closed_store_raises_store_closed(db_url: str) -> None:
    store = MetaStore(db_url)
    store.close()
    store.close()
    with pytest.raises(StoreClosed):
        store.get_study("1.2.3")


# -- real data ----------------------------------------------------------------


def test_real_studies_round_trip_through_the_store(store: MetaStore) -> None:
    total = 0
    for study, series_rows, per_series in real_studies():
        store.add_study(study, source="real")
        store.add_series_metadata(series_rows, source="real")
        for batch in per_series:
            store.add_instances(batch, source="real")
            total += len(batch)
        got = store.get_study(study["StudyInstanceUID"])
        assert got is not None
        [series_list] = got["seriesLists"]
        stored = {i["SOPInstanceUID"]: i for s in series_list["series"] for i in s["instances"]}
        for batch in per_series:
            for item in batch:
                assert stored[item["SOPInstanceUID"]] == item
        assert got["NumberOfStudyRelatedInstances"] == sum(len(b) for b in per_series)
    assert count(store, instances_table) == total
    events_before = store.changes(limit=10_000)
    for _study, series_rows, per_series in real_studies():
        store.add_series_metadata(series_rows, source="real")
        for batch in per_series:
            store.add_instances(batch, source="real")
    assert store.changes(limit=10_000) == events_before


def test_instance_dicts_read_back_add_as_unchanged(store: MetaStore) -> None:
    # What a read returns (url, imageId, and imageIds for a multi-frame
    # instance) is not DICOM metadata: adding it back changes nothing.
    store.add_instances([instance_meta(number=1, NumberOfFrames=3)])
    got = store.get_instance("1.2.3", "1.2.3.1", "1.2.3.1.1")
    assert got is not None and len(got["imageIds"]) == 3
    result = store.add_instances([got])
    assert (result.inserted, result.updated, result.unchanged) == (0, 0, 1)
    with store.engine.connect() as connection:
        stored = connection.execute(sa.select(instances_table.c.metadata)).scalar_one()
    assert not {"url", "imageId", "imageIds"} & set(stored)
