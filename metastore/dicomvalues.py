"""Attributes of the DICOM JSON model, read liberally (PS3.18 F.2, PS3.5 6.2).

:mod:`metastore.dicom` walks data sets; this module reads one attribute
object (:func:`read_element`: its ``vr``, members and values) and what is in
its ``Value`` array (or in an ``InlineBinary`` on a VR that holds values,
not bytes). One reader per kind of VR takes the array as given and returns
it in the standard form of PS3.18 F.2, counting into a
:class:`~metastore.quirks.Quirks` each deviation it straightened; a fast
check (:func:`conformant`) lets the common, conformant array through
untouched. What cannot be read raises :class:`PathError` with a path
relative to the attribute (``Value[2]``), which the codec completes.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
import struct
from collections.abc import Callable, Mapping
from typing import Any, Final

from pydicom import datadict

from metastore.quirks import IGNORED, Quirk, Quirks


def _vrs(names: str) -> frozenset[str]:
    return frozenset(names.split())


# PS3.5 6.2
VRS: Final = _vrs(
    "AE AS AT CS DA DS DT FD FL IS LO LT OB OD OF OL OV OW PN SH SL SQ SS ST SV TM UC UI UL UN UR US UT UV"
)
BINARY_VRS: Final = _vrs("OB OD OF OL OV OW UN")  # InlineBinary, PS3.18 F.2.7
# VRs whose values PS3.18 10.4.1.1.2 may leave to a BulkDataURI.
BULK_VRS: Final = _vrs("DS FL FD IS LT OB OD OF OL OV OW SL SS ST SV UC UL UN UR US UT UV")
_TEXT_VRS: Final = _vrs("AE AS CS DA DT LO LT SH ST TM UC UI UR UT")
_UNSPLIT_VRS: Final = _vrs("LT ST UT UR")  # single-valued: a backslash is text
_INT_VRS: Final = _vrs("US UL SS SL SV UV")
_FLOAT_VRS: Final = _vrs("FL FD")
_STRUCT: Final = {
    "US": "H",
    "SS": "h",
    "UL": "I",
    "SL": "i",
    "FL": "f",
    "FD": "d",
    "SV": "q",
    "UV": "Q",
}
_PN_GROUPS: Final = ("Alphabetic", "Ideographic", "Phonetic")
_PN_GROUP_SET: Final = frozenset(_PN_GROUPS)

_OLD_DATE: Final = re.compile(r"\s*\d{4}[.\-/]\d{2}[.\-/]\d{2}\s*")
_ABSENT: Final = object()
_AT_VALUE: Final = re.compile(r"[0-9A-F]{8}")
TAG_FORM: Final = re.compile(r"\(?\s*([0-9A-Fa-f]{4})\s*,\s*([0-9A-Fa-f]{4})\s*\)?")
HEX_TAG: Final = re.compile(r"[0-9A-Fa-f]{8}")
COMBINED_VR: Final = re.compile(r"\s*(?:\||/|,|\bor\b)\s*")


class PathError(Exception):
    """Bad input found deep inside a data set; the path grows as it unwinds."""

    def __init__(self, message: str, path: str) -> None:
        super().__init__(message)
        self.message = message
        self.path = path


# -- values, one reader per kind of VR -------------------------------------------
#
# Each reader takes the Value array as given and returns it normalized (a new
# list), counting what it changed; the fast check in front of it lets the
# common, conformant array through untouched.

_Reader = Callable[[list[Any], str, bool, Quirks], list[Any]]


def _split(value: str, vr: str, multi: bool, quirks: Quirks) -> list[str] | None:
    """The pieces of a backslash-joined value where several values are due, else None."""
    if multi and vr not in _UNSPLIT_VRS and "\\" in value:
        quirks.add(Quirk.BACKSLASH_JOINED)
        return value.split("\\")
    return None


def _bad(vr: str, index: int, value: Any, what: str) -> PathError:
    shown = repr(value) if len(repr(value)) <= 40 else type(value).__name__
    return PathError(f"a {vr} value must be {what}, not {shown}", f"Value[{index}]")


def _without_nul(value: str, quirks: Quirks) -> str:
    """A string with its NUL characters removed (padding, or bytes where text is due)."""
    quirks.add(Quirk.NUL_CHARACTER)
    return value.replace("\x00", "")


def _texts(values: list[Any], vr: str, multi: bool, quirks: Quirks) -> list[Any]:
    """AE AS CS DA DT LO LT SH ST TM UC UI UR UT, and DS/IS (strings or numbers)."""
    numeric = vr == "DS" or vr == "IS"
    out: list[Any] = []
    for index, value in enumerate(values):
        kind = type(value)
        if kind is not str:
            if value is None:
                out.append(None)
                continue
            if kind is bool or not isinstance(value, int | float):
                raise _bad(vr, index, value, "a string")
            if numeric:
                out.append(value)  # PS3.18 F.2.3: DS and IS may be numbers
                continue
            if isinstance(value, float) and not math.isfinite(value):
                raise _bad(vr, index, value, "a string")
            quirks.add(Quirk.STRING_AS_NUMBER)
            value = str(value)
        if "\x00" in value and vr != "UI":  # a UI's NUL padding is stripped below
            value = _without_nul(value, quirks)
        if not value:
            quirks.add(Quirk.EMPTY_STRING)
            out.append(None)
            continue
        pieces = _split(value, vr, multi, quirks)
        if pieces is not None:
            out.extend(piece or None for piece in pieces)
            continue
        if vr == "UI" and value[-1] in " \x00":
            quirks.add(Quirk.UID_PADDING)
            value = value.rstrip(" \x00") or None
        elif (
            vr == "DA" and not (len(value) == 8 and value.isdigit()) and _OLD_DATE.fullmatch(value)
        ):
            quirks.add(Quirk.DATE_FORM)  # kept as written; key columns normalize it
        elif vr == "TM" and ":" in value:
            quirks.add(Quirk.TIME_FORM)
        out.append(value)
    return out


def parse_number(text: str) -> int | float | None:
    """A number as written (padded, an exponent, a trailing dot): an int where it is one."""
    text = text.strip()
    try:
        return int(text)  # "512" as the number 512, as a writer sending numbers would
    except ValueError:
        pass
    try:
        number = float(text)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def parse_int(text: str) -> int | None:
    """An integer as written: padded, with a trailing dot or an exponent (``" 12"``, ``"1.2e1"``)."""
    number = parse_number(text)
    if isinstance(number, float):
        return int(number) if number.is_integer() else None
    return number


def _numbers(values: list[Any], vr: str, multi: bool, quirks: Quirks) -> list[Any]:
    """US UL SS SL SV UV FL FD: JSON numbers (SV and UV may be strings, PS3.18 F.2.3)."""
    integral = vr in _INT_VRS
    out: list[Any] = []
    for index, value in enumerate(values):
        kind = type(value)
        if kind is int or value is None:
            out.append(value)
        elif kind is float:
            if integral:
                if not (math.isfinite(value) and value.is_integer()):
                    raise _bad(vr, index, value, "an integer")
                quirks.add(Quirk.WHOLE_FLOAT)
                value = int(value)
            elif not math.isfinite(value):
                raise _bad(vr, index, value, "a finite number")
            out.append(value)
        elif kind is str:
            if not value.strip():
                quirks.add(Quirk.EMPTY_STRING)
                out.append(None)
                continue
            pieces = _split(value, vr, multi, quirks) or [value]
            for piece in pieces:
                if not piece.strip():
                    out.append(None)
                    continue
                parsed = parse_int(piece) if integral else parse_number(piece)
                if parsed is None:
                    raise _bad(vr, index, value, "a number")
                if vr in ("SV", "UV") and len(pieces) == 1 and piece == str(parsed):
                    out.append(piece)  # a conformant string form of a 64-bit value
                    continue
                quirks.add(Quirk.NUMBER_AS_STRING)
                out.append(parsed)
        else:
            raise _bad(vr, index, value, "a number")
    return out


def _at_value(value: Any) -> str | None:
    """An AT value in one of the forms writers use, as eight uppercase hex digits."""
    if type(value) is int:
        return f"{value:08X}" if 0 <= value <= 0xFFFFFFFF else None
    if not isinstance(value, str):
        return None
    text = value.strip()
    if HEX_TAG.fullmatch(text):
        return text.upper()
    form = TAG_FORM.fullmatch(text)
    if form is not None:
        return (form[1] + form[2]).upper()
    tag = datadict.tag_for_keyword(text)
    return None if tag is None else f"{tag:08X}"


def _ats(values: list[Any], vr: str, multi: bool, quirks: Quirks) -> list[Any]:
    """AT: eight uppercase hex digits (PS3.18 F.2.3), from any form a writer uses."""
    out: list[Any] = []
    for index, value in enumerate(values):
        if value is None or (type(value) is str and _AT_VALUE.fullmatch(value)):
            out.append(value)
            continue
        pieces = _split(value, vr, multi, quirks) if type(value) is str else None
        for piece in pieces or [value]:
            tag = _at_value(piece)
            if tag is None:
                raise _bad(vr, index, value, "a tag")
            if tag != piece:
                quirks.add(Quirk.AT_FORM)
            out.append(tag)
    return out


def _pn_from_text(text: str) -> dict[str, str]:
    """``"A=I=P"`` (PS3.5 6.2) as component groups, empty groups left out."""
    return {
        group: part for group, part in zip(_PN_GROUPS, text.split("=", 2), strict=False) if part
    }


def _pns(values: list[Any], vr: str, multi: bool, quirks: Quirks) -> list[Any]:
    """PN: one object of component groups per name (PS3.18 F.2.2)."""
    out: list[Any] = []
    for index, value in enumerate(values):
        if value is None:
            out.append(None)
        elif type(value) is str or isinstance(value, str):
            if "\x00" in value:
                value = _without_nul(value, quirks)
            if not value:
                quirks.add(Quirk.EMPTY_STRING)
                out.append(None)
                continue
            quirks.add(Quirk.PN_STRING)
            for piece in _split(value, vr, multi, quirks) or [value]:
                out.append(_pn_from_text(piece) if piece else None)
        elif isinstance(value, Mapping):
            name: dict[str, Any] = {}
            fixed = False
            for group, text in value.items():
                if group not in _PN_GROUP_SET:
                    proper = next((g for g in _PN_GROUPS if str(group).lower() == g.lower()), None)
                    if proper is None:
                        raise PathError(
                            "a person name has only Alphabetic, Ideographic and Phonetic",
                            f"Value[{index}].{group}",
                        )
                    group, fixed = proper, True
                if text is None:
                    fixed = True
                    continue
                if not isinstance(text, str):
                    raise PathError(
                        "a name component group must be a string", f"Value[{index}].{group}"
                    )
                if "\x00" in text:
                    text = _without_nul(text, quirks)
                name[group] = text
            if fixed:
                quirks.add(Quirk.PN_GROUP)
            out.append(name)
        else:
            raise _bad(vr, index, value, "a person name")
    return out


def _others(values: list[Any], vr: str, multi: bool, quirks: Quirks) -> list[Any]:
    """OB OD OF OL OV OW UN with a Value: kept as given (no reading fits every writer)."""
    return list(values)


READERS: Final[dict[str, _Reader]] = {
    **{vr: _texts for vr in _TEXT_VRS | {"DS", "IS"}},
    **{vr: _numbers for vr in _INT_VRS | _FLOAT_VRS},
    "AT": _ats,
    "PN": _pns,
    **{vr: _others for vr in BINARY_VRS},
}


def _plain_text(v: Any) -> bool:
    return type(v) is str and v != "" and "\\" not in v and "\x00" not in v


def _plain_pn(v: Any) -> bool:
    return (
        type(v) is dict
        and v.keys() <= _PN_GROUP_SET
        and all(type(text) is str and "\x00" not in text for text in v.values())
    )


# Whether one value needs no reading, per VR (the fast path). Sequences and
# binary VRs have no entry: they never take it.
ONE: Final[dict[str, Callable[[Any], bool]]] = {
    **dict.fromkeys(_TEXT_VRS, _plain_text),
    "DA": lambda v: type(v) is str and len(v) == 8 and v.isdigit(),
    "TM": lambda v: _plain_text(v) and ":" not in v,
    "UI": lambda v: type(v) is str and v != "" and v[-1] not in " \x00" and "\\" not in v,
    **dict.fromkeys(_INT_VRS, lambda v: type(v) is int),
    **dict.fromkeys(
        _FLOAT_VRS, lambda v: type(v) is int or (type(v) is float and math.isfinite(v))
    ),
    **dict.fromkeys(("DS", "IS"), lambda v: type(v) is int or type(v) is float or _plain_text(v)),
    "AT": lambda v: type(v) is str and _AT_VALUE.fullmatch(v) is not None,
    "PN": _plain_pn,
}


def conformant(values: list[Any], vr: str) -> bool:
    """Whether a non-empty Value array needs no reading."""
    check = ONE.get(vr)
    if check is None:
        return vr in BINARY_VRS
    return all(map(check, values))


def decode_inline(vr: str, data: Any) -> list[Any]:
    """The values an InlineBinary holds, read in the VR's binary encoding (PS3.5 6.2)."""
    if not isinstance(data, str):
        raise PathError("InlineBinary must be a base64 string", "InlineBinary")
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise PathError("InlineBinary is not base64", "InlineBinary") from None
    if vr in _STRUCT or vr == "AT":
        size = 4 if vr == "AT" else struct.calcsize(_STRUCT[vr])
        if len(raw) % size:
            raise PathError(f"InlineBinary is not a whole number of {vr} values", "InlineBinary")
        if vr == "AT":
            pairs = struct.unpack(f"<{len(raw) // 2}H", raw)
            return [f"{g:04X}{e:04X}" for g, e in zip(pairs[::2], pairs[1::2], strict=False)]
        return list(struct.unpack(f"<{len(raw) // size}{_STRUCT[vr]}", raw))
    if vr == "SQ":
        raise PathError("a sequence cannot be InlineBinary", "InlineBinary")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    text = text.rstrip(" \x00")
    if not text:
        return []
    pieces = [text] if vr in _UNSPLIT_VRS else text.split("\\")
    return [piece or None for piece in pieces]


# -- attribute objects ---------------------------------------------------------------


def _fix_vr(
    raw: Any,
    present: bool,
    default_vr: str | None,
    value: Any,
    dataset: Mapping[Any, Any],
    quirks: Quirks,
) -> str:
    """The VR of an attribute whose ``vr`` member is not a VR as it stands."""
    if isinstance(raw, str) and raw.upper() in VRS:
        quirks.add(Quirk.VR_LOWERCASE)
        return raw.upper()
    if isinstance(raw, str) and raw and COMBINED_VR.search(raw):
        quirks.add(Quirk.VR_COMBINED)
        parts = [part for part in COMBINED_VR.split(raw.upper()) if part in VRS]
        if "US" in parts and "SS" in parts:
            is_signed = signed(dataset)
            if is_signed is not None:
                return "SS" if is_signed else "US"
        if default_vr is not None and (default_vr in parts or not parts):
            return default_vr
        if parts:
            return parts[0]
    elif not present or raw is None:
        quirks.add(Quirk.VR_MISSING)
    elif raw == "":
        quirks.add(Quirk.VR_EMPTY)
    else:
        quirks.add(Quirk.VR_UNKNOWN)
    if default_vr is not None:
        return default_vr
    items = value if isinstance(value, list) else [value]
    if value is not _ABSENT and items and all(isinstance(item, Mapping) for item in items):
        quirks.add(Quirk.VR_INFERRED_SQ)
        return "SQ"
    return "UN"


def read_element(
    element: Mapping[Any, Any],
    default_vr: str | None,
    multi: bool,
    dataset: Mapping[Any, Any],
    quirks: Quirks,
) -> tuple[str, Any]:
    """The standard ``(vr, payload)`` of one attribute object.

    The payload is ``None`` (empty), a binary member as a one-member dict,
    the list of raw sequence items (SQ), or the normalized Value array.
    Errors carry a path relative to the attribute.
    """
    has_value = "Value" in element
    has_inline = "InlineBinary" in element
    has_bulk = "BulkDataURI" in element
    if ("vr" in element) + has_value + has_inline + has_bulk != len(element):
        quirks.add(Quirk.EXTRA_MEMBER)
    raw_vr = element.get("vr")
    if type(raw_vr) is str and raw_vr in VRS:
        vr: str = raw_vr
    else:
        vr = _fix_vr(
            raw_vr, "vr" in element, default_vr, element.get("Value", _ABSENT), dataset, quirks
        )

    if has_value + has_inline + has_bulk > 1:
        quirks.add(Quirk.CONFLICTING_MEMBERS)
        has_value = has_value and vr not in BINARY_VRS
    if has_value:
        value = element["Value"]
        if type(value) is not list:
            if value is None:
                quirks.add(Quirk.NULL_VALUE)
                return vr, None
            if vr == "SQ" and isinstance(value, Mapping):
                quirks.add(Quirk.BARE_ITEM)
            else:
                quirks.add(Quirk.BARE_VALUE)
            value = list(value) if isinstance(value, tuple) else [value]
        if vr == "SQ":
            for index, item in enumerate(value):
                if type(item) is not dict and not isinstance(item, Mapping):
                    raise PathError("a sequence item must be an object", f"Value[{index}]")
            return vr, value
        if not value:
            quirks.add(Quirk.EMPTY_ARRAY)
            return vr, None
        if not conformant(value, vr):
            values = READERS[vr](value, vr, multi, quirks)
        elif vr == "PN":
            values = [dict(name) for name in value]
        else:
            values = list(value)
        if len(values) == 1 and values[0] is None:
            if value[0] is None:
                quirks.add(Quirk.LONE_NULL)
            return vr, None
        return vr, values
    if has_inline:
        data = element["InlineBinary"]
        if vr in BINARY_VRS:
            if not isinstance(data, str):
                raise PathError("InlineBinary must be a base64 string", "InlineBinary")
            return vr, {"InlineBinary": data}
        quirks.add(Quirk.INLINE_BINARY_DECODED)
        decoded = decode_inline(vr, data)
        if not decoded:
            return vr, None
        values = READERS[vr](decoded, vr, multi, IGNORED)
        return vr, values if any(v is not None for v in values) else None
    if has_bulk:
        uri = element["BulkDataURI"]
        if not isinstance(uri, str):
            raise PathError("BulkDataURI must be a string", "BulkDataURI")
        if vr not in BULK_VRS and vr != "SQ":  # Orthanc sends large sequences so
            quirks.add(Quirk.BULKDATA_ON_VALUE_VR)
        return vr, {"BulkDataURI": uri}
    return vr, None


def signed(dataset: Mapping[Any, Any]) -> bool | None:
    """Whether PixelRepresentation (0028,0103) of a data set says signed; None if it has none."""
    element = dataset.get("00280103")
    value = element.get("Value") if isinstance(element, Mapping) else None
    if isinstance(value, list) and value and value[0] in (0, 1, "0", "1"):
        return int(value[0]) == 1
    return None
