"""Workers: claim a job, pull its study from its source, write it, record the outcome.

Workers are source-agnostic: a worker claims a job, opens the job's source
through the registry (:func:`metastore.sources.open_source`, with the
configuration kept in the ``sources`` table and the credentials the worker
itself was given), and writes the study with :func:`write_study`: the
series rows (one ``add_series_metadata``), then each series' instances (one
``add_instances``, so one transaction, per series). Every write is
idempotent, so a job done twice changes nothing the second time.

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
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from threading import Event as StopFlag
from typing import Any

from metastore import db
from metastore.errors import (
    BadResponse,
    ConfigurationError,
    InvalidMetadata,
    LeaseLost,
    MetastoreError,
    SourceRefused,
    SourceUnavailable,
    UnknownSource,
)
from metastore.ingest.compare import changed_series, series_counts
from metastore.ingest.queue import QUEUED, RUNNING, Job, JobQueue
from metastore.ingest.summary import Failure, IngestSummary, Tally
from metastore.ingest.write import write_study
from metastore.progress import Counter
from metastore.retry import backoff
from metastore.sources import (
    ReadReport,
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
# Errors about one series' metadata that cost that series only.
_SERIES_LOST = (InvalidMetadata, BadResponse, SourceRefused)
_SHOWN_PARTS = 20  # parts named in a job's last_error (all are in failed_parts)


class Worker:
    """Claims jobs from the queue and pulls each job's study into the store.

    ``secrets`` maps a source name to the headers (credentials) to send it:
    they come from the worker's command line or environment, never from the
    database. ``lease`` is the lease in seconds; ``backoff`` the first
    job-level retry delay, doubled per attempt up to ``max_backoff``.
    ``progress`` counts studies (its main quantity), series, instances,
    retries and failures.
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
        progress: Counter | None = None,
    ) -> None:
        self.store = store
        self.queue = JobQueue(store)
        self.owner = owner or db.owner_id()
        self.source = source
        self._secrets = {name: dict(headers) for name, headers in (secrets or {}).items()}
        self.lease = lease
        self.poll = poll
        self.backoff = backoff
        self.max_backoff = max_backoff
        self._progress = progress
        self._sources: dict[int, tuple[SourceInfo, Source]] = {}
        self._prefetcher: ThreadPoolExecutor | None = None
        self._renewed = 0.0
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

        ``max_jobs`` bounds the jobs taken (for tests and batch runs).
        """
        try:
            while stop is None or not stop.is_set():
                if max_jobs is not None and self.tally.counts["jobs"] >= max_jobs:
                    break
                job = self.queue.claim(self.owner, lease=self.lease, source=self.source)
                if job is not None:
                    self._renewed = time.monotonic()
                    self.process(job)
                    continue
                if once and not self._pending():
                    break
                if stop is not None:
                    stop.wait(self.poll)
                else:
                    time.sleep(self.poll)
        finally:
            self.close()
        return self.stats

    def _pending(self) -> bool:
        counts = self.queue.counts(self.source)
        return counts[QUEUED] + counts[RUNNING] > 0

    def close(self) -> None:
        """Close the sources this worker opened."""
        if self._prefetcher is not None:
            self._prefetcher.shutdown(wait=True, cancel_futures=True)
            self._prefetcher = None
        for _info, opened in self._sources.values():
            opened.close()
        self._sources.clear()

    def _report(self, advance: int = 0, **others: int) -> None:
        if self._progress is not None:
            self._progress.update(advance, **others)

    def process(self, job: Job) -> None:
        """Pull one job's study; record success, a retry, or a failure on the job."""
        self.tally.add(jobs=1)
        if job.attempts > job.max_attempts:
            # Claimed again after its lease ran out too often: its workers keep dying.
            self.queue.fail(
                job, self.owner, job.last_error or f"gave up after {job.max_attempts} attempts"
            )
            self._failed(job, "its lease ran out on every attempt")
            return
        rejected: list[Rejected] = []
        try:
            info, opened = self._open(job.source_id)
            self._take_report(opened)  # what an earlier job left behind is not this one's
            self._pull(job, info, opened, rejected)
            rejected.extend(self._take_report(opened))
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

    def _pull(self, job: Job, info: SourceInfo, source: Source, rejected: list[Rejected]) -> None:
        study_uid = job.unit
        study_row = job.params.get("study")
        series_rows = source.search_series(study_uid)
        if job.params.get("changed_series"):
            # A sync: the series whose counts differ (one that failed last time is among them).
            uids = self._changed_series(job, info.name, series_rows)
        else:
            retry = _series_to_retry(job.failed_parts)
            if retry is not None:
                series_rows = [row for row in series_rows if row["SeriesInstanceUID"] in retry]
                log.info(
                    "%s: study %s: retrying %d series", self.owner, study_uid, len(series_rows)
                )
            uids = [row["SeriesInstanceUID"] for row in series_rows]
        study = StudyMetadata(
            study=study_row if isinstance(study_row, Mapping) else {},
            summaries=series_rows,
            series=self._series_metadata(source, study_uid, uids, rejected),
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
        )
        self.tally.add(**counts)
        log.info(
            "%s: study %s from %s: %d series", self.owner, study_uid, info.name, len(series_rows)
        )

    def _changed_series(
        self, job: Job, source: str, series_rows: list[dict[str, Any]]
    ) -> list[str]:
        """The listed series whose counts differ from the index; with ``prune``, drop the unlisted."""
        held = series_counts(self.store, source, job.unit)
        gone = set(held).difference(str(row["SeriesInstanceUID"]) for row in series_rows)
        if gone and job.params.get("prune"):
            self._keep_lease(job)
            self.store.remove_series(job.unit, source=source, series_uids=gone)
        return changed_series(series_rows, held)

    def _take_report(self, source: Source) -> list[Rejected]:
        """Count what the source normalized; return what it rejected."""
        report = getattr(source, "report", None)
        if not isinstance(report, ReadReport):
            return []
        quirks, rejected = report.take()
        self.tally.quirks.update(quirks)
        return rejected

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

    def _series_metadata(
        self, source: Source, study_uid: str, uids: list[str], rejected: list[Rejected]
    ) -> Iterator[list[dict[str, Any]]]:
        """Each series' instance metadata, in order; a series that cannot be read is rejected.

        A source that declares itself ``thread_safe`` is asked for the next
        series while this one is written: fetching and writing overlap.
        """

        def fetch(uid: str) -> list[dict[str, Any]]:
            try:
                return source.retrieve_series_metadata(study_uid, uid)
            except _SERIES_LOST as err:
                rejected.append(Rejected(series=uid, error=f"{type(err).__name__}: {err}"))
                log.warning("%s: series %s rejected: %s", self.owner, uid, err)
                return []

        if not getattr(source, "thread_safe", False) or len(uids) < 2:
            for uid in uids:
                yield fetch(uid)
            return
        if self._prefetcher is None:
            self._prefetcher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefetch")
        pending = self._prefetcher.submit(fetch, uids[0])
        try:
            for following in [*uids[1:], None]:
                current = pending.result()
                if following is not None:
                    pending = self._prefetcher.submit(fetch, following)
                yield current
        finally:
            pending.cancel()

    def _keep_lease(self, job: Job, *, renew: bool = False) -> None:
        """Raise ``LeaseLost`` unless we hold the job; renew once a third of the lease is gone."""
        now = time.monotonic()
        if renew or now - self._renewed >= self.lease / 3:
            self.queue.renew(job, self.owner, lease=self.lease)
            self._renewed = now
        elif not self.queue.holds(job, self.owner):
            raise LeaseLost(f"job {job.id} ({job.unit}) is no longer ours", job_id=job.id)

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


def _series_to_retry(parts: list[dict[str, Any]] | None) -> set[str] | None:
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
