"""DICOM JSON model <-> naturalized metadata (metastore.dicom).

Round trips on real data (every data set pydicom ships, every file of the
bundled static DICOMweb tree), a table per VR, the special cases one by one,
a hypothesis property over arbitrary DICOM JSON, and the errors with their
JSON paths.
"""

from __future__ import annotations

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

STATIC_DICOMWEB = Path(__file__).parent.parent / "metastore" / "data" / "static-dicomweb"


ALL_VRS = tuple(sorted(vr.value for vr in VR if len(vr.value) == 2))
"""The VRs of PS3.5 6.2 (pydicom's list, less its combined ones), all in the table below."""

# -- helpers ------------------------------------------------------------------


def _dictionary_default_vr(tag: str) -> str | None:
    """The default VR of a tag, worked out from pydicom directly (not via the module)."""
    number = int(tag, 16)
    if not (datadict.dictionary_has_tag(number) or datadict.mask_match(number)):
        return None
    return datadict.dictionary_VR(number).split(" or ")[0]


def _assert_round_trip(dataset: dict[str, Any]) -> dict[str, Any]:
    """Naturalize, check the result's shape, and check both ways back are exact.

    Back directly, and back after the naturalized form went through JSON as
    the store keeps it. Returns the naturalized data set.
    """
    natural = naturalize(dataset)
    back = denaturalize(natural)
    assert back == dataset
    assert list(back) == list(dataset)  # member order too
    stored = orjson.loads(orjson.dumps(natural))
    assert denaturalize(stored) == dataset
    _assert_minimal_bookkeeping(dataset, natural)
    return natural


def _expected_key(tag: str) -> str:
    """The naturalized key of a tag, worked out from pydicom directly."""
    number = int(tag, 16)
    keyword = datadict.dictionary_keyword(number) if datadict.dictionary_has_tag(number) else ""
    return keyword or tag


def _assert_minimal_bookkeeping(dataset: dict[str, Any], natural: dict[str, Any]) -> None:
    """``_vrMap`` / ``_nullValue`` hold exactly the entries that are needed, per item."""
    keys = {key: _expected_key(key) for key in dataset}
    assert set(natural) - RESERVED_KEYS == set(keys.values())
    expected_vrs = {}
    expected_nulls = []
    for key, element in dataset.items():
        default = _dictionary_default_vr(key)
        if element.get("vr") != default:
            expected_vrs[keys[key]] = element.get("vr")
        if "Value" in element and element["Value"] is None:
            expected_nulls.append(keys[key])
        effective = element.get("vr", default)
        if effective == "SQ" and isinstance(element.get("Value"), list):
            for item, natural_item in zip(element["Value"], natural[keys[key]], strict=True):
                _assert_minimal_bookkeeping(item, natural_item)
    assert natural.get(VR_MAP_KEY, {}) == expected_vrs
    assert natural.get(NULL_VALUE_KEY, []) == expected_nulls


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
    # a multi-valued string sent as one backslash-joined value stays one string
    assert instance["ImageType"] == "ORIGINAL\\PRIMARY\\AXIAL"
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

SPECIAL_CASES: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    (
        "private tag: hex key, VR remembered",
        {"00091010": {"vr": "LO", "Value": ["GEMS"]}, "00091011": {"InlineBinary": "AQ=="}},
        {"00091010": "GEMS", "00091011": {"InlineBinary": "AQ=="}, VR_MAP_KEY: {"00091010": "LO"}},
    ),
    (
        "private tag in lowercase keeps its spelling",
        {"0009ab10": {"vr": "UN", "Value": ["x"]}},
        {"0009ab10": "x", VR_MAP_KEY: {"0009ab10": "UN"}},
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
        "missing vr",
        {"00080018": {"Value": ["1.2.3"]}, "00083002": {"vr": "UN", "Value": ["1.2"]}},
        {
            "SOPInstanceUID": "1.2.3",
            "AvailableTransferSyntaxUID": "1.2",
            VR_MAP_KEY: {"SOPInstanceUID": None, "AvailableTransferSyntaxUID": "UN"},
        },
    ),
    (
        "combined VR US|SS",
        {"00280120": {"vr": "US|SS", "Value": [0]}},
        {"PixelPaddingValue": 0, VR_MAP_KEY: {"PixelPaddingValue": "US|SS"}},
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
        "the dictionary's 'OB or OW': OB needs no entry, OW and OB|OW do",
        {
            "7FE00010": {"vr": "OW", "BulkDataURI": "frames"},
            "54000110": {"vr": "OB", "InlineBinary": "AA=="},
            "54000112": {"vr": "OB|OW", "InlineBinary": "AA=="},
        },
        {
            "PixelData": {"BulkDataURI": "frames"},
            "ChannelMinimumValue": {"InlineBinary": "AA=="},
            "ChannelMaximumValue": {"InlineBinary": "AA=="},
            VR_MAP_KEY: {"PixelData": "OW", "ChannelMaximumValue": "OB|OW"},
        },
    ),
    (
        "no Value, Value null and Value [] stay apart",
        {
            "00100010": {"vr": "PN"},
            "00100020": {"vr": "LO", "Value": None},
            "00100030": {"vr": "DA", "Value": []},
        },
        {
            "PatientName": None,
            "PatientID": None,
            "PatientBirthDate": [],
            NULL_VALUE_KEY: ["PatientID"],
        },
    ),
    (
        "an attribute with nothing at all",
        {"00100010": {}},
        {"PatientName": None, VR_MAP_KEY: {"PatientName": None}},
    ),
    (
        "empty values inside a multi-valued attribute (PS3.18 F.2.5)",
        {
            "00080008": {"vr": "CS", "Value": ["ORIGINAL", None]},
            "00081160": {"vr": "IS", "Value": [None]},
        },
        {"ImageType": ["ORIGINAL", None], "ReferencedFrameNumber": [None]},
    ),
    (
        "InlineBinary and BulkDataURI",
        {
            "00420011": {"vr": "OB", "InlineBinary": "JVBERi0="},
            "7FE00010": {"vr": "OB", "BulkDataURI": "series/1/bulk"},
        },
        {
            "EncapsulatedDocument": {"InlineBinary": "JVBERi0="},
            "PixelData": {"BulkDataURI": "series/1/bulk"},
        },
    ),
    (
        "a lone object or array inside a non-sequence Value keeps its list",
        {
            "00091001": {"vr": "UN", "Value": [{"InlineBinary": "AA=="}]},
            "00091002": {"vr": "UN", "Value": [["a"]]},
        },
        {
            "00091001": [{"InlineBinary": "AA=="}],
            "00091002": [["a"]],
            VR_MAP_KEY: {"00091001": "UN", "00091002": "UN"},
        },
    ),
    (
        "nested sequences, each item with its own _vrMap",
        {
            "0040A730": {
                "vr": "SQ",
                "Value": [
                    {"0040A010": {"vr": "CS", "Value": ["CONTAINS"]}},
                    {
                        "0040A043": {"vr": "SQ", "Value": [{"00080100": {"Value": ["121071"]}}]},
                        "00091010": {"vr": "LO", "Value": ["x"]},
                        "0040A160": {"vr": "UT", "Value": None},
                    },
                ],
            }
        },
        {
            "ContentSequence": [
                {"RelationshipType": "CONTAINS"},
                {
                    "ConceptNameCodeSequence": [
                        {"CodeValue": "121071", VR_MAP_KEY: {"CodeValue": None}}
                    ],
                    "00091010": "x",
                    "TextValue": None,
                    VR_MAP_KEY: {"00091010": "LO"},
                    NULL_VALUE_KEY: ["TextValue"],
                },
            ]
        },
    ),
    (
        "a sequence with one item is still a list; an empty one is []",
        {
            "00081115": {"vr": "SQ", "Value": [{}]},
            "00081140": {"vr": "SQ", "Value": []},
            "00082112": {"vr": "SQ"},
        },
        {
            "ReferencedSeriesSequence": [{}],
            "ReferencedImageSequence": [],
            "SourceImageSequence": None,
        },
    ),
    (
        "a sequence without vr is still read as a sequence",
        {"00081115": {"Value": [{"0020000E": {"vr": "UI", "Value": ["1.2"]}}]}},
        {
            "ReferencedSeriesSequence": [{"SeriesInstanceUID": "1.2"}],
            VR_MAP_KEY: {"ReferencedSeriesSequence": None},
        },
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
        "PN as given, even with one value and only some groups",
        {
            "00100010": {"vr": "PN", "Value": [{"Ideographic": "山田^太郎"}]},
            "00080090": {"vr": "PN", "Value": ["Doe^John"]},
        },
        {"PatientName": [{"Ideographic": "山田^太郎"}], "ReferringPhysicianName": ["Doe^John"]},
    ),
    (
        "a backslash-joined multi-valued string stays one string",
        {"00080008": {"vr": "CS", "Value": ["ORIGINAL\\PRIMARY\\AXIAL"]}},
        {"ImageType": "ORIGINAL\\PRIMARY\\AXIAL"},
    ),
    (
        "numbers are not re-typed",
        {"00280030": {"vr": "DS", "Value": [0.7, "0.7"]}, "00200013": {"vr": "IS", "Value": [1.0]}},
        {"PixelSpacing": [0.7, "0.7"], "InstanceNumber": 1.0},
    ),
]


@pytest.mark.parametrize(
    ("dataset", "natural"), [c[1:] for c in SPECIAL_CASES], ids=[c[0] for c in SPECIAL_CASES]
)
def test_special_case(dataset: dict[str, Any], natural: dict[str, Any]) -> None:
    assert naturalize(dataset) == natural
    assert denaturalize(natural) == dataset
    _assert_round_trip(dataset)


def test_missing_vr_comes_back_without_vr_key() -> None:
    back = denaturalize(
        naturalize({"00080018": {"Value": ["1.2.3"]}, "00091010": {"Value": ["x"]}})
    )
    assert back == {"00080018": {"Value": ["1.2.3"]}, "00091010": {"Value": ["x"]}}
    assert "vr" not in back["00080018"] and "vr" not in back["00091010"]


def test_lowercase_tag_of_a_keyword_is_normalized() -> None:
    natural = naturalize({"0020000d": {"vr": "UI", "Value": ["1.2"]}})
    assert natural == {"StudyInstanceUID": "1.2"}
    assert denaturalize(natural) == {"0020000D": {"vr": "UI", "Value": ["1.2"]}}


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
        "00091010": {"Value": ["private"]},
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


# -- 5. property: arbitrary DICOM JSON round-trips exactly --------------------------

_DICTIONARY_TAGS = sorted(f"{tag:08X}" for tag in datadict.keyword_dict.values())
_INTS = {"SL", "SS", "UL", "US", "SV", "UV", "IS"}
_FLOATS = {"FL", "FD", "DS"}

_text = st.text(max_size=12)
_int = st.integers(min_value=-(2**63), max_value=2**63 - 1)
# JSON (RFC 8259) has no infinities or NaN, so neither has the DICOM JSON model.
_float = st.floats(allow_nan=False, allow_infinity=False)
_person_name = st.fixed_dictionaries(
    {}, optional={"Alphabetic": _text, "Ideographic": _text, "Phonetic": _text}
)
# valid JSON that is no DICOM value: must survive all the same
_odd = st.one_of(
    st.just({"InlineBinary": "AA=="}),
    st.lists(_text, max_size=2),
    st.dictionaries(_text, _int, max_size=2),
)

_tags = st.one_of(
    st.sampled_from(_DICTIONARY_TAGS),
    st.sampled_from(["60000010", "60023000", "50000005", "00180061", "00080000"]),
    st.builds(lambda g, e: f"{g | 1:04X}{e:04X}", st.integers(0, 0xFFFF), st.integers(0, 0xFFFF)),
    st.builds(lambda g, e: f"{g | 1:04x}{e:04x}", st.integers(0, 0xFFFF), st.integers(0, 0xFFFF)),
    st.builds(
        lambda g, e: f"{g & 0xFFFE:04X}{e:04X}", st.integers(0, 0xFFFF), st.integers(0, 0xFFFF)
    ),
)


def _values(vr: str | None, depth: int) -> st.SearchStrategy[list[Any]]:
    """A ``Value`` array fitting ``vr``, with empty (null) values now and then."""
    if vr == "SQ":
        if depth <= 0:
            return st.lists(st.just({}), max_size=1)
        return st.lists(_datasets(depth - 1), max_size=2)
    if vr == "PN":
        item: st.SearchStrategy[Any] = st.one_of(_person_name, _text)  # strings: not DICOM, kept
    elif vr in _INTS:
        item = _int if vr != "IS" else st.one_of(_int, _text)
    elif vr in _FLOATS:
        item = st.one_of(_float, _int, _text) if vr == "DS" else st.one_of(_float, _int)
    elif vr in ALL_VRS:
        item = _text
    else:  # no or an unknown VR: anything JSON
        item = st.one_of(_text, _int, _float, _odd)
    return st.lists(st.one_of(item, st.none()), max_size=3)


_ABSENT = object()


def _element(tag: str, depth: int) -> st.SearchStrategy[dict[str, Any]]:
    default = _dictionary_default_vr(tag)
    vrs: list[st.SearchStrategy[Any]] = [
        st.just(_ABSENT),
        st.sampled_from(ALL_VRS),
        st.sampled_from(["US|SS", "OB|OW"]),
    ]
    if default is not None:
        vrs.append(st.just(default))

    def build(vr: Any) -> st.SearchStrategy[dict[str, Any]]:
        head = {} if vr is _ABSENT else {"vr": vr}
        effective = default if vr is _ABSENT else vr
        body = st.one_of(
            st.just({}),
            st.just({"Value": None}),
            _values(effective, depth).map(lambda value: {"Value": value}),
            _text.map(lambda text: {"InlineBinary": text}),
            _text.map(lambda text: {"BulkDataURI": text}),
        )
        return body.map(lambda members: {**head, **members})

    return st.one_of(*vrs).flatmap(build)


@functools.cache
def _datasets(depth: int) -> st.SearchStrategy[dict[str, Any]]:
    def build(tags: list[str]) -> st.SearchStrategy[dict[str, Any]]:
        elements = [_element(tag, depth) for tag in tags]
        return st.tuples(*elements).map(lambda values: dict(zip(tags, values, strict=True)))

    return st.lists(_tags, max_size=6, unique=True).flatmap(build)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_datasets(2))
def test_property_round_trip(dataset: dict[str, Any]) -> None:
    _assert_round_trip(dataset)


# -- 6. errors name the JSON path ------------------------------------------------

NATURALIZE_ERRORS: list[tuple[str, Any, str]] = [
    ("not an object", [], "$"),
    ("short key", {"0010": {"vr": "PN"}}, "0010"),
    ("not hex", {"0010001G": {"vr": "PN"}}, "0010001G"),
    ("a keyword as key", {"PatientName": {"vr": "PN"}}, "PatientName"),
    ("key not a string", {0x00100010: {"vr": "PN"}}, "1048592"),
    ("attribute not an object", {"00100010": "Doe^Jane"}, "00100010"),
    ("vr not a string", {"00100010": {"vr": 5}}, "00100010.vr"),
    ("vr null", {"00100010": {"vr": None}}, "00100010.vr"),
    ("Value not an array", {"00100020": {"vr": "LO", "Value": "x"}}, "00100020.Value"),
    (
        "two value members",
        {"7FE00010": {"vr": "OB", "InlineBinary": "AA==", "BulkDataURI": "x"}},
        "7FE00010",
    ),
    ("unknown member", {"00100020": {"vr": "LO", "Value": ["x"], "extra": 1}}, "00100020"),
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
    ("the same tag twice", {"0020000D": {"vr": "UI"}, "0020000d": {"vr": "UI"}}, "0020000d"),
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
