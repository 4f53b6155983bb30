"""The read path (``metastore.reads``): the same answer as before it read ``metadata_text``.

The reference below is how ``get_study`` read before revision 0008: the
``metadata`` column decoded by the driver (PostgreSQL rendering JSONB), one
copy per instance. Answers are compared as JSON bytes without sorting, so a
value, a type or a key order that differs fails.
"""

from __future__ import annotations

import gc
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa
from helpers import instance_meta, real_studies

from metastore import MetaStore, reads, records
from metastore.imageids import frame_image_ids
from metastore.ingest import ingest_launch_file
from metastore.schema import instances, series, sources, studies

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
from bench_store import batches  # noqa: E402

SAMPLE = Path(__file__).resolve().parent.parent / "metastore" / "data" / "sample.json.gz"


def _old_instance(row: Any) -> dict[str, Any]:
    result = dict(row["metadata"])
    if row["url"] is not None:
        result["url"] = row["url"]
    image_id = row["image_id"] or row["url"]
    if image_id is not None:
        result["imageId"] = image_id
        if row["number_of_frames"] is not None and row["number_of_frames"] > 1:
            result["imageIds"] = frame_image_ids(image_id, row["number_of_frames"])
    return result


def reference_study(store: MetaStore, study_uid: str) -> dict[str, Any]:
    """``get_study`` as it read before ``metadata_text``."""
    with store.engine.connect() as connection:
        study = (
            connection.execute(sa.select(studies).where(studies.c.study_uid == study_uid))
            .mappings()
            .one()
        )
        series_rows = (
            connection.execute(
                sa.select(*series.c, sources.c.name.label("source"))
                .join(sources, sources.c.id == series.c.source_id)
                .where(series.c.study_id == study["id"])
                .order_by(
                    sources.c.name,
                    series.c.series_number.is_(None),
                    series.c.series_number,
                    series.c.series_uid,
                )
            )
            .mappings()
            .all()
        )
        instance_rows = (
            connection.execute(
                sa.select(
                    instances.c.series_id,
                    instances.c.url,
                    instances.c.image_id,
                    instances.c.number_of_frames,
                    instances.c.metadata,
                )
                .join(series, series.c.id == instances.c.series_id)
                .where(series.c.study_id == study["id"])
                .order_by(
                    instances.c.series_id,
                    instances.c.instance_number.is_(None),
                    instances.c.instance_number,
                    instances.c.sop_uid,
                )
            )
            .mappings()
            .all()
        )
    lists: dict[str, list[dict[str, Any]]] = {}
    for row in series_rows:
        members = [_old_instance(i) for i in instance_rows if i["series_id"] == row["id"]]
        lists.setdefault(row["source"], []).append(records.series_dict(row, members))
    result = records.study_dict(study)
    result["seriesLists"] = [{"source": name, "series": items} for name, items in lists.items()]
    return result


def odd_instances() -> list[dict[str, Any]]:
    """Instances whose read-back has something to get wrong."""
    return [
        # multi-frame: one imageId per frame; an imageId of its own
        instance_meta(
            "9.1",
            "9.1.1",
            1,
            NumberOfFrames=3,
            imageId="wadors:http://archive/studies/9.1/series/9.1.1/instances/9.1.1.1",
        ),
        # no url at all; no InstanceNumber (sorts last)
        {
            **{k: v for k, v in instance_meta("9.1", "9.1.1", 2).items() if k != "url"},
            "InstanceNumber": None,
        },
        # text beyond ASCII, nested sequences, numbers JSON spells in several ways
        instance_meta(
            "9.1",
            "9.1.1",
            3,
            PatientName=[{"Alphabetic": "Müller^Zoë", "Ideographic": "山田^太郎"}],
            ReferencedSeriesSequence=[
                {"SeriesInstanceUID": "9.1.0", "ReferencedInstanceSequence": [{"X": [1, 2]}]}
            ],
            SliceLocation=-0.0,
            SliceThickness=1e-07,
            SmallestImagePixelValue=-(2**31),
            ExposureInuAs=2**53 + 1,
            WindowCenter=[40.5, -600],
            PixelData={"BulkDataURI": "http://archive/bulk/9.1.1.3"},
            ImageComments='quote " backslash \\ tab \t newline \n',
        ),
    ]


def fill(store: MetaStore) -> None:
    ingest_launch_file(store, str(SAMPLE), progress=False)
    for _study, series_rows, per_series in real_studies():
        # The same series from two sources: two series lists.
        for source in ("alpha", "beta"):
            store.add_series_metadata(series_rows, source=source)
            for batch in per_series:
                store.add_instances(batch, source=source)
    for batch in batches(1, 3, 40, "2.25.777"):
        store.add_instances(batch, source="synthetic")
    store.add_instances(odd_instances(), source="odd")


def test_reads_answer_as_before(store: MetaStore) -> None:
    fill(store)
    uids = store.study_uids()
    assert len(uids) == 40  # 38 bundled studies, one synthetic, one odd
    checked = 0
    for study_uid in uids:
        study = store.get_study(study_uid)
        assert study is not None
        assert orjson.dumps(study) == orjson.dumps(reference_study(store, study_uid)), study_uid
        for series_list in study["seriesLists"]:
            for one in series_list["series"]:
                series_uid = one["SeriesInstanceUID"]
                got = store.get_series(study_uid, series_uid, source=series_list["source"])
                assert orjson.dumps(got) == orjson.dumps(one)
                for instance in one["instances"]:
                    sop_uid = instance["SOPInstanceUID"]
                    found = store.get_instance(
                        study_uid, series_uid, sop_uid, source=series_list["source"]
                    )
                    assert orjson.dumps(found) == orjson.dumps(instance)
                    for image_id in instance.get("imageIds", [instance.get("imageId")]):
                        if image_id is not None:
                            by_id = store.get_instance_by_image_id(image_id)
                            assert by_id is not None
                            assert by_id["SOPInstanceUID"] == sop_uid
                    checked += 1
    assert checked > 1000
    odd = store.get_study("9.1")
    assert odd is not None
    [[multi, unusual, no_url]] = [s["instances"] for s in odd["seriesLists"][0]["series"]]
    assert multi["imageIds"][2].endswith("/frames/3")
    assert "url" not in no_url and "imageId" not in no_url
    assert unusual["PatientName"] == [{"Alphabetic": "Müller^Zoë", "Ideographic": "山田^太郎"}]
    assert unusual["ExposureInuAs"] == 2**53 + 1
    assert unusual["ImageComments"] == 'quote " backslash \\ tab \t newline \n'


def test_metadata_text_follows_every_write(store: MetaStore) -> None:
    store.add_instances(odd_instances(), source="odd")
    changed = instance_meta("9.1", "9.1.1", 1, NumberOfFrames=3, Rows=1024)
    result = store.add_instances([changed], source="odd")
    assert result.updated == 1
    again = store.add_instances(odd_instances()[1:], source="odd")
    assert (again.updated, again.unchanged) == (0, 2)  # the text is not compared on re-ingest
    with store.engine.connect() as connection:
        rows = connection.execute(
            sa.select(instances.c.sop_uid, instances.c.metadata, reads.METADATA_TEXT)
        ).all()
    assert len(rows) == 3
    for _sop, metadata, text in rows:
        assert reads.decode(text) == metadata
    [rows_now] = [reads.decode(t)["Rows"] for sop, _, t in rows if sop == "9.1.1.1"]
    assert rows_now == 1024


def test_paused_gc_resumes_only_what_it_paused() -> None:
    assert gc.isenabled()
    with reads.paused_gc():
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(ValueError), reads.paused_gc():
        raise ValueError("a failed read resumes the collector too")
    assert gc.isenabled()
    gc.disable()
    try:
        with reads.paused_gc():
            pass
        assert not gc.isenabled()  # the caller's choice stands
    finally:
        gc.enable()


def test_metadata_text_is_kept_on_postgresql_and_computed_on_sqlite(store: MetaStore) -> None:
    with store.engine.connect() as connection:
        if store.dialect == "postgresql":
            kind = connection.exec_driver_sql(
                "SELECT attgenerated FROM pg_attribute"
                " WHERE attrelid = 'instances'::regclass AND attname = 'metadata_text'"
            ).scalar_one()
            assert kind == "s"  # stored
        else:
            hidden = [
                row[6]
                for row in connection.exec_driver_sql("PRAGMA table_xinfo(instances)")
                if row[1] == "metadata_text"
            ]
            assert hidden == [2]  # virtual: no storage
