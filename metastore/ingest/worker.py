"""Workers: claim a job, pull its study from its source, write it, record the outcome.

Workers are source-agnostic: a worker claims a job, opens the job's source
through the registry (:func:`metastore.sources.open_source`, with the
configuration kept in the ``sources`` table and the credentials the worker
itself was given), and writes the study with :func:`write_study`: the
series rows (one ``add_series_metadata``), then each series' instances (one
``add_instances``, so one transaction, per series). Every write is
idempotent, so a job done twice changes nothing the second time.

A worker reads ahead: while it writes one study, a thread of its own reads
the next series and studies of the jobs it has claimed (a bounded number:
see :mod:`metastore.ingest.prefetch`), so the archive's answers, their
decoding and the writes overlap. A worker that stops gives the jobs it
claimed ahead back to the queue.

Before each write a worker checks that it still holds the job (renewing the
lease once a third of it has passed) and stops if it has lost it; a worker
that dies simply lets it run out, and the next claim takes the job over.

Failures that may pass (a source unavailable, a bad answer, the database)
are retried with exponential backoff and jitter (or after the source's
``Retry-After``) until the job's ``max_attempts``; bad metadata and bad
configuration fail the job at once. The error is kept in ``last_error``,
with every credential the worker holds blanked out.

One bad part costs that part, not the study: a series whose metadata the
source refuses or cannot make sense of, an instance it cannot read (its
``report``) or the store refuses, is left out and the rest of the study is
written and announced. The job then ends failed with those parts in
``failed_parts``; its next run pulls only those series again. The
deviations the source normalized are counted in the summary.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Mapping
from threading import Event as StopFlag
from typing import Any

from metastore import db
from metastore.errors import (
    ConfigurationError,
    InvalidMetadata,
    LeaseLost,
    MetastoreError,
    SourceRefused,
    SourceUnavailable,
    UnknownSource,
)
from metastore.ingest.prefetch import DEFAULT_DEPTH, Prefetcher, StudyFetch
from metastore.ingest.queue import QUEUED, RUNNING, Job, JobQueue
from metastore.ingest.summary import Failure, IngestSummary, Tally
from metastore.ingest.write import write_study
from metastore.progress import Counter
from metastore.retry import backoff
from metastore.sources import (
    Rejected,
    Source,
    SourceConfig,
    StudyMetadata,
    open_source,
)
from metastore.store import MetaStore, SourceInfo

log = logging.getLogger(__name__)

# Errors a retry cannot cure: the job fails at once.
_PERMANENT = (InvalidMetadata, ConfigurationError, UnknownSource, SourceRefused)
_SHOWN_PARTS = 20  # parts named in a job's last_error (all are in failed_parts)
#: A study's small series are written together, one transaction for up to this many
#: instances (one ``INSTANCES_ADDED`` per series still): real archives are mostly
#: one-instance series (SR, SEG, KO, PR, DX), each otherwise a transaction of its own.
INSTANCES_PER_CALL = 1000


class Worker:
    """Claims jobs from the queue and pulls each job's study into the store.

    ``secrets`` maps a source name to the headers (credentials) to send it:
    they come from the worker's command line or environment, never from the
    database. ``lease`` is the lease in seconds; ``backoff`` the first
    job-level retry delay, doubled per attempt up to ``max_backoff``.
    ``prefetch`` is how far reading runs ahead of writing
    (:mod:`metastore.ingest.prefetch`): at most that many series read and
    waiting, and that many jobs claimed besides the one being written; 0
    reads each study in line. ``progress`` counts studies (its main
    quantity), series, instances, retries and failures.
    """

    def __init__(
        self,
        store: MetaStore,
        *,
        owner: str | None = None,
        source: str | None = None,
        secrets: Mapping[str, Mapping[str, str]] | None = None,
        lease: float = 60.0,
        poll: float = 1.0,
        backoff: float = 2.0,
        max_backoff: float = 300.0,
        prefetch: int = DEFAULT_DEPTH,
        progress: Counter | None = None,
    ) -> None:
        if prefetch < 0:
            raise ConfigurationError("prefetch must be 0 or more")
        self.store = store
        self.queue = JobQueue(store)
        self.owner = owner or db.owner_id()
        self.source = source
        self._secrets = {name: dict(headers) for name, headers in (secrets or {}).items()}
        self.lease = lease
        self.poll = poll
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.prefetch = prefetch
        self._progress = progress
        self._sources: dict[int, tuple[SourceInfo, Source]] = {}
        self._prefetcher: Prefetcher | None = None
        # Claimed jobs waiting their turn (their studies being read), oldest first.
        self._held: deque[tuple[Job, StudyFetch]] = deque()
        self._renewed: dict[int, float] = {}  # job id: when its lease was last taken or renewed
        self._claimed = 0
        self._started = time.monotonic()
        self.tally = Tally()

    @property
    def stats(self) -> IngestSummary:
        """What this worker has done so far."""
        return self.tally.summary(self.source, time.monotonic() - self._started, from_queue=True)

    def run(
        self, *, once: bool = False, stop: StopFlag | None = None, max_jobs: int | None = None
    ) -> IngestSummary:
        """Work until stopped; with ``once``, until no job is queued or running.

        ``max_jobs`` bounds the jobs taken (for tests and batch runs). A
        stopped worker finishes the job it is writing and gives back the
        jobs it claimed ahead, unread or half read, to the queue.
        """
        try:
            while stop is None or not stop.is_set():
                self._claim_ahead(max_jobs)
                if self._held:
                    job, fetch = self._held.popleft()
                    self.process(job, fetch)
                    continue
                if max_jobs is not None and self._claimed >= max_jobs:
                    break
                if once and not self._pending():
                    break
                if stop is not None:
                    stop.wait(self.poll)
                else:
                    time.sleep(self.poll)
        finally:
            self.close()
        return self.stats

    def _claim_ahead(self, max_jobs: int | None) -> None:
        """Hold the job to write next and, reading ahead, up to ``prefetch`` more."""
        while len(self._held) <= self.prefetch and (max_jobs is None or self._claimed < max_jobs):
            job = self.queue.claim(self.owner, lease=self.lease, source=self.source)
            if job is None:
                return
            self._claimed += 1
            self._renewed[job.id] = time.monotonic()
            self._held.append((job, self._fetch(job)))

    def _fetch(self, job: Job) -> StudyFetch:
        """Start reading the job's study: on the prefetch thread when the source allows it."""
        if job.attempts > job.max_attempts:
            return StudyFetch.failed(RuntimeError("not read: too many attempts"))
        try:
            info, opened = self._open(job.source_id)
        except Exception as err:  # recorded on the job when its turn comes
            return StudyFetch.failed(err)
        if self.prefetch == 0 or not getattr(opened, "thread_safe", False):
            return StudyFetch.in_line(job, opened, self.store, info.name)
        if self._prefetcher is None:
            self._prefetcher = Prefetcher(self.prefetch)
        return self._prefetcher.fetch(job, opened, self.store, info.name)

    def _pending(self) -> bool:
        counts = self.queue.counts(self.source)
        return counts[QUEUED] + counts[RUNNING] > 0

    def close(self) -> None:
        """Give back the jobs claimed and not written; stop reading; close the sources."""
        held = [job for job, _fetch in self._held]
        for _job, fetch in self._held:
            fetch.cancelled = True
        self._held.clear()
        if held:
            try:
                given = self.queue.release(held, self.owner)
                log.info("%s: %d claimed jobs given back to the queue", self.owner, given)
            except MetastoreError as err:  # their leases run out instead
                log.warning(
                    "%s: claimed jobs not given back (%s); their leases expire", self.owner, err
                )
        if self._prefetcher is not None:
            self._prefetcher.close()
            self._prefetcher = None
        for _info, opened in self._sources.values():
            opened.close()
        self._sources.clear()

    def _report(self, advance: int = 0, **others: int) -> None:
        if self._progress is not None:
            self._progress.update(advance, **others)

    def process(self, job: Job, fetch: StudyFetch | None = None) -> None:
        """Pull one job's study; record success, a retry, or a failure on the job.

        ``fetch`` is the study as it is being read (read in line when None).
        """
        self.tally.add(jobs=1)
        if fetch is None:
            self._renewed[job.id] = time.monotonic()
            fetch = self._fetch(job)
        try:
            self._process(job, fetch)
        finally:
            quirks, _ = fetch.finish()  # a study left unwritten: its reading stops
            self.tally.quirks.update(quirks)
            self._renewed.pop(job.id, None)

    def _process(self, job: Job, fetch: StudyFetch) -> None:
        if job.attempts > job.max_attempts:
            # Claimed again after its lease ran out too often: its workers keep dying.
            self.queue.fail(
                job, self.owner, job.last_error or f"gave up after {job.max_attempts} attempts"
            )
            self._failed(job, "its lease ran out on every attempt")
            return
        rejected: list[Rejected] = []
        try:
            info, _opened = self._open(job.source_id)
            self._pull(job, info, fetch, rejected)
            quirks, parts = fetch.finish()
            self.tally.quirks.update(quirks)
            rejected.extend(parts)
        except LeaseLost as err:
            self.tally.add(lost=1)
            log.warning("%s: %s", self.owner, err)
            return
        except Exception as err:  # every failure is recorded on the job, none is lost
            self._handle_error(job, err)
            return
        if rejected:
            self._partly_done(job, rejected)
        elif self.queue.complete(job, self.owner):
            self.tally.add(studies=1)
            self._report(1)
        else:
            self.tally.add(lost=1)

    def _pull(
        self, job: Job, info: SourceInfo, fetch: StudyFetch, rejected: list[Rejected]
    ) -> None:
        study_uid = job.unit
        study_row = job.params.get("study")
        plan = fetch.plan()
        if plan.gone:
            self._keep_lease(job)
            self.store.remove_series(study_uid, source=info.name, series_uids=plan.gone)
        study = StudyMetadata(
            study=study_row if isinstance(study_row, Mapping) else {},
            summaries=plan.rows,
            series=fetch.series(),
        )

        def refused(instance: Mapping[str, Any], err: InvalidMetadata) -> None:
            rejected.append(
                Rejected(
                    series=str(instance.get("SeriesInstanceUID")),
                    instance=str(instance.get("SOPInstanceUID")),
                    error=f"refused by the index: {err}",
                )
            )

        counts = write_study(
            self.store,
            study,
            source=info.name,
            before_write=lambda: self._keep_lease(job),
            progress=self._progress,
            on_refused=refused,
            instances_per_call=INSTANCES_PER_CALL,
        )
        self.tally.add(**counts)
        log.info(
            "%s: study %s from %s: %d series", self.owner, study_uid, info.name, len(plan.rows)
        )

    def _partly_done(self, job: Job, rejected: list[Rejected]) -> None:
        """The study is stored but for ``rejected``: the job fails naming them, to retry them."""
        series = {part.series for part in rejected}
        instances = sum(1 for part in rejected if part.instance)
        error = self.scrub(
            f"{len(rejected)} parts could not be read ({instances} instances, in "
            f"{len(series)} series); the rest of the study is stored: "
            + "; ".join(str(part) for part in rejected[:_SHOWN_PARTS])
        )
        parts = [
            {key: self.scrub(v) if isinstance(v, str) else v for key, v in part.to_dict().items()}
            for part in rejected
        ]
        if not self.queue.complete_partly(job, self.owner, parts, error):
            self.tally.add(lost=1)
            return
        self.tally.add(studies=1)
        self._report(1, failures=1)
        self.tally.failures.append(
            Failure(
                unit=job.unit,
                study_uid=job.unit,
                error=f"{len(rejected)} parts could not be read; the rest is stored",
                parts=tuple(self.scrub(str(part)) for part in rejected),
            )
        )
        log.warning("%s: job %s (%s): %s", self.owner, job.id, job.unit, error)

    def _keep_lease(self, job: Job, *, renew: bool = False) -> None:
        """Renew the lease once a third of it is gone; ``LeaseLost`` if another worker took the job.

        Between renewals nothing is asked of the database: only a claim takes a
        job from its owner, and only once its lease has run out, which cannot
        happen within a third of the lease of its last renewal (a worker paused
        longer, say stopped or swapping, renews at once and finds out). The
        jobs claimed ahead are renewed alike, so none runs out while it waits.
        """
        now = time.monotonic()
        if renew or now - self._renewed.get(job.id, 0.0) >= self.lease / 3:
            self.queue.renew(job, self.owner, lease=self.lease)
            self._renewed[job.id] = now
        for waiting, _fetch in self._held:
            if now - self._renewed.get(waiting.id, 0.0) >= self.lease / 3:
                try:
                    self.queue.renew(waiting, self.owner, lease=self.lease)
                    self._renewed[waiting.id] = now
                except LeaseLost:  # found out when its turn comes
                    self._renewed[waiting.id] = now

    def _open(self, source_id: int) -> tuple[SourceInfo, Source]:
        cached = self._sources.get(source_id)
        if cached is not None:
            return cached
        info = next((s for s in self.store.list_sources() if s.id == source_id), None)
        if info is None:
            raise UnknownSource(f"the job's source (id {source_id}) is gone")
        config = SourceConfig(
            name=info.name,
            kind=info.kind,
            root=info.root_url,
            settings=dict(info.settings),
            headers=self._secrets.get(info.name, {}),
        )
        opened = open_source(config)
        self._sources[source_id] = (info, opened)
        return info, opened

    def _handle_error(self, job: Job, err: Exception) -> None:
        text = self.scrub(f"{type(err).__name__}: {err}")
        if not isinstance(err, MetastoreError):
            log.error("%s: job %s: unexpected %s", self.owner, job.id, text)
        if isinstance(err, _PERMANENT) or job.attempts >= job.max_attempts:
            if self.queue.fail(job, self.owner, text):
                self._failed(job, text)
            return
        delay = self._retry_delay(job.attempts, err)
        if self.queue.retry_later(job, self.owner, text, delay=delay):
            self.tally.add(retries=1)
            self._report(retries=1)
            log.info(
                "%s: job %s (%s) retries in %.1fs: %s", self.owner, job.id, job.unit, delay, text
            )

    def _retry_delay(self, attempts: int, err: Exception) -> float:
        retry_after = err.context.get("retry_after") if isinstance(err, SourceUnavailable) else None
        if isinstance(retry_after, int | float):
            return float(retry_after)
        return backoff(attempts, self.backoff, self.max_backoff)

    def _failed(self, job: Job, text: str) -> None:
        self.tally.failures.append(Failure(unit=job.unit, study_uid=job.unit, error=text))
        self._report(failures=1)
        log.warning("%s: job %s (%s) failed: %s", self.owner, job.id, job.unit, text)

    def scrub(self, text: str) -> str:
        """The text with every credential value this worker holds blanked out."""
        for headers in self._secrets.values():
            for value in headers.values():
                for secret in {value, *value.split()[1:]}:
                    if len(secret) >= 4:
                        text = text.replace(secret, "***")
        return text
