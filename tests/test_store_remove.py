"""``MetaStore.remove_series``: a source's series go, with the event that says how much went."""

from __future__ import annotations

from helpers import instance_meta, series_meta

from metastore import EVENTS, MetaStore


def _fill(store: MetaStore) -> None:
    store.add_series_metadata([series_meta(series="1.2.3.1")], source="pacs")
    store.add_instances([instance_meta(series="1.2.3.1", number=n) for n in (1, 2)], source="pacs")
    mr = {"Modality": "MR"}
    store.add_series_metadata([series_meta(series="1.2.3.2", **mr)], source="pacs")
    store.add_instances([instance_meta(series="1.2.3.2", **mr)], source="pacs")
    store.add_series_metadata([series_meta(series="1.2.3.9", Modality="SR")], source="mirror")
    store.add_instances([instance_meta(series="1.2.3.9", Modality="SR")], source="mirror")


def test_removing_one_series_brings_the_counts_down(store: MetaStore) -> None:
    _fill(store)
    event = store.remove_series("1.2.3", source="pacs", series_uids=["1.2.3.2"])
    assert event is not None and event.type == EVENTS.SERIES_REMOVED
    assert dict(event.payload) == {
        "StudyInstanceUID": "1.2.3",
        "source": "pacs",
        "SeriesInstanceUIDs": ["1.2.3.2"],
        "numInstances": 1,
    }
    study = store.get_study("1.2.3")
    assert study is not None
    assert study["NumberOfStudyRelatedSeries"] == 2
    assert study["NumberOfStudyRelatedInstances"] == 3
    assert study["ModalitiesInStudy"] == ["CT", "SR"]


def test_a_study_another_source_holds_keeps_that_list(store: MetaStore) -> None:
    _fill(store)
    event = store.remove_series("1.2.3", source="pacs")
    assert event is not None and event.type == EVENTS.SERIES_REMOVED
    assert event.payload["SeriesInstanceUIDs"] == ["1.2.3.1", "1.2.3.2"]
    study = store.get_study("1.2.3")
    assert study is not None and [x["source"] for x in study["seriesLists"]] == ["mirror"]
    assert (study["NumberOfStudyRelatedInstances"], study["ModalitiesInStudy"]) == (1, "SR")


def test_the_last_source_going_deletes_the_study(store: MetaStore) -> None:
    _fill(store)
    store.remove_series("1.2.3", source="pacs")
    event = store.remove_series("1.2.3", source="mirror")
    assert event is not None and event.type == EVENTS.STUDY_DELETED
    assert event.source == "mirror"
    assert event.payload["numSeries"] == 1 and event.payload["numInstances"] == 1
    assert store.get_study("1.2.3") is None
    assert store.remove_series("1.2.3", source="mirror") is None  # nothing left: no event
    assert [e.type for e in store.changes(after=event.seq)] == []
