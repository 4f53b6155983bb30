"""Real series shapes for scripts/bench_scale.py: the NCI Imaging Data Commons series index, as studies.

The series come from ``idc-index-data`` (``pip install -e '.[bench]'``):
about a million real IDC series with their collection, patient, study,
modality, SOP class, dates, descriptions and instance count. Studies are
taken in a fixed pseudo-random order (by a hash of the StudyInstanceUID, so
a prefix of the order mixes every collection, as an archive does) and their
instances are synthesized per series with the tags a real object of that
modality carries (geometry for CT/MR/PT, frames for SM/SEG/US, content
sequences for SR/KO/PR...). Patient names, accession numbers, birth dates
and procedure codes, which IDC removes or does not index, are made up from
the names of ``bench_search`` so its query families find rows.

Without the package (CI), ``--idc`` reads a CSV excerpt with the same
columns (``tests/data/idc_series_excerpt.csv``).
"""

from __future__ import annotations

import csv
import hashlib
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench_search import GIVEN, SURNAMES

from metastore.sources import StudyMetadata

#: The columns of the IDC series index this bench reads.
COLUMNS = (
    "collection_id",
    "PatientID",
    "PatientAge",
    "PatientSex",
    "StudyInstanceUID",
    "StudyDate",
    "StudyDescription",
    "SeriesInstanceUID",
    "SeriesDate",
    "SeriesDescription",
    "SeriesNumber",
    "Modality",
    "SOPClassUID",
    "BodyPartExamined",
    "Manufacturer",
    "ManufacturerModelName",
    "PhotometricInterpretation",
    "instanceCount",
)


def idc_index_path() -> Path:
    """The IDC series index shipped by ``idc-index-data`` (ImportError without it)."""
    import idc_index_data

    return Path(idc_index_data.IDC_INDEX_PARQUET_FILEPATH)


def _key(study_uid: str) -> bytes:
    return hashlib.sha1(study_uid.encode()).digest()[:8]


def read_series(path: Path) -> Iterator[dict[str, Any]]:
    """IDC series rows, grouped by study, studies in the hash order, series by number."""
    if path.suffix == ".csv":
        with path.open(newline="") as handle:
            rows = [dict(r) for r in csv.DictReader(handle)]
        for row in rows:
            row["instanceCount"] = int(row["instanceCount"])
        rows.sort(key=lambda r: (_key(r["StudyInstanceUID"]), r["StudyInstanceUID"], _order(r)))
        yield from rows
        return
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(path, columns=list(COLUMNS))
    keys = [_key(uid).hex() for uid in table.column("StudyInstanceUID").to_pylist()]
    table = table.append_column("order_key", pa.array(keys))
    table = table.sort_by(
        [
            ("order_key", "ascending"),
            ("StudyInstanceUID", "ascending"),
            ("SeriesInstanceUID", "ascending"),
        ]
    )
    for batch in table.to_batches(max_chunksize=20_000):
        yield from batch.to_pylist()


def _order(row: dict[str, Any]) -> str:
    return str(row["SeriesInstanceUID"])


def _date(value: Any) -> str | None:
    text = str(value or "").replace("-", "")
    return text[:8] if len(text) >= 8 and text[:8].isdigit() else None


@dataclass
class StudyShape:
    """One study to write and what the bench keeps of it for the search families."""

    metadata: StudyMetadata
    row: dict[str, Any]
    instances: int
    series: list[tuple[str, int]]


def _study_row(first: dict[str, Any], number: int) -> dict[str, Any]:
    """The study as a DICOMweb archive's QIDO-RS row would give it."""
    study_uid = first["StudyInstanceUID"]
    prng = random.Random(_key(first["PatientID"] or study_uid))
    rng = random.Random(_key(study_uid))
    date = _date(first["StudyDate"]) or f"{rng.randrange(2005, 2026)}0{rng.randrange(1, 10)}15"
    description = first["StudyDescription"] or f"{first['collection_id']} {first['Modality']}"
    age = str(first["PatientAge"] or "")
    years = int(age[:3]) if age[:3].isdigit() else prng.randrange(20, 90)
    birth = f"{int(date[:4]) - years:04d}{prng.randrange(1, 13):02d}{prng.randrange(1, 29):02d}"
    code = f"P{int.from_bytes(_key(description)[:4], 'big') % 9000 + 1000}"
    return {
        "SpecificCharacterSet": "ISO_IR 100",
        "StudyInstanceUID": study_uid,
        "StudyDate": date,
        "StudyTime": f"{rng.randrange(7, 20):02d}{rng.randrange(60):02d}{rng.randrange(60):02d}",
        "AccessionNumber": f"A{number:08d}",
        "ReferringPhysicianName": [{"Alphabetic": f"{rng.choice(SURNAMES)}^{rng.choice(GIVEN)}"}],
        "PatientName": [{"Alphabetic": f"{prng.choice(SURNAMES)}^{prng.choice(GIVEN)}"}],
        "PatientID": first["PatientID"] or f"PID{number}",
        "PatientBirthDate": birth,
        "PatientSex": first["PatientSex"] or prng.choice("MF"),
        "PatientAge": age or f"{years:03d}Y",
        "StudyID": str(number),
        "StudyDescription": description,
        "ProcedureCodeSequence": [
            {"CodeValue": code, "CodingSchemeDesignator": "LOCAL", "CodeMeaning": description}
        ],
    }


_STUDY_TAGS = (
    "SpecificCharacterSet",
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "ReferringPhysicianName",
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "PatientAge",
    "StudyID",
    "StudyDescription",
)
_CROSS_SECTIONAL = {"CT", "MR", "PT", "NM"}
_PROJECTION = {"CR", "DX", "MG", "XA", "RF", "IO", "PX"}
_MULTIFRAME = {"SM": 24, "SEG": 60, "US": 40, "XA": 30, "RF": 30}


def _code(value: str, meaning: str, scheme: str = "DCM") -> list[dict[str, Any]]:
    return [{"CodeValue": value, "CodingSchemeDesignator": scheme, "CodeMeaning": meaning}]


def instance(study: dict[str, Any], series: dict[str, Any], number: int) -> dict[str, Any]:
    """One instance's naturalized metadata with the tags its modality carries."""
    modality = series["Modality"] or "OT"
    study_uid, series_uid = study["StudyInstanceUID"], series["SeriesInstanceUID"]
    # IDC UIDs take up to 64 characters: the instance UIDs are UUID-derived (PS3.5 B.2).
    sop_uid = f"{series['sop_root']}{number}"
    meta: dict[str, Any] = {key: study[key] for key in _STUDY_TAGS}
    meta.update(
        SOPClassUID=series["SOPClassUID"] or "1.2.840.10008.5.1.4.1.1.7",
        SOPInstanceUID=sop_uid,
        SeriesInstanceUID=series_uid,
        SeriesDate=_date(series["SeriesDate"]) or study["StudyDate"],
        SeriesNumber=int(series["SeriesNumber"])
        if str(series["SeriesNumber"] or "").isdigit()
        else 1,
        SeriesDescription=series["SeriesDescription"] or modality,
        Modality=modality,
        Manufacturer=series["Manufacturer"] or "UNKNOWN",
        ManufacturerModelName=series["ManufacturerModelName"] or "UNKNOWN",
        BodyPartExamined=series["BodyPartExamined"] or "UNKNOWN",
        InstanceNumber=number,
        ContentDate=study["StudyDate"],
        ContentTime=f"{study['StudyTime'][:4]}{number % 60:02d}",
        url=f"dicomweb:https://archive.example/dicomweb/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}",
    )
    if modality in ("SR", "KO", "PR", "RTSTRUCT", "RTPLAN", "RWV", "ANN"):
        meta.update(
            ConceptNameCodeSequence=_code("126000", "Imaging Measurement Report"),
            ContentTemplateSequence=[{"MappingResource": "DCMR", "TemplateIdentifier": "1500"}],
            CompletionFlag="COMPLETE",
            VerificationFlag="UNVERIFIED",
            CurrentRequestedProcedureEvidenceSequence=[
                {
                    "StudyInstanceUID": study_uid,
                    "ReferencedSeriesSequence": [
                        {
                            "SeriesInstanceUID": series_uid,
                            "ReferencedSOPSequence": [
                                {
                                    "ReferencedSOPClassUID": "1.2.840.10008.5.1.4.1.1.2",
                                    "ReferencedSOPInstanceUID": f"{series['sop_root']}9{k}",
                                }
                                for k in range(1, 4)
                            ],
                        }
                    ],
                }
            ],
        )
        return meta
    meta.update(
        ImageType=["ORIGINAL", "PRIMARY", "AXIAL" if modality in _CROSS_SECTIONAL else "OTHER"],
        SamplesPerPixel=3 if series["PhotometricInterpretation"] in ("RGB", "YBR_FULL_422") else 1,
        PhotometricInterpretation=series["PhotometricInterpretation"] or "MONOCHROME2",
        Rows=512,
        Columns=512,
        BitsAllocated=16,
        BitsStored=12,
        HighBit=11,
        PixelRepresentation=0,
    )
    if modality in _CROSS_SECTIONAL:
        z = -100.0 + 1.25 * number
        meta.update(
            FrameOfReferenceUID=f"{study_uid}.9999",
            ImagePositionPatient=[-175.0, -175.0, z],
            ImageOrientationPatient=[1.0, 0.0, 0.0, 0.0, 1.0, 0.0],
            PixelSpacing=[0.683594, 0.683594],
            SliceThickness=1.25,
            SliceLocation=z,
            WindowCenter=[40, -600],
            WindowWidth=[400, 1500],
        )
        if modality == "CT":
            meta.update(
                KVP=120,
                XRayTubeCurrent=250,
                ConvolutionKernel="STANDARD",
                RescaleIntercept=-1024,
                RescaleSlope=1,
            )
        elif modality == "MR":
            meta.update(
                RepetitionTime=4000.0,
                EchoTime=90.0,
                MagneticFieldStrength=3,
                FlipAngle=90,
                ScanningSequence="SE",
                SequenceName="*tse2d1_15",
            )
        else:
            meta.update(
                Units="BQML",
                DecayCorrection="START",
                RescaleSlope=2.5,
                RadiopharmaceuticalInformationSequence=[
                    {
                        "RadionuclideTotalDose": 370000000,
                        "RadionuclideCodeSequence": _code("C-111A1", "^18^Fluorine", "SRT"),
                    }
                ],
            )
    elif modality in _PROJECTION:
        meta.update(
            ImagerPixelSpacing=[0.139, 0.139],
            ViewPosition="PA",
            ImageLaterality="L",
            PresentationIntentType="FOR PRESENTATION",
        )
    frames = _MULTIFRAME.get(modality)
    if frames:
        meta["NumberOfFrames"] = frames
        if modality == "SM":
            meta.update(
                TotalPixelMatrixColumns=98304,
                TotalPixelMatrixRows=65536,
                DimensionOrganizationType="TILED_FULL",
            )
        if modality == "SEG":
            meta["SegmentSequence"] = [
                {
                    "SegmentNumber": k,
                    "SegmentLabel": f"Segment {k}",
                    "SegmentAlgorithmType": "AUTOMATIC",
                    "SegmentedPropertyCategoryCodeSequence": _code(
                        "91723000", "Anatomical Structure", "SCT"
                    ),
                }
                for k in range(1, 4)
            ]
    return meta


def series_instances(
    study: dict[str, Any], series: dict[str, Any], count: int
) -> list[dict[str, Any]]:
    """The ``count`` instances of a series: one built in full, the others differ where instances do."""
    template = instance(study, series, 1)
    study_uid, series_uid = study["StudyInstanceUID"], series["SeriesInstanceUID"]
    prefix = f"dicomweb:https://archive.example/dicomweb/studies/{study_uid}/series/{series_uid}/instances/"
    hour = study["StudyTime"][:4]
    geometry = "SliceLocation" in template
    found = [template]
    for number in range(2, count + 1):
        meta = dict(template)
        sop_uid = f"{series['sop_root']}{number}"
        meta["SOPInstanceUID"] = sop_uid
        meta["InstanceNumber"] = number
        meta["ContentTime"] = f"{hour}{number % 60:02d}"
        meta["url"] = prefix + sop_uid
        if geometry:
            z = -100.0 + 1.25 * number
            meta["ImagePositionPatient"] = [-175.0, -175.0, z]
            meta["SliceLocation"] = z
        found.append(meta)
    return found


def studies(path: Path, limit: int) -> Iterator[StudyShape]:
    """Studies of the IDC index in the bench's order, until ``limit`` instances are reached."""
    left = limit
    group: list[dict[str, Any]] = []
    number = 0
    rows = read_series(path)
    for row in rows:
        if group and row["StudyInstanceUID"] != group[0]["StudyInstanceUID"]:
            number += 1
            shape = _shape(group, number, left)
            left -= shape.instances
            yield shape
            group = []
            if left <= 0:
                return
        group.append(row)
    if group and left > 0:
        yield _shape(group, number + 1, left)


def _shape(group: list[dict[str, Any]], number: int, left: int) -> StudyShape:
    study = _study_row(group[0], number)
    kept: list[tuple[dict[str, Any], int]] = []
    for row in group:
        count = min(max(1, int(row["instanceCount"] or 1)), left)
        if count <= 0:
            break
        digest = int.from_bytes(_key(row["SeriesInstanceUID"]), "big")
        row["sop_root"] = f"2.25.1{digest:020d}0"
        kept.append((row, count))
        left -= count
    summaries = [
        {
            "StudyInstanceUID": study["StudyInstanceUID"],
            "SeriesInstanceUID": row["SeriesInstanceUID"],
            "Modality": row["Modality"],
            "SeriesNumber": int(row["SeriesNumber"])
            if str(row["SeriesNumber"] or "").isdigit()
            else None,
            "SeriesDescription": row["SeriesDescription"],
            "NumberOfSeriesRelatedInstances": count,
        }
        for row, count in kept
    ]
    series = (series_instances(study, row, count) for row, count in kept)
    return StudyShape(
        metadata=StudyMetadata(study=study, summaries=summaries, series=series),
        row=study,
        instances=sum(c for _, c in kept),
        series=[(r["SeriesInstanceUID"], c) for r, c in kept],
    )


def probe_study(root: str, series_sizes: list[int], number: int) -> StudyShape:
    """A synthetic CT study of the given series sizes (the get_study probes)."""
    first = {
        "collection_id": "bench",
        "PatientID": f"PROBE{number}",
        "PatientAge": "060Y",
        "PatientSex": "F",
        "StudyInstanceUID": f"{root}.{number}",
        "StudyDate": "2024-01-02",
        "StudyDescription": "CT CHEST W CONTRAST",
        "Modality": "CT",
    }
    group = [
        {
            **first,
            "SeriesInstanceUID": f"{root}.{number}.{s}",
            "SeriesDate": "2024-01-02",
            "SeriesDescription": f"AXIAL {s} 1.25MM",
            "SeriesNumber": str(s),
            "SOPClassUID": "1.2.840.10008.5.1.4.1.1.2",
            "BodyPartExamined": "CHEST",
            "Manufacturer": "ACME Medical",
            "ManufacturerModelName": "Tomograph 9000",
            "PhotometricInterpretation": "MONOCHROME2",
            "instanceCount": size,
        }
        for s, size in enumerate(series_sizes, start=1)
    ]
    return _shape(group, 10**8 + number, sum(series_sizes))
