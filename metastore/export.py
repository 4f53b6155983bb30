"""Write OHIF "DICOM JSON" launch files: from the index, or from any studies.

:func:`export_launch_file` turns indexed studies into a launch file OHIF's
DICOM JSON data source loads (``?url=`` of ``/viewer/dicomjson``): per study
the study-level fields with ``NumInstances`` and ``Modalities``, its series'
fields, and per instance its naturalized metadata and ``url`` (its imageId).
A multi-frame instance is written the way OHIF's generator writes it, one
entry per frame with the same metadata and ``url?frame=N`` (1-based), so
each frame has its own imageId in OHIF; reading the file back folds the
entries into one instance again.

:func:`write_launch_file` streams studies to a ``.json`` or ``.json.gz``
file, one study in memory at a time; the generator script uses it too.
"""

from __future__ import annotations

import gzip
import logging
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast

import orjson
import sqlalchemy as sa

from metastore.errors import MetastoreError
from metastore.launchfile import STUDY_EXTRAS
from metastore.records import INSTANCE_EXTRAS, SERIES_COMPUTED, STUDY_COMPUTED
from metastore.schema import series, sources, studies
from metastore.store import MetaStore

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class ExportSummary:
    """What an export wrote."""

    path: str
    studies: int
    series: int
    instances: int
    entries: int
    skipped: int

    def __str__(self) -> str:
        text = (
            f"wrote {self.studies} studies, {self.series} series, {self.instances} instances "
            f"({self.entries} entries) to {self.path}"
        )
        if self.skipped:
            text += f"; {self.skipped} instances without a url were left out"
        return text


def write_launch_file(path: str | Path, studies_: Iterable[Mapping[str, Any]]) -> int:
    """Write ``{"studies": [...]}`` to ``path`` (gzip when it ends in ``.gz``); returns the count.

    Studies are encoded and written one at a time. The file appears only
    when complete (written beside it, then renamed).
    """
    target = Path(path)
    partial = target.with_name(f".{target.name}.partial")
    count = 0
    try:
        with _open_out(partial, gzipped=target.suffix == ".gz") as out:
            for chunk in encode_launch_file(studies_):
                out.write(chunk)
                count += 1
        count -= 2  # the opening and the closing
        os.replace(partial, target)
    except OSError as err:
        raise MetastoreError(f"cannot write {target}: {err.strerror or err}") from err
    finally:
        if partial.exists():
            partial.unlink()
    return count


def encode_launch_file(studies_: Iterable[Mapping[str, Any]]) -> Iterator[bytes]:
    """The launch file ``{"studies": [...]}`` as bytes: the opening, one chunk per study, the end.

    Studies are encoded one at a time (orjson), so a file of any size streams.
    """
    yield b'{"studies": ['
    for index, study in enumerate(studies_):
        yield (b",\n" if index else b"") + orjson.dumps(study)
    yield b"]}\n"


def _open_out(path: Path, *, gzipped: bool) -> IO[bytes]:
    if gzipped:
        return cast(IO[bytes], gzip.open(path, "wb", compresslevel=6))
    return open(path, "wb")  # noqa: SIM115 (the caller's with closes it)


def launch_study(
    study: Mapping[str, Any], *, source: str | None = None, counts: dict[str, int] | None = None
) -> dict[str, Any] | None:
    """A ``MetaStore.get_study`` result as one launch-file study (None if it has no series).

    Takes the series list of ``source``, or, without one, every series once
    (a series indexed from several sources is taken from the first source by
    name). ``counts`` gathers series/instances/entries/skipped.
    """
    tally = counts if counts is not None else {}
    out: dict[str, Any] = {
        k: v for k, v in study.items() if k not in STUDY_COMPUTED and k != "seriesLists"
    }
    study_uid = out.get("StudyInstanceUID")
    written: list[dict[str, Any]] = []
    seen: set[str] = set()
    modalities: set[str] = set()
    instance_count = 0
    for series_list in study.get("seriesLists", []):
        if source is not None and series_list["source"] != source:
            continue
        for one in series_list["series"]:
            uid = one.get("SeriesInstanceUID")
            if uid in seen:
                continue
            seen.add(uid)
            entries = [entry for i in one.get("instances", []) for entry in _entries(i, tally)]
            instance_count += sum(1 for i in one.get("instances", []) if _url_of(i))
            summary = {
                k: v
                for k, v in one.items()
                if k not in SERIES_COMPUTED
                and k != "instances"
                and not (k == "StudyInstanceUID" and v == study_uid)
            }
            if isinstance(summary.get("Modality"), str):
                modalities.add(summary["Modality"])
            written.append({**summary, "instances": entries})
    if not written:
        return None
    tally["series"] = tally.get("series", 0) + len(written)
    tally["instances"] = tally.get("instances", 0) + instance_count
    out[STUDY_EXTRAS[1]] = instance_count  # NumInstances
    out[STUDY_EXTRAS[2]] = "/".join(
        sorted(modalities)
    )  # Modalities, as OHIF's generator joins them
    out["series"] = written
    return out


def _url_of(instance: Mapping[str, Any]) -> str | None:
    found = instance.get("imageId") or instance.get("url")
    return found if isinstance(found, str) else None


def _entries(instance: Mapping[str, Any], tally: dict[str, int]) -> list[dict[str, Any]]:
    """One entry, or one per frame (``imageIds``) for a multi-frame instance."""
    url = _url_of(instance)
    if url is None:
        tally["skipped"] = tally.get("skipped", 0) + 1
        log.warning("instance %s has no url or imageId; left out", instance.get("SOPInstanceUID"))
        return []
    metadata = {k: v for k, v in instance.items() if k not in INSTANCE_EXTRAS}
    urls = instance.get("imageIds") or [url]
    tally["entries"] = tally.get("entries", 0) + len(urls)
    return [{"metadata": metadata, "url": frame_url} for frame_url in urls]


def study_uids(store: MetaStore, *, source: str | None = None) -> list[str]:
    """Every indexed StudyInstanceUID (those with a series in ``source`` when given), sorted."""
    query = sa.select(studies.c.study_uid).order_by(studies.c.study_uid)
    if source is not None:
        query = (
            query.join(series, series.c.study_id == studies.c.id)
            .join(sources, sources.c.id == series.c.source_id)
            .where(sources.c.name == source)
            .distinct()
        )
    with store.engine.connect() as connection:
        return [str(uid) for uid in connection.execute(query).scalars()]


def export_launch_file(
    store: MetaStore,
    path: str | Path,
    study_uids_: Sequence[str] | None = None,
    *,
    source: str | None = None,
) -> ExportSummary:
    """Write the given studies (every indexed study when None) as a launch file.

    Raises ``MetastoreError`` naming a study that is not indexed (or has no
    series in ``source``) before anything is written.
    """
    wanted = list(study_uids_) if study_uids_ is not None else study_uids(store, source=source)
    if source is not None and store.get_source(source) is None:
        raise MetastoreError(f"no source named {source!r}")
    counts: dict[str, int] = {}
    present = set(study_uids(store, source=source)) if study_uids_ is not None else set(wanted)
    missing = [uid for uid in wanted if uid not in present]
    if missing:
        where = f" with series in source {source!r}" if source else ""
        raise MetastoreError(f"study {missing[0]} is not in the index{where}")

    def studies_out() -> Iterable[dict[str, Any]]:
        for uid in wanted:
            found = store.get_study(uid)
            if found is None:  # deleted meanwhile
                log.warning("study %s is gone from the index; left out", uid)
                continue
            written = launch_study(found, source=source, counts=counts)
            if written is not None:
                yield written

    written = write_launch_file(path, studies_out())
    summary = ExportSummary(
        path=str(path),
        studies=written,
        series=counts.get("series", 0),
        instances=counts.get("instances", 0),
        entries=counts.get("entries", 0),
        skipped=counts.get("skipped", 0),
    )
    log.info("%s", summary)
    return summary
