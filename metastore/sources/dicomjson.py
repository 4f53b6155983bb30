"""OHIF DICOM JSON launch files as a source (``config.root``: a path or an http(s) URL).

:meth:`DicomJsonSource.studies` reads the file once, front to back, and
yields each study once all of it has been read and checked (a bad study is
a ``StudyFailure``), so whoever writes what it yields never stores part of a
bad study; ``metastore.ingest.ingest_launch_file`` does. For the job queue
it implements the ``Source`` protocol: a launch file has no index, so each
lookup of a study scans the file (the most recent study is kept).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from metastore.errors import ConfigurationError, MetastoreError
from metastore.imageids import instance_image_ids
from metastore.launchfile import LaunchStudy, StudyFailure, read_studies
from metastore.progress import Progress
from metastore.sources import SourceConfig, StudyMetadata
from metastore.sources.stream import display_name, open_bytes

log = logging.getLogger(__name__)

KIND = "dicomjson"


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

    def _studies(self, progress: Progress | None = None) -> Iterator[LaunchStudy | StudyFailure]:
        with open_bytes(self._root, headers=self.config.headers, progress=progress) as stream:
            yield from read_studies(stream, name=display_name(self._root))

    @property
    def location(self) -> str:
        """The file or URL as it may be shown and stored (no query string, no user info)."""
        return display_name(self._root)

    def studies(self, progress: Progress | None = None) -> Iterator[StudyMetadata | StudyFailure]:
        """Every study of the file in one pass, each once it has been read and checked.

        A study's spool is dropped when the next one is asked for, so write
        each before moving on. ``progress`` counts the file's bytes as they are read.
        """
        for item in self._studies(progress):
            if isinstance(item, StudyFailure):
                yield item
                continue
            with item:
                yield StudyMetadata(
                    study=item.study,
                    summaries=item.summaries,
                    series=(instances for _summary, instances in item.series()),
                )

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
