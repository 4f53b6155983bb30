"""What an ingest did: one summary for every way in (a launch file, a folder, a queue run, a worker)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from metastore.quirks import Quirks

#: The counts an ingest keeps, in the order they are shown.
COUNTS = (
    "jobs",
    "studies",
    "series",
    "instances",
    "inserted",
    "updated",
    "unchanged",
    "events",
    "retries",
    "lost",
)


@dataclass(frozen=True, kw_only=True)
class Failure:
    """A unit of work that failed: a study of a file, or a job (named by its unit)."""

    unit: str
    study_uid: str | None
    error: str
    #: The parts of the unit that failed when the rest was stored (a series, an instance).
    parts: tuple[str, ...] = ()

    def __str__(self) -> str:
        text = f"{self.unit}: {self.error}"
        return text + "".join(f"\n  {part}" for part in self.parts)


class Failures(int):
    """How many units failed (an ``int``), iterable over the ``Failure`` records.

    A count first, because most callers ask "did anything fail, and how
    much"; the records are there for whoever lists them.
    """

    _items: tuple[Failure, ...]

    def __new__(cls, items: Iterable[Failure] = ()) -> Failures:
        listed = tuple(items)
        made = super().__new__(cls, len(listed))
        made._items = listed
        return made

    def __iter__(self) -> Iterator[Failure]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Failures({list(self._items)!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (Failures, (self._items,))


@dataclass(frozen=True, kw_only=True)
class IngestSummary:
    """The outcome of an ingest: counts, failures, skipped files, and for a queue run its jobs."""

    source: str | None = None
    jobs: int = 0
    studies: int = 0
    series: int = 0
    instances: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    events: int = 0
    retries: int = 0
    lost: int = 0
    seconds: float = 0.0
    #: Whether the work came from the job queue (a worker, a queue run).
    from_queue: bool = False
    #: Studies queued (a queue run) and the jobs of the source by state after it.
    queued: int | None = None
    job_states: Mapping[str, int] = field(default_factory=dict)
    failures: Failures = field(default_factory=Failures)
    skipped_files: tuple[tuple[str, str], ...] = ()
    #: Deviations from the DICOM JSON model normalized while reading, a count per kind.
    quirks: Mapping[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when every study (and every file) was ingested."""
        return not self.failures and not self.skipped_files

    @property
    def errors(self) -> tuple[str, ...]:
        """Each failure as one line."""
        return tuple(str(failure) for failure in self.failures)

    def __str__(self) -> str:
        rate = self.instances / self.seconds if self.seconds > 0 else 0.0
        into = f" into source {self.source!r}" if self.source is not None else ""
        text = (
            f"{self.studies} studies, {self.series} series, {self.instances} instances"
            f"{into} in {self.seconds:.1f}s ({rate:,.0f} instances/s): "
            f"{self.inserted} new, {self.updated} changed, {self.unchanged} unchanged, "
            f"{self.events} events"
        )
        if self.queued is not None:
            states = ", ".join(f"{n} {state}" for state, n in self.job_states.items() if n)
            text += f"; {self.queued} studies queued, jobs: {states or 'none'}"
        if self.from_queue:
            text += f"; {self.jobs} jobs, {self.retries} retries, {int(self.failures)} failed"
        elif self.failures:
            text += f"; {int(self.failures)} studies failed"
        if self.skipped_files:
            text += f"; {len(self.skipped_files)} files skipped"
        if self.quirks:
            text += f"; normalized: {Quirks(self.quirks)}"
        return text


class Tally:
    """Counts while ingesting; frozen into an ``IngestSummary`` at the end."""

    def __init__(self) -> None:
        self.counts = dict.fromkeys(COUNTS, 0)
        self.failures: list[Failure] = []
        self.skipped_files: list[tuple[str, str]] = []
        self.quirks = Quirks()

    def add(self, **counts: int) -> None:
        for key, value in counts.items():
            self.counts[key] += value

    def merge(self, summary: IngestSummary) -> None:
        """Add another summary's counts and failures (a worker process's)."""
        self.add(**{key: getattr(summary, key) for key in COUNTS})
        self.failures.extend(summary.failures)
        self.skipped_files.extend(summary.skipped_files)
        self.quirks.update(Quirks(summary.quirks))

    def summary(
        self,
        source: str | None,
        seconds: float,
        *,
        from_queue: bool = False,
        queued: int | None = None,
        job_states: Mapping[str, int] | None = None,
    ) -> IngestSummary:
        c = self.counts
        return IngestSummary(
            source=source,
            seconds=seconds,
            from_queue=from_queue,
            queued=queued,
            job_states=dict(job_states or {}),
            failures=Failures(self.failures),
            skipped_files=tuple(self.skipped_files),
            quirks=self.quirks.as_dict(),
            jobs=c["jobs"],
            studies=c["studies"],
            series=c["series"],
            instances=c["instances"],
            inserted=c["inserted"],
            updated=c["updated"],
            unchanged=c["unchanged"],
            events=c["events"],
            retries=c["retries"],
            lost=c["lost"],
        )
