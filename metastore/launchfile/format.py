"""The shape of an OHIF DICOM JSON launch file: its structural fields, and what a written one holds.

A launch file is ``{"studies": [study, ...]}``; a study holds its fields,
``NumInstances``, ``Modalities`` (joined with ``/``, as OHIF's generator
writes it) and ``series``; a series its fields and ``instances``; an
instance ``{"metadata": {...}, "url": ...}``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

NUM_INSTANCES = "NumInstances"
MODALITIES = "Modalities"
#: Launch-file fields that are not DICOM attributes: structure, and the
#: study summary OHIF's study list shows (the index computes its own).
STUDY_EXTRAS = ("series", NUM_INSTANCES, MODALITIES)
SERIES_EXTRAS = ("instances",)


def study_summary(modalities: Iterable[Any], instances: int) -> dict[str, Any]:
    """A written study's ``NumInstances`` and ``Modalities`` (the string ones, sorted)."""
    found = sorted({m for m in modalities if isinstance(m, str)})
    return {NUM_INSTANCES: instances, MODALITIES: "/".join(found)}


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
