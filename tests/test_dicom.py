"""DICOM JSON model <-> naturalized metadata (metastore.dicom).

Round trips on real data (every data set pydicom ships, every file of the
bundled static DICOMweb tree), a table per VR, the special cases one by one,
a hypothesis property over arbitrary DICOM JSON, and the errors with their
JSON paths.
"""

from __future__ import annotations

import base64
import functools
import gzip
import json
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pydicom
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom import datadict
from pydicom.data import get_testdata_files
from pydicom.dataelem import DataElement
from pydicom.valuerep import VR

from metastore.dicom import (
    NULL_VALUE_KEY,
    RESERVED_KEYS,
    VR_MAP_KEY,
    denaturalize,
    keyword_for_tag,
    naturalize,
    person_name_text,
    tag_for_keyword,
)
from metastore.errors import InvalidMetadata, MetastoreError
from metastore.quirks import KEPT_AS_WRITTEN, Quirk, Quirks

STATIC_DICOMWEB = Path(__file__).parent.parent / "metastore" / "data" / "static-dicomweb"


ALL_VRS = tuple(sorted(vr.value for vr in VR if len(vr.value) == 2))
"""The VRs of PS3.5 6.2 (pydicom's list, less its combined ones), all in the table below."""

# -- helpers ------------------------------------------------------------------


def _dictionary_default_vr(tag: str) -> str | None:
    """The default VR of a tag, worked out from pydicom directly (not via the module)."""
    number = int(tag, 16)
    if number >> 16 & 1 or not (datadict.dictionary_has_tag(number) or datadict.mask_match(number)):
        return None
    vr = datadict.dictionary_VR(number).split(" or ")[0]
    return None if vr == "NONE" else vr


def _assert_round_trip(dataset: dict[str, Any]) -> dict[str, Any]:
    """Naturalize, check the result's shape, and check the way back.

    A data set read without a deviation comes back exactly (member order
    too), directly and after the naturalized form went through JSON as the
    store keeps it. With deviations, what comes back is the standard form:
    read again it counts none and naturalizes the same, and every attribute
    that comes back different is one that, read alone, counts a deviation.
    Returns the naturalized data set.
    """
    quirks = Quirks()
    natural = naturalize(dataset, quirks)
    back = denaturalize(natural)
    stored = orjson.loads(orjson.dumps(natural))
    assert denaturalize(stored) == back
    if not quirks:
        assert back == dataset
        assert list(back) == list(dataset)  # member order too
        _assert_minimal_bookkeeping(dataset, natural)
        return natural
    again = Quirks()
    assert naturalize(back, again) == natural
    assert set(again) <= KEPT_AS_WRITTEN, again
    for key, element in dataset.items():
        alone = Quirks()
        naturalize({key: element}, alone)
        if not alone:
            assert back[key] == element, key
    return natural


def _expected_key(tag: str) -> str:
    """The naturalized key of a tag, worked out from pydicom directly."""
    number = int(tag, 16)
    keyword = datadict.dictionary_keyword(number) if datadict.dictionary_has_tag(number) else ""
    return keyword or tag


def _assert_minimal_bookkeeping(dataset: dict[str, Any], natural: dict[str, Any]) -> None:
    """``_vrMap`` holds exactly the entries that are needed, per item."""
    keys = {key: _expected_key(key) for key in dataset}
    assert set(natural) - RESERVED_KEYS == set(keys.values())
    expected_vrs = {}
    for key, element in dataset.items():
        default = _dictionary_default_vr(key) or "UN"
        if element["vr"] != default:
            expected_vrs[keys[key]] = element["vr"]
        if element["vr"] == "SQ" and isinstance(element.get("Value"), list):
            for item, natural_item in zip(element["Value"], natural[keys[key]], strict=True):
                _assert_minimal_bookkeeping(item, natural_item)
    assert natural.get(VR_MAP_KEY, {}) == expected_vrs
    assert NULL_VALUE_KEY not in natural


# -- 1. every data set pydicom ships ---------------------------------------------

_PYDICOM_FILES = sorted(Path(name) for name in get_testdata_files() if Path(name).is_file())
_PYDICOM_ROOT = Path(pydicom.data.__file__).parent / "test_files"


def _file_id(path: Path) -> str:
    return str(path.relative_to(_PYDICOM_ROOT)) if path.is_relative_to(_PYDICOM_ROOT) else path.name


def _bulk_data_uri(element: DataElement) -> str:
    return f"https://archive.invalid/bulk/{element.tag:08X}"


@functools.cache
def _pydicom_json(path: Path) -> dict[str, Any] | None:
    """The DICOM JSON of a pydicom test file, as a server would send it; None if unreadable."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            dataset = pydicom.dcmread(path, stop_before_pixels=False)
            as_json = dataset.to_json_dict(
                bulk_data_threshold=512, bulk_data_element_handler=_bulk_data_uri
            )
        except Exception:  # not DICOM, not readable offline, or not JSON-able
            return None
    result: dict[str, Any] = json.loads(json.dumps(as_json))
    return result


# Files pydicom cannot read offline, or not as JSON (deflated without zlib
# support, fragments, non-DICOM helpers) are left out here and counted below.
_CONVERTIBLE = [path for path in _PYDICOM_FILES if _pydicom_json(path) is not None]


@pytest.mark.parametrize("path", _CONVERTIBLE, ids=_file_id)
def test_round_trip_pydicom_test_file(path: Path) -> None:
    dataset = _pydicom_json(path)
    assert dataset is not None
    _assert_round_trip(dataset)


def test_most_pydicom_test_files_convert() -> None:
    assert len(_CONVERTIBLE) >= 100
    assert len(_CONVERTIBLE) >= 0.8 * len(_PYDICOM_FILES)


# -- 2. the bundled static DICOMweb tree ------------------------------------------

_STATIC_FILES = sorted(STATIC_DICOMWEB.rglob("*.gz"))


def _load_static(path: Path) -> list[dict[str, Any]]:
    with gzip.open(path) as stream:
        loaded = orjson.loads(stream.read())
    return loaded if isinstance(loaded, list) else [loaded]


def test_static_dicomweb_tree_is_there() -> None:
    names = [path.name for path in _STATIC_FILES]
    assert names.count("metadata.gz") >= 17
    assert names.count("index.json.gz") >= 100


@pytest.mark.parametrize(
    "path", _STATIC_FILES, ids=lambda path: str(path.relative_to(STATIC_DICOMWEB))
)
def test_round_trip_static_dicomweb(path: Path) -> None:
    datasets = _load_static(path)
    assert datasets
    for dataset in datasets:
        natural = _assert_round_trip(dataset)
        assert all(isinstance(key, str) for key in natural)


def test_real_metadata_naturalizes_as_ohif_reads_it() -> None:
    series = (
        STATIC_DICOMWEB / "studies" / "1.2.840.113654.2.55.242841386983064378162007136685545369722"
    )
    [metadata] = (series / "series").glob(
        "1.2.840.113654.2.55.214483182570512319377495527619089952642/metadata.gz"
    )
    instance = naturalize(_load_static(metadata)[0])
    assert (
        instance["StudyInstanceUID"]
        == "1.2.840.113654.2.55.242841386983064378162007136685545369722"
    )
    assert instance["Modality"] == "CT"
    assert isinstance(instance["Rows"], int)
    # dcmjs sent ImageType as one backslash-joined value: split
    assert instance["ImageType"] == ["ORIGINAL", "PRIMARY", "AXIAL"]
    assert isinstance(instance["ImagePositionPatient"], list)


# -- 3. one table per VR -----------------------------------------------------------

# (tag, attribute object, naturalized data set); every tag has that VR in the
# dictionary, so no _vrMap entry is needed unless the case says otherwise.
VR_TABLE: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    ("00020016", {"vr": "AE", "Value": ["STORESCP"]}, {"SourceApplicationEntityTitle": "STORESCP"}),
    ("00101010", {"vr": "AS", "Value": ["042Y"]}, {"PatientAge": "042Y"}),
    ("00209165", {"vr": "AT", "Value": ["00209056"]}, {"DimensionIndexPointer": "00209056"}),
    (
        "00000901",
        {"vr": "AT", "Value": ["00100010", "00100020"]},
        {"OffendingElement": ["00100010", "00100020"]},
    ),
    ("00080060", {"vr": "CS", "Value": ["CT"]}, {"Modality": "CT"}),
    (
        "00080008",
        {"vr": "CS", "Value": ["ORIGINAL", "PRIMARY"]},
        {"ImageType": ["ORIGINAL", "PRIMARY"]},
    ),
    ("00080020", {"vr": "DA", "Value": ["20240131"]}, {"StudyDate": "20240131"}),
    ("00180050", {"vr": "DS", "Value": [2.5]}, {"SliceThickness": 2.5}),
    ("00180050", {"vr": "DS", "Value": ["2.50"]}, {"SliceThickness": "2.50"}),
    ("00280030", {"vr": "DS", "Value": [0.5, 0.5]}, {"PixelSpacing": [0.5, 0.5]}),
    (
        "0008002A",
        {"vr": "DT", "Value": ["20240131120000.5+0100"]},
        {"AcquisitionDateTime": "20240131120000.5+0100"},
    ),
    ("00109431", {"vr": "FL", "Value": [3.25]}, {"ExaminedBodyThickness": 3.25}),
    ("00081163", {"vr": "FD", "Value": [0.0, 1.5]}, {"TimeRange": [0.0, 1.5]}),
    ("00200013", {"vr": "IS", "Value": [7]}, {"InstanceNumber": 7}),
    ("00200013", {"vr": "IS", "Value": ["007"]}, {"InstanceNumber": "007"}),
    ("00081160", {"vr": "IS", "Value": [1, 2, 3]}, {"ReferencedFrameNumber": [1, 2, 3]}),
    ("00080070", {"vr": "LO", "Value": ["ACME"]}, {"Manufacturer": "ACME"}),
    (
        "001021B0",
        {"vr": "LT", "Value": ["line 1\r\nline 2"]},
        {"AdditionalPatientHistory": "line 1\r\nline 2"},
    ),
    (
        "00020001",
        {"vr": "OB", "InlineBinary": "AAE="},
        {"FileMetaInformationVersion": {"InlineBinary": "AAE="}},
    ),
    (
        "00660022",
        {"vr": "OD", "BulkDataURI": "bulk/1"},
        {"DoublePointCoordinatesData": {"BulkDataURI": "bulk/1"}},
    ),
    (
        "00660016",
        {"vr": "OF", "InlineBinary": "AACAPw=="},
        {"PointCoordinatesData": {"InlineBinary": "AACAPw=="}},
    ),
    (
        "00660040",
        {"vr": "OL", "BulkDataURI": "bulk/2"},
        {"LongPrimitivePointIndexList": {"BulkDataURI": "bulk/2"}},
    ),
    (
        "7FE00001",
        {"vr": "OV", "InlineBinary": "AAAAAAAAAAA="},
        {"ExtendedOffsetTable": {"InlineBinary": "AAAAAAAAAAA="}},
    ),
    (
        "00281201",
        {"vr": "OW", "BulkDataURI": "bulk/3"},
        {"RedPaletteColorLookupTableData": {"BulkDataURI": "bulk/3"}},
    ),
    (
        "00100010",
        {"vr": "PN", "Value": [{"Alphabetic": "Doe^Jane"}]},
        {"PatientName": [{"Alphabetic": "Doe^Jane"}]},
    ),
    (
        "00081050",
        {
            "vr": "PN",
            "Value": [
                {"Alphabetic": "A^B", "Ideographic": "亜^米", "Phonetic": "あ^べ"},
                {"Alphabetic": "C^D"},
            ],
        },
        {
            "PerformingPhysicianName": [
                {"Alphabetic": "A^B", "Ideographic": "亜^米", "Phonetic": "あ^べ"},
                {"Alphabetic": "C^D"},
            ]
        },
    ),
    ("00080050", {"vr": "SH", "Value": ["ACC-1"]}, {"AccessionNumber": "ACC-1"}),
    ("00186020", {"vr": "SL", "Value": [-12]}, {"ReferencePixelX0": -12}),
    (
        "00081115",
        {"vr": "SQ", "Value": [{"0020000E": {"vr": "UI", "Value": ["1.2.3"]}}]},
        {"ReferencedSeriesSequence": [{"SeriesInstanceUID": "1.2.3"}]},
    ),
    ("00081115", {"vr": "SQ", "Value": [{}, {}]}, {"ReferencedSeriesSequence": [{}, {}]}),
    ("00189219", {"vr": "SS", "Value": [-3]}, {"TagAngleSecondAxis": -3}),
    (
        "00080081",
        {"vr": "ST", "Value": ["1 Main St\\Springfield"]},
        {"InstitutionAddress": "1 Main St\\Springfield"},
    ),
    (
        "00720082",
        {"vr": "SV", "Value": [-9007199254740993]},
        {"SelectorSVValue": -9007199254740993},
    ),
    ("00080030", {"vr": "TM", "Value": ["093000.123"]}, {"StudyTime": "093000.123"}),
    (
        "00080119",
        {"vr": "UC", "Value": ["a long code value"]},
        {"LongCodeValue": "a long code value"},
    ),
    ("0020000D", {"vr": "UI", "Value": ["1.2.840.1"]}, {"StudyInstanceUID": "1.2.840.1"}),
    ("00020000", {"vr": "UL", "Value": [196]}, {"FileMetaInformationGroupLength": 196}),
    (
        "0072006D",
        {"vr": "UN", "InlineBinary": "AQID"},
        {"SelectorUNValue": {"InlineBinary": "AQID"}},
    ),
    (
        "0008010E",
        {"vr": "UR", "Value": ["https://example.org/x"]},
        {"CodingSchemeURL": "https://example.org/x"},
    ),
    ("00280010", {"vr": "US", "Value": [512]}, {"Rows": 512}),
    ("0040A160", {"vr": "UT", "Value": ["free text"]}, {"TextValue": "free text"}),
    (
        "0008040C",
        {"vr": "UV", "Value": [18446744073709551615]},
        {"FileOffsetInContainer": 18446744073709551615},
    ),
]


def _vr_case_id(case: tuple[str, dict[str, Any], dict[str, Any]]) -> str:
    tag, element, _ = case
    return f"{element['vr']}-{tag}-{'-'.join(k for k in element if k != 'vr')}"


@pytest.mark.parametrize("case", VR_TABLE, ids=_vr_case_id)
def test_vr_table(case: tuple[str, dict[str, Any], dict[str, Any]]) -> None:
    tag, element, natural = case
    assert _dictionary_default_vr(tag) == element["vr"]
    assert naturalize({tag: element}) == natural
    assert denaturalize(natural) == {tag: element}


def test_vr_table_covers_every_vr() -> None:
    vrs = {element["vr"] for _, element, _ in VR_TABLE}
    assert vrs == set(ALL_VRS)


# -- 4. the special cases ------------------------------------------------------------

# Conformant data sets: exact round trip, no deviation counted.
SPECIAL_CASES: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    (
        "private tags: hex key, UN by default, another VR remembered",
        {
            "00091010": {"vr": "LO", "Value": ["GEMS"]},
            "00091011": {"vr": "UN", "InlineBinary": "AQ=="},
        },
        {"00091010": "GEMS", "00091011": {"InlineBinary": "AQ=="}, VR_MAP_KEY: {"00091010": "LO"}},
    ),
    (
        "unknown public tag",
        {"00080000": {"vr": "UL", "Value": [4]}},
        {"00080000": 4, VR_MAP_KEY: {"00080000": "UL"}},
    ),
    (
        "dictionary tag without a keyword",
        {"00180061": {"vr": "DS", "Value": [1]}},
        {"00180061": 1},
    ),
    (
        "overlay tags keep their hex key but have the dictionary VR",
        {"60000010": {"vr": "US", "Value": [512]}, "60020010": {"vr": "US", "Value": [256]}},
        {"60000010": 512, "60020010": 256},
    ),
    (
        "the dictionary's 'US or SS': US needs no entry, SS does",
        {"00280106": {"vr": "US", "Value": [0]}, "00280107": {"vr": "SS", "Value": [-5]}},
        {
            "SmallestImagePixelValue": 0,
            "LargestImagePixelValue": -5,
            VR_MAP_KEY: {"LargestImagePixelValue": "SS"},
        },
    ),
    (
        "the dictionary's 'OB or OW': OB needs no entry, OW does",
        {
            "7FE00010": {"vr": "OW", "BulkDataURI": "frames"},
            "54000110": {"vr": "OB", "InlineBinary": "AA=="},
        },
        {
            "PixelData": {"BulkDataURI": "frames"},
            "ChannelMinimumValue": {"InlineBinary": "AA=="},
            VR_MAP_KEY: {"PixelData": "OW"},
        },
    ),
    (
        "empty attributes",
        {"00100010": {"vr": "PN"}, "00100020": {"vr": "LO"}, "00081115": {"vr": "SQ"}},
        {"PatientName": None, "PatientID": None, "ReferencedSeriesSequence": None},
    ),
    (
        "empty values inside a multi-valued attribute (PS3.18 F.2.5)",
        {
            "00080008": {"vr": "CS", "Value": ["ORIGINAL", None]},
            "00081160": {"vr": "IS", "Value": [None, 2]},
            "00081050": {"vr": "PN", "Value": [None, {"Alphabetic": "A"}]},
        },
        {
            "ImageType": ["ORIGINAL", None],
            "ReferencedFrameNumber": [None, 2],
            "PerformingPhysicianName": [None, {"Alphabetic": "A"}],
        },
    ),
    (
        "InlineBinary and BulkDataURI",
        {
            "00420011": {"vr": "OB", "InlineBinary": "JVBERi0="},
            "7FE00010": {"vr": "OB", "BulkDataURI": "series/1/bulk"},
            "00281050": {"vr": "DS", "BulkDataURI": "series/1/window"},
        },
        {
            "EncapsulatedDocument": {"InlineBinary": "JVBERi0="},
            "PixelData": {"BulkDataURI": "series/1/bulk"},
            "WindowCenter": {"BulkDataURI": "series/1/window"},
        },
    ),
    (
        "a lone object or array inside a UN Value keeps its list",
        {
            "00091001": {"vr": "UN", "Value": [{"InlineBinary": "AA=="}]},
            "00091002": {"vr": "UN", "Value": [["a"]]},
        },
        {"00091001": [{"InlineBinary": "AA=="}], "00091002": [["a"]]},
    ),
    (
        "nested sequences, each item with its own _vrMap",
        {
            "0040A730": {
                "vr": "SQ",
                "Value": [
                    {"0040A010": {"vr": "CS", "Value": ["CONTAINS"]}},
                    {
                        "0040A043": {
                            "vr": "SQ",
                            "Value": [{"00080100": {"vr": "SH", "Value": ["121071"]}}],
                        },
                        "00091010": {"vr": "LO", "Value": ["x"]},
                        "0040A160": {"vr": "UT"},
                    },
                ],
            }
        },
        {
            "ContentSequence": [
                {"RelationshipType": "CONTAINS"},
                {
                    "ConceptNameCodeSequence": [{"CodeValue": "121071"}],
                    "00091010": "x",
                    "TextValue": None,
                    VR_MAP_KEY: {"00091010": "LO"},
                },
            ]
        },
    ),
    (
        "a sequence with one item is still a list; an empty one is []",
        {"00081115": {"vr": "SQ", "Value": [{}]}, "00081140": {"vr": "SQ", "Value": []}},
        {"ReferencedSeriesSequence": [{}], "ReferencedImageSequence": []},
    ),
    (
        "a private sequence",
        {"20019000": {"vr": "SQ", "Value": [{"20011063": {"vr": "CS", "Value": ["ELSEWHERE"]}}]}},
        {
            "20019000": [{"20011063": "ELSEWHERE", VR_MAP_KEY: {"20011063": "CS"}}],
            VR_MAP_KEY: {"20019000": "SQ"},
        },
    ),
    (
        "PN with only some groups, or Ideographic only",
        {
            "00100010": {"vr": "PN", "Value": [{"Ideographic": "山田^太郎"}]},
            "00080090": {"vr": "PN", "Value": [{"Alphabetic": "Doe^John", "Phonetic": "ドー"}]},
        },
        {
            "PatientName": [{"Ideographic": "山田^太郎"}],
            "ReferringPhysicianName": [{"Alphabetic": "Doe^John", "Phonetic": "ドー"}],
        },
    ),
    (
        "a backslash in LT, ST, UT, UR and in single-valued attributes is text",
        {
            "00080081": {"vr": "ST", "Value": ["1 Main St\\Springfield"]},
            "00081030": {"vr": "LO", "Value": ["A\\B"]},
        },
        {"InstitutionAddress": "1 Main St\\Springfield", "StudyDescription": "A\\B"},
    ),
    (
        "DS, IS, SV, UV keep their form (numbers or strings, PS3.18 F.2.3)",
        {
            "00280030": {"vr": "DS", "Value": [0.7, " 0.70 "]},
            "00200013": {"vr": "IS", "Value": [1.0]},
            "00180050": {"vr": "DS", "Value": ["1e-3"]},
            "00720082": {"vr": "SV", "Value": ["-9007199254740993"]},
        },
        {
            "PixelSpacing": [0.7, " 0.70 "],
            "InstanceNumber": 1.0,
            "SliceThickness": "1e-3",
            "SelectorSVValue": "-9007199254740993",
        },
    ),
]


@pytest.mark.parametrize(
    ("dataset", "natural"), [c[1:] for c in SPECIAL_CASES], ids=[c[0] for c in SPECIAL_CASES]
)
def test_special_case(dataset: dict[str, Any], natural: dict[str, Any]) -> None:
    quirks = Quirks()
    assert naturalize(dataset, quirks) == natural
    assert not quirks, quirks
    assert denaturalize(natural) == dataset
    _assert_round_trip(dataset)


# Deviations: (name, input, naturalized, standard form written back, counts).
QuirkCase = tuple[str, dict[str, Any], dict[str, Any], dict[str, Any], dict[Quirk, int]]
QUIRK_CASES: list[QuirkCase] = [
    (
        "dcmjs' bare AT string inside a sequence",
        {"00209222": {"vr": "SQ", "Value": [{"00209165": {"vr": "AT", "Value": "0062000b"}}]}},
        {"DimensionIndexSequence": [{"DimensionIndexPointer": "0062000B"}]},
        {"00209222": {"vr": "SQ", "Value": [{"00209165": {"vr": "AT", "Value": ["0062000B"]}}]}},
        {Quirk.BARE_VALUE: 1, Quirk.AT_FORM: 1},
    ),
    (
        "AT forms",
        {"00000901": {"vr": "AT", "Value": ["(0010,0010)", "0010,0020", 0x00100030, "PatientSex"]}},
        {"OffendingElement": ["00100010", "00100020", "00100030", "00100040"]},
        {"00000901": {"vr": "AT", "Value": ["00100010", "00100020", "00100030", "00100040"]}},
        {Quirk.AT_FORM: 4},
    ),
    (
        "bare values of every kind",
        {
            "00280010": {"vr": "US", "Value": 512},
            "00100010": {"vr": "PN", "Value": {"Alphabetic": "Doe^Jane"}},
            "00080060": {"vr": "CS", "Value": "CT"},
            "00081115": {"vr": "SQ", "Value": {"0020000E": {"vr": "UI", "Value": "1.2"}}},
        },
        {
            "Rows": 512,
            "PatientName": [{"Alphabetic": "Doe^Jane"}],
            "Modality": "CT",
            "ReferencedSeriesSequence": [{"SeriesInstanceUID": "1.2"}],
        },
        {
            "00280010": {"vr": "US", "Value": [512]},
            "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Doe^Jane"}]},
            "00080060": {"vr": "CS", "Value": ["CT"]},
            "00081115": {"vr": "SQ", "Value": [{"0020000E": {"vr": "UI", "Value": ["1.2"]}}]},
        },
        {Quirk.BARE_VALUE: 4, Quirk.BARE_ITEM: 1},
    ),
    (
        "null, [null], [], empty strings",
        {
            "00100020": {"vr": "LO", "Value": None},
            "00100030": {"vr": "DA", "Value": [None]},
            "00100040": {"vr": "CS", "Value": []},
            "00081030": {"vr": "LO", "Value": [""]},
            "00080008": {"vr": "CS", "Value": ["DERIVED", "", "M"]},
        },
        {
            "PatientID": None,
            "PatientBirthDate": None,
            "PatientSex": None,
            "StudyDescription": None,
            "ImageType": ["DERIVED", None, "M"],
        },
        {
            "00100020": {"vr": "LO"},
            "00100030": {"vr": "DA"},
            "00100040": {"vr": "CS"},
            "00081030": {"vr": "LO"},
            "00080008": {"vr": "CS", "Value": ["DERIVED", None, "M"]},
        },
        {Quirk.NULL_VALUE: 1, Quirk.LONE_NULL: 1, Quirk.EMPTY_ARRAY: 1, Quirk.EMPTY_STRING: 2},
    ),
    (
        "numbers as strings, strings as numbers, whole floats",
        {
            "00280010": {"vr": "US", "Value": [" 512 "]},
            "00186020": {"vr": "SL", "Value": ["-12"]},
            "00109431": {"vr": "FL", "Value": ["3.25"]},
            "00081163": {"vr": "FD", "Value": ["0", "1.5e2"]},
            "00280011": {"vr": "US", "Value": [256.0]},
            "00080050": {"vr": "SH", "Value": [12345]},
            "00081030": {"vr": "LO", "Value": [1.5]},
        },
        {
            "Rows": 512,
            "ReferencePixelX0": -12,
            "ExaminedBodyThickness": 3.25,
            "TimeRange": [0, 150.0],
            "Columns": 256,
            "AccessionNumber": "12345",
            "StudyDescription": "1.5",
        },
        {
            "00280010": {"vr": "US", "Value": [512]},
            "00186020": {"vr": "SL", "Value": [-12]},
            "00109431": {"vr": "FL", "Value": [3.25]},
            "00081163": {"vr": "FD", "Value": [0, 150.0]},
            "00280011": {"vr": "US", "Value": [256]},
            "00080050": {"vr": "SH", "Value": ["12345"]},
            "00081030": {"vr": "LO", "Value": ["1.5"]},
        },
        {Quirk.NUMBER_AS_STRING: 5, Quirk.WHOLE_FLOAT: 1, Quirk.STRING_AS_NUMBER: 2},
    ),
    (
        "vr missing, empty, lowercase, unknown, combined",
        {
            "00080018": {"Value": ["1.2.3"]},
            "00091011": {"Value": ["abc"]},
            "00080060": {"vr": "", "Value": ["CT"]},
            "00081115": {"vr": "sq", "Value": [{"0020000E": {"vr": "ui", "Value": ["1.2"]}}]},
            "00080070": {"vr": "XX", "Value": ["ACME"]},
            "00091012": {"vr": 7, "InlineBinary": "AQ=="},
            "00280120": {"vr": "US|SS", "Value": [0]},
            "7FE00010": {"vr": "OB|OW", "BulkDataURI": "frames"},
            "00190010": {"InlineBinary": "R0VNUw=="},
        },
        {
            "SOPInstanceUID": "1.2.3",
            "00091011": "abc",
            "Modality": "CT",
            "ReferencedSeriesSequence": [{"SeriesInstanceUID": "1.2"}],
            "Manufacturer": "ACME",
            "00091012": {"InlineBinary": "AQ=="},
            "PixelPaddingValue": 0,
            "PixelData": {"BulkDataURI": "frames"},
            "00190010": {"InlineBinary": "R0VNUw=="},
        },
        {
            "00080018": {"vr": "UI", "Value": ["1.2.3"]},
            "00091011": {"vr": "UN", "Value": ["abc"]},
            "00080060": {"vr": "CS", "Value": ["CT"]},
            "00081115": {"vr": "SQ", "Value": [{"0020000E": {"vr": "UI", "Value": ["1.2"]}}]},
            "00080070": {"vr": "LO", "Value": ["ACME"]},
            "00091012": {"vr": "UN", "InlineBinary": "AQ=="},
            "00280120": {"vr": "US", "Value": [0]},
            "7FE00010": {"vr": "OB", "BulkDataURI": "frames"},
            "00190010": {"vr": "UN", "InlineBinary": "R0VNUw=="},
        },
        {
            Quirk.VR_MISSING: 3,
            Quirk.VR_EMPTY: 1,
            Quirk.VR_LOWERCASE: 2,
            Quirk.VR_UNKNOWN: 2,
            Quirk.VR_COMBINED: 2,
        },
    ),
    (
        "a combined US|SS follows PixelRepresentation; a private sequence without vr",
        {
            "00280103": {"vr": "US", "Value": [1]},
            "00280120": {"vr": "US|SS", "InlineBinary": "AIA="},
            "00091020": {"Value": [{"00080060": {"vr": "CS", "Value": ["MR"]}}]},
        },
        {
            "PixelRepresentation": 1,
            "PixelPaddingValue": -32768,
            "00091020": [{"Modality": "MR"}],
            VR_MAP_KEY: {"PixelPaddingValue": "SS", "00091020": "SQ"},
        },
        {
            "00280103": {"vr": "US", "Value": [1]},
            "00280120": {"vr": "SS", "Value": [-32768]},
            "00091020": {"vr": "SQ", "Value": [{"00080060": {"vr": "CS", "Value": ["MR"]}}]},
        },
        {
            Quirk.VR_COMBINED: 1,
            Quirk.INLINE_BINARY_DECODED: 1,
            Quirk.VR_MISSING: 1,
            Quirk.VR_INFERRED_SQ: 1,
        },
    ),
    (
        "InlineBinary on value VRs is decoded; BulkDataURI on a CS is kept",
        {
            "00700052": {"vr": "SL", "InlineBinary": "AQAAAAEAAAA="},
            "00080008": {"vr": "CS", "InlineBinary": "T1JJR0lOQUxcUFJJTUFSWSA="},
            "00100010": {"vr": "PN", "InlineBinary": "RG9lXkphbmU="},
            "00209165": {"vr": "AT", "InlineBinary": "YgALAA=="},
            "00080060": {"vr": "CS", "BulkDataURI": "bulk/modality"},
        },
        {
            "DisplayedAreaTopLeftHandCorner": [1, 1],
            "ImageType": ["ORIGINAL", "PRIMARY"],
            "PatientName": [{"Alphabetic": "Doe^Jane"}],
            "DimensionIndexPointer": "0062000B",
            "Modality": {"BulkDataURI": "bulk/modality"},
        },
        {
            "00700052": {"vr": "SL", "Value": [1, 1]},
            "00080008": {"vr": "CS", "Value": ["ORIGINAL", "PRIMARY"]},
            "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Doe^Jane"}]},
            "00209165": {"vr": "AT", "Value": ["0062000B"]},
            "00080060": {"vr": "CS", "BulkDataURI": "bulk/modality"},
        },
        {Quirk.INLINE_BINARY_DECODED: 4, Quirk.BULKDATA_ON_VALUE_VR: 1},
    ),
    (
        "lowercase and parenthesized tags; the same tag twice with equal content",
        {
            "0020000d": {"vr": "UI", "Value": ["1.2"]},
            "0009ab10": {"vr": "LO", "Value": ["x"]},
            "(0010,0020)": {"vr": "LO", "Value": ["P1"]},
            "00100020": {"vr": "LO", "Value": ["P1"]},
        },
        {
            "StudyInstanceUID": "1.2",
            "0009AB10": "x",
            "PatientID": "P1",
            VR_MAP_KEY: {"0009AB10": "LO"},
        },
        {
            "0020000D": {"vr": "UI", "Value": ["1.2"]},
            "0009AB10": {"vr": "LO", "Value": ["x"]},
            "00100020": {"vr": "LO", "Value": ["P1"]},
        },
        {Quirk.LOWERCASE_TAG: 2, Quirk.TAG_FORM: 1, Quirk.DUPLICATE_TAG: 1},
    ),
    (
        "PN as strings, lowercase and null groups",
        {
            "00100010": {"vr": "PN", "Value": ["Yamada^Tarou=山田^太郎=やまだ^たろう"]},
            "00081050": {"vr": "PN", "Value": ["A^B\\C^D"]},
            "00080090": {"vr": "PN", "Value": [{"alphabetic": "Doe", "Ideographic": None}]},
        },
        {
            "PatientName": [
                {
                    "Alphabetic": "Yamada^Tarou",
                    "Ideographic": "山田^太郎",
                    "Phonetic": "やまだ^たろう",
                }
            ],
            "PerformingPhysicianName": [{"Alphabetic": "A^B"}, {"Alphabetic": "C^D"}],
            "ReferringPhysicianName": [{"Alphabetic": "Doe"}],
        },
        {
            "00100010": {
                "vr": "PN",
                "Value": [
                    {
                        "Alphabetic": "Yamada^Tarou",
                        "Ideographic": "山田^太郎",
                        "Phonetic": "やまだ^たろう",
                    }
                ],
            },
            "00081050": {"vr": "PN", "Value": [{"Alphabetic": "A^B"}, {"Alphabetic": "C^D"}]},
            "00080090": {"vr": "PN", "Value": [{"Alphabetic": "Doe"}]},
        },
        {Quirk.PN_STRING: 2, Quirk.BACKSLASH_JOINED: 1, Quirk.PN_GROUP: 1},
    ),
    (
        "backslash-joined values where several are due",
        {
            "00080008": {"vr": "CS", "Value": ["ORIGINAL\\PRIMARY\\AXIAL"]},
            "00200032": {"vr": "DS", "Value": ["-125\\-125.5\\1e1"]},
            "00280030": {"vr": "DS", "Value": [0.5, 0.5]},
            "00081160": {"vr": "IS", "Value": ["1\\2"]},
            "00280009": {"vr": "AT", "Value": ["00181063\\00181065"]},
        },
        {
            "ImageType": ["ORIGINAL", "PRIMARY", "AXIAL"],
            "ImagePositionPatient": ["-125", "-125.5", "1e1"],
            "PixelSpacing": [0.5, 0.5],
            "ReferencedFrameNumber": ["1", "2"],
            "FrameIncrementPointer": ["00181063", "00181065"],
        },
        {
            "00080008": {"vr": "CS", "Value": ["ORIGINAL", "PRIMARY", "AXIAL"]},
            "00200032": {"vr": "DS", "Value": ["-125", "-125.5", "1e1"]},
            "00280030": {"vr": "DS", "Value": [0.5, 0.5]},
            "00081160": {"vr": "IS", "Value": ["1", "2"]},
            "00280009": {"vr": "AT", "Value": ["00181063", "00181065"]},
        },
        {Quirk.BACKSLASH_JOINED: 4},
    ),
    (
        "old date and time forms are counted and kept (key columns normalize them)",
        {
            "00080020": {"vr": "DA", "Value": ["1997.04.24"]},
            "00080030": {"vr": "TM", "Value": ["10:20:30"]},
        },
        {"StudyDate": "1997.04.24", "StudyTime": "10:20:30"},
        {
            "00080020": {"vr": "DA", "Value": ["1997.04.24"]},
            "00080030": {"vr": "TM", "Value": ["10:20:30"]},
        },
        {Quirk.DATE_FORM: 1, Quirk.TIME_FORM: 1},
    ),
    (
        "NUL characters in strings are removed (PostgreSQL keeps none), UID padding stripped",
        {
            "0008103E": {"vr": "LO", "Value": ["SliceTh-0.8_SliceInc-\x00_ReconFilter-C"]},
            "00081030": {"vr": "LO", "Value": ["HEAD\x00\x00"]},
            "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Doe^Jane\x00"}]},
            "00081070": {"vr": "PN", "Value": ["Roe^Ann\x00"]},
            "0020000E": {"vr": "UI", "Value": ["1.2.4\x00"]},
        },
        {
            "SeriesDescription": "SliceTh-0.8_SliceInc-_ReconFilter-C",
            "StudyDescription": "HEAD",
            "PatientName": [{"Alphabetic": "Doe^Jane"}],
            "OperatorsName": [{"Alphabetic": "Roe^Ann"}],
            "SeriesInstanceUID": "1.2.4",
        },
        {
            "0008103E": {"vr": "LO", "Value": ["SliceTh-0.8_SliceInc-_ReconFilter-C"]},
            "00081030": {"vr": "LO", "Value": ["HEAD"]},
            "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Doe^Jane"}]},
            "00081070": {"vr": "PN", "Value": [{"Alphabetic": "Roe^Ann"}]},
            "0020000E": {"vr": "UI", "Value": ["1.2.4"]},
        },
        {Quirk.NUL_CHARACTER: 4, Quirk.PN_STRING: 1, Quirk.UID_PADDING: 1},
    ),
    (
        "padded UIDs, extra members, several value members",
        {
            "0020000D": {"vr": "UI", "Value": ["1.2.3\x00"], "keyword": "StudyInstanceUID"},
            "00080060": {"vr": "CS", "Value": ["CT"], "BulkDataURI": "bulk/x"},
            "7FE00010": {"vr": "OB", "InlineBinary": "AA==", "BulkDataURI": "frames"},
        },
        {"StudyInstanceUID": "1.2.3", "Modality": "CT", "PixelData": {"InlineBinary": "AA=="}},
        {
            "0020000D": {"vr": "UI", "Value": ["1.2.3"]},
            "00080060": {"vr": "CS", "Value": ["CT"]},
            "7FE00010": {"vr": "OB", "InlineBinary": "AA=="},
        },
        {Quirk.UID_PADDING: 1, Quirk.EXTRA_MEMBER: 1, Quirk.CONFLICTING_MEMBERS: 2},
    ),
]


@pytest.mark.parametrize(
    ("dataset", "natural", "standard", "counts"),
    [c[1:] for c in QUIRK_CASES],
    ids=[c[0] for c in QUIRK_CASES],
)
def test_quirk_case(
    dataset: dict[str, Any],
    natural: dict[str, Any],
    standard: dict[str, Any],
    counts: dict[Quirk, int],
) -> None:
    quirks = Quirks()
    assert naturalize(dataset, quirks) == natural
    assert quirks == Quirks(counts)
    assert denaturalize(natural) == standard
    again = Quirks()
    assert naturalize(standard, again) == natural  # the standard form reads without a deviation
    # ... but for what it keeps as written: a reference, old date and time forms
    assert set(again) <= KEPT_AS_WRITTEN, again


def test_quirk_cases_cover_every_kind() -> None:
    counted = {kind for case in QUIRK_CASES for kind in case[4]}
    assert counted == set(Quirk)


def test_earlier_bookkeeping_is_written_in_the_standard_form() -> None:
    stored = {
        "PatientID": None,
        "SOPInstanceUID": "1.2",
        "00091010": "x",
        "PixelPaddingValue": 0,
        NULL_VALUE_KEY: ["PatientID"],
        VR_MAP_KEY: {"SOPInstanceUID": None, "00091010": None, "PixelPaddingValue": "US|SS"},
    }
    assert denaturalize(stored) == {
        "00100020": {"vr": "LO"},
        "00080018": {"vr": "UI", "Value": ["1.2"]},
        "00091010": {"vr": "UN", "Value": ["x"]},
        "00280120": {"vr": "US", "Value": [0]},
    }


def test_quirks_counter() -> None:
    quirks = Quirks()
    assert not quirks and str(quirks) == "none"
    quirks.add(Quirk.VR_MISSING, 3)
    quirks.update(Quirks({Quirk.AT_FORM: 1, "vr missing": 2}))
    quirks.update([Quirk.AT_FORM])
    assert quirks[Quirk.VR_MISSING] == 5 and quirks.total() == 7
    assert quirks.as_dict() == {"vr missing": 5, "AT form": 2}
    assert str(quirks) == "vr missing 5, AT form 2"


def test_naturalize_copies_the_input() -> None:
    dataset: dict[str, Any] = {
        "00080008": {"vr": "CS", "Value": ["A", "B"]},
        "00100010": {"vr": "PN", "Value": [{"Alphabetic": "X"}]},
    }
    natural = naturalize(dataset)
    natural["ImageType"].append("C")
    natural["PatientName"][0]["Alphabetic"] = "Y"
    assert dataset["00080008"]["Value"] == ["A", "B"]
    assert dataset["00100010"]["Value"] == [{"Alphabetic": "X"}]


def test_denaturalize_hand_built_metadata() -> None:
    natural = {
        "PatientName": "Doe^Jane",
        "ReferencedSeriesSequence": {"SeriesInstanceUID": "1.2"},
        "Rows": 512,
        "00091010": "private",
        "0020000E": "1.3",
    }
    assert denaturalize(natural) == {
        "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Doe^Jane"}]},
        "00081115": {"vr": "SQ", "Value": [{"0020000E": {"vr": "UI", "Value": ["1.2"]}}]},
        "00280010": {"vr": "US", "Value": [512]},
        "00091010": {"vr": "UN", "Value": ["private"]},
        "0020000E": {"vr": "UI", "Value": ["1.3"]},
    }


def test_reserved_keys() -> None:
    assert {VR_MAP_KEY, NULL_VALUE_KEY} == RESERVED_KEYS
    assert VR_MAP_KEY == "_vrMap"


@pytest.mark.parametrize(
    ("tag", "keyword"),
    [
        ("0020000D", "StudyInstanceUID"),
        ("0020000d", "StudyInstanceUID"),
        ("00100010", "PatientName"),
        ("00020000", "FileMetaInformationGroupLength"),
        ("00091010", None),
        ("00080000", None),
        ("60000010", None),
        ("00180061", None),
        ("0010001", None),
        ("not a tag", None),
    ],
)
def test_keyword_for_tag(tag: str, keyword: str | None) -> None:
    assert keyword_for_tag(tag) == keyword


@pytest.mark.parametrize(
    ("keyword", "tag"),
    [
        ("StudyInstanceUID", "0020000D"),
        ("PixelData", "7FE00010"),
        ("OverlayRows", None),
        ("NoSuchKeyword", None),
        ("", None),
    ],
)
def test_tag_for_keyword(keyword: str, tag: str | None) -> None:
    assert tag_for_keyword(keyword) == tag


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ([{"Alphabetic": "Doe^Jane", "Ideographic": "X"}, {"Alphabetic": "Roe^Rick"}], "Doe^Jane"),
        ({"Alphabetic": "Doe^Jane"}, "Doe^Jane"),
        ("Doe^Jane", "Doe^Jane"),
        ("Yamada^Tarou=山田^太郎=やまだ^たろう", "Yamada^Tarou"),
        ([{"Ideographic": "山田^太郎"}], None),
        ([], None),
        ("", None),
        (None, None),
        ([None], None),
        ({"Alphabetic": ""}, None),
    ],
)
def test_person_name_text(value: Any, text: str | None) -> None:
    assert person_name_text(value) == text


# -- 5. property: arbitrary conformant DICOM JSON round-trips exactly -----------------

_DICTIONARY_TAGS = sorted(f"{tag:08X}" for tag in datadict.keyword_dict.values())
_BINARY = {"OB", "OD", "OF", "OL", "OV", "OW", "UN"}
_BULK = _BINARY | {"DS", "FL", "FD", "IS", "LT", "SL", "SS", "ST", "SV", "UC", "UL", "UR", "US"}
_BULK |= {"UT", "UV"}

# No backslash (the value separator) and no NUL (no DICOM text repertoire has it).
_text = st.text(min_size=1, max_size=12).filter(lambda t: "\\" not in t and "\x00" not in t)
_int = st.integers(min_value=-(2**63), max_value=2**63 - 1)
# JSON (RFC 8259) has no infinities or NaN, so neither has the DICOM JSON model.
_float = st.floats(allow_nan=False, allow_infinity=False)
_person_name = st.fixed_dictionaries(
    {}, optional={"Alphabetic": _text, "Ideographic": _text, "Phonetic": _text}
)
_base64 = st.binary(max_size=8).map(lambda raw: base64.b64encode(raw).decode())

_tags = st.one_of(
    st.sampled_from(_DICTIONARY_TAGS),
    st.sampled_from(["60000010", "60023000", "50000005", "00180061", "00080000"]),
    st.builds(lambda g, e: f"{g | 1:04X}{e:04X}", st.integers(0, 0xFFFF), st.integers(0, 0xFFFF)),
)


def _item(vr: str) -> st.SearchStrategy[Any]:
    """One conformant value of a VR (PS3.18 F.2.3)."""
    if vr == "PN":
        return _person_name
    if vr == "AT":
        return st.integers(0, 0xFFFFFFFF).map(lambda tag: f"{tag:08X}")
    if vr in {"SV", "UV"}:
        return st.one_of(_int, _int.map(str))
    if vr in {"SL", "SS", "UL", "US"}:
        return _int
    if vr in {"FL", "FD"}:
        return st.one_of(_float, _int)
    if vr in {"DS", "IS"}:
        return st.one_of(_float, _int, _text)
    if vr == "UI":
        return _text.filter(lambda t: t[-1] not in " \x00")
    if vr in {"LT", "ST", "UT", "UR"}:
        return st.text(min_size=1, max_size=12).filter(lambda t: "\x00" not in t)  # a backslash is text here
    if vr == "TM":
        return _text.filter(lambda t: ":" not in t)  # HH:MM:SS is the old form (a quirk)
    return _text


def _values(vr: str, depth: int) -> st.SearchStrategy[list[Any]]:
    """A conformant ``Value`` array: null only as one of several values (F.2.5)."""
    if vr == "SQ":
        if depth <= 0:
            return st.lists(st.just({}), max_size=1)
        return st.lists(_datasets(depth - 1), max_size=2)
    one = st.lists(_item(vr), min_size=1, max_size=1)
    several = st.lists(st.one_of(_item(vr), st.none()), min_size=2, max_size=3)
    return st.one_of(one, several)


def _element(tag: str, depth: int) -> st.SearchStrategy[dict[str, Any]]:
    default = _dictionary_default_vr(tag)
    vrs = st.sampled_from(ALL_VRS) if default is None else st.sampled_from([default, *ALL_VRS])

    def build(vr: str) -> st.SearchStrategy[dict[str, Any]]:
        bodies: list[st.SearchStrategy[dict[str, Any]]] = [st.just({})]
        if vr in _BINARY:
            bodies.append(_base64.map(lambda data: {"InlineBinary": data}))
        else:
            bodies.append(_values(vr, depth).map(lambda value: {"Value": value}))
        if vr in _BULK:
            bodies.append(_text.map(lambda uri: {"BulkDataURI": uri}))
        return st.one_of(*bodies).map(lambda members: {"vr": vr, **members})

    return vrs.flatmap(build)


@functools.cache
def _datasets(depth: int) -> st.SearchStrategy[dict[str, Any]]:
    def build(tags: list[str]) -> st.SearchStrategy[dict[str, Any]]:
        elements = [_element(tag, depth) for tag in tags]
        return st.tuples(*elements).map(lambda values: dict(zip(tags, values, strict=True)))

    return st.lists(_tags, max_size=6, unique=True).flatmap(build)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_datasets(2))
def test_property_conformant_round_trip(dataset: dict[str, Any]) -> None:
    quirks = Quirks()
    natural = naturalize(dataset, quirks)
    assert not quirks, quirks
    assert denaturalize(natural) == dataset
    _assert_round_trip(dataset)


# -- 6. errors name the JSON path ------------------------------------------------

NATURALIZE_ERRORS: list[tuple[str, Any, str]] = [
    ("not an object", [], "$"),
    ("short key", {"0010": {"vr": "PN"}}, "0010"),
    ("not hex", {"0010001G": {"vr": "PN"}}, "0010001G"),
    ("a keyword as key", {"PatientName": {"vr": "PN"}}, "PatientName"),
    ("key not a string", {0x00100010: {"vr": "PN"}}, "1048592"),
    ("attribute not an object", {"00100010": "Doe^Jane"}, "00100010"),
    ("an object as a CS", {"00080060": {"vr": "CS", "Value": [{"x": 1}]}}, "00080060.Value[0]"),
    (
        "a boolean as a string",
        {"00080060": {"vr": "CS", "Value": ["CT", True]}},
        "00080060.Value[1]",
    ),
    ("text that is no number", {"00280010": {"vr": "US", "Value": ["wide"]}}, "00280010.Value[0]"),
    ("a fraction as an integer", {"00280010": {"vr": "US", "Value": [1.5]}}, "00280010.Value[0]"),
    ("not a tag as AT", {"00209165": {"vr": "AT", "Value": ["nope"]}}, "00209165.Value[0]"),
    ("an AT out of range", {"00209165": {"vr": "AT", "Value": [-1]}}, "00209165.Value[0]"),
    ("a number as PN", {"00100010": {"vr": "PN", "Value": [5]}}, "00100010.Value[0]"),
    (
        "an unknown PN group",
        {"00100010": {"vr": "PN", "Value": [{"Nickname": "x"}]}},
        "00100010.Value[0].Nickname",
    ),
    (
        "InlineBinary not base64",
        {"00280010": {"vr": "US", "InlineBinary": "@@"}},
        "00280010.InlineBinary",
    ),
    (
        "InlineBinary not whole values",
        {"00280010": {"vr": "US", "InlineBinary": "AAAA"}},
        "00280010.InlineBinary",
    ),
    (
        "InlineBinary not a string",
        {"7FE00010": {"vr": "OB", "InlineBinary": 5}},
        "7FE00010.InlineBinary",
    ),
    (
        "BulkDataURI not a string",
        {"7FE00010": {"vr": "OB", "BulkDataURI": []}},
        "7FE00010.BulkDataURI",
    ),
    ("item not an object", {"0040A730": {"vr": "SQ", "Value": [{}, {}, "x"]}}, "0040A730.Value[2]"),
    (
        "attribute in an item",
        {"0040A730": {"vr": "SQ", "Value": [{}, {}, {"0040A043": [1]}]}},
        "0040A730.Value[2].0040A043",
    ),
    (
        "deep",
        {"0040A730": {"vr": "SQ", "Value": [{"0040A730": {"Value": [{}, {"bad": {}}]}}]}},
        "0040A730.Value[0].0040A730.Value[1].bad",
    ),
    (
        "the same tag twice, different content",
        {"0020000D": {"vr": "UI", "Value": ["1"]}, "0020000d": {"vr": "UI", "Value": ["2"]}},
        "0020000d",
    ),
]


@pytest.mark.parametrize(
    ("dataset", "path"), [c[1:] for c in NATURALIZE_ERRORS], ids=[c[0] for c in NATURALIZE_ERRORS]
)
def test_naturalize_error(dataset: Any, path: str) -> None:
    with pytest.raises(InvalidMetadata) as caught:
        naturalize(dataset)
    assert caught.value.context["path"] == path
    assert getattr(caught.value, "path", None) == path
    assert f"at {path}" in str(caught.value)


DENATURALIZE_ERRORS: list[tuple[str, Any, str]] = [
    ("not an object", "x", "$"),
    ("unknown keyword", {"PatientsName": "x"}, "PatientsName"),
    ("unknown bookkeeping key", {"_other": {}}, "_other"),
    ("item not an object", {"ContentSequence": [{}, 3]}, "ContentSequence[1]"),
    (
        "key in an item",
        {"ContentSequence": [{}, {}, {"ConceptNameCodeSequence": [{"Bogus": 1}]}]},
        "ContentSequence[2].ConceptNameCodeSequence[0].Bogus",
    ),
    ("_vrMap not an object", {VR_MAP_KEY: ["x"]}, VR_MAP_KEY),
    (
        "a VR not a string",
        {"PatientName": None, VR_MAP_KEY: {"PatientName": 5}},
        "_vrMap.PatientName",
    ),
    ("_nullValue not an array", {NULL_VALUE_KEY: "PatientID"}, NULL_VALUE_KEY),
    ("the same tag twice", {"StudyInstanceUID": "1", "0020000D": "1"}, "0020000D"),
]


@pytest.mark.parametrize(
    ("natural", "path"),
    [c[1:] for c in DENATURALIZE_ERRORS],
    ids=[c[0] for c in DENATURALIZE_ERRORS],
)
def test_denaturalize_error(natural: Any, path: str) -> None:
    with pytest.raises(InvalidMetadata) as caught:
        denaturalize(natural)
    assert caught.value.context["path"] == path
    assert f"at {path}" in str(caught.value)


@pytest.mark.parametrize("convert", [naturalize, denaturalize])
def test_errors_are_metastore_errors(convert: Callable[[Any], Any]) -> None:
    with pytest.raises(MetastoreError):
        convert(None)
