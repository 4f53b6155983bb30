"""DICOM files to naturalized metadata, read once and converted directly.

:func:`read_file` reads a file's header with pydicom (``stop_before_pixels``,
large values deferred: never read, only measured) and :func:`naturalize_dataset`
turns the data set into naturalized metadata (:mod:`metastore.dicom`)
without pydicom's DICOM JSON conversion: each element's encoded bytes go
straight to its JSON value. The result is the same as
``naturalize(dataset.to_json_dict(1024, handler, suppress_invalid_tags=True))``
(pydicom's conversion in strict reading mode, which drops an element whose
value does not read), which ``tests/test_dicomfile.py`` checks on every file
pydicom ships and on the bundled data.

The common elements (numbers, dates, UIDs, codes, plain ASCII text, binary
values, sequences of them) are converted here; anything else (other
character sets, ambiguous or unknown VRs, AT, UN, big-endian data) goes
through pydicom's own element conversion, so nothing is guessed.

Binary values over 768 bytes (1,024 in base64) become
``{"BulkDataURI": bulk_uri}``, the file that holds them.
"""

from __future__ import annotations

import base64
import codecs
import logging
import math
import struct
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any, Final

import orjson
import pydicom
from pydicom import config as pydicom_config
from pydicom._dicom_dict import DicomDictionary
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import BaseTag
from pydicom.valuerep import IS, MAX_VALUE_LEN, STR_VR_REGEXES, VALIDATORS
from pydicom.values import convert_PN

from metastore.dicom import naturalize
from metastore.errors import InvalidMetadata
from metastore.quirks import Quirks

__all__ = [
    "BULK_THRESHOLD",
    "NotDicom",
    "FileRead",
    "naturalize_dataset",
    "read_file",
]

log = logging.getLogger(__name__)

#: Binary values longer than this (in bytes: 1,024 in base64) become a BulkDataURI.
BULK_THRESHOLD: Final = (1024 // 4) * 3
#: Values longer than this are not read from the file at all (only bulk data is that long).
_DEFER_SIZE: Final = 4096
_UID_KEYWORDS: Final = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")
#: Media Storage Directory Storage (PS3.10 8.6): a DICOMDIR.
_DIRECTORY: Final = "1.2.840.10008.1.3.10"
_LUT_DESCRIPTORS: Final = frozenset({0x00281101, 0x00281102, 0x00281103, 0x00283002})

_NUMBERS: Final = {
    "US": "H",
    "SS": "h",
    "UL": "L",
    "SL": "l",
    "UV": "Q",
    "SV": "q",
    "FL": "f",
    "FD": "d",
}
_SIZES: Final = {vr: struct.calcsize("<" + code) for vr, code in _NUMBERS.items()}
_BINARY: Final = frozenset({"OB", "OD", "OF", "OL", "OV", "OW"})
_PLAIN: Final = frozenset({"AS", "CS", "DA", "DT", "TM"})
_TEXT: Final = frozenset({"SH", "LO", "UC"})
_SINGLE: Final = frozenset({"ST", "LT", "UT"})
_FLOATS: Final = frozenset({"FL", "FD"})
_CHARSET_VRS: Final = _TEXT | _SINGLE | {"PN"}
_MAX_LENGTH: Final = MAX_VALUE_LEN
_PATTERNS: Final = STR_VR_REGEXES

# The dictionary VR of every public tag with one VR (implicit VR files).
_IMPLICIT_VR: Final[dict[int, str]] = {
    tag: entry[0] for tag, entry in DicomDictionary.items() if " or " not in entry[0]
}


class NotDicom(Exception):
    """The file is not a DICOM composite instance (no DICOM header, or no SOPInstanceUID)."""


class _Drop(Exception):
    """An element whose value does not read: pydicom's strict conversion drops it."""


class FileRead:
    """What reading one file gave: metadata, or why not, and pydicom's complaints."""

    __slots__ = ("meta", "messages", "not_dicom", "error", "quirks")

    def __init__(
        self,
        *,
        meta: dict[str, Any] | None = None,
        messages: list[str] | None = None,
        not_dicom: str | None = None,
        error: str | None = None,
        quirks: dict[str, int] | None = None,
    ) -> None:
        self.meta = meta
        self.messages = messages or []
        self.not_dicom = not_dicom
        self.error = error
        #: What pydicom wrote that ``naturalize`` normalized, a count per kind.
        self.quirks = quirks or {}


class _Capture(logging.Handler):
    """Collects pydicom's log records while one file is read (to name the file)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.WARNING:
            self.messages.append(record.getMessage())


@contextmanager
def _captured() -> Iterator[list[str]]:
    """pydicom's warnings and log lines of one read, collected instead of shown."""
    logger = logging.getLogger("pydicom")
    capture = _Capture()
    propagate = logger.propagate
    logger.addHandler(capture)
    logger.propagate = False
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield capture.messages
        capture.messages.extend(str(w.message) for w in caught)
    finally:
        logger.removeHandler(capture)
        logger.propagate = propagate


def read_file(path: str | Path, url: str) -> FileRead:
    """Read one file into naturalized metadata with ``url`` and ``imageId`` set.

    Never raises for the file's content: a file that is not DICOM (no
    ``DICM`` marker and nothing pydicom can make an instance of) gives
    ``not_dicom``; a DICOM file that cannot be read gives ``error``.
    """
    with _captured() as messages:
        result = _read_file(Path(path), url)
    result.messages = list(dict.fromkeys(messages))
    return result


def _read_file(path: Path, url: str) -> FileRead:
    try:
        dataset = pydicom.dcmread(path, stop_before_pixels=True, force=True, defer_size=_DEFER_SIZE)
        for keyword in _UID_KEYWORDS:
            if not dataset.get(keyword):
                return _not_an_instance(dataset, keyword)
        quirks = Quirks()
        meta = naturalize_dataset(dataset, url.removeprefix("dicomweb:"), quirks)
    except InvalidMetadata as err:
        return FileRead(error=str(err))
    except Exception as err:
        # pydicom fails in any of its layers on damaged input (InvalidDicomError,
        # NotImplementedError for an unknown VR, struct.error, OverflowError...;
        # found by fuzzing): whatever it raises is this file's reason.
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
        return FileRead(error=reason) if _marked(path) else FileRead(not_dicom=reason)
    meta["url"] = url
    meta["imageId"] = url
    return FileRead(meta=meta, quirks=quirks.as_dict() if quirks else None)


def _not_an_instance(dataset: Dataset, keyword: str) -> FileRead:
    """A file without an instance's UIDs: not DICOM, a DICOMDIR, or a broken DICOM file."""
    if getattr(dataset, "preamble", None) is None:
        return FileRead(not_dicom=f"not a DICOM instance: no {keyword}")
    sop_class = dataset.get("file_meta", Dataset()).get("MediaStorageSOPClassUID")
    if sop_class == _DIRECTORY:
        return FileRead(not_dicom="a DICOMDIR (a directory of files), not an instance")
    return FileRead(error=f"a DICOM file without {keyword}")


def _marked(path: Path) -> bool:
    """Whether the file has the DICM marker of a DICOM file (PS3.10 7.1)."""
    try:
        with path.open("rb") as handle:
            return handle.read(132)[128:132] == b"DICM"
    except OSError:
        return False


def naturalize_dataset(
    dataset: Dataset, bulk_uri: str, quirks: Quirks | None = None
) -> dict[str, Any]:
    """The naturalized metadata of a pydicom data set (no file meta, no pixel data).

    What pydicom's values need normalized (as its JSON would) is counted into ``quirks``.
    """
    with pydicom_config.strict_reading():
        document = _dataset_json(dataset, bulk_uri, top=True)
    return naturalize(document, quirks)


# How an element of a tag and VR is converted here: its VR, its converter
# (None: a sequence), and whether its text depends on the character set.
_Plan = tuple[str, Callable[[bytes, str, str], dict[str, Any]] | None, bool]
_PLANS: dict[tuple[int, str | None], _Plan | None] = {}
_UNPLANNED: Final[Any] = object()


def _plan(number: int, explicit_vr: str | None) -> _Plan | None:
    """How to convert elements of this tag and VR here (``None``: only pydicom can)."""
    key = (number, explicit_vr)
    if key in _PLANS:
        return _PLANS[key]
    vr = explicit_vr or _IMPLICIT_VR.get(number)
    plan: _Plan | None = None
    if vr is not None and number not in _LUT_DESCRIPTORS:
        if vr == "SQ":
            plan = (vr, None, False)
        elif vr in _CONVERTERS:
            plan = (vr, _CONVERTERS[vr], vr in _CHARSET_VRS)
    _PLANS[key] = plan
    return plan


def _dataset_json(dataset: Dataset, bulk_uri: str, *, top: bool) -> dict[str, Any]:
    """A data set in the DICOM JSON model; at the top, an element that does not read is left out."""
    out: dict[str, Any] = {}
    text_ok: bool | None = None
    for tag, element in list(dataset._dict.items()):
        number = int(tag)  # BaseTag compares in Python: plain ints look up faster
        try:
            plan = None
            if type(element) is RawDataElement and element.is_little_endian:
                plan = _PLANS.get((number, element.VR), _UNPLANNED)
                if plan is _UNPLANNED:
                    plan = _plan(number, element.VR)
            if plan is not None and isinstance(element, RawDataElement):
                vr, convert, charset = plan
                raw = element.value
                if raw is None:
                    # Deferred (never read): only bulk data is that long.
                    if vr in _BINARY and BULK_THRESHOLD < element.length != 0xFFFFFFFF:
                        out[_KEYS[number]] = {"vr": vr, "BulkDataURI": bulk_uri}
                        continue
                elif convert is None:
                    items = dataset[tag].value
                    value = [_dataset_json(item, bulk_uri, top=False) for item in items]
                    out[_KEYS[number]] = {"vr": vr, "Value": value}
                    continue
                elif not raw:
                    out[_KEYS[number]] = {"vr": vr}
                    continue
                else:
                    if charset and text_ok is None:
                        text_ok = _ascii_compatible(dataset)
                    if not charset or (text_ok and raw.isascii() and b"\x1b" not in raw):
                        out[_KEYS[number]] = convert(raw, vr, bulk_uri)
                        continue
            out[_KEYS[number]] = _slow(dataset, tag, bulk_uri)
        except Exception as err:
            if not top:
                raise
            log.debug("left out %08X: %s", number, err)
    return out


def _slow(dataset: Dataset, tag: BaseTag, bulk_uri: str) -> dict[str, Any]:
    """pydicom's own conversion of one element (as ``to_json_dict`` does it)."""
    element: DataElement = dataset[tag]
    document = element.to_json_dict(lambda _e: bulk_uri, 1024)
    # pydicom's VR enum and str subclasses become plain JSON types.
    result: dict[str, Any] = orjson.loads(orjson.dumps(document))
    return result


class _Keys(dict[int, str]):
    """Tag numbers as DICOM JSON member names (eight uppercase hex digits), made once."""

    def __missing__(self, number: int) -> str:
        key = self[number] = f"{number:08X}"
        return key


_KEYS: Final = _Keys()


def _ascii_compatible(dataset: Dataset) -> bool:
    """Whether pydicom decodes the data set's text with a codec it knows (for ASCII: as ASCII).

    pydicom decodes text with the first character set of the data set (its
    own, or its parent's); an unknown one makes strict reading refuse it.
    """
    encodings = dataset.original_character_set or dataset._character_set
    first = encodings if isinstance(encodings, str) else encodings[0]
    return _known_codec(first)


@lru_cache(maxsize=64)
def _known_codec(name: str) -> bool:
    try:
        codecs.lookup(name)
    except LookupError:
        return False
    return True


def _binary(raw: bytes, vr: str, bulk_uri: str) -> dict[str, Any]:
    if len(raw) > BULK_THRESHOLD:
        return {"vr": vr, "BulkDataURI": bulk_uri}
    return {"vr": vr, "InlineBinary": base64.b64encode(raw).decode("ascii")}


def _element(vr: str, values: list[Any] | None) -> dict[str, Any]:
    """A DICOM JSON attribute (PS3.18 F.2.2): no ``Value`` when there is none."""
    return {"vr": vr, "Value": values} if values else {"vr": vr}


@lru_cache(maxsize=256)
def _struct(vr: str, length: int) -> struct.Struct:
    size = _SIZES[vr]
    if length % size:
        raise _Drop(f"{length} bytes is not a multiple of {size} for {vr}")
    return struct.Struct(f"<{length // size}{_NUMBERS[vr]}")


def _numbers(raw: bytes, vr: str, bulk_uri: str) -> dict[str, Any]:
    values: list[Any] = list(_struct(vr, len(raw)).unpack(raw))
    if vr in _FLOATS and not all(map(math.isfinite, values)):
        # JSON has no NaN or infinity: they travel as null (as orjson writes them).
        values = [v if math.isfinite(v) else None for v in values]
    return {"vr": vr, "Value": values}


def _plain(raw: bytes, vr: str, bulk_uri: str) -> dict[str, Any]:
    text = raw.decode("latin_1").rstrip(" \x00")
    return _element(vr, text.split("\\") if text else None)


def _ae(raw: bytes, vr: str, bulk_uri: str) -> dict[str, Any]:
    values = [s.strip() for s in raw.decode("latin_1").split("\\")]
    return _element(vr, values if len(values) > 1 or values[0] else None)


def _ur(raw: bytes, vr: str, bulk_uri: str) -> dict[str, Any]:
    text = raw.decode("latin_1").rstrip()
    return _element(vr, [text] if text else None)


def _valid(vr: str, value: str) -> bool:
    """pydicom's check of a UI or DS value (length, then its regular expression)."""
    if len(value) > _MAX_LENGTH[vr]:
        return False
    return not value or (_PATTERNS[vr].match(value) is not None and value[-1] != "\n")


def _ui(raw: bytes, vr: str, bulk_uri: str) -> dict[str, Any]:
    text = raw.decode("latin_1").rstrip("\x00 ")
    if not text:
        return {"vr": vr}
    values = text.split("\\")
    for value in values:
        if not _valid("UI", value):
            raise _Drop(f"invalid UI value {value!r}")
    return {"vr": vr, "Value": values}


def _ds(raw: bytes, vr: str, bulk_uri: str) -> dict[str, Any]:
    text = raw.decode("latin_1").strip().rstrip(" \x00")
    if not text:
        return {"vr": vr}
    values = []
    for part in text.split("\\"):
        number = float(part)  # blanks raise, as pydicom's float('') does
        kept = part.strip()
        if not _valid("DS", kept):
            raise _Drop(f"invalid DS value {kept!r}")
        values.append(number if math.isfinite(number) else None)
    return {"vr": vr, "Value": values}


def _is(raw: bytes, vr: str, bulk_uri: str) -> dict[str, Any]:
    text = raw.decode("latin_1").rstrip(" \x00")
    if not text:
        return {"vr": vr}
    return {"vr": vr, "Value": [int(IS(part, pydicom_config.RAISE)) for part in text.split("\\")]}


def _text(raw: bytes, vr: str, bulk_uri: str) -> dict[str, Any]:
    limit = _MAX_LENGTH.get(vr, 0)
    values = []
    for part in raw.decode("ascii").split("\\"):
        if limit and len(part) > limit:
            raise _Drop(f"{vr} value longer than {limit}")
        values.append(part.rstrip("\x00 "))
    return _element(vr, values if len(values) > 1 or values[0] else None)


def _single(raw: bytes, vr: str, bulk_uri: str) -> dict[str, Any]:
    text = raw.decode("ascii")
    limit = _MAX_LENGTH.get(vr, 0) if vr in VALIDATORS else 0
    if limit and len(text) > limit:
        raise _Drop(f"{vr} value longer than {limit}")
    text = text.rstrip("\x00 ")
    return _element(vr, [text] if text else None)


def _pn(raw: bytes, vr: str, bulk_uri: str) -> dict[str, Any]:
    value: Any = convert_PN(raw, None)
    names: list[Any] = list(value) if hasattr(value, "append") else [value]
    if len(names) == 1 and not str(names[0]):
        return {"vr": vr}
    out = []
    for name in names:
        components = name.components
        groups = {"Alphabetic": components[0]}
        if len(components) > 1:
            groups["Ideographic"] = components[1]
        if len(components) > 2:
            groups["Phonetic"] = components[2]
        out.append(groups)
    return {"vr": vr, "Value": out}


_CONVERTERS: Final[dict[str, Callable[[bytes, str, str], dict[str, Any]]]] = {
    **dict.fromkeys(_NUMBERS, _numbers),
    **dict.fromkeys(_PLAIN, _plain),
    **dict.fromkeys(_TEXT, _text),
    **dict.fromkeys(_SINGLE, _single),
    **dict.fromkeys(_BINARY, _binary),
    "AE": _ae,
    "UR": _ur,
    "UI": _ui,
    "DS": _ds,
    "IS": _is,
    "PN": _pn,
}
