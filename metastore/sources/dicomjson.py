"""OHIF DICOM JSON launch files as a source: ingest one, or serve its studies.

:func:`ingest_launch_file` reads a launch file (a path or an http(s) URL)
once, front to back, and writes each study through ``MetaStore``: the study
row, its series summaries (one ``SERIES_ADDED``), then one transaction and
one ``INSTANCES_ADDED`` per series. A study is written only once all of it
has been read and checked, so a bad study leaves nothing behind.

:class:`DicomJsonSource` implements the ``Source`` protocol for the job
queue: ``config.root`` is the path or URL. A launch file has no index, so
each lookup of a study scans the file (the most recent study is kept); for a
whole file, one call of :func:`ingest_launch_file` is one pass.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from metastore.errors import ConfigurationError, InvalidMetadata, MetastoreError
from metastore.imageids import instance_image_ids
from metastore.launchfile import LaunchStudy, StudyFailure, read_studies
from metastore.progress import Progress
from metastore.sources import SourceConfig
from metastore.sources._ingest import FileIngestSummary, Tally, write_study
from metastore.sources._stream import display_name, open_bytes, redact_url, stem
from metastore.store import MetaStore

log = logging.getLogger(__name__)

KIND = "dicomjson"


def ingest_launch_file(
    store: MetaStore,
    location: str,
    *,
    source: str | None = None,
    keep_going: bool = False,
    headers: Mapping[str, str] | None = None,
    progress: bool | None = None,
) -> FileIngestSummary:
    """Index every study of a launch file (a path or an http(s) URL).

    ``source`` defaults to the file's stem (``studies.json.gz`` ->
    ``studies``); it is registered as kind ``dicomjson`` with the path or
    the URL without its query string. A bad study raises
    ``InvalidMetadata`` naming the file, the JSON path and the UIDs, and
    nothing of it is stored (the studies before it are). With
    ``keep_going`` the bad studies are skipped and listed in the summary's
    ``failures``. ``progress`` forces the bar on or off (default: a bar on
    a terminal, log lines otherwise).
    """
    name = source or stem(location)
    shown = display_name(location)
    store.register_source(name, KIND, root_url=redact_url(location))
    tally = Tally()
    with (
        Progress(f"ingest {shown}", unit="studies", bar=progress) as bar,
        open_bytes(location, headers=headers) as stream,
    ):
        try:
            for item in read_studies(stream, name=shown):
                if isinstance(item, StudyFailure):
                    if not keep_going:
                        raise item.error
                    log.warning("%s: skipped %s", shown, item)
                    tally.failures.append(item)
                    continue
                with item:
                    counts = write_study(
                        store,
                        item.study,
                        item.summaries,
                        (instances for _summary, instances in item.series()),
                        source=name,
                    )
                tally.add(studies=1, **counts)
                bar.update(1, instances=counts["instances"])
        except InvalidMetadata as err:
            if not keep_going or not tally.counts["studies"] and not tally.failures:
                raise
            # Unreadable from here on (broken JSON): keep what was ingested, report the rest.
            tally.failures.append(StudyFailure(index=-1, study_uid=None, error=err))
        summary = tally.summary(name, bar.elapsed)
    log.info("%s: %s", shown, summary)
    return summary


class DicomJsonSource:
    """A launch file as a ``Source`` (``config.root``: its path or http(s) URL)."""

    def __init__(self, config: SourceConfig) -> None:
        if not config.root:
            raise ConfigurationError(
                f"source {config.name!r}: a dicomjson source needs root (a path or URL)"
            )
        self.config = config
        self._root: str = config.root
        self._study: LaunchStudy | None = None
        self._series: dict[str, list[dict[str, Any]]] = {}

    def _studies(self) -> Iterator[LaunchStudy | StudyFailure]:
        with open_bytes(self._root, headers=self.config.headers) as stream:
            yield from read_studies(stream, name=display_name(self._root))

    def search_studies(self, query: Mapping[str, Any] | None = None) -> Iterable[dict[str, Any]]:
        """Study-level rows whose fields equal every key of ``query`` (all when None)."""
        wanted = dict(query or {})
        for item in self._studies():
            if isinstance(item, StudyFailure):
                log.warning("%s: skipped %s", self._root, item)
                continue
            with item:
                row = {
                    **item.study,
                    "ModalitiesInStudy": sorted(
                        {
                            s["Modality"]
                            for s in item.summaries
                            if isinstance(s.get("Modality"), str)
                        }
                    ),
                    "NumberOfStudyRelatedSeries": len(item.summaries),
                    "NumberOfStudyRelatedInstances": item.instance_count,
                }
            if all(row.get(key) == value for key, value in wanted.items()):
                yield row

    def _load(self, study_uid: str) -> LaunchStudy:
        if self._study is not None and self._study.study_uid == study_uid:
            return self._study
        self.close()
        for item in self._studies():
            if isinstance(item, StudyFailure):
                if item.study_uid == study_uid:
                    raise item.error
                continue
            if item.study_uid == study_uid:
                self._study = item
                self._series = {
                    str(summary["SeriesInstanceUID"]): instances
                    for summary, instances in item.series()
                }
                return item
            item.close()
        raise MetastoreError(f"study {study_uid} is not in {display_name(self._root)}")

    def search_series(self, study_uid: str) -> list[dict[str, Any]]:
        """The series summaries of one study (each with ``StudyInstanceUID``)."""
        return [dict(summary) for summary in self._load(study_uid).summaries]

    def retrieve_series_metadata(self, study_uid: str, series_uid: str) -> list[dict[str, Any]]:
        """Every instance of a series, with its study's and series' attributes, url and imageId."""
        self._load(study_uid)
        if series_uid not in self._series:
            raise MetastoreError(f"series {series_uid} is not in study {study_uid}")
        return [dict(instance) for instance in self._series[series_uid]]

    def get_image_ids(self, instance: Mapping[str, Any]) -> list[str]:
        """One imageId per frame: ``url?frame=N`` (1-based) for a multi-frame instance."""
        return instance_image_ids(instance)

    def close(self) -> None:
        if self._study is not None:
            self._study.close()
            self._study = None
            self._series = {}
