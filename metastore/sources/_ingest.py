"""Writing a study through the store, and what an ingest did (counts and failures)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from metastore.launchfile import StudyFailure
from metastore.store import MetaStore

COUNTS = ("studies", "series", "instances", "inserted", "updated", "unchanged", "events")


@dataclass(frozen=True, kw_only=True)
class FileIngestSummary:
    """What one ingest of a launch file or a folder did: counts, and what failed."""

    source: str
    studies: int = 0
    series: int = 0
    instances: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    events: int = 0
    seconds: float = 0.0
    failures: tuple[StudyFailure, ...] = field(default_factory=tuple)
    skipped_files: tuple[tuple[str, str], ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        """True when every study (and every file) was ingested."""
        return not self.failures and not self.skipped_files

    def __str__(self) -> str:
        rate = self.instances / self.seconds if self.seconds > 0 else 0.0
        text = (
            f"{self.studies} studies, {self.series} series, {self.instances} instances "
            f"into source {self.source!r} in {self.seconds:.1f}s ({rate:,.0f} instances/s): "
            f"{self.inserted} new, {self.updated} changed, {self.unchanged} unchanged, "
            f"{self.events} events"
        )
        if self.failures:
            text += f"; {len(self.failures)} studies failed"
        if self.skipped_files:
            text += f"; {len(self.skipped_files)} files skipped"
        return text


class Tally:
    """Mutable counts while ingesting; frozen into an ``FileIngestSummary`` at the end."""

    def __init__(self) -> None:
        self.counts = dict.fromkeys(COUNTS, 0)
        self.failures: list[StudyFailure] = []
        self.skipped_files: list[tuple[str, str]] = []

    def add(self, **counts: int) -> None:
        for key, value in counts.items():
            self.counts[key] += value

    def summary(self, source: str, seconds: float) -> FileIngestSummary:
        return FileIngestSummary(
            source=source,
            seconds=seconds,
            failures=tuple(self.failures),
            skipped_files=tuple(self.skipped_files),
            **self.counts,
        )


def write_study(
    store: MetaStore,
    study: Mapping[str, Any],
    summaries: list[dict[str, Any]],
    series: Iterable[list[dict[str, Any]]],
    *,
    source: str,
    made_in_client: bool = False,
) -> dict[str, int]:
    """Write one study as OHIF's data sources do; returns its counts.

    The study row, the series summaries (one ``SERIES_ADDED``), then each
    series' instances: one transaction and one ``INSTANCES_ADDED`` each.
    """
    counts = dict.fromkeys(COUNTS[1:], 0)
    store.add_study(study, source=source)
    result = store.add_series_metadata(summaries, source=source, made_in_client=made_in_client)
    counts["events"] += len(result.events)
    for instances in series:
        result = store.add_instances(instances, source=source, made_in_client=made_in_client)
        counts["series"] += 1
        counts["instances"] += len(instances)
        counts["inserted"] += result.inserted
        counts["updated"] += result.updated
        counts["unchanged"] += result.unchanged
        counts["events"] += len(result.events)
    return counts
