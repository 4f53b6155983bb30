"""A folder of DICOM files as a source: its studies, read one series at a time.

Files are read with pydicom without their pixel data
(``stop_before_pixels``) and converted through the DICOM JSON model
(PS3.18 F.2) to naturalized metadata. A folder is read in two passes: a scan
that reads only the UIDs of every file, grouping the files by study and
series, then one series at a time in full; memory holds one series.

Each instance's ``url`` (its imageId, as in OHIF's DICOM JSON data source)
is ``dicomweb:`` + the URL root + the file's path relative to the folder
(``file://`` + the folder when no root is given). Binary values over 1 KiB
(an encapsulated PDF, waveform samples, LUT data) are not copied inline:
they become ``{"BulkDataURI": <the file's URL>}``, the object that holds them.

A file that pydicom cannot read, or that is not a composite instance (no
SOPInstanceUID, such as a DICOMDIR), is reported and skipped; it never stops
the rest. Unlike OHIF's ``dicom-json-generator.js``, which stops at the
first unreadable file.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson
import pydicom
from pydicom.errors import InvalidDicomError

from metastore import records
from metastore.dicom import naturalize
from metastore.errors import ConfigurationError, InvalidMetadata, MetastoreError
from metastore.imageids import instance_image_ids
from metastore.launchfile import StudyFailure
from metastore.progress import Progress, Reporting
from metastore.quirks import Quirks
from metastore.sources import ReadReport, SourceConfig, StudyMetadata

log = logging.getLogger(__name__)

KIND = "folder"
_UID_TAGS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")
_BULK_THRESHOLD = 1024
_SKIP_NAMES = frozenset({".DS_Store", "Thumbs.db"})


@dataclass(kw_only=True)
class FolderIndex:
    """The files of a folder, grouped by study and series (file order: by path)."""

    root: Path
    url_root: str
    studies: dict[str, dict[str, list[Path]]] = field(default_factory=dict)
    unreadable: list[tuple[str, str]] = field(default_factory=list)

    @property
    def file_count(self) -> int:
        return sum(
            len(files) for by_series in self.studies.values() for files in by_series.values()
        )

    def url(self, path: Path) -> str:
        """The instance url (imageId) of a file: ``dicomweb:`` + root + relative path."""
        relative = path.relative_to(self.root).as_posix()
        return f"dicomweb:{self.url_root}/{quote(relative)}"


def _default_url_root(root: Path) -> str:
    return root.resolve().as_uri()


def _read(path: Path, **kwargs: Any) -> pydicom.Dataset:
    """pydicom's reading of one file, its warnings logged (not raised)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dataset = pydicom.dcmread(path, stop_before_pixels=True, force=True, **kwargs)
    for warning in caught:
        log.debug("%s: %s", path, warning.message)
    return dataset


def _uids(dataset: pydicom.Dataset) -> tuple[str, str, str]:
    found = []
    for keyword in _UID_TAGS:
        value = dataset.get(keyword)
        if not value:
            raise InvalidMetadata(f"not a composite DICOM instance: no {keyword}", field=keyword)
        found.append(str(value))
    return found[0], found[1], found[2]


def scan_folder(
    root: str | Path, *, url_root: str | None = None, progress: Reporting = None
) -> FolderIndex:
    """Group every DICOM file under ``root`` by study and series (reading only UIDs)."""
    base = Path(root)
    if not base.is_dir():
        raise ConfigurationError(f"not a folder: {base}")
    index = FolderIndex(root=base, url_root=(url_root or _default_url_root(base)).rstrip("/"))
    seen: dict[tuple[str, str, str], Path] = {}
    paths = sorted(
        Path(directory) / name
        for directory, _dirs, names in os.walk(base)
        for name in names
        if name not in _SKIP_NAMES
    )
    with Progress(f"scan {base}", unit="files", total=len(paths), display=progress) as bar:
        for path in paths:
            bar.update(1)
            shown = str(path.relative_to(base))
            try:
                uids = _uids(_read(path, specific_tags=list(_UID_TAGS)))
            except (
                InvalidDicomError,
                InvalidMetadata,
                OSError,
                ValueError,
                TypeError,
                EOFError,
            ) as err:
                text = err.message if isinstance(err, InvalidMetadata) else str(err)
                reason = text or type(err).__name__
                log.warning("skipped %s: %s", shown, reason)
                index.unreadable.append((shown, reason))
                continue
            if uids in seen:
                reason = f"the same instance as {seen[uids].relative_to(base)}"
                log.warning("skipped %s: %s", shown, reason)
                index.unreadable.append((shown, reason))
                continue
            seen[uids] = path
            index.studies.setdefault(uids[0], {}).setdefault(uids[1], []).append(path)
    return index


def read_instance(path: Path, url: str, quirks: Quirks | None = None) -> dict[str, Any]:
    """One file's naturalized metadata (no pixel data) with ``url`` and ``imageId``.

    What pydicom's JSON needed normalized is counted into ``quirks``.
    Raises ``MetastoreError`` (``file`` set) when the file cannot be read.
    """
    bulk_uri = url.removeprefix("dicomweb:")
    try:
        dataset = _read(path)
        _uids(dataset)
        with warnings.catch_warnings(record=True):
            warnings.simplefilter("always")
            document = dataset.to_json_dict(
                bulk_data_threshold=_BULK_THRESHOLD,
                bulk_data_element_handler=lambda _element: bulk_uri,
                suppress_invalid_tags=True,
            )
        # pydicom hands some VRs over as its VR enum (a str subclass); one
        # pass through orjson gives plain JSON types, as a server would send.
        meta = naturalize(orjson.loads(orjson.dumps(document)), quirks)
    except (InvalidDicomError, OSError, ValueError, TypeError, EOFError) as err:
        raise MetastoreError(f"cannot read {path}: {err}", file=str(path)) from err
    except InvalidMetadata as err:
        raise InvalidMetadata(str(err), file=str(path)) from err
    meta["url"] = url
    meta["imageId"] = url
    return meta


def iter_series(
    index: FolderIndex, study_uid: str, quirks: Quirks | None = None
) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """(SeriesInstanceUID, instances) of a study, one series read at a time."""
    for series_uid, paths in index.studies[study_uid].items():
        instances = []
        for path in paths:
            try:
                instances.append(read_instance(path, index.url(path), quirks))
            except MetastoreError as err:
                shown = str(path.relative_to(index.root))
                log.warning("skipped %s: %s", shown, err)
                index.unreadable.append((shown, str(err)))
        if instances:
            yield series_uid, instances


def folder_studies(
    index: FolderIndex, quirks: Quirks | None = None
) -> Iterator[StudyMetadata | StudyFailure]:
    """Each study of the folder: its row and series summaries from each series' first file,
    then each series read in full as it is iterated (its normalizations counted into ``quirks``).

    A study whose first files hold metadata that cannot be read is a ``StudyFailure``.
    """
    for number, (study_uid, by_series) in enumerate(index.studies.items()):
        try:
            first = {s: read_instance(p[0], index.url(p[0])) for s, p in by_series.items()}
        except InvalidMetadata as err:
            yield StudyFailure(index=number, study_uid=study_uid, error=err)
            continue
        yield StudyMetadata(
            study=records.pick(next(iter(first.values())), records.STUDY_KEYS),
            summaries=[records.pick(meta, records.SERIES_KEYS) for meta in first.values()],
            series=(instances for _uid, instances in iter_series(index, study_uid, quirks)),
        )


def series_by_study(index: FolderIndex) -> Iterator[Iterator[list[dict[str, Any]]]]:
    """Each study of the folder as its series' instances, one series read at a time."""
    for study_uid in index.studies:
        yield (instances for _uid, instances in iter_series(index, study_uid))


class FolderSource:
    """A folder of DICOM files as a ``Source`` (``config.root``: the folder).

    ``config.settings["url_root"]`` sets the URL root of the instances' urls.
    The folder is scanned on first use.
    """

    def __init__(self, config: SourceConfig) -> None:
        if not config.root:
            raise ConfigurationError(
                f"source {config.name!r}: a folder source needs root (a folder)"
            )
        self.config = config
        self._root = Path(config.root)
        self._index: FolderIndex | None = None
        #: What pydicom's JSON needed normalized (see ReadReport).
        self.report = ReadReport()

    @property
    def index(self) -> FolderIndex:
        if self._index is None:
            url_root = self.config.settings.get("url_root")
            self._index = scan_folder(self._root, url_root=url_root, progress=False)
        return self._index

    def search_studies(self, query: Mapping[str, Any] | None = None) -> Iterable[dict[str, Any]]:
        """Study-level rows (from each study's first file) equal to ``query``'s keys."""
        wanted = dict(query or {})
        for study_uid, by_series in self.index.studies.items():
            first = next(iter(by_series.values()))[0]
            row = records.pick(read_instance(first, self.index.url(first)), records.STUDY_KEYS)
            row["NumberOfStudyRelatedSeries"] = len(by_series)
            row["NumberOfStudyRelatedInstances"] = sum(len(p) for p in by_series.values())
            if row.get("StudyInstanceUID") == study_uid and all(
                row.get(key) == value for key, value in wanted.items()
            ):
                yield row

    def search_series(self, study_uid: str) -> list[dict[str, Any]]:
        """Series-level rows of a study, from each series' first file."""
        rows = []
        for paths in self._study(study_uid).values():
            meta = read_instance(paths[0], self.index.url(paths[0]))
            row = records.pick(meta, records.SERIES_KEYS)
            row["NumberOfSeriesRelatedInstances"] = len(paths)
            rows.append(row)
        return rows

    def retrieve_series_metadata(self, study_uid: str, series_uid: str) -> list[dict[str, Any]]:
        """Every readable instance of the series, with ``url`` and ``imageId``."""
        paths = self._study(study_uid).get(series_uid)
        if paths is None:
            raise MetastoreError(f"series {series_uid} is not in study {study_uid} of {self._root}")
        return [read_instance(path, self.index.url(path), self.report.quirks) for path in paths]

    def _study(self, study_uid: str) -> dict[str, list[Path]]:
        found = self.index.studies.get(study_uid)
        if found is None:
            raise MetastoreError(f"study {study_uid} is not in {self._root}")
        return found

    def get_image_ids(self, instance: Mapping[str, Any]) -> list[str]:
        """One imageId per frame: ``url?frame=N`` (1-based) for a multi-frame instance."""
        return instance_image_ids(instance)

    def close(self) -> None:
        self._index = None
