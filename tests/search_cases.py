"""One rule set: (query, matches?) against one data set, for matching.py and the SQL alike.

``DATASET`` is one instance with its study and series; each case is a QIDO
query and whether that data set matches it (PS3.4 C.2.2.2). The same table
runs against ``metastore.matching`` (in Python) and against
``metastore.search`` on SQLite and PostgreSQL.
"""

from __future__ import annotations

from typing import Any

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"

DATASET: dict[str, Any] = {
    "SOPClassUID": CT_IMAGE,
    "PatientID": "PAT001",
    "PatientName": [{"Alphabetic": "Doe^Jane^^", "Ideographic": "ドウ^ジェーン"}],
    "PatientSex": "F",
    "StudyDate": "20130125",
    "StudyTime": "105919.123",
    "AccessionNumber": "ACC-1_2%",
    "StudyDescription": "CT chest",
    "ReferringPhysicianName": [{"Alphabetic": "Smith^John"}],
    "Modality": "CT",
    "SeriesNumber": 3,
    "SeriesDescription": "Axial 5mm",
    "BodyPartExamined": "CHEST",
    "InstanceNumber": 7,
    "ImageType": ["ORIGINAL", "PRIMARY", "AXIAL"],
    "SliceThickness": "5.0",
    "AcquisitionDate": "20130125",
    "AcquisitionTime": "1100",
    "AcquisitionDateTime": "20130125105919+0100",
    "ReferencedSeriesSequence": [
        {
            "SeriesInstanceUID": "1.2.3.9",
            "ReferencedInstanceSequence": [{"ReferencedSOPInstanceUID": "1.2.3.9.1"}],
        }
    ],
}
# A second data set: SQL must agree with matching.py on it too.
DECOY: dict[str, Any] = {
    "PatientID": "OTHER",
    "PatientName": [{"Alphabetic": "Roe^Richard"}],
    "StudyDate": "19990101",
    "Modality": "MR",
}
DECOY_COMPUTED = {"ModalitiesInStudy": "MR"}
# What the index computes for the data set's study (matching.py reads it from the data set).
COMPUTED = {"ModalitiesInStudy": "CT"}

CASES: list[tuple[dict[str, str], bool]] = [
    # single value (C.2.2.2.1): whole value, case-sensitive, spaces aside
    ({"PatientID": "PAT001"}, True),
    ({"PatientID": "PAT00"}, False),
    ({"PatientID": "pat001"}, False),
    ({"00100020": "PAT001"}, True),
    ({"StudyDescription": " CT chest "}, True),
    ({"BodyPartExamined": "CHEST"}, True),
    ({"BodyPartExamined": "chest"}, False),
    ({"ImageType": "AXIAL"}, True),  # one of several values
    ({"ImageType": "LOCALIZER"}, False),
    # universal (C.2.2.2.3): also where the attribute is absent
    ({"PatientID": ""}, True),
    ({"AccessionNumber": "*"}, True),
    ({"PatientWeight": ""}, True),
    ({"PatientWeight": "70"}, False),
    # wildcards (C.2.2.2.4): anywhere, the whole value; % and _ are literal
    ({"PatientID": "PAT*"}, True),
    ({"00100020": "*AT0*"}, True),
    ({"PatientID": "P?T001"}, True),
    ({"PatientID": "P?T"}, False),
    ({"StudyDescription": "CT*"}, True),
    ({"StudyDescription": "*chest"}, True),
    ({"StudyDescription": "chest*"}, False),
    ({"StudyDescription": "ct*"}, False),
    ({"StudyDescription": "CT?chest"}, True),
    ({"AccessionNumber": "ACC-1_2%"}, True),
    ({"AccessionNumber": "ACC-1x2%"}, False),  # _ is no wildcard
    ({"AccessionNumber": "ACC-1%"}, False),  # nor is %
    ({"AccessionNumber": "ACC-1?2%"}, True),
    ({"AccessionNumber": "*_2%"}, True),
    ({"AccessionNumber": "*x2%"}, False),
    ({"ImageType": "AX*"}, True),
    ({"BodyPartExamined": "CH*"}, True),
    # several values in the query: any
    ({"PatientID": "X\\PAT001"}, True),
    ({"PatientID": "X\\Y"}, False),
    # person names: case-insensitive, per component group, trailing carets aside
    ({"PatientName": "doe^jane"}, True),
    ({"PatientName": "DOE*"}, True),
    ({"PatientName": "Doe"}, False),
    ({"PatientName": "*jane"}, True),
    ({"PatientName": "doe^jane^"}, True),
    ({"PatientName": "Doe^Jan"}, False),
    ({"PatientName": "ドウ*"}, True),  # the ideographic group
    ({"PatientName": "ドウ^ジェーン"}, True),
    ({"ReferringPhysicianName": "smith^john"}, True),
    ({"ReferringPhysicianName": "SMITH*"}, True),
    ({"ReferringPhysicianName": "Jones"}, False),
    # fuzzy: every query word begins a word of the name
    ({"PatientName": "jan", "fuzzymatching": "true"}, True),
    ({"PatientName": "jane doe", "fuzzymatching": "true"}, True),
    ({"PatientName": "oe", "fuzzymatching": "true"}, False),
    ({"PatientName": "smith", "fuzzymatching": "true"}, False),
    ({"ReferringPhysicianName": "joh", "fuzzymatching": "true"}, True),
    # UID lists (C.2.2.2.2): backslash or comma
    ({"SOPClassUID": CT_IMAGE}, True),
    ({"SOPClassUID": f"1.2.3\\{CT_IMAGE}"}, True),
    ({"SOPClassUID": f"1.2.3,{CT_IMAGE}"}, True),
    ({"SOPClassUID": "1.2.840.10008.5.1.4.1.1"}, False),
    # numbers compare as numbers
    ({"SeriesNumber": "3"}, True),
    ({"SeriesNumber": "3.0"}, True),
    ({"SeriesNumber": "4"}, False),
    ({"InstanceNumber": "7"}, True),
    ({"SliceThickness": "5"}, True),
    ({"SliceThickness": "5.5"}, False),
    # series attributes, ModalitiesInStudy
    ({"Modality": "CT"}, True),
    ({"Modality": "MR"}, False),
    ({"Modality": "C*"}, True),
    ({"ModalitiesInStudy": "CT"}, True),
    ({"ModalitiesInStudy": "MR\\CT"}, True),
    ({"ModalitiesInStudy": "MR"}, False),
    ({"00080061": "MR\\SR"}, False),
    # dates and times (C.2.2.2.5), open at either end
    ({"StudyDate": "20130125"}, True),
    ({"StudyDate": "20130101-20130131"}, True),
    ({"StudyDate": "20130126-"}, False),
    ({"StudyDate": "-20130125"}, True),
    ({"StudyDate": "20130126-20131231"}, False),
    ({"StudyTime": "105919.123"}, True),
    ({"StudyTime": "1000-1100"}, True),
    ({"StudyTime": "1100-"}, False),
    ({"StudyTime": "-1059"}, True),  # 1059 covers 10:59:59.999999
    ({"AcquisitionTime": "1100"}, True),
    ({"AcquisitionTime": "1059-1101"}, True),
    ({"AcquisitionTime": "1101-"}, False),
    ({"AcquisitionDateTime": "20130125-20130126"}, True),
    ({"AcquisitionDateTime": "2014-"}, False),
    ({"AcquisitionDateTime": "-201301251059"}, True),
    # combined date and time ranges (C.2.2.2.5.2)
    ({"StudyDate": "20130124-20130125", "StudyTime": "1100-1200"}, True),
    ({"StudyDate": "20130125-20130126", "StudyTime": "1100-1200"}, False),
    ({"StudyDate": "20130125", "StudyTime": "1000-1100"}, True),
    ({"StudyDate": "20130125", "StudyTime": "1100-1200"}, False),
    ({"AcquisitionDate": "20130124-20130125", "AcquisitionTime": "1000-1200"}, True),
    ({"AcquisitionDate": "20130125-", "AcquisitionTime": "1200-"}, False),
    # sequences (C.2.2.2.6), by keyword or tag
    ({"ReferencedSeriesSequence.SeriesInstanceUID": "1.2.3.9"}, True),
    ({"00081115.0020000E": "1.2.3.9"}, True),
    ({"ReferencedSeriesSequence.SeriesInstanceUID": "1.2.3.8"}, False),
    (
        {
            "ReferencedSeriesSequence.ReferencedInstanceSequence.ReferencedSOPInstanceUID": (
                "1.2.3.9.1"
            )
        },
        True,
    ),
    # hostile values match literally
    ({"PatientID": "'; DROP TABLE studies; --"}, False),
    ({"PatientID": "%"}, False),
    ({"PatientID": "_"}, False),
    ({"PatientID": "\\"}, False),
    ({"PatientName": "%"}, False),
    ({"PatientName": "[D]*"}, False),
    ({"StudyDescription": 'CT chest"; --'}, False),
    ({"PatientID": "A" * 10_000}, False),
    ({"PatientName": "*" + "x" * 10_000}, False),
]


def case_id(case: tuple[dict[str, str], bool]) -> str:
    query, expected = case
    text = "&".join(f"{k}={v}" for k, v in query.items())
    return (text if len(text) < 60 else text[:57] + "...") + ("->match" if expected else "->no")
