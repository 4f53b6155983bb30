"""A folder of DICOM files as a source: index it, or turn it into launch-file studies.

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
from metastore.progress import Progress
from metastore.sources import SourceConfig
from metastore.sources._ingest import FileIngestSummary, Tally, write_study
from metastore.store import MetaStore

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
    root: str | Path, *, url_root: str | None = None, progress: bool | None = None
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
    with Progress(f"scan {base}", unit="files", total=len(paths), bar=progress) as bar:
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
                reason = str(err).split(" (", 1)[0] or type(err).__name__
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


def read_instance(path: Path, url: str) -> dict[str, Any]:
    """One file's naturalized metadata (no pixel data) with ``url`` and ``imageId``.

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
        meta = naturalize(orjson.loads(orjson.dumps(document)))
    except (InvalidDicomError, OSError, ValueError, TypeError, EOFError) as err:
        raise MetastoreError(f"cannot read {path}: {err}", file=str(path)) from err
    except InvalidMetadata as err:
        raise InvalidMetadata(str(err), file=str(path)) from err
    meta["url"] = url
    meta["imageId"] = url
    return meta


def iter_series(index: FolderIndex, study_uid: str) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """(SeriesInstanceUID, instances) of a study, one series read at a time."""
    for series_uid, paths in index.studies[study_uid].items():
        instances = []
        for path in paths:
            try:
                instances.append(read_instance(path, index.url(path)))
            except MetastoreError as err:
                shown = str(path.relative_to(index.root))
                log.warning("skipped %s: %s", shown, err)
                index.unreadable.append((shown, str(err)))
        if instances:
            yield series_uid, instances


def ingest_folder(
    store: MetaStore,
    root: str | Path,
    *,
    url_root: str | None = None,
    source: str | None = None,
    keep_going: bool = False,
    progress: bool | None = None,
) -> FileIngestSummary:
    """Index every DICOM file under ``root``; unreadable files are reported and skipped.

    ``source`` defaults to the folder's name (kind ``folder``). Per study:
    its row, its series summaries (one ``SERIES_ADDED``), then one
    transaction and one ``INSTANCES_ADDED`` per series. A study the store
    refuses raises ``InvalidMetadata``, or with ``keep_going`` is listed in
    the summary's ``failures``.
    """
    base = Path(root)
    name = source or base.resolve().name or "folder"
    index = scan_folder(base, url_root=url_root, progress=progress)
    store.register_source(
        name, KIND, root_url=index.url_root, settings={"path": str(base.resolve())}
    )
    tally = Tally()
    with Progress(f"ingest {base}", unit="studies", total=len(index.studies), bar=progress) as bar:
        for number, study_uid in enumerate(index.studies):
            try:
                counts = _write_study(store, index, study_uid, name)
            except InvalidMetadata as err:
                if not keep_going:
                    raise
                log.warning("%s: skipped study %s: %s", base, study_uid, err)
                tally.failures.append(StudyFailure(index=number, study_uid=study_uid, error=err))
                continue
            tally.add(studies=1, **counts)
            bar.update(1, instances=counts["instances"])
        tally.skipped_files.extend(index.unreadable)
        summary = tally.summary(name, bar.elapsed)
    log.info("%s: %s", base, summary)
    return summary


def _write_study(
    store: MetaStore, index: FolderIndex, study_uid: str, source: str
) -> dict[str, int]:
    """Write a study: its row and series summaries from each series' first file, then each series."""
    first = {s: read_instance(p[0], index.url(p[0])) for s, p in index.studies[study_uid].items()}
    study = records.pick(next(iter(first.values())), records.STUDY_KEYS)
    summaries = [records.pick(meta, records.SERIES_KEYS) for meta in first.values()]
    series = (instances for _uid, instances in iter_series(index, study_uid))
    return write_study(store, study, summaries, series, source=source)


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
        return [read_instance(path, self.index.url(path)) for path in paths]

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


# -- launch files from a folder (scripts/dicom_json_generator.py) -------------

#: Study-level fields of a generated launch file (OHIF's generator's, and the
#: study QIDO keys OHIF's study list shows).
LAUNCH_STUDY_KEYS = (
    "StudyInstanceUID",
    "StudyDescription",
    "StudyDate",
    "StudyTime",
    "PatientName",
    "PatientID",
    "AccessionNumber",
    "PatientAge",
    "PatientSex",
    "PatientWeight",
)
#: Series-level fields of a generated launch file.
LAUNCH_SERIES_KEYS = (
    "SeriesInstanceUID",
    "SeriesDescription",
    "SeriesNumber",
    "SeriesDate",
    "SeriesTime",
    "Modality",
    "SliceThickness",
)
#: Per-instance metadata OHIF needs to display each kind of object.
LAUNCH_INSTANCE_KEYS = (
    # every image: identity, geometry, pixel description, VOI and modality LUT
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
    "SOPClassUID",
    "Modality",
    "InstanceNumber",
    "AcquisitionNumber",
    "ImageType",
    "Rows",
    "Columns",
    "PhotometricInterpretation",
    "PlanarConfiguration",
    "BitsAllocated",
    "BitsStored",
    "HighBit",
    "PixelRepresentation",
    "SamplesPerPixel",
    "PixelSpacing",
    "ImagerPixelSpacing",
    "PixelAspectRatio",
    "RescaleSlope",
    "RescaleIntercept",
    "RescaleType",
    "WindowCenter",
    "WindowWidth",
    "VOILUTFunction",
    "SeriesDate",
    "SeriesTime",
    "ContentDate",
    "ContentTime",
    "Laterality",
    "ImageLaterality",
    "ViewPosition",
    "PatientOrientation",
    # MPR and volumes
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "FrameOfReferenceUID",
    "SliceThickness",
    "SpacingBetweenSlices",
    "SliceLocation",
    # multi-frame (enhanced objects, SEG, RT dose)
    "NumberOfFrames",
    "FrameIncrementPointer",
    "FrameTime",
    "FrameTimeVector",
    "GridFrameOffsetVector",
    "SharedFunctionalGroupsSequence",
    "PerFrameFunctionalGroupsSequence",
    # structured reports
    "ValueType",
    "CompletionFlag",
    "VerificationFlag",
    "ConceptNameCodeSequence",
    "ContentSequence",
    "ContentTemplateSequence",
    "CurrentRequestedProcedureEvidenceSequence",
    "CodingSchemeIdentificationSequence",
    # segmentations
    "SegmentationType",
    "ReferencedSeriesSequence",
    "SegmentSequence",
    # RT structure sets and doses
    "StructureSetLabel",
    "StructureSetROISequence",
    "ROIContourSequence",
    "RTROIObservationsSequence",
    "ReferencedFrameOfReferenceSequence",
    "DoseUnits",
    "DoseGridScaling",
    # PET (SUV)
    "RadiopharmaceuticalInformationSequence",
    "Units",
    "CorrectedImage",
    "DecayCorrection",
    "AcquisitionDate",
    "AcquisitionTime",
    "PatientWeight",
    # ultrasound
    "SequenceOfUltrasoundRegions",
    # encapsulated documents: the type only, never the document inline
    "MIMETypeOfEncapsulatedDocument",
)


def launch_studies(index: FolderIndex) -> Iterator[dict[str, Any]]:
    """The folder as launch-file studies with the metadata OHIF needs, one study at a time.

    A multi-frame instance gets one entry per frame (``url?frame=N``,
    1-based) and keeps ``NumberOfFrames``: OHIF's generator writes frames 1
    to N-1 and drops ``NumberOfFrames``.
    """
    for study_uid in index.studies:
        study: dict[str, Any] = {}
        series_out = []
        modalities: set[str] = set()
        count = 0
        for _series_uid, instances in iter_series(index, study_uid):
            first = instances[0]
            if not study:
                study = records.pick(first, LAUNCH_STUDY_KEYS)
            summary = records.pick(first, LAUNCH_SERIES_KEYS)
            entries = []
            for instance in instances:
                metadata = records.pick(instance, LAUNCH_INSTANCE_KEYS)
                entries += [
                    {"metadata": metadata, "url": url} for url in instance_image_ids(instance)
                ]
            if isinstance(summary.get("Modality"), str):
                modalities.add(summary["Modality"])
            count += len(instances)
            series_out.append({**summary, "instances": entries})
        if series_out:
            yield {
                **study,
                "NumInstances": count,
                "Modalities": "/".join(sorted(modalities)),
                "series": series_out,
            }
