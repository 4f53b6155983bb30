"""The DICOM JSON model to and from naturalized metadata.

DICOMweb servers speak the DICOM JSON model (PS3.18 F.2): a data set is an
object whose member names are tags as eight hexadecimal digits, each member an
attribute object with a ``vr`` and at most one of ``Value``, ``InlineBinary``
and ``BulkDataURI`` (PS3.18 F.2.2)::

    {"0020000D": {"vr": "UI", "Value": ["1.2.3"]},
     "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Doe^Jane"}]}}

OHIF (through dcmjs' ``naturalizeDataset``) and the store work on
*naturalized* metadata instead, keyed by DICOM keyword::

    {"StudyInstanceUID": "1.2.3", "PatientName": [{"Alphabetic": "Doe^Jane"}]}

:func:`naturalize` and :func:`denaturalize` convert between the two, and
``denaturalize(naturalize(x)) == x`` holds for every DICOM JSON data set ``x``
(see "Round trip" below for the one normalization).

Naturalized form
----------------

Keys
    The keyword of the tag in pydicom's data dictionary (``pydicom.datadict``).
    A tag without one keeps its member name as given: private tags, unknown
    tags, group lengths other than (0000,0000) and (0002,0000), and repeating
    group tags such as overlays (6000-60FF,eeee) and curves (50xx,eeee), whose
    one keyword could not name every group they repeat in (dcmjs and OHIF read
    overlays as ``instance["60003000"]`` too).

Values (PS3.18 F.2.4: ``Value`` is always an array)
    - no ``Value`` (an empty attribute, PS3.18 F.2.5) becomes ``None``;
    - ``InlineBinary`` / ``BulkDataURI`` (PS3.18 F.2.7 / F.2.6) become the
      one-member objects ``{"InlineBinary": ...}`` / ``{"BulkDataURI": ...}``;
    - a sequence (SQ) becomes a list of naturalized data sets, even with one
      item; every item carries its own bookkeeping keys (below);
    - a person name (PN) stays the list of component-group objects as given,
      even with one value;
    - any other single value becomes the bare value, unless that value is
      ``null``, an object or an array, which keep their one-element list so
      that they cannot be mistaken for an empty or a binary attribute; several
      values, or none (``"Value": []``), stay a list.

    Values are never re-typed: DS and IS sent as JSON numbers stay numbers and
    sent as strings stay strings (PS3.18 F.2.3 allows both), and a
    multi-valued string sent as one backslash-joined value stays that one
    string.

Bookkeeping keys
    Keys starting with ``_`` (no keyword or tag does) are not attributes;
    :data:`RESERVED_KEYS` lists them. Each is present only when needed, so the
    common data set carries none.

    ``_vrMap`` (:data:`VR_MAP_KEY`, as in dcmjs) maps a naturalized key to
    the ``vr`` its attribute had, for every attribute whose ``vr`` differs
    from the tag's *default VR*; ``None`` records an attribute that had no
    ``vr`` member at all. The default VR of a tag is the dictionary's VR, or
    its first alternative where PS3.6 allows several ("US or SS" is "US",
    "OB or OW" is "OB"), so a dictionary-conforming attribute needs no
    entry, an "SS" attribute of a "US or SS" tag gets ``"SS"`` and a combined
    ``"US|SS"`` is kept verbatim. Private and unknown tags have no default
    VR, so each one that has a ``vr`` is recorded, and one that has none is
    not. A sequence item keeps its own ``_vrMap``.

    ``_nullValue`` (:data:`NULL_VALUE_KEY`) lists the naturalized keys whose
    attribute was ``"Value": null`` rather than had no ``Value``: both
    naturalize to ``None``, and only the rarer form is recorded.

Round trip
----------

:func:`denaturalize` reads the bookkeeping keys back, so the round trip gives
back exactly the input, ``vr`` and all; the order of members is kept too. The
one normalization: PS3.18 F.2.2 spells tags in uppercase, and a lowercase
spelling of a tag that has a keyword is accepted but comes back uppercase
(lowercase private and unknown tags come back as given).

The shape of a value (is this a sequence? a person name?) follows the
attribute's ``vr``, or the default VR where it has none, the same way in both
directions.

Errors
------

Input that is not DICOM JSON raises :class:`~metastore.errors.InvalidMetadata`
whose ``path`` names the place as a JSON path such as
``"0040A730.Value[2].0040A043"`` (for naturalized input:
``"ContentSequence[2].ConceptNameCodeSequence"``); ``"$"`` is the data set
itself.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any, Final

from pydicom import datadict

from metastore.errors import InvalidMetadata

__all__ = [
    "NULL_VALUE_KEY",
    "RESERVED_KEYS",
    "VR_MAP_KEY",
    "denaturalize",
    "keyword_for_tag",
    "known_tags",
    "naturalize",
    "person_name_text",
    "tag_for_keyword",
    "tag_info",
]

VR_MAP_KEY: Final = "_vrMap"
"""Naturalized key of the per-data-set map of VRs that differ from the default."""

NULL_VALUE_KEY: Final = "_nullValue"
"""Naturalized key of the per-data-set list of attributes sent as ``"Value": null``."""

RESERVED_KEYS: Final = frozenset({VR_MAP_KEY, NULL_VALUE_KEY})
"""Bookkeeping keys of a naturalized data set, which are not attributes."""

_HEX_TAG: Final = re.compile(r"[0-9A-Fa-f]{8}")
_BARE_TYPES: Final = frozenset({str, int, float})

# (naturalized key, default VR) of a tag
_TagInfo = tuple[str, str | None]


def _default_vr(dictionary_vr: str) -> str:
    """The VR an attribute of a tag has unless its ``vr`` says otherwise.

    PS3.6 gives some tags alternatives ("US or SS", "OB or OW",
    "US or SS or OW"); the first is the default.
    """
    return dictionary_vr.split(" or ", 1)[0]


# Built once at import, so that a lookup on the hot path is one dict access.
# pydicom's keyword_dict is one-to-one (a keyword names one tag), so
# denaturalize finds the same tag again. Repeating-group tags are not in it.
_BY_TAG: Final[dict[str, _TagInfo]] = {
    f"{tag:08X}": (keyword, _default_vr(datadict.dictionary_VR(tag)))
    for keyword, tag in datadict.keyword_dict.items()
    if keyword
}
_BY_KEYWORD: Final[dict[str, _TagInfo]] = {
    keyword: (f"{tag:08X}", _default_vr(datadict.dictionary_VR(tag)))
    for keyword, tag in datadict.keyword_dict.items()
    if keyword
}


@lru_cache(maxsize=16384)
def _tag_info(key: object) -> _TagInfo | None:
    """The naturalized key and default VR of a member name outside ``_BY_TAG``.

    That is a private, unknown or repeating-group tag, or a lowercase
    spelling; ``None`` if ``key`` is not eight hexadecimal digits. Cached, as
    the same private tags recur in every instance of a series.
    """
    if not isinstance(key, str) or not _HEX_TAG.fullmatch(key):
        return None
    upper = key.upper()
    known = _BY_TAG.get(upper)
    if known is not None:
        return known
    tag = int(upper, 16)
    # Private tags have odd group numbers (PS3.5 7.8.1): no dictionary VR.
    if tag >> 16 & 1:
        return (key, None)
    # A dictionary tag without a keyword, or a repeating-group tag (PS3.5
    # 7.6, e.g. overlays 60xx) whose keyword names no single tag.
    if datadict.dictionary_has_tag(tag) or datadict.mask_match(tag):
        return (key, _default_vr(datadict.dictionary_VR(tag)))
    return (key, None)


def tag_info(tag: str) -> tuple[str, str | None] | None:
    """The naturalized key and default VR of a member name (``None`` if it is not a tag)."""
    return _BY_TAG.get(tag) or _tag_info(tag)


def known_tags() -> dict[int, tuple[str, str | None]]:
    """The naturalized key and default VR of every tag with a keyword, by tag number."""
    return {int(tag, 16): info for tag, info in _BY_TAG.items()}


def keyword_for_tag(tag: str) -> str | None:
    """The keyword :func:`naturalize` uses for ``tag`` (eight hex digits, any case).

    ``None`` when the tag keeps its hexadecimal key (no keyword, or not a tag).
    """
    info = _BY_TAG.get(tag) or _tag_info(tag)
    if info is None or info[0] not in _BY_KEYWORD:
        return None
    return info[0]


def tag_for_keyword(keyword: str) -> str | None:
    """The tag of a DICOM keyword as eight uppercase hexadecimal digits, or ``None``."""
    info = _BY_KEYWORD.get(keyword)
    return None if info is None else info[0]


def person_name_text(value: Any) -> str | None:
    """The alphabetic text of the first name in a naturalized PN value.

    ``value`` is what :func:`naturalize` gives for a PN attribute, a list of
    ``{"Alphabetic": ..., "Ideographic": ..., "Phonetic": ...}`` objects, or
    one such object, or a plain string. A string in the PS3.5 6.2 form
    ``alphabetic=ideographic=phonetic`` gives its alphabetic component group.
    ``None`` when there is no (non-empty) alphabetic name.
    """
    if isinstance(value, list):
        if not value:
            return None
        value = value[0]
    if isinstance(value, Mapping):
        value = value.get("Alphabetic")
    if isinstance(value, str):
        text = value.split("=", 1)[0]
        return text or None
    return None


class _PathError(Exception):
    """Bad input found deep inside a data set; the path grows as it unwinds."""

    def __init__(self, message: str, path: str) -> None:
        super().__init__(message)
        self.message = message
        self.path = path


def naturalize(dataset: Mapping[str, Any]) -> dict[str, Any]:
    """Naturalize one DICOM JSON data set (PS3.18 F.2), as dcmjs does.

    See the module documentation for the form. Raises
    :class:`~metastore.errors.InvalidMetadata` naming the JSON path of the
    first problem: a data set, attribute or sequence item that is not an
    object, a member name that is not a tag, a ``vr`` that is not a string, a
    ``Value`` that is not an array, or an attribute with members other than
    ``vr`` and one of ``Value``, ``InlineBinary`` and ``BulkDataURI``.
    """
    if not isinstance(dataset, Mapping):
        raise InvalidMetadata("a DICOM JSON data set must be an object", path="$")
    try:
        return _naturalize(dataset)
    except _PathError as exc:
        raise InvalidMetadata(exc.message, path=exc.path) from None


def _naturalize(dataset: Mapping[Any, Any]) -> dict[str, Any]:
    """Naturalize a data set known to be a mapping; errors carry a relative path."""
    out: dict[str, Any] = {}
    vr_map: dict[str, str | None] = {}
    nulls: list[str] = []
    for key, element in dataset.items():
        info = _BY_TAG.get(key) or _tag_info(key)
        if info is None:
            raise _PathError("a member name must be a tag of eight hexadecimal digits", str(key))
        name, default_vr = info
        if type(element) is not dict and not isinstance(element, Mapping):
            raise _PathError("an attribute must be an object", key)

        # Count the members we understand; any left over are unknown.
        left = len(element)
        vr = element.get("vr")
        if vr is None:
            if "vr" in element:
                raise _PathError("vr must be a string", f"{key}.vr")
            effective_vr = default_vr
            if default_vr is not None:
                vr_map[name] = None
        elif type(vr) is str:
            left -= 1
            effective_vr = vr
            if vr != default_vr:
                vr_map[name] = vr
        else:
            raise _PathError("vr must be a string", f"{key}.vr")

        if "Value" in element:
            left -= 1
            value = element["Value"]
            if type(value) is not list:
                if value is not None:
                    raise _PathError("Value must be an array", f"{key}.Value")
                nulls.append(name)
                result: Any = None
            elif effective_vr == "SQ":
                result = []
                for index, item in enumerate(value):
                    if type(item) is not dict and not isinstance(item, Mapping):
                        raise _PathError(
                            "a sequence item must be an object", f"{key}.Value[{index}]"
                        )
                    try:
                        result.append(_naturalize(item))
                    except _PathError as exc:
                        exc.path = f"{key}.Value[{index}].{exc.path}"
                        raise
            elif effective_vr == "PN":
                # PS3.18 F.2.2: one object of component groups per name; kept
                # as a list so that every name stays in one shape.
                result = [dict(v) if type(v) is dict else v for v in value]
            elif len(value) == 1:
                result = value[0]
                # A lone null, object or array keeps its list: bare, it would
                # read back as an empty or binary attribute (PS3.18 F.2.5).
                if type(result) not in _BARE_TYPES and (
                    result is None or isinstance(result, (list, tuple, Mapping))
                ):
                    result = [result]
            else:
                result = list(value)
        elif "InlineBinary" in element:
            left -= 1
            result = {"InlineBinary": element["InlineBinary"]}
        elif "BulkDataURI" in element:
            left -= 1
            result = {"BulkDataURI": element["BulkDataURI"]}
        else:
            result = None
        if left:
            raise _PathError(
                "an attribute has only vr and one of Value, InlineBinary, BulkDataURI", key
            )
        out[name] = result

    if len(out) != len(dataset):
        _raise_duplicate(dataset)
    if vr_map:
        out[VR_MAP_KEY] = vr_map
    if nulls:
        out[NULL_VALUE_KEY] = nulls
    return out


def _raise_duplicate(dataset: Mapping[Any, Any]) -> None:
    """Name the tag spelled twice (in two cases) in ``dataset``."""
    seen: set[str] = set()
    for key in dataset:
        upper = str(key).upper()
        if upper in seen:
            raise _PathError("the same tag appears twice", str(key))
        seen.add(upper)
    raise AssertionError("no duplicate tag found")  # pragma: no cover


def denaturalize(dataset: Mapping[str, Any]) -> dict[str, Any]:
    """Turn a naturalized data set back into the DICOM JSON model (PS3.18 F.2).

    The inverse of :func:`naturalize`, also for metadata built by hand: an
    attribute without a ``_vrMap`` entry gets its tag's default VR, a bare
    string as a PN becomes ``[{"Alphabetic": string}]`` and a single object
    as a sequence becomes its one item. Raises
    :class:`~metastore.errors.InvalidMetadata` naming the JSON path when a
    key is neither a keyword nor eight hexadecimal digits, two keys name the
    same tag, a sequence item is not an object, or a bookkeeping key is
    malformed.
    """
    if not isinstance(dataset, Mapping):
        raise InvalidMetadata("a naturalized data set must be an object", path="$")
    try:
        return _denaturalize(dataset)
    except _PathError as exc:
        raise InvalidMetadata(exc.message, path=exc.path) from None


def _denaturalize(dataset: Mapping[Any, Any]) -> dict[str, Any]:
    """Denaturalize a data set known to be a mapping; errors carry a relative path."""
    vr_map = dataset.get(VR_MAP_KEY)
    if vr_map is not None and not isinstance(vr_map, Mapping):
        raise _PathError(f"{VR_MAP_KEY} must be an object", VR_MAP_KEY)
    nulls = dataset.get(NULL_VALUE_KEY)
    if nulls is not None and not isinstance(nulls, list):
        raise _PathError(f"{NULL_VALUE_KEY} must be an array", NULL_VALUE_KEY)

    out: dict[str, Any] = {}
    reserved = 0
    for name, value in dataset.items():
        info = _BY_KEYWORD.get(name)
        if info is not None:
            tag, default_vr = info
        elif name in RESERVED_KEYS:
            reserved += 1
            continue
        else:
            hex_info = _tag_info(name)
            if hex_info is None:
                raise _PathError(
                    "a key must be a DICOM keyword or eight hexadecimal digits", str(name)
                )
            tag, default_vr = name, hex_info[1]

        element: dict[str, Any] = {}
        if vr_map and name in vr_map:
            vr = vr_map[name]
            if vr is not None and type(vr) is not str:
                raise _PathError("a VR must be a string or null", f"{VR_MAP_KEY}.{name}")
        else:
            vr = default_vr
        if vr is None:
            effective_vr = default_vr
        else:
            element["vr"] = vr
            effective_vr = vr

        if value is None:
            if nulls and name in nulls:
                element["Value"] = None
        elif (
            type(value) is dict
            and len(value) == 1
            and ("InlineBinary" in value or "BulkDataURI" in value)
        ):
            element.update(value)
        elif effective_vr == "SQ":
            items = value if isinstance(value, (list, tuple)) else [value]
            sequence = []
            for index, item in enumerate(items):
                if not isinstance(item, Mapping):
                    raise _PathError("a sequence item must be an object", f"{name}[{index}]")
                try:
                    sequence.append(_denaturalize(item))
                except _PathError as exc:
                    exc.path = f"{name}[{index}].{exc.path}"
                    raise
            element["Value"] = sequence
        elif isinstance(value, (list, tuple)):
            if effective_vr == "PN":
                element["Value"] = [dict(v) if type(v) is dict else v for v in value]
            else:
                element["Value"] = list(value)
        elif effective_vr == "PN":
            if isinstance(value, str):
                element["Value"] = [{"Alphabetic": value}]
            else:
                element["Value"] = [dict(value) if isinstance(value, Mapping) else value]
        else:
            element["Value"] = [value]
        out[tag] = element

    if len(out) != len(dataset) - reserved:
        _raise_same_tag(dataset)
    return out


def _raise_same_tag(dataset: Mapping[Any, Any]) -> None:
    """Name the key of ``dataset`` whose tag an earlier key already named."""
    seen: set[str] = set()
    for name in dataset:
        if name in RESERVED_KEYS:
            continue
        info = _BY_KEYWORD.get(name)
        tag = info[0] if info is not None else str(name)
        if tag in seen:
            raise _PathError("two keys name the same tag", str(name))
        seen.add(tag)
    raise AssertionError("no duplicate tag found")  # pragma: no cover
