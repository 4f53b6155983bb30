"""Direct ingest of a launch file or a folder: read it once, write each study as it comes.

No queue: the whole file (or folder) is one pass, each study written with
:func:`~metastore.ingest.write.write_study` once its source has read and
checked all of it, so a bad study leaves nothing behind. Small studies
share a transaction (``_Batches``), each a savepoint of its own, so a
study the store refuses is undone alone too. A bad study raises
``InvalidMetadata`` (the studies before it are kept), or with
``keep_going`` is listed in the summary's ``failures``.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import ExitStack
from dataclasses import replace
from itertools import chain
from pathlib import Path
from typing import Any

from metastore import db
from metastore.batch import WriteBatch
from metastore.errors import ConfigurationError, DatabaseError, InvalidMetadata
from metastore.ingest.summary import Failure, IngestSummary, Tally
from metastore.ingest.write import write_study
from metastore.launchfile import StudyFailure
from metastore.progress import Progress, Reporting
from metastore.sources import SourceConfig, StudyMetadata, dicomjson, folder
from metastore.sources.stream import is_url, redact_url, stem
from metastore.store import MetaStore

log = logging.getLogger(__name__)

#: Instances (and studies) written in one transaction by a launch file or folder ingest.
BATCH_INSTANCES = 5000
BATCH_STUDIES = 50


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
    ``studies``); it is registered as kind ``dicomjson`` with the absolute
    path or the URL without its query string, once the first study is
    read (a file that cannot be read registers nothing). A default name
    already taken by another file is refused: name the source. A bad study
    raises ``InvalidMetadata`` naming the file, the JSON path and the UIDs.
    """
    name = source or stem(location)
    root = redact_url(location) if is_url(location) else str(Path(location).absolute())
    _check_same_root(store, name, root, named=source is not None)
    config = SourceConfig(name=name, kind=dicomjson.KIND, root=location, headers=headers or {})
    reader = dicomjson.DicomJsonSource(config)
    shown = reader.location
    with Progress(f"ingest {shown}", unit="bytes", display=progress) as bar:
        tally = Tally()
        try:
            studies = _registering(
                reader.studies(progress=bar),
                lambda: store.register_source(name, dicomjson.KIND, root_url=root),
            )
            _write_all(store, studies, name, shown, tally, bar, keep_going=keep_going)
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
    workers: int | None = None,
    progress: Reporting = None,
) -> IngestSummary:
    """Index every DICOM file under ``root``, each read once, by ``workers`` processes.

    ``workers`` defaults to the number of cores. ``source`` defaults to the
    folder's name (kind ``folder``). Files that are not DICOM are skipped
    and listed (``skipped_files``); DICOM files that cannot be read are
    listed in ``unreadable_files`` (the summary is then not ``ok``). A
    study the store refuses raises ``InvalidMetadata``, or with
    ``keep_going`` is listed in the summary's ``failures``.
    """
    files = folder.list_folder(root, url_root=url_root)
    name = source or files.root.name or "folder"
    _check_same_root(store, name, str(files.root), named=source is not None)
    store.register_source(
        name, folder.KIND, root_url=files.url_root, settings={"path": str(files.root)}
    )
    shown = str(files.root)
    total = len(files.paths)
    with Progress(f"ingest {shown}", unit="files", total=total, display=progress) as bar:
        tally = Tally()
        studies = folder.read_folder(files, workers=workers, progress=bar, quirks=tally.quirks)
        _write_all(store, studies, name, shown, tally, bar, keep_going=keep_going)
        tally.skipped_files.extend(files.skipped)
        tally.unreadable_files.extend(files.unreadable)
        summary = tally.summary(name, bar.elapsed)
    log.info("%s: %s", shown, summary)
    return summary


def _check_same_root(store: MetaStore, name: str, root: str, *, named: bool) -> None:
    """Refuse to merge two different files or folders into a source by a default name.

    A file is known by its ``root_url``, a folder by its ``path`` setting.
    """
    existing = store.get_source(name)
    if named or existing is None:
        return
    held = existing.settings.get("path") if existing.kind == folder.KIND else existing.root_url
    if held in (None, root):
        return
    raise ConfigurationError(
        f"the source {name!r} already holds {held}; give {root} a name of its own with --source"
    )


def _registering(
    studies: Iterable[StudyMetadata | StudyFailure], register: Callable[[], object]
) -> Iterator[StudyMetadata | StudyFailure]:
    """The studies, the source registered just before the first one is handed on."""
    registered = False
    for study in studies:
        if not registered:
            register()
            registered = True
        yield study


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
    """Write each study; a failure (read, or refused by the store) stops, or is listed.

    The bar counts bytes or files as they are read; each study adds to its ``studies``.
    Studies are written in batches (see ``_Batches``); what was written is
    committed before an error of the input goes on up.
    """
    batches = _Batches(store, tally)
    try:
        for number, item in enumerate(studies):
            failure = item if isinstance(item, StudyFailure) else None
            if isinstance(item, StudyMetadata):
                try:
                    counts = batches.write(item, source)
                except InvalidMetadata as err:
                    uid = item.study.get("StudyInstanceUID")
                    failure = StudyFailure(index=number, study_uid=uid and str(uid), error=err)
                else:
                    tally.add(studies=1, **counts)
                    bar.update(0, studies=1, instances=counts["instances"])
                    continue
            assert failure is not None
            if not keep_going:
                raise failure.error
            log.warning("%s: skipped %s", shown, failure)
            tally.failures.append(_failure(failure))
    finally:
        batches.commit()


class _Batches:
    """Studies written many to a transaction: a launch file's or a folder's small studies.

    One transaction (``MetaStore.batch()``) holds up to ``BATCH_INSTANCES``
    instances or ``BATCH_STUDIES`` studies; each study in it is a
    savepoint, so a study the store refuses is undone alone and the batch
    goes on: whole studies or nothing, as when each was written alone.

    Two ingests writing the same studies in another order can deadlock on
    PostgreSQL (a batch locks its studies as it reaches them), and the
    server aborts one of the batches. The studies of a batch are kept as
    they are written (up to ``BATCH_INSTANCES`` instances), so an aborted
    batch is written again, each study on its own, which cannot deadlock.
    Any other database error loses the open batch (its studies were not
    committed; the error stops the ingest). The events are counted once
    committed.
    """

    def __init__(self, store: MetaStore, tally: Tally) -> None:
        self.store = store
        self.tally = tally
        self._open: ExitStack | None = None
        self._batch: WriteBatch | None = None
        self.instances = self.studies = 0
        #: The open batch's studies as written, to write again (None: too many to keep).
        self._kept: list[StudyMetadata] | None = []

    def write(self, study: StudyMetadata, source: str) -> dict[str, int]:
        if self._open is None:
            self._open = ExitStack()
            self._batch = self._open.enter_context(self.store.batch("writing studies"))
            self._kept = []
        uid = study.study.get("StudyInstanceUID")
        unread = iter(study.series)
        read: list[list[dict[str, Any]]] = []
        try:
            with self.store.batch(f"writing study {uid}"):
                counts = write_study(
                    self.store,
                    replace(study, series=self._keeping(unread, read)),
                    source=source,
                    instances_per_call=BATCH_INSTANCES,
                )
        except InvalidMetadata:
            raise  # undone alone: the batch goes on
        except DatabaseError as err:
            kept = self._kept
            self._abort()
            if kept is None or not db.lost_to_another(err):
                raise
            # This study, from what it had read on: its series read so far, then the rest.
            again = replace(study, series=chain(read, unread))
            return self._write_again(kept, again, source, err)
        except BaseException:
            self._abort()
            raise
        if self._kept is not None:
            self._kept.append(replace(study, series=read))
        self.instances += counts["instances"]
        self.studies += 1
        if self.instances >= BATCH_INSTANCES or self.studies >= BATCH_STUDIES:
            self.commit()
        return counts

    def commit(self) -> None:
        """Commit the open batch, if any."""
        if self._open is None:
            return
        done, batch = self._open, self._batch
        self._open, self._batch = None, None
        self.instances = self.studies = 0
        done.close()
        assert batch is not None
        self.tally.add(events=len(batch.events))

    def _keeping(
        self, series: Iterator[list[dict[str, Any]]], read: list[list[dict[str, Any]]]
    ) -> Iterator[list[dict[str, Any]]]:
        """The study's series as they are read, each kept in ``read`` while the batch
        holds at most ``BATCH_INSTANCES`` instances; past that, none is kept (a batch
        the server aborts is then an error, as before)."""
        held = self.instances  # the batch's studies written before this one
        for instances in series:
            held += len(instances)
            if self._kept is not None and held > BATCH_INSTANCES:
                self._kept = None
                read.clear()
            if self._kept is not None:
                read.append(instances)
            yield instances

    def _write_again(
        self, kept: list[StudyMetadata], study: StudyMetadata, source: str, err: Exception
    ) -> dict[str, int]:
        """A batch the server aborted for another writer's sake, each study on its own."""
        log.info(
            "%d studies lost to another writer (%s); writing them again one at a time",
            len(kept) + 1,
            err,
        )
        for earlier in kept:  # counted when first written, but for their events
            self.tally.add(events=write_study(self.store, earlier, source=source)["events"])
        return write_study(self.store, study, source=source)  # its events in its counts

    def _abort(self) -> None:
        done, self._open, self._batch = self._open, None, None
        self.instances = self.studies = 0
        if done is not None:
            done.__exit__(*sys.exc_info())


def _failure(failure: StudyFailure) -> Failure:
    if failure.index < 0 or failure.study_uid:
        unit = f"study {failure.study_uid or '(the rest of the file)'}"
    else:
        unit = f"studies[{failure.index}] (no StudyInstanceUID)"
    return Failure(unit=unit, study_uid=failure.study_uid, error=str(failure.error))
