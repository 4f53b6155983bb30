"""The one way a study is written: every ingest path (worker, launch file, folder) uses it."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from itertools import chain
from typing import Any

from metastore import records
from metastore.errors import InvalidMetadata
from metastore.progress import Counter
from metastore.sources import StudyMetadata
from metastore.store import MetaStore, WriteResult


def write_study(
    store: MetaStore,
    study: StudyMetadata,
    *,
    source: str,
    made_in_client: bool = False,
    before_write: Callable[[], None] | None = None,
    progress: Counter | None = None,
    on_refused: Callable[[Mapping[str, Any], InvalidMetadata], None] | None = None,
    instances_per_call: int | None = None,
) -> dict[str, int]:
    """Write one study as OHIF's data sources do; returns its counts.

    The study row, the series summaries (one ``SERIES_ADDED``), then each
    series' instances: one transaction and one ``INSTANCES_ADDED`` each.
    ``before_write`` runs before every transaction (a worker checks its
    lease there, so a worker that lost its job writes nothing more);
    ``progress`` counts each series and its instances as they are written.
    Counts: ``series``, ``instances``, ``inserted``, ``updated``,
    ``unchanged``, ``events``.

    The study row takes the study-level attributes it lacks
    (:data:`metastore.records.STUDY_KEYS`) from the first instance of the
    first series, which carries the study module (PS3.3 C.7.2): a QIDO-RS
    study row may leave out StudyDescription and others a server does not
    return by default. What the row holds wins.

    Without ``on_refused``, an instance the store refuses
    (``InvalidMetadata``) fails the study there. With it, the refused
    instance is handed to it and the series is written without it: one bad
    instance costs that instance (a DICOMweb pull); a series left with no
    instance is not written.

    ``instances_per_call``: consecutive series go to one ``add_instances``
    call (one transaction, or one part of a ``MetaStore.batch()``) up to
    that many instances (a larger series alone). The events are the same
    (one ``INSTANCES_ADDED`` per series); the look-ups, statements and
    commit are shared, which is most of the cost of a one-instance series.
    """
    check = before_write or (lambda: None)
    counts = dict.fromkeys(("series", "instances", "inserted", "updated", "unchanged"), 0)
    counts["events"] = 0
    series: Iterable[list[dict[str, Any]]] = study.series
    check()
    if study.study:
        remaining = iter(study.series)
        first = next(remaining, [])
        series = chain([first], remaining)
        store.add_study(_completed(study.study, first[0] if first else {}), source=source)
    if study.summaries:
        summaries = store.add_series_metadata(
            study.summaries, source=source, made_in_client=made_in_client
        )
        counts["events"] += len(summaries.events)
    calls: Iterable[tuple[list[dict[str, Any]], int]] = (
        ((instances, 1) for instances in series)
        if instances_per_call is None
        else _gathered(series, instances_per_call)
    )
    for instances, series_count in calls:
        check()
        result: WriteResult | None = None
        while instances:
            try:
                result = store.add_instances(
                    instances, source=source, made_in_client=made_in_client
                )
                break
            except InvalidMetadata as err:
                item = err.context.get("item")
                if on_refused is None or not isinstance(item, int):
                    raise
                on_refused(instances[item], err)
                instances = instances[:item] + instances[item + 1 :]
                if series_count > 1:  # a series may have lost its last instance
                    series_count = len({_series_of(i) for i in instances})
                check()
        if result is None:
            continue
        counts["series"] += series_count
        counts["instances"] += len(instances)
        counts["inserted"] += result.inserted
        counts["updated"] += result.updated
        counts["unchanged"] += result.unchanged
        counts["events"] += len(result.events)
        if progress is not None:
            progress.update(0, series=series_count, instances=len(instances))
    return counts


def _series_of(instance: Mapping[str, Any]) -> tuple[Any, Any]:
    return instance.get("StudyInstanceUID"), instance.get("SeriesInstanceUID")


def _gathered(
    series: Iterable[list[dict[str, Any]]], limit: int
) -> Iterator[tuple[list[dict[str, Any]], int]]:
    """Consecutive series' instances in lists of up to ``limit`` (a larger series alone),
    each with the number of series it holds."""
    gathered: list[dict[str, Any]] = []
    count = 0
    for instances in series:
        if not instances:
            continue  # nothing to write, as a series alone
        if gathered and len(gathered) + len(instances) > limit:
            yield gathered, count
            gathered, count = [], 0
        gathered.extend(instances)
        count += 1
    if gathered:
        yield gathered, count


def _completed(study: Mapping[str, Any], instance: Mapping[str, Any]) -> dict[str, Any]:
    """The study row with the study-level keys it lacks (absent or null) taken from ``instance``."""
    row = dict(study)
    for key in records.STUDY_KEYS:
        if row.get(key) is None and instance.get(key) is not None:
            row[key] = instance[key]
    return row
