"""Concurrent writers of one study keep counts, ModalitiesInStudy and events exact."""

from __future__ import annotations

import threading

import sqlalchemy as sa
from helpers import instances, series_meta

from metastore import EVENTS, MetaStore
from metastore.schema import instances as instances_table
from metastore.schema import series, studies

WRITERS = 6
MODALITIES = ["CT", "MR", "NM", "PT", "SR", "US"]


def test_writers_of_one_study_take_turns(db_url: str) -> None:
    errors: list[BaseException] = []
    start = threading.Barrier(WRITERS)

    def write(n: int) -> None:
        try:
            with MetaStore(db_url) as store:
                start.wait(timeout=30)
                for round_ in range(3):
                    # Round 0 creates series through their instances (ModalitiesInStudy
                    # grows by union), the others through summaries (recounted).
                    modality = MODALITIES[(n + round_) % len(MODALITIES)]
                    series_uid = f"1.2.3.{n}.{round_}"
                    if round_:
                        store.add_series_metadata(
                            [series_meta(series=series_uid, Modality=modality)], source=f"s{n % 2}"
                        )
                    store.add_instances(
                        instances(series=series_uid, count=5, Modality=modality), source=f"s{n % 2}"
                    )
        except BaseException as err:  # reported below, with the thread's own error
            errors.append(err)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(WRITERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    with MetaStore(db_url) as store:
        study = store.get_study("1.2.3")
        assert study is not None
        assert study["NumberOfStudyRelatedSeries"] == WRITERS * 3
        assert study["NumberOfStudyRelatedInstances"] == WRITERS * 3 * 5
        assert study["ModalitiesInStudy"] == MODALITIES
        with store.engine.connect() as connection:
            assert (
                connection.execute(
                    sa.select(sa.func.count()).select_from(instances_table)
                ).scalar_one()
                == 90
            )
            counts = connection.execute(sa.select(series.c.num_instances)).scalars().all()
            assert counts == [5] * 18
            stored = connection.execute(sa.select(studies.c.num_instances)).scalar_one()
            assert stored == 90
        events = store.changes(limit=1000)
        assert sum(1 for e in events if e.type == EVENTS.SERIES_ADDED) == WRITERS * 2
        assert sum(1 for e in events if e.type == EVENTS.INSTANCES_ADDED) == WRITERS * 3
        assert [e.seq for e in events] == sorted({e.seq for e in events})


def test_concurrent_new_series_all_reach_modalities_in_study(db_url: str) -> None:
    # Every writer adds one new series through its instances at the same
    # moment; ModalitiesInStudy must hold every writer's modality.
    with MetaStore(db_url) as store:
        store.add_instances(instances(series="1.2.3.0", count=1, Modality="OT"))
    errors: list[BaseException] = []
    start = threading.Barrier(WRITERS)

    def write(n: int) -> None:
        try:
            with MetaStore(db_url) as store:
                batch = instances(series=f"1.2.3.{n + 1}", count=20, Modality=MODALITIES[n])
                start.wait(timeout=30)
                store.add_instances(batch)
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(WRITERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    with MetaStore(db_url) as store:
        study = store.get_study("1.2.3")
        assert study is not None
        assert study["ModalitiesInStudy"] == sorted([*MODALITIES, "OT"])
        assert study["NumberOfStudyRelatedSeries"] == WRITERS + 1
        assert study["NumberOfStudyRelatedInstances"] == WRITERS * 20 + 1
