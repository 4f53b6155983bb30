"""Direct ingest of a launch file or a folder: read it once, write each study as it comes.

No queue: the whole file (or folder) is one pass, each study written with
:func:`~metastore.ingest.write.write_study` once its source has read and
checked all of it, so a bad study leaves nothing behind. A bad study raises
``InvalidMetadata`` (the studies before it are kept), or with
``keep_going`` is listed in the summary's ``failures``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from pathlib import Path

from metastore.errors import InvalidMetadata
from metastore.ingest.summary import Failure, IngestSummary, Tally
from metastore.ingest.write import write_study
from metastore.launchfile import StudyFailure
from metastore.progress import Progress, Reporting
from metastore.sources import SourceConfig, StudyMetadata, dicomjson, folder
from metastore.sources.stream import redact_url, stem
from metastore.store import MetaStore

log = logging.getLogger(__name__)


def ingest_launch_file(
    store: MetaStore,
    location: str,
    *,
    source: str | None = None,
    keep_going: bool = False,
    headers: Mapping[str, str] | None = None,
    progress: Reporting = None,
) -> IngestSummary:
    """Index every study of a launch file (a path or an http(s) URL).

    ``source`` defaults to the file's stem (``studies.json.gz`` ->
    ``studies``); it is registered as kind ``dicomjson`` with the path or
    the URL without its query string. A bad study raises
    ``InvalidMetadata`` naming the file, the JSON path and the UIDs.
    """
    name = source or stem(location)
    config = SourceConfig(name=name, kind=dicomjson.KIND, root=location, headers=headers or {})
    reader = dicomjson.DicomJsonSource(config)
    store.register_source(name, dicomjson.KIND, root_url=redact_url(location))
    shown = reader.location
    with Progress(f"ingest {shown}", unit="studies", display=progress) as bar:
        tally = Tally()
        try:
            _write_all(store, reader.studies(), name, shown, tally, bar, keep_going=keep_going)
        except InvalidMetadata as err:
            if not keep_going or not tally.counts["studies"] and not tally.failures:
                raise
            # Unreadable from here on (broken JSON): keep what was ingested, report the rest.
            tally.failures.append(_failure(StudyFailure(index=-1, study_uid=None, error=err)))
        summary = tally.summary(name, bar.elapsed)
    log.info("%s: %s", shown, summary)
    return summary


def ingest_folder(
    store: MetaStore,
    root: str | Path,
    *,
    url_root: str | None = None,
    source: str | None = None,
    keep_going: bool = False,
    progress: Reporting = None,
) -> IngestSummary:
    """Index every DICOM file under ``root``; unreadable files are reported and skipped.

    ``source`` defaults to the folder's name (kind ``folder``). A study the
    store refuses raises ``InvalidMetadata``, or with ``keep_going`` is
    listed in the summary's ``failures``.
    """
    base = Path(root)
    name = source or base.resolve().name or "folder"
    index = folder.scan_folder(base, url_root=url_root, progress=progress)
    store.register_source(
        name, folder.KIND, root_url=index.url_root, settings={"path": str(base.resolve())}
    )
    total = len(index.studies)
    with Progress(f"ingest {base}", unit="studies", total=total, display=progress) as bar:
        tally = Tally()
        studies = folder.folder_studies(index, tally.quirks)
        _write_all(store, studies, name, str(base), tally, bar, keep_going=keep_going)
        tally.skipped_files.extend(index.unreadable)
        summary = tally.summary(name, bar.elapsed)
    log.info("%s: %s", base, summary)
    return summary


def _write_all(
    store: MetaStore,
    studies: Iterable[StudyMetadata | StudyFailure],
    source: str,
    shown: str,
    tally: Tally,
    bar: Progress,
    *,
    keep_going: bool,
) -> None:
    """Write each study; a failure (read, or refused by the store) stops, or is listed."""
    for number, item in enumerate(studies):
        failure = item if isinstance(item, StudyFailure) else None
        if isinstance(item, StudyMetadata):
            try:
                counts = write_study(store, item, source=source)
            except InvalidMetadata as err:
                uid = item.study.get("StudyInstanceUID")
                failure = StudyFailure(index=number, study_uid=uid and str(uid), error=err)
            else:
                tally.add(studies=1, **counts)
                bar.update(1, instances=counts["instances"])
                continue
        assert failure is not None
        if not keep_going:
            raise failure.error
        log.warning("%s: skipped %s", shown, failure)
        tally.failures.append(_failure(failure))


def _failure(failure: StudyFailure) -> Failure:
    unit = f"studies[{failure.index}] ({failure.study_uid or 'no StudyInstanceUID'})"
    return Failure(unit=unit, study_uid=failure.study_uid, error=str(failure.error))
