"""The quirks corpus: the bundled real metadata with every deviation real writers produce.

Each kind of deviation (tests/quirk_mutations.py) is applied to real
elements of the bundled static DICOMweb tree, nested ones included: the
mutated data naturalizes to exactly what the unmutated data does, and the
count names the normalization (a hypothesis strategy per kind). Every series
of the tree, mutated everywhere it can be, stores on SQLite and PostgreSQL
the very metadata and key columns the unmutated series stores. On top, a
fuzz property: any JSON value in place of an element either normalizes or
raises InvalidMetadata naming its path, and a batch holding it is stored
whole or not at all.
"""

from __future__ import annotations

import functools
import random
import uuid
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from quirk_mutations import (
    MUTATORS,
    at,
    datasets,
    load_series,
    mutate_everywhere,
    path_text,
    richest,
    same,
    standard,
    targets,
)

from metastore import MetaStore
from metastore.dicom import naturalize
from metastore.errors import InvalidMetadata
from metastore.quirks import Quirk, Quirks


@functools.cache
def _series() -> list[list[dict[str, Any]]]:
    return load_series()


@functools.cache
def _sample() -> list[dict[str, Any]]:
    """One instance of every bundled series (they differ by modality and SOP class)."""
    return [richest(series) for series in _series()]


@functools.cache
def _targets(index: int, kind: Quirk) -> list[tuple[Any, str]]:
    return targets(standard(_sample()[index]), kind)


def _with_targets(kind: Quirk) -> list[int]:
    return [i for i in range(len(_sample())) if _targets(i, kind)]


def test_every_kind_applies_to_some_real_element() -> None:
    assert [kind for kind in MUTATORS if not _with_targets(kind)] == []


def test_the_bundled_data_carries_what_dcmjs_writes() -> None:
    counts = Quirks()
    for series in _series():
        for instance in series:
            naturalize(instance, counts)
    assert counts[Quirk.VR_MISSING] > 0
    assert counts[Quirk.BACKSLASH_JOINED] > 0
    assert counts[Quirk.VR_COMBINED] > 0


@pytest.mark.parametrize("kind", list(MUTATORS), ids=str)
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_each_kind_on_real_elements(kind: Quirk, data: st.DataObject) -> None:
    index = data.draw(st.sampled_from(_with_targets(kind)), label="instance")
    original = _sample()[index]
    chosen = data.draw(
        st.lists(st.sampled_from(_targets(index, kind)), min_size=1, max_size=4, unique=True),
        label="attributes",
    )
    mutated = standard(original)
    rng = random.Random(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    # deepest first, so that renaming a member never moves an item still to visit
    for where, key in sorted(chosen, key=lambda target: -len(target[0])):
        assert MUTATORS[kind](at(mutated, where), key, rng)

    before, after = Quirks(), Quirks()
    expected = naturalize(original)  # what the unmutated data stores
    assert same(naturalize(standard(original), before), expected)
    assert same(naturalize(mutated, after), expected)
    assert after[kind] >= before[kind] + len(chosen), after


def _keys_of(store: MetaStore, source: str, study_uid: str) -> list[tuple[Any, ...]]:
    """The instances of a study in one series list: metadata and key columns, as stored."""
    study = store.get_study(study_uid)
    assert study is not None
    [series_list] = [s for s in study["seriesLists"] if s["source"] == source]
    rows = []
    for series in series_list["series"]:
        for instance in series["instances"]:
            rows.append(
                (series["SeriesInstanceUID"], orjson.dumps(instance, option=orjson.OPT_SORT_KEYS))
            )
    return sorted(rows)


def test_every_series_mutated_everywhere_stores_the_same(store: MetaStore) -> None:
    rng = random.Random(9)
    applied: set[Quirk] = set()
    counts = Quirks()
    studies = set()
    for series in _series():
        plain, quirky = [], []
        for instance in series:
            mutated = mutate_everywhere(standard(instance), rng, applied)
            for raw, out, quirks in ((instance, plain, None), (mutated, quirky, counts)):
                natural = naturalize(raw, quirks)
                natural["url"] = f"https://archive.invalid/{natural['SOPInstanceUID']}"
                out.append(natural)
        store.add_instances(plain, source="plain")
        store.add_instances(quirky, source="quirky")
        studies.add(plain[0]["StudyInstanceUID"])

    assert applied == set(MUTATORS)
    assert set(counts) >= applied
    for study_uid in studies:
        assert _keys_of(store, "quirky", study_uid) == _keys_of(store, "plain", study_uid)
    # the key columns too, row for row
    with store.engine.connect() as connection:
        from sqlalchemy import text

        rows = connection.execute(
            text(
                "SELECT s.source_id, i.sop_uid, i.sop_class_uid, i.instance_number,"
                " i.number_of_frames, i.rows, i.columns, s.modality, s.series_number"
                " FROM instances i JOIN series s ON s.id = i.series_id"
            )
        ).all()
    by_source: dict[Any, set[tuple[Any, ...]]] = {}
    for row in rows:
        by_source.setdefault(row[0], set()).add(tuple(row[1:]))
    assert len(by_source) == 2
    plain_rows, quirky_rows = by_source.values()
    assert plain_rows == quirky_rows and len(plain_rows) == sum(len(s) for s in _series())


def test_old_date_and_time_forms_give_the_same_key_columns(store: MetaStore) -> None:
    instance = standard(_sample()[0])
    old = orjson.loads(orjson.dumps(instance))
    old["00080020"] = {"vr": "DA", "Value": ["2013.01.25"]}
    old["00080030"] = {"vr": "TM", "Value": ["08:28:26"]}
    instance["00080020"] = {"vr": "DA", "Value": ["20130125"]}
    instance["00080030"] = {"vr": "TM", "Value": ["082826"]}
    counts = Quirks()
    store.add_instances([naturalize(instance)], source="plain")
    store.add_instances([naturalize(old, counts)], source="old")
    assert counts[Quirk.DATE_FORM] == 1 and counts[Quirk.TIME_FORM] == 1
    with store.engine.connect() as connection:
        from sqlalchemy import text

        row = connection.execute(text("SELECT study_date, study_time FROM studies")).one()
    assert tuple(row) == ("20130125", "082826")
    study = store.get_study(instance["0020000D"]["Value"][0])
    assert study is not None
    stored = {s["source"]: s["series"][0]["instances"][0] for s in study["seriesLists"]}
    assert stored["old"]["StudyDate"] == "2013.01.25"  # the metadata keeps what was sent
    assert stored["plain"]["StudyDate"] == "20130125"


# -- fuzz: any JSON value in place of an element ------------------------------------

_json: st.SearchStrategy[Any] = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**70), 2**70),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=8),
        st.sampled_from(["0062000b", "(0010,0010)", "SQ", "sq", "US|SS", "AAA=", "1.2\\3"]),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(
            st.one_of(
                st.sampled_from(["vr", "Value", "InlineBinary", "BulkDataURI"]), st.text(max_size=4)
            ),
            inner,
            max_size=3,
        ),
    ),
    max_leaves=8,
)


@functools.cache
def _places() -> list[tuple[int, Any, str]]:
    found = []
    for index, instance in enumerate(_sample()):
        for where, item in datasets(standard(instance)):
            found.extend((index, where, key) for key in item)
    return found


def _fuzzed(data: st.DataObject) -> tuple[dict[str, Any], str]:
    index, where, key = data.draw(st.sampled_from(_places()), label="place")
    instance = standard(_sample()[index])
    at(instance, where)[key] = data.draw(_json, label="value")
    return instance, path_text(where, key)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_fuzz_any_json_value_normalizes_or_names_its_path(data: st.DataObject) -> None:
    instance, path = _fuzzed(data)
    try:
        natural = naturalize(instance, Quirks())
    except InvalidMetadata as err:
        assert err.context["path"].startswith(path), (err.context["path"], path)
        assert f"at {err.context['path']}" in str(err)
        return
    again = Quirks()
    assert naturalize(standard(instance), again) == natural  # what is written reads back the same


@settings(
    max_examples=25,
    deadline=None,
    # each example writes under a source of its own, so sharing the store is sound
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_fuzz_a_batch_is_stored_whole_or_not_at_all(store: MetaStore, data: st.DataObject) -> None:
    instance, _ = _fuzzed(data)
    source = f"fuzz-{uuid.uuid4().hex[:8]}"
    try:
        natural = naturalize(instance)
    except InvalidMetadata:
        return
    natural["url"] = "https://archive.invalid/x"
    try:
        store.add_instances([natural], source=source)
    except InvalidMetadata:
        uid = natural.get("StudyInstanceUID")
        study = store.get_study(uid) if isinstance(uid, str) else None
        assert study is None or all(s["source"] != source for s in study["seriesLists"])
        return
    study = store.get_study(natural["StudyInstanceUID"])
    assert study is not None
    [stored] = [s for s in study["seriesLists"] if s["source"] == source]
    assert [len(series["instances"]) for series in stored["series"]] == [1]


def _ds_as_written(value: Any) -> Any:
    """A DS number as sloppy writers spell it: padded, a trailing dot or an exponent."""
    if isinstance(value, list):
        return [_ds_as_written(v) for v in value]
    if not isinstance(value, int | float):
        return value
    text = repr(float(value))
    text = text[:-1] if text.endswith(".0") else f"{text}e0"
    return f" {text} "


def test_display_set_geometry_reads_ds_as_written(store: MetaStore) -> None:
    from metastore.displaysets import get_display_sets

    ct = next(s for s in _series() if len(s) > 100 and "CT" in str(s[0].get("00080060")))
    plain, written = [], []
    for instance in ct:
        natural = naturalize(instance)
        natural["url"] = f"https://archive.invalid/{natural['SOPInstanceUID']}"
        plain.append(natural)
        sloppy = dict(natural)
        for key in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing"):
            sloppy[key] = _ds_as_written(sloppy[key])
        sloppy["SliceThickness"] = _ds_as_written(sloppy.get("SliceThickness", 1.0))
        written.append(sloppy)
    assert written[0]["ImagePositionPatient"][0].startswith(" ")
    store.add_instances(plain, source="plain")
    store.add_instances(written, source="written")
    found = get_display_sets(store, plain[0]["StudyInstanceUID"])
    assert found is not None
    by_source = {
        d["source"]: d for d in found if d["SeriesInstanceUID"] == plain[0]["SeriesInstanceUID"]
    }
    keep = ("isReconstructable", "numImageFrames", "SOPInstanceUIDs", "messages")
    assert by_source["plain"]["isReconstructable"] is True
    assert {k: by_source["written"].get(k) for k in keep} == {
        k: by_source["plain"].get(k) for k in keep
    }
