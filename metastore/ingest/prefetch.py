"""Reading a claimed job's study ahead of its writing: the worker's prefetching pipeline.

A worker writes one study while the next ones are read: the HTTP requests
(a study's series search, then each series' WADO-RS metadata) and their
JSON run on one reading thread, the writes on the worker's own. A source
that can split a series' fetch from its reading (``fetch_series_metadata``,
as DICOMweb does) has its instances made (naturalized, checked) on the
worker's thread, when the series is taken: the reading thread goes on to
the next request at once, and the server is not kept waiting meanwhile.
The thread reads only studies whose jobs the worker has claimed, in the
order they were claimed, one request at a time, as a single client would.

Memory is bounded: the thread takes a slot before it reads a series and
the worker gives it back when it takes that series to write, so at most
``depth`` series are read and waiting, whatever the size of the studies,
besides those being written (one series, or a study's small series
written together: up to ``worker.INSTANCES_PER_CALL`` instances).

Each study is a :class:`StudyFetch`: its :class:`StudyPlan` (the series to
write and to read), then each series' instances, then what the reading
left (the deviations normalized, the parts rejected). A read that fails
hands its error to the worker where the failed part would have been, so
a prefetched study fails (and is retried, or recorded) exactly as one read
in line. A worker that stops early drops the fetches it has not written:
:meth:`StudyFetch.finish` stops the reading of that study.

A source that does not declare itself ``thread_safe`` is read in line, on
the worker's thread, through the same :class:`StudyFetch` (depth 0 does
the same for every source).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from metastore.errors import BadResponse, InvalidMetadata, SourceRefused
from metastore.ingest.compare import changed_series, series_counts
from metastore.ingest.queue import Job
from metastore.quirks import Quirks
from metastore.sources import ReadReport, Rejected, Source
from metastore.store import MetaStore

log = logging.getLogger(__name__)

#: Series read ahead and waiting, by default (0: no reading ahead).
DEFAULT_DEPTH = 2
# Errors about one series' metadata that cost that series only.
_SERIES_LOST = (InvalidMetadata, BadResponse, SourceRefused)
_POLL = 0.1  # seconds between looks at a cancel or close while waiting


@dataclass(frozen=True, kw_only=True)
class StudyPlan:
    """What a job writes: the series rows (one ``SERIES_ADDED``), the series to read, in order.

    ``gone``: series the index holds for the source that the source no
    longer lists (a sync with ``prune`` removes them before writing).
    """

    rows: list[dict[str, Any]]
    uids: list[str]
    gone: frozenset[str] = frozenset()


@dataclass(frozen=True)
class _Failed:
    error: Exception


@dataclass(frozen=True)
class _End:
    quirks: Quirks
    rejected: list[Rejected] = field(default_factory=list)


@dataclass(frozen=True)
class _Fetched:
    """A series fetched and not yet read into instances (read on the writing thread)."""

    read: Callable[[ReadReport], list[dict[str, Any]]]


_Item = StudyPlan | list[dict[str, Any]] | _Fetched | _Failed | _End


def plan_study(job: Job, source: Source, store: MetaStore, name: str) -> StudyPlan:
    """Search the study's series and decide which to read (a sync: the changed; a retry: the lost)."""
    rows = source.search_series(job.unit)
    if job.params.get("changed_series"):
        # A sync: the series whose counts differ (one that failed last time is among them).
        held = series_counts(store, name, job.unit)
        listed = {str(row["SeriesInstanceUID"]) for row in rows}
        gone = frozenset(set(held) - listed) if job.params.get("prune") else frozenset()
        return StudyPlan(rows=rows, uids=changed_series(rows, held), gone=gone)
    retry = series_to_retry(job.failed_parts)
    if retry is not None:
        rows = [row for row in rows if row["SeriesInstanceUID"] in retry]
        log.info("study %s: retrying %d series", job.unit, len(rows))
    return StudyPlan(rows=rows, uids=[row["SeriesInstanceUID"] for row in rows])


def series_to_retry(parts: list[dict[str, Any]] | None) -> set[str] | None:
    """The series a job's last run could not read, or None to pull the whole study.

    None too when a part names no series (a search row): only a whole pull
    can find it again.
    """
    if not parts:
        return None
    series = {part.get("series") for part in parts if isinstance(part, Mapping)}
    if None in series or not all(isinstance(uid, str) for uid in series):
        return None
    return {uid for uid in series if isinstance(uid, str)}


def _take_report(source: Source) -> tuple[Quirks, list[Rejected]]:
    report = getattr(source, "report", None)
    return report.take() if isinstance(report, ReadReport) else (Quirks(), [])


def _study_items(
    job: Job,
    source: Source,
    store: MetaStore,
    name: str,
    ready: Callable[[], bool],
    defer: bool = False,
) -> Iterator[_Item]:
    """A study's plan, its series one by one, and what the reading left; never raises.

    ``ready`` is asked before each series is read: False stops the reading.
    ``defer``: a source that can (``fetch_series_metadata``) only fetches
    each series here, and its instances are made where the series is taken.
    """
    quirks, _ = _take_report(source)  # what an earlier reading left behind is not this job's
    lost: list[Rejected] = []
    fetch_series = getattr(source, "fetch_series_metadata", None) if defer else None
    try:
        plan = plan_study(job, source, store, name)
        yield plan
        for uid in plan.uids:
            if not ready():
                break
            instances: list[dict[str, Any]] | _Fetched
            try:
                if fetch_series is not None:
                    instances = _Fetched(fetch_series(job.unit, uid))
                else:
                    instances = source.retrieve_series_metadata(job.unit, uid)
            except _SERIES_LOST as err:
                lost.append(Rejected(series=uid, error=f"{type(err).__name__}: {err}"))
                log.warning("series %s rejected: %s", uid, err)
                instances = []
            yield instances
    except Exception as err:  # the worker records it on the job, as for a study read in line
        yield _Failed(err)
    more, rejected = _take_report(source)
    quirks.update(more)
    yield _End(quirks, lost + rejected)


class StudyFetch:
    """One claimed job's study as it is read: :meth:`plan`, :meth:`series`, :meth:`finish`."""

    def __init__(
        self,
        slots: threading.Semaphore | None = None,
        closing: threading.Event | None = None,
    ) -> None:
        self._items: Iterator[_Item] | None = None
        self._closing = closing
        self._queue: queue.SimpleQueue[_Item] = queue.SimpleQueue()
        self._slots = slots
        self._end: _End | None = None
        #: What reading the fetched series (on the writing thread) normalized and rejected.
        self._read = ReadReport()
        self.cancelled = False

    @classmethod
    def in_line(cls, job: Job, source: Source, store: MetaStore, name: str) -> StudyFetch:
        """A study read on the caller's thread, each series when it is asked for."""
        fetch = cls()
        fetch._items = _study_items(job, source, store, name, lambda: not fetch.cancelled)
        return fetch

    @classmethod
    def failed(cls, error: Exception) -> StudyFetch:
        """A study that cannot be read at all (its source cannot be opened)."""
        fetch = cls()
        items: list[_Item] = [_Failed(error), _End(Quirks())]
        fetch._items = iter(items)
        return fetch

    def _next(self) -> _Item:
        item = next(self._items) if self._items is not None else self._get()
        if isinstance(item, list | _Fetched) and self._slots is not None:
            self._slots.release()  # taken to be written: the reader may read another
        elif isinstance(item, _End):
            self._end = item
        return item

    def _get(self) -> _Item:
        """The next item the reading thread put; an end if it stopped before this study's."""
        while True:
            try:
                return self._queue.get(timeout=_POLL)
            except queue.Empty:
                if self._closing is not None and self._closing.is_set() and self._queue.empty():
                    return _End(Quirks())

    def _take(self) -> _Item:
        item = self._next()
        if isinstance(item, _Failed):
            raise item.error
        return item

    def plan(self) -> StudyPlan:
        """The study's plan; raises what its search raised."""
        item = self._take()
        if not isinstance(item, StudyPlan):
            raise RuntimeError(f"a study fetch began with {type(item).__name__}, not its plan")
        return item

    def series(self) -> Iterator[list[dict[str, Any]]]:
        """Each planned series' instances, in order; raises where a read failed."""
        while self._end is None:
            item = self._take()
            if isinstance(item, _Fetched):
                yield item.read(self._read)
            elif isinstance(item, list):
                yield item

    def finish(self) -> tuple[Quirks, list[Rejected]]:
        """Stop reading this study; what the reading normalized and rejected.

        Series read and not written are dropped (their slots given back).
        The report is handed out once: a second call returns an empty one.
        """
        self.cancelled = True
        while self._end is None:
            self._next()
        end, self._end = self._end, _End(Quirks())
        quirks, rejected = self._read.take()
        quirks.update(end.quirks)
        return quirks, end.rejected + rejected


class Prefetcher:
    """The reading thread of one worker, ``depth`` series ahead of the writing.

    :meth:`fetch` queues a claimed job's study for reading; the thread reads
    the queued studies in order. :meth:`close` stops it (a read in flight
    ends or times out; nothing more is read).
    """

    def __init__(self, depth: int = DEFAULT_DEPTH) -> None:
        if depth < 1:
            raise ValueError("a prefetcher reads at least one series ahead")
        self.depth = depth
        self._slots = threading.Semaphore(depth)
        # The studies to read, in order; None wakes the thread to stop.
        self._tasks: queue.SimpleQueue[
            tuple[StudyFetch, Callable[..., Iterator[_Item]]] | None
        ] = queue.SimpleQueue()
        self._closing = threading.Event()
        self._thread: threading.Thread | None = None

    def fetch(self, job: Job, source: Source, store: MetaStore, name: str) -> StudyFetch:
        """Read the job's study on the thread, after the studies queued before it."""
        if self._closing.is_set():
            raise RuntimeError("the prefetcher is closed")
        fetch = StudyFetch(self._slots, self._closing)

        def items(ready: Callable[[], bool]) -> Iterator[_Item]:
            return _study_items(job, source, store, name, ready, defer=True)

        self._tasks.put((fetch, items))
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="prefetch", daemon=True)
            self._thread.start()
        return fetch

    def _run(self) -> None:
        while not self._closing.is_set():
            try:
                task = self._tasks.get(timeout=_POLL)
            except queue.Empty:
                continue
            if task is not None:
                self._fill(*task)

    def _fill(self, fetch: StudyFetch, items: Callable[..., Iterator[_Item]]) -> None:
        holding = False  # a slot taken for a series being read

        def ready() -> bool:
            nonlocal holding
            while not self._slots.acquire(timeout=_POLL):
                if fetch.cancelled or self._closing.is_set():
                    return False
            if fetch.cancelled or self._closing.is_set():
                self._slots.release()
                return False
            holding = True
            return True

        for item in items(ready):
            if holding and not isinstance(item, list | _Fetched):
                self._slots.release()  # the read failed: no series will give it back
            holding = False
            fetch._queue.put(item)

    def close(self, timeout: float = 30.0) -> None:
        """Stop reading; wait up to ``timeout`` seconds for a read in flight."""
        self._closing.set()
        self._tasks.put(None)
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("a prefetch read is still in flight after %.0fs; left to end", timeout)
            self._thread = None
