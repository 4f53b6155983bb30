"""Deviations real writers produce, applied to real DICOM JSON elements.

Each mutator takes a data set in the standard form (PS3.18 F.2), the member
name of one of its attributes and a random source, and rewrites that
attribute (or its name) the way some writer would, keeping its meaning: the
codec must read the result back to the very same naturalized data set. A
mutator returns False, changing nothing, where its deviation cannot be
applied without changing the meaning (a fraction cannot become a whole
float, a value with a backslash cannot be backslash-joined).

The kinds the codec counts but keeps as written (BulkDataURI on value VRs,
old date and time forms) change the stored metadata by design; they have
their own tests.
"""

from __future__ import annotations

import base64
import gzip
import random
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
from pydicom import datadict

from metastore.dicom import denaturalize, naturalize
from metastore.quirks import KEPT_AS_WRITTEN, Quirk

STATIC_DICOMWEB = Path(__file__).parent.parent / "metastore" / "data" / "static-dicomweb"

Mutator = Callable[[dict[str, Any], str, random.Random], bool]

_TEXT = {"AE", "AS", "CS", "DA", "DT", "LO", "LT", "SH", "ST", "TM", "UC", "UI", "UR", "UT"}
_UNSPLIT = {"LT", "ST", "UT", "UR"}
_INTS = {"US", "UL", "SS", "SL"}
_STRUCT = {"US": "H", "SS": "h", "UL": "I", "SL": "i", "FL": "f", "FD": "d"}
_BINARY = {"OB", "OD", "OF", "OL", "OV", "OW", "UN"}
_GROUPS = ("Alphabetic", "Ideographic", "Phonetic")


def load_series() -> list[list[dict[str, Any]]]:
    """Every series of the bundled static DICOMweb tree, its instances as the files hold them."""
    found = []
    for path in sorted(STATIC_DICOMWEB.rglob("metadata.gz")):
        with gzip.open(path) as stream:
            found.append(orjson.loads(stream.read()))
    return found


def same(a: Any, b: Any) -> bool:
    """Equal as stored: the same JSON text (``1`` is not ``1.0``)."""
    return orjson.dumps(a, option=orjson.OPT_SORT_KEYS) == orjson.dumps(
        b, option=orjson.OPT_SORT_KEYS
    )


def richest(series: list[dict[str, Any]]) -> dict[str, Any]:
    """The instance of a series with the most kinds of VR in it (then the largest)."""

    def richness(instance: dict[str, Any]) -> tuple[int, int]:
        vrs = {e.get("vr") for _, item in datasets(instance) for e in item.values()}
        return len(vrs), len(orjson.dumps(instance))

    return max(series, key=richness)


def standard(dataset: dict[str, Any]) -> dict[str, Any]:
    """The standard form of a real data set (what the mutators start from)."""
    return denaturalize(naturalize(dataset))


def _default_vr(tag: str) -> str:
    number = int(tag, 16)
    if number >> 16 & 1 or not (datadict.dictionary_has_tag(number) or datadict.mask_match(number)):
        return "UN"
    vr = datadict.dictionary_VR(number).split(" or ")[0]
    return "UN" if vr == "NONE" else vr


def _multi(tag: str) -> bool:
    number = int(tag, 16)
    return bool(datadict.dictionary_has_tag(number)) and datadict.dictionary_VM(number) != "1"


def _values(element: dict[str, Any]) -> list[Any] | None:
    value = element.get("Value")
    return value if isinstance(value, list) and value else None


def _empty(element: dict[str, Any]) -> bool:
    return set(element) == {"vr"} and element["vr"] != "SQ"


# -- one mutator per kind -----------------------------------------------------------


def bare_value(ds: dict[str, Any], key: str, rng: random.Random) -> bool:
    element = ds[key]
    values = _values(element)
    if element["vr"] == "SQ" or values is None or len(values) != 1:
        return False
    element["Value"] = values[0]
    return True


def bare_item(ds: dict[str, Any], key: str, rng: random.Random) -> bool:
    element = ds[key]
    values = _values(element)
    if element["vr"] != "SQ" or values is None or len(values) != 1:
        return False
    element["Value"] = values[0]
    return True


def _emptied(replacement: Callable[[], Any]) -> Mutator:
    def mutate(ds: dict[str, Any], key: str, rng: random.Random) -> bool:
        if not _empty(ds[key]):
            return False
        ds[key]["Value"] = replacement()
        return True

    return mutate


null_value = _emptied(lambda: None)
lone_null = _emptied(lambda: [None])
empty_array = _emptied(list)


def empty_string(ds: dict[str, Any], key: str, rng: random.Random) -> bool:
    element = ds[key]
    if element["vr"] not in _TEXT | {"PN", "DS", "IS"}:
        return False
    if _empty(element):
        element["Value"] = [""]
        return True
    values = _values(element)
    if values is None or None not in values:
        return False
    element["Value"] = ["" if value is None else value for value in values]
    return True


def number_as_string(ds: dict[str, Any], key: str, rng: random.Random) -> bool:
    element = ds[key]
    values = _values(element)
    if element["vr"] not in _STRUCT or values is None or None in values:
        return False
    element["Value"] = [repr(value) if isinstance(value, float) else str(value) for value in values]
    return True


def string_as_number(ds: dict[str, Any], key: str, rng: random.Random) -> bool:
    element = ds[key]
    values = _values(element)
    if element["vr"] not in _TEXT or values is None:
        return False
    if not all(
        isinstance(v, str) and v.isdigit() and len(v) < 16 and str(int(v)) == v for v in values
    ):
        return False
    element["Value"] = [int(value) for value in values]
    return True


def whole_float(ds: dict[str, Any], key: str, rng: random.Random) -> bool:
    element = ds[key]
    values = _values(element)
    if element["vr"] not in _INTS or values is None or None in values:
        return False
    if not all(abs(value) < 2**53 for value in values):
        return False
    element["Value"] = [float(value) for value in values]
    return True


def at_form(ds: dict[str, Any], key: str, rng: random.Random) -> bool:
    element = ds[key]
    values = _values(element)
    if element["vr"] != "AT" or values is None or None in values:
        return False
    forms: list[Callable[[str], Any]] = [
        str.lower,
        lambda tag: f"({tag[:4]},{tag[4:]})",
        lambda tag: f"{tag[:4]},{tag[4:]}",
        lambda tag: int(tag, 16),
    ]
    # lowercase only where there is a letter to lower
    element["Value"] = [
        rng.choice([form for form in forms if form(value) != value])(value) for value in values
    ]
    return True


def _vr_replaced(replacement: Callable[[str], str | None]) -> Mutator:
    """The ``vr`` rewritten (None: removed), where the dictionary gives it back."""

    def mutate(ds: dict[str, Any], key: str, rng: random.Random) -> bool:
        element = ds[key]
        if element["vr"] != _default_vr(key.upper()):
            return False
        new = replacement(element["vr"])
        if new is None:
            del element["vr"]
        else:
            element["vr"] = new
        return True

    return mutate


vr_missing = _vr_replaced(lambda vr: None)
vr_empty = _vr_replaced(lambda vr: "")
vr_unknown = _vr_replaced(lambda vr: "XX")
vr_combined = _vr_replaced(lambda vr: f"{vr}|UN")


def vr_lowercase(ds: dict[str, Any], key: str, rng: random.Random) -> bool:
    ds[key]["vr"] = ds[key]["vr"].lower()
    return True


def vr_inferred_sq(ds: dict[str, Any], key: str, rng: random.Random) -> bool:
    element = ds[key]
    if element["vr"] != "SQ" or _default_vr(key.upper()) != "UN" or not _values(element):
        return False
    del element["vr"]
    return True


def _text_bytes(vr: str, values: list[Any]) -> bytes | None:
    """Values as the binary encoding of a text VR (PS3.5 6.2), or None if that loses something."""
    if not all(v is None or isinstance(v, str) for v in values):
        return None
    texts = ["" if v is None else v for v in values]
    if any("\\" in t for t in texts) or (vr in _UNSPLIT and len(texts) > 1):
        return None
    if texts[-1] != texts[-1].rstrip(" \x00") or not texts[-1]:
        return None
    raw = "\\".join(texts).encode()
    return raw + (b"\x00" if vr == "UI" else b" ") * (len(raw) % 2)


def _pn_text(name: Any) -> str | None:
    if not isinstance(name, dict) or not name or any(g not in _GROUPS for g in name):
        return None
    parts = [name.get(group, "") for group in _GROUPS]
    if any(not isinstance(p, str) or "=" in p or "\\" in p for p in parts):
        return None
    if any(group in name and not name[group] for group in _GROUPS):
        return None
    return "=".join(parts).rstrip("=")


def inline_binary(ds: dict[str, Any], key: str, rng: random.Random) -> bool:
    element = ds[key]
    vr = element["vr"]
    values = _values(element)
    if vr in _BINARY or vr == "SQ" or values is None:
        return False
    raw: bytes | None
    if vr in _STRUCT:
        if None in values:
            return False
        raw = struct.pack(f"<{len(values)}{_STRUCT[vr]}", *values)
        unpacked = struct.unpack(f"<{len(values)}{_STRUCT[vr]}", raw)
        if list(map(repr, unpacked)) != list(map(repr, values)):
            return False  # FL loses precision as a float32; 0 comes back as 0.0
    elif vr == "AT":
        if None in values:
            return False
        raw = b"".join(struct.pack("<HH", int(v[:4], 16), int(v[4:], 16)) for v in values)
    elif vr == "PN":
        texts = [_pn_text(name) for name in values]
        if any(text is None for text in texts):
            return False
        raw = _text_bytes("PN", texts)
    else:
        raw = _text_bytes(vr, values)
    if raw is None:
        return False
    element.pop("Value")
    element["InlineBinary"] = base64.b64encode(raw).decode()
    return True


def lowercase_tag(ds: dict[str, Any], key: str, rng: random.Random) -> bool:
    if key.lower() == key:
        return False
    ds[key.lower()] = ds.pop(key)
    return True


def tag_form(ds: dict[str, Any], key: str, rng: random.Random) -> bool:
    ds[f"({key[:4]},{key[4:]})"] = ds.pop(key)
    return True


def duplicate_tag(ds: dict[str, Any], key: str, rng: random.Random) -> bool:
    if key.lower() == key:
        return False
    ds[key.lower()] = orjson.loads(orjson.dumps(ds[key]))
    return True


def pn_string(ds: dict[str, Any], key: str, rng: random.Random) -> bool:
    element = ds[key]
    values = _values(element)
    if element["vr"] != "PN" or values is None:
        return False
    texts = [_pn_text(name) for name in values]
    if any(text is None for text in texts):
        return False
    element["Value"] = texts
    return True


def pn_group(ds: dict[str, Any], key: str, rng: random.Random) -> bool:
    element = ds[key]
    values = _values(element)
    if element["vr"] != "PN" or values is None or not all(isinstance(v, dict) for v in values):
        return False
    mutated = []
    for name in values:
        missing = [g for g in _GROUPS if g not in name]
        if missing and rng.random() < 0.5:
            mutated.append({**name, rng.choice(missing): None})
        else:
            mutated.append({group.lower(): text for group, text in name.items()} or {"x": None})
    if any("x" in name for name in mutated):
        return False
    element["Value"] = mutated
    return True


def backslash_joined(ds: dict[str, Any], key: str, rng: random.Random) -> bool:
    element = ds[key]
    vr = element["vr"]
    values = _values(element)
    if values is None or len(values) < 2 or not _multi(key.upper()) or vr in _UNSPLIT:
        return False
    if vr in _TEXT | {"DS", "IS", "AT"}:
        if not all(isinstance(v, str) and v and "\\" not in v for v in values):
            return False
    elif vr in _INTS:
        if None in values:
            return False
    else:
        return False
    element["Value"] = ["\\".join(str(value) for value in values)]
    return True


def uid_padding(ds: dict[str, Any], key: str, rng: random.Random) -> bool:
    element = ds[key]
    values = _values(element)
    if element["vr"] != "UI" or values is None or None in values:
        return False
    element["Value"] = [value + rng.choice(["\x00", " "]) for value in values]
    return True


_NUL_VRS = frozenset({"AE", "CS", "DA", "DT", "LO", "LT", "SH", "ST", "TM", "UC", "UT"})


def nul_character(ds: dict[str, Any], key: str, rng: random.Random) -> bool:
    """A NUL where bytes leaked into text: as padding or inside the value."""
    element = ds[key]
    values = _values(element)
    if element["vr"] not in _NUL_VRS or not values or not all(isinstance(v, str) for v in values):
        return False
    mutated = []
    for value in values:
        at = rng.randint(0, len(value))
        mutated.append(value[:at] + "\x00" + value[at:])
    element["Value"] = mutated
    return True


def extra_member(ds: dict[str, Any], key: str, rng: random.Random) -> bool:
    ds[key]["keyword"] = "written by a helpful converter"
    return True


def conflicting_members(ds: dict[str, Any], key: str, rng: random.Random) -> bool:
    element = ds[key]
    if element["vr"] in _BINARY and "InlineBinary" in element:
        element["Value"] = ["ignored"]
        return True
    if element["vr"] not in _BINARY and _values(element) is not None:
        element["BulkDataURI"] = "https://archive.invalid/ignored"
        return True
    return False


MUTATORS: dict[Quirk, Mutator] = {
    Quirk.BARE_VALUE: bare_value,
    Quirk.BARE_ITEM: bare_item,
    Quirk.NULL_VALUE: null_value,
    Quirk.LONE_NULL: lone_null,
    Quirk.EMPTY_ARRAY: empty_array,
    Quirk.EMPTY_STRING: empty_string,
    Quirk.NUMBER_AS_STRING: number_as_string,
    Quirk.STRING_AS_NUMBER: string_as_number,
    Quirk.WHOLE_FLOAT: whole_float,
    Quirk.AT_FORM: at_form,
    Quirk.VR_MISSING: vr_missing,
    Quirk.VR_EMPTY: vr_empty,
    Quirk.VR_LOWERCASE: vr_lowercase,
    Quirk.VR_UNKNOWN: vr_unknown,
    Quirk.VR_COMBINED: vr_combined,
    Quirk.VR_INFERRED_SQ: vr_inferred_sq,
    Quirk.INLINE_BINARY_DECODED: inline_binary,
    Quirk.LOWERCASE_TAG: lowercase_tag,
    Quirk.TAG_FORM: tag_form,
    Quirk.DUPLICATE_TAG: duplicate_tag,
    Quirk.PN_STRING: pn_string,
    Quirk.PN_GROUP: pn_group,
    Quirk.BACKSLASH_JOINED: backslash_joined,
    Quirk.UID_PADDING: uid_padding,
    Quirk.NUL_CHARACTER: nul_character,
    Quirk.EXTRA_MEMBER: extra_member,
    Quirk.CONFLICTING_MEMBERS: conflicting_members,
}
"""Every kind that keeps the meaning; the others are :data:`KEPT_AS_WRITTEN`."""
assert set(MUTATORS) | KEPT_AS_WRITTEN == set(Quirk)


# -- walking and applying ----------------------------------------------------------

Location = tuple[Any, ...]  # member names and item indexes down to a data set


def datasets(
    dataset: dict[str, Any], where: Location = ()
) -> Iterator[tuple[Location, dict[str, Any]]]:
    """The data set and every sequence item in it, with where each sits."""
    yield where, dataset
    for key, element in dataset.items():
        if isinstance(element, dict) and element.get("vr") == "SQ":
            for index, item in enumerate(element.get("Value") or []):
                yield from datasets(item, (*where, key, index))


def at(dataset: dict[str, Any], where: Location) -> dict[str, Any]:
    """The data set (or item) at ``where``."""
    current: Any = dataset
    for step in where:
        current = current[step]["Value"] if isinstance(step, str) else current[step]
    return current  # type: ignore[no-any-return]


def targets(dataset: dict[str, Any], kind: Quirk) -> list[tuple[Location, str]]:
    """Every attribute of a standard-form data set the mutator of ``kind`` applies to."""
    found = []
    for where, item in datasets(dataset):
        for key in list(item):
            trial = {key: orjson.loads(orjson.dumps(item[key]))}  # mutators touch ds[key] only
            if MUTATORS[kind](trial, key, random.Random(0)):
                found.append((where, key))
    return found


def mutate_everywhere(
    dataset: dict[str, Any], rng: random.Random, applied: set[Quirk]
) -> dict[str, Any]:
    """A copy with a deviation on every attribute that can take one, adding the kinds to ``applied``.

    Kinds not applied yet go first, so that the rare ones (an AT, a private
    sequence) get their few chances.
    """
    copy: dict[str, Any] = orjson.loads(orjson.dumps(dataset))
    kinds = list(MUTATORS)
    # Items first (deepest first), so that renaming a member never moves an item still to visit.
    for _, item in sorted(datasets(copy), key=lambda pair: -len(pair[0])):
        for key in list(item):
            rng.shuffle(kinds)
            kinds.sort(key=lambda kind: kind in applied)
            for kind in kinds:
                if MUTATORS[kind](item, key, rng):
                    applied.add(kind)
                    break
    return copy


def path_text(where: Location, key: str) -> str:
    """The JSON path the codec names for an attribute at ``where``."""
    parts = []
    for step in where:
        parts.append(f".Value[{step}]" if isinstance(step, int) else f".{step}" if parts else step)
    text = "".join(parts)
    return f"{text}.{key}" if text else key
