"""Running workers: one ingest from search to drained queue, worker processes, a served worker.

:func:`ingest_source` is what ``metastore ingest dicomweb`` calls: register
the source, search it, queue one job per study, and drain the queue with N
workers (:mod:`metastore.ingest.worker`), N > 1 being processes (forked
from a server process that imported metastore once). The processes are
started before the search, so their start-up overlaps it, and wait for the
queue to be filled. Secrets reach them as arguments over a pipe, never
through the environment or the database.

:func:`serve` runs one worker in this process until a signal (``metastore
worker``).
"""

from __future__ import annotations

import logging
import multiprocessing
import queue as queue_module
import signal
import time
from collections.abc import Iterable, Mapping
from threading import Event as StopFlag
from typing import Any

from metastore.errors import ConfigurationError
from metastore.ingest.prefetch import DEFAULT_DEPTH
from metastore.ingest.queue import JobQueue
from metastore.ingest.summary import Failure, IngestSummary, Tally
from metastore.ingest.worker import Worker
from metastore.progress import Counter, Progress, Reporting
from metastore.quirks import Quirks
from metastore.sources import ReadReport, Source, SourceConfig, open_source
from metastore.store import MetaStore

log = logging.getLogger(__name__)

_START_TIMEOUT = 600.0  # seconds a worker process waits for its queue to be filled


def enqueue_studies(
    store: MetaStore,
    source: Source,
    *,
    query: Mapping[str, Any] | None = None,
    study_uids: Iterable[str] = (),
    max_attempts: int = 5,
    not_found: list[str] | None = None,
) -> int:
    """Search the source and queue one job per study found; returns how many were queued.

    ``study_uids`` narrows the search to those studies (a UID list query);
    the study's search row rides in the job's params, so the worker stores
    the study-level attributes without asking again. Those the source does
    not have are added to ``not_found``. A search that finds nothing is a
    warning (a query a server cannot match usually finds nothing silently).
    """
    search = dict(query or {})
    uids = list(study_uids)
    if uids:
        search["StudyInstanceUID"] = uids
    units: dict[str, Mapping[str, Any]] = {}
    for row in source.search_studies(search):
        uid = row.get("StudyInstanceUID")
        if isinstance(uid, str) and uid:
            units[uid] = {"study": row}
    missing = sorted(set(uids) - set(units))
    if missing:
        log.warning("%s: not found: %s", source.config.name, ", ".join(missing))
        if not_found is not None:
            not_found.extend(missing)
    elif not units:
        log.warning("%s: the search %s matched no study", source.config.name, search or "(all)")
    return JobQueue(store).enqueue(source.config.name, units.items(), max_attempts=max_attempts)


class WorkerPool:
    """``size`` worker processes that start at once and work once ``go()`` is called.

    Use as a context manager; leaving it without ``go()`` (an error while
    queueing) stops the processes without work.
    """

    def __init__(
        self,
        url: str,
        size: int,
        *,
        source: str | None = None,
        secrets: Mapping[str, Mapping[str, str]] | None = None,
        lease: float = 60.0,
        poll: float = 0.2,
        prefetch: int = DEFAULT_DEPTH,
    ) -> None:
        if size < 1:
            raise ConfigurationError("workers must be at least 1")
        # forkserver: each worker forks from a clean server process that has
        # imported metastore once (spawn would import it again in every
        # worker: about a second of CPU each), not from this process with
        # its database connections and threads.
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["metastore.ingest.runner", "metastore.sources.dicomweb"])
        self._messages: Any = context.Queue()
        self._go = context.Event()
        self._cancelled = context.Event()
        level = logging.getLogger("metastore").getEffectiveLevel()
        self._source = source
        options = {
            "source": source,
            "secrets": dict(secrets or {}),
            "lease": lease,
            "poll": poll,
            "prefetch": prefetch,
        }
        self._processes = [
            context.Process(
                target=_worker_process,
                args=(url, options, level, self._messages, self._go, self._cancelled),
                name=f"metastore-worker-{i}",
            )
            for i in range(size)
        ]
        for process in self._processes:
            process.start()

    def go(self) -> None:
        """Let the workers start on the queue."""
        self._go.set()

    def join(self, progress: Counter | None = None) -> IngestSummary:
        """Wait for every worker to drain the queue; what they did, added up."""
        started = time.monotonic()
        total = Tally()
        finished = 0
        while finished < len(self._processes):
            try:
                kind, value = self._messages.get(timeout=0.5)
            except queue_module.Empty:
                if not any(p.is_alive() for p in self._processes) and self._messages.empty():
                    break  # a worker died without reporting: what it held, its lease frees
                continue
            if kind == "summary":
                finished += 1
                total.merge(value)
            elif progress is not None:
                advance, others = value
                progress.update(advance, **others)
        for process in self._processes:
            process.join(timeout=30)
        return total.summary(self._source, time.monotonic() - started, from_queue=True)

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if not self._go.is_set():
            self._cancelled.set()
            self._go.set()
        for process in self._processes:
            process.join(timeout=30)
            if process.is_alive():
                process.terminate()


def _worker_process(
    url: str,
    options: dict[str, Any],
    level: int,
    messages: Any,
    go: Any,
    cancelled: Any,
) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    summary = IngestSummary(source=options["source"])
    try:
        with MetaStore(url, migrate=False) as store:
            worker = Worker(store, progress=_Forward(messages), **options)
            if go.wait(_START_TIMEOUT) and not cancelled.is_set():
                summary = worker.run(once=True)
    finally:
        messages.put(("summary", summary))


class _Forward:
    """A worker process's progress, sent to the parent over the pool's queue."""

    def __init__(self, messages: Any) -> None:
        self._messages = messages

    def update(self, advance: int = 1, **others: int) -> None:
        self._messages.put(("progress", (advance, others)))


def drain(
    url: str,
    *,
    workers: int = 1,
    source: str | None = None,
    secrets: Mapping[str, Mapping[str, str]] | None = None,
    lease: float = 60.0,
    poll: float = 0.2,
    prefetch: int = DEFAULT_DEPTH,
    progress: Counter | None = None,
    stop: StopFlag | None = None,
) -> IngestSummary:
    """Run ``workers`` workers (processes when more than one) until the queue is drained.

    ``stop`` (one worker only) ends the run once the current job is done.
    ``prefetch``: series each worker reads ahead (see :class:`Worker`).
    """
    if workers == 1:
        with MetaStore(url) as store:
            worker = Worker(
                store,
                source=source,
                secrets=secrets,
                lease=lease,
                poll=poll,
                prefetch=prefetch,
                progress=progress,
            )
            return worker.run(once=True, stop=stop)
    with WorkerPool(
        url, workers, source=source, secrets=secrets, lease=lease, poll=poll, prefetch=prefetch
    ) as pool:
        pool.go()
        return pool.join(progress)


def ingest_source(
    url: str | None,
    config: SourceConfig,
    *,
    query: Mapping[str, Any] | None = None,
    study_uids: Iterable[str] = (),
    workers: int = 1,
    lease: float = 60.0,
    max_attempts: int = 5,
    prefetch: int = DEFAULT_DEPTH,
    progress: Reporting = None,
) -> IngestSummary:
    """Register the source, queue one job per matching study, and drain the queue.

    ``url`` is the database (None: ``METASTORE_DATABASE_URL`` or the
    default). The source's kind, root and settings are kept in the
    ``sources`` table; its headers (credentials) are handed to the workers
    only. ``prefetch``: series each worker reads ahead while it writes.
    ``progress`` displays the studies done against those queued.
    """
    if workers < 1:
        raise ConfigurationError("workers must be at least 1")
    started = time.monotonic()
    secrets = {config.name: config.headers}
    with (
        MetaStore(url) as store,
        Progress(f"ingest {config.name}", unit="studies", display=progress) as shown,
    ):
        new_source = store.get_source(config.name) is None
        store.register_source(
            config.name, config.kind, root_url=config.root, settings=dict(config.settings)
        )
        not_found: list[str] = []
        pool = (
            WorkerPool(
                store.url,
                workers,
                source=config.name,
                secrets=secrets,
                lease=lease,
                prefetch=prefetch,
            )
            if workers > 1
            else None
        )
        searched = Tally()
        try:
            try:
                opened = open_source(config)
                try:
                    queued = enqueue_studies(
                        store,
                        opened,
                        query=query,
                        study_uids=study_uids,
                        max_attempts=max_attempts,
                        not_found=not_found,
                    )
                    _take_search_report(opened, searched)
                finally:
                    opened.close()
            except BaseException:
                if new_source:  # a failed ingest leaves no source behind
                    store.delete_source(config.name)
                raise
            shown.set_total(queued)
            if pool is None:
                done = drain(
                    store.url,
                    source=config.name,
                    secrets=secrets,
                    lease=lease,
                    prefetch=prefetch,
                    progress=shown,
                )
            else:
                pool.go()
                done = pool.join(shown)
        finally:
            if pool is not None:
                pool.__exit__(None, None, None)
        counts = JobQueue(store).counts(config.name)
    tally = searched
    tally.merge(done)
    tally.failures.extend(
        Failure(unit=f"study {uid}", study_uid=uid, error=f"not found in {config.name}")
        for uid in not_found
    )
    summary = tally.summary(
        config.name,
        time.monotonic() - started,
        from_queue=True,
        queued=queued,
        job_states=counts,
    )
    # One line per ingest, a count per kind (never one line per element).
    if summary.quirks:
        log.info("%s: normalized while reading: %s", config.name, Quirks(summary.quirks))
    return summary


def _take_search_report(source: Source, tally: Tally) -> None:
    """The search's normalizations, and its unreadable rows as failures."""
    report = getattr(source, "report", None)
    if not isinstance(report, ReadReport):
        return
    quirks, rejected = report.take()
    tally.quirks.update(quirks)
    for part in rejected:
        tally.failures.append(Failure(unit="search", study_uid=None, error=str(part)))


def serve(
    store: MetaStore,
    *,
    source: str | None = None,
    headers: Mapping[str, str] | None = None,
    lease: float = 60.0,
    poll: float = 2.0,
    prefetch: int = DEFAULT_DEPTH,
    once: bool = False,
) -> IngestSummary:
    """Run one worker in this process until SIGTERM/SIGINT (or, with ``once``, the queue drains).

    ``headers`` (credentials) go to ``source``, which they need. A signal
    stops the worker once its current job is done; the jobs it claimed
    ahead (``prefetch``) go back to the queue.
    """
    if headers and not source:
        raise ConfigurationError(
            "--header and --token-env need --source: credentials go to one source"
        )
    secrets = {source: dict(headers or {})} if source else {}
    stop = StopFlag()
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    for sig in previous:
        signal.signal(sig, lambda _signum, _frame: stop.set())
    try:
        worker = Worker(
            store, source=source, secrets=secrets, lease=lease, poll=poll, prefetch=prefetch
        )
        return worker.run(once=once, stop=stop)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
