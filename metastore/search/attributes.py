"""Which level an attribute lives at, and what each level returns by default.

QIDO-RS searches the Study Root hierarchy (PS3.4 C.6.2.1): a study row
carries the Patient and Study IE attributes, a series row the Series and
Equipment IE attributes, an instance everything else. A key at a lower level
than the search matches the row when any of its series or instances
matches (PS3.18 8.3.4: "attributes of the series/instances of the study").
"""

from __future__ import annotations

from enum import IntEnum

from metastore import records


class Level(IntEnum):
    """A level of the Study Root hierarchy, study first."""

    STUDY = 0
    SERIES = 1
    INSTANCE = 2


# Patient and Study IE attributes (PS3.3 C.7.1.1, C.7.2.1, C.7.2.2) and the
# study-level return keys of PS3.4 C.6.2.1.2 and PS3.18 Table 6.7.1-2.
STUDY_LEVEL = frozenset(records.STUDY_KEYS) | frozenset(
    {
        "IssuerOfPatientIDQualifiersSequence",
        "TypeOfPatientID",
        "OtherPatientIDsSequence",
        "OtherPatientNames",
        "PatientBirthTime",
        "PatientSize",
        "PatientWeight",
        "PatientComments",
        "EthnicGroup",
        "Occupation",
        "AdditionalPatientHistory",
        "PatientSpeciesDescription",
        "PatientBreedDescription",
        "ResponsiblePerson",
        "ResponsibleOrganization",
        "IssuerOfAccessionNumberSequence",
        "ReferringPhysicianIdentificationSequence",
        "NameOfPhysiciansReadingStudy",
        "PhysiciansOfRecord",
        "ProcedureCodeSequence",
        "AdmittingDiagnosesDescription",
        "ModalitiesInStudy",
        "SOPClassesInStudy",
        "NumberOfStudyRelatedSeries",
        "NumberOfStudyRelatedInstances",
        "StudyStatusID",
        "InstanceAvailability",
    }
)

# Series and Equipment IE attributes (PS3.3 C.7.3.1, C.7.5.1) and the
# series-level return keys of PS3.18 Table 6.7.1-2a.
SERIES_LEVEL = (frozenset(records.SERIES_KEYS) - {"StudyInstanceUID"}) | frozenset(
    {
        "PerformedProcedureStepStartDate",
        "PerformedProcedureStepStartTime",
        "PerformedProcedureStepID",
        "PerformedProcedureStepDescription",
        "RequestAttributesSequence",
        "PerformingPhysicianName",
        "OperatorsName",
        "PatientPosition",
        "NumberOfSeriesRelatedInstances",
        "Manufacturer",
        "ManufacturerModelName",
        "InstitutionName",
        "InstitutionalDepartmentName",
        "StationName",
        "FrameOfReferenceUID",
    }
)

# Computed from the rows, never from stored metadata.
COMPUTED = frozenset(
    {
        "ModalitiesInStudy",
        "SOPClassesInStudy",
        "NumberOfStudyRelatedSeries",
        "NumberOfStudyRelatedInstances",
        "NumberOfSeriesRelatedInstances",
    }
)

# Default return attributes (PS3.18 Table 6.7.1-2, with StudyDescription,
# which every viewer's study list shows).
STUDY_DEFAULTS = (
    "SpecificCharacterSet",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "ModalitiesInStudy",
    "ReferringPhysicianName",
    "TimezoneOffsetFromUTC",
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyInstanceUID",
    "StudyID",
    "StudyDescription",
    "NumberOfStudyRelatedSeries",
    "NumberOfStudyRelatedInstances",
)
# PS3.18 Table 6.7.1-2a; StudyInstanceUID so a row says where it belongs.
SERIES_DEFAULTS = (
    "SpecificCharacterSet",
    "StudyInstanceUID",
    "Modality",
    "TimezoneOffsetFromUTC",
    "SeriesDescription",
    "SeriesInstanceUID",
    "SeriesNumber",
    "NumberOfSeriesRelatedInstances",
    "PerformedProcedureStepStartDate",
    "PerformedProcedureStepStartTime",
    "RequestAttributesSequence",
)
# PS3.18 Table 6.7.1-2b, with the UIDs above it and what a viewer needs to
# lay out the instance (WADO-RS and OHIF: rows, columns, frames).
INSTANCE_DEFAULTS = (
    "SpecificCharacterSet",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPClassUID",
    "SOPInstanceUID",
    "TimezoneOffsetFromUTC",
    "InstanceNumber",
    "Rows",
    "Columns",
    "BitsAllocated",
    "NumberOfFrames",
)
DEFAULTS = {
    Level.STUDY: STUDY_DEFAULTS,
    Level.SERIES: SERIES_DEFAULTS,
    Level.INSTANCE: INSTANCE_DEFAULTS,
}


def level_of(keyword: str) -> Level:
    """The level whose rows hold an attribute (its top-level keyword)."""
    if keyword in STUDY_LEVEL:
        return Level.STUDY
    if keyword in SERIES_LEVEL:
        return Level.SERIES
    return Level.INSTANCE


def defaults(level: Level, scoped: Level | None) -> tuple[str, ...]:
    """The default return attributes of a search at ``level``.

    A search not limited to one study also returns the study's defaults,
    and an instance search not limited to one series the series' (PS3.18
    6.7.1.2.2: the response carries the attributes of the levels above when
    the request does not name them), except their computed counts.
    """
    keys: list[str] = []
    for upper in range(Level.STUDY, level + 1):
        if upper == level:
            keys.extend(k for k in DEFAULTS[level] if k not in keys)
        elif scoped is None or scoped < upper:
            keys.extend(k for k in DEFAULTS[Level(upper)] if k not in keys and k not in COMPUTED)
    return tuple(keys)
