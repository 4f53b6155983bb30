"""Writing OHIF "DICOM JSON" launch files: from indexed studies, or from any studies.

:func:`launch_study` turns one ``MetaStore.get_study`` result into a launch
study: the study-level fields with ``NumInstances`` and ``Modalities``, its
series' fields, and per instance its naturalized metadata and ``url`` (its
imageId). A multi-frame instance is written the way OHIF's generator writes
it, one entry per frame with the same metadata and ``url?frame=N``
(1-based), so each frame has its own imageId in OHIF; reading the file back
(:mod:`metastore.launchfile.read`) folds the entries into one instance again.

:func:`launch_studies` does the same for studies read from elsewhere (a
folder of DICOM files), keeping the fields OHIF needs.
:func:`write_launch_file` streams studies to a ``.json`` or ``.json.gz``
file, one study in memory at a time.
"""

from __future__ import annotations

import gzip
import logging
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any, cast

import orjson

from metastore import records
from metastore.errors import MetastoreError
from metastore.imageids import instance_image_ids
from metastore.launchfile.format import (
    LAUNCH_INSTANCE_KEYS,
    LAUNCH_SERIES_KEYS,
    LAUNCH_STUDY_KEYS,
    study_summary,
)
from metastore.records import INSTANCE_EXTRAS, SERIES_COMPUTED, STUDY_COMPUTED

log = logging.getLogger(__name__)


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
    modalities: set[Any] = set()
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
            modalities.add(summary.get("Modality"))
            written.append({**summary, "instances": entries})
    if not written:
        return None
    tally["series"] = tally.get("series", 0) + len(written)
    tally["instances"] = tally.get("instances", 0) + instance_count
    out.update(study_summary(modalities, instance_count))
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


def launch_studies(studies: Iterable[Iterable[list[dict[str, Any]]]]) -> Iterator[dict[str, Any]]:
    """Studies (each an iterable of its series' instances) as launch-file studies.

    Each study, series and instance keeps the fields OHIF needs
    (``LAUNCH_STUDY_KEYS``...), one study at a time; a study without
    instances is left out.

    A multi-frame instance gets one entry per frame (``url?frame=N``,
    1-based) and keeps ``NumberOfFrames``: OHIF's generator writes frames 1
    to N-1 and drops ``NumberOfFrames``.
    """
    for series_of_study in studies:
        study: dict[str, Any] = {}
        series_out = []
        modalities: set[Any] = set()
        count = 0
        for instances in series_of_study:
            first = instances[0]
            if not study:
                study = records.pick(first, LAUNCH_STUDY_KEYS)
            summary = records.pick(first, LAUNCH_SERIES_KEYS)
            entries = []
            for instance in instances:
                metadata = records.pick(instance, LAUNCH_INSTANCE_KEYS)
                entries += [
                    {"metadata": metadata, "url": url} for url in instance_image_ids(instance)
                ]
            modalities.add(summary.get("Modality"))
            count += len(instances)
            series_out.append({**summary, "instances": entries})
        if series_out:
            yield {**study, **study_summary(modalities, count), "series": series_out}
