"""Export: indexed studies written out as an OHIF DICOM JSON launch file.

A reader of the store: each study is read with ``MetaStore.get_study`` and
written by :mod:`metastore.launchfile.write`, one study at a time.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from metastore.errors import MetastoreError
from metastore.launchfile.write import launch_study, write_launch_file
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


def export_launch_file(
    store: MetaStore,
    path: str | Path,
    study_uids: Sequence[str] | None = None,
    *,
    source: str | None = None,
) -> ExportSummary:
    """Write the given studies (every indexed study when None) as a launch file.

    Raises ``MetastoreError`` naming a study that is not indexed (or has no
    series in ``source``) before anything is written.
    """
    everything = study_uids is None
    wanted = store.study_uids(source=source) if study_uids is None else list(study_uids)
    if source is not None and store.get_source(source) is None:
        raise MetastoreError(f"no source named {source!r}")
    counts: dict[str, int] = {}
    present = set(wanted) if everything else set(store.study_uids(source=source))
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
