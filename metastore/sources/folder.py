"""A folder of DICOM files as a source: every file read once, in parallel.

Each file is read once with pydicom, header only (``stop_before_pixels``,
large values never read) and converted directly to naturalized metadata
(:mod:`metastore.dicomfile`). :func:`read_folder` reads the files with
``workers`` processes (parsing is CPU-bound), in path order, and groups
them by study: a study is handed on once no file of it has come for a
while (folders usually hold a study together) or when too many instances
are waiting, so memory holds a few studies, not the folder. A study whose
files are scattered is handed on in parts, which the index merges.

Each instance's ``url`` (its imageId, as in OHIF's DICOM JSON data source)
is ``dicomweb:`` + the URL root + the file's path relative to the folder
(``file://`` + the absolute folder when no root is given). Binary values
over 768 bytes (an encapsulated PDF, waveform samples, LUT data) are not
copied inline: they become ``{"BulkDataURI": <the file's URL>}``.

A file that is not DICOM (no DICOM header and nothing pydicom can read as
an instance; a DICOMDIR, which is not an instance) is skipped and listed;
a DICOM file that cannot be read is listed as unreadable. Neither stops
the rest, unlike OHIF's ``dicom-json-generator.js``, which stops at the
first unreadable file.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pydicom
from pydicom.errors import InvalidDicomError

from metastore import records
from metastore.dicomfile import FileRead, read_file
from metastore.errors import ConfigurationError, InvalidMetadata, MetastoreError
from metastore.imageids import instance_image_ids
from metastore.progress import Counter, Progress, Reporting
from metastore.quirks import Quirks
from metastore.sources import ReadReport, SourceConfig, StudyMetadata

log = logging.getLogger(__name__)

KIND = "folder"
_UID_TAGS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")
_SKIP_NAMES = frozenset({".DS_Store", "Thumbs.db"})
#: Files handed to a worker process at a time.
_CHUNK = 16
#: A study is handed on when this many files have come since its last one...
_IDLE_FILES = 512
#: ... or when more instances than this are waiting.
_MAX_WAITING = 20_000


def default_workers() -> int:
    """The number of cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


@dataclass(kw_only=True)
class FolderFiles:
    """The files under a folder (by path), how their urls are made, and what was left out."""

    root: Path
    url_root: str
    paths: list[Path]
    #: Files that are not DICOM instances (path relative to root, reason): not a failure.
    skipped: list[tuple[str, str]] = field(default_factory=list)
    #: DICOM files that could not be read (path relative to root, reason): a failure.
    unreadable: list[tuple[str, str]] = field(default_factory=list)

    def url(self, path: Path) -> str:
        """The instance url (imageId) of a file: ``dicomweb:`` + root + relative path."""
        return f"dicomweb:{self.url_root}/{quote(self.shown(path))}"

    def shown(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()


def list_folder(root: str | Path, *, url_root: str | None = None) -> FolderFiles:
    """Every file under ``root`` (recursively, by path); raises if it is not a folder."""
    base = Path(root).resolve()
    if not base.is_dir():
        raise ConfigurationError(f"not a folder: {Path(root)}")
    files = FolderFiles(root=base, url_root=(url_root or base.as_uri()).rstrip("/"), paths=[])
    for path in sorted(
        Path(directory) / name
        for directory, _dirs, names in os.walk(base)  # directory links are never walked
        for name in names
        if name not in _SKIP_NAMES
    ):
        if path.resolve().is_relative_to(base):
            files.paths.append(path)
        else:  # the folder is the boundary of what is read
            reason = "a symlink to outside the folder; not read"
            log.warning("skipped %s: %s", files.shown(path), reason)
            files.skipped.append((files.shown(path), reason))
    return files


def _read_chunk(chunk: Sequence[tuple[str, str]]) -> list[FileRead]:
    """Read a few files (in a worker process)."""
    return [read_file(path, url) for path, url in chunk]


def read_files(
    files: FolderFiles, *, workers: int | None = None
) -> Iterator[tuple[Path, FileRead]]:
    """Each file with what reading it gave, in path order; ``workers`` processes read."""
    jobs = [(str(path), files.url(path)) for path in files.paths]
    count = workers or default_workers()
    if count <= 1 or len(jobs) <= _CHUNK:
        for path, (_name, url) in zip(files.paths, jobs, strict=True):
            yield path, read_file(path, url)
        return
    chunks = [jobs[i : i + _CHUNK] for i in range(0, len(jobs), _CHUNK)]
    # forkserver: workers start from a clean process, not a copy of one
    # holding database connections and threads.
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["metastore.dicomfile"])
    paths = iter(files.paths)
    with context.Pool(min(count, len(chunks))) as pool:
        for results in pool.imap(_read_chunk, chunks):
            for result in results:
                yield next(paths), result


def read_folder(
    files: FolderFiles,
    *,
    workers: int | None = None,
    progress: Counter | None = None,
    quirks: Quirks | None = None,
) -> Iterator[StudyMetadata]:
    """The studies of a folder, each once its files have been read (see the module doc).

    ``progress`` counts files; what the files' values needed normalized is
    counted into ``quirks``. Files that are not instances, unreadable files
    and second copies of an instance are listed in ``files``.
    """
    waiting: dict[str, dict[str, list[dict[str, Any]]]] = {}
    last_file: dict[str, int] = {}
    seen: dict[tuple[str, str, str], Path] = {}
    count = 0
    for number, (path, result) in enumerate(read_files(files, workers=workers)):
        shown = files.shown(path)
        for message in result.messages:
            log.info("%s: %s", shown, message)
        if progress is not None:
            progress.update(1)
        if quirks is not None and result.quirks:
            quirks.update(Quirks(result.quirks))
        if result.meta is None:
            if result.error is not None:
                log.info("unreadable %s: %s", shown, result.error)
                files.unreadable.append((shown, result.error))
            else:
                log.info("skipped %s: %s", shown, result.not_dicom)
                files.skipped.append((shown, result.not_dicom or "not DICOM"))
            continue
        meta = result.meta
        uids = (
            str(meta["StudyInstanceUID"]),
            str(meta["SeriesInstanceUID"]),
            str(meta["SOPInstanceUID"]),
        )
        if uids in seen:
            reason = f"the same instance as {files.shown(seen[uids])}"
            log.info("skipped %s: %s", shown, reason)
            files.skipped.append((shown, reason))
            continue
        seen[uids] = path
        study = waiting.pop(uids[0], None) or {}
        waiting[uids[0]] = study  # the most recently fed study goes last
        study.setdefault(uids[1], []).append(meta)
        last_file[uids[0]] = number
        count += 1
        while waiting:
            oldest = next(iter(waiting))
            if number - last_file[oldest] < _IDLE_FILES and count <= _MAX_WAITING:
                break
            by_series = waiting.pop(oldest)
            count -= sum(len(instances) for instances in by_series.values())
            yield _study(by_series)
    for by_series in waiting.values():
        yield _study(by_series)


def _study(by_series: dict[str, list[dict[str, Any]]]) -> StudyMetadata:
    firsts = [instances[0] for instances in by_series.values()]
    return StudyMetadata(
        study=records.pick(firsts[0], records.STUDY_KEYS),
        summaries=[records.pick(first, records.SERIES_KEYS) for first in firsts],
        series=list(by_series.values()),
    )


def _read_uids(path: Path) -> tuple[str, str, str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dataset = pydicom.dcmread(
            path, stop_before_pixels=True, force=True, specific_tags=list(_UID_TAGS)
        )
    found = []
    for keyword in _UID_TAGS:
        value = dataset.get(keyword)
        if not value:
            raise InvalidMetadata(f"not a composite DICOM instance: no {keyword}", field=keyword)
        found.append(str(value))
    return found[0], found[1], found[2]


@dataclass(kw_only=True)
class FolderIndex:
    """The files of a folder grouped by study and series, for the job queue's ``FolderSource``."""

    files: FolderFiles
    studies: dict[str, dict[str, list[Path]]] = field(default_factory=dict)


def scan_folder(
    root: str | Path, *, url_root: str | None = None, progress: Reporting = None
) -> FolderIndex:
    """Group every DICOM file under ``root`` by study and series (reading only UIDs)."""
    files = list_folder(root, url_root=url_root)
    index = FolderIndex(files=files)
    with Progress(
        f"scan {files.root}", unit="files", total=len(files.paths), display=progress
    ) as bar:
        for path in files.paths:
            bar.update(1)
            try:
                uids = _read_uids(path)
            except (
                InvalidDicomError,
                InvalidMetadata,
                OSError,
                ValueError,
                TypeError,
                EOFError,
            ) as err:
                files.skipped.append((files.shown(path), str(err) or type(err).__name__))
                continue
            index.studies.setdefault(uids[0], {}).setdefault(uids[1], []).append(path)
    return index


def read_instance(
    files: FolderFiles, path: Path, report: ReadReport | None = None
) -> dict[str, Any]:
    """One file's naturalized metadata with ``url`` and ``imageId``; raises naming the file."""
    result = read_file(path, files.url(path))
    if report is not None and result.quirks:
        report.quirks.update(Quirks(result.quirks))
    if result.meta is None:
        reason = result.error or result.not_dicom
        raise MetastoreError(f"cannot read {path}: {reason}", file=str(path))
    return result.meta


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
        #: What the files' values needed normalized (see ReadReport).
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
            row = records.pick(read_instance(self.index.files, first), records.STUDY_KEYS)
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
            meta = read_instance(self.index.files, paths[0])
            row = records.pick(meta, records.SERIES_KEYS)
            row["NumberOfSeriesRelatedInstances"] = len(paths)
            rows.append(row)
        return rows

    def retrieve_series_metadata(self, study_uid: str, series_uid: str) -> list[dict[str, Any]]:
        """Every readable instance of the series, with ``url`` and ``imageId``."""
        paths = self._study(study_uid).get(series_uid)
        if paths is None:
            raise MetastoreError(f"series {series_uid} is not in study {study_uid} of {self._root}")
        return [read_instance(self.index.files, path, self.report) for path in paths]

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
