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

:func:`naturalize` and :func:`denaturalize` convert between the two. Liberal
in what they read, strict in what they write: :func:`naturalize` accepts the
deviations real writers produce, normalizes them and counts each kind into a
:class:`~metastore.quirks.Quirks` (see "Deviations" below);
:func:`denaturalize` always writes the standard form; and a conformant data
set round-trips exactly: ``denaturalize(naturalize(x)) == x``.

Naturalized form
----------------

Keys
    The keyword of the tag in pydicom's data dictionary (``pydicom.datadict``).
    A tag without one keeps its member name, in uppercase: private tags,
    unknown tags, group lengths other than (0000,0000) and (0002,0000), and
    repeating group tags such as overlays (6000-60FF,eeee) and curves
    (50xx,eeee), whose one keyword could not name every group they repeat in
    (dcmjs and OHIF read overlays as ``instance["60003000"]`` too).

Values (PS3.18 F.2.4: ``Value`` is always an array)
    - an empty attribute (no ``Value``, PS3.18 F.2.5) becomes ``None``;
    - ``InlineBinary`` / ``BulkDataURI`` (PS3.18 F.2.7 / F.2.6) become the
      one-member objects ``{"InlineBinary": ...}`` / ``{"BulkDataURI": ...}``;
    - a sequence (SQ) becomes a list of naturalized data sets, even with one
      item (``[]`` for a sequence without items);
    - a person name (PN) stays the list of component-group objects, even with
      one value;
    - any other single value becomes the bare value (an attribute of VR UN
      whose one value is an object or an array keeps its list, which could
      otherwise read back as binary); several values stay a list, an empty
      value inside it being ``None`` (PS3.18 F.2.5).

    DS and IS keep the form they came in: PS3.18 F.2.3 allows a JSON number
    or a string (CP 1861), so ``"2.50"`` stays ``"2.50"`` and ``2.5`` stays
    ``2.5``; SV and UV alike.

Bookkeeping key
    ``_vrMap`` (:data:`VR_MAP_KEY`, as in dcmjs) maps a naturalized key to
    the ``vr`` its attribute had, for every attribute whose ``vr`` differs
    from the tag's *default VR*: the dictionary's VR, or its first
    alternative where PS3.6 allows several ("US or SS" is "US", "OB or OW" is
    "OB"), or ``UN`` for a tag the dictionary does not know (private tags).
    A sequence item keeps its own ``_vrMap``; the common data set carries
    none. ``_nullValue`` (:data:`NULL_VALUE_KEY`), which earlier versions
    wrote for ``"Value": null``, is still understood and written as an empty
    attribute. Keys starting with ``_`` (no keyword or tag does) are not
    attributes; :data:`RESERVED_KEYS` lists them.

Deviations
----------

What :func:`naturalize` reads and how it normalizes it, each kind counted as
the :class:`~metastore.quirks.Quirk` named:

- a bare value where the ``Value`` array is due, for any VR
  (``BARE_VALUE``), a sequence item as an object (``BARE_ITEM``);
- ``"Value": null`` (``NULL_VALUE``), ``[null]`` (``LONE_NULL``), ``[]``
  outside a sequence (``EMPTY_ARRAY``): an empty attribute; ``""`` as a value
  (``EMPTY_STRING``): an empty value (``null``);
- US/UL/SS/SL/FL/FD values as strings (``NUMBER_AS_STRING``), whole floats
  for integer VRs (``WHOLE_FLOAT``), numbers where a string VR other than
  DS/IS is due (``STRING_AS_NUMBER``);
- AT as ``"0062000b"``, ``"(0062,000B)"``, ``"0062,000B"``, an integer or
  a keyword (``AT_FORM``): eight uppercase hex digits;
- a ``vr`` missing, empty, unknown (``VR_MISSING``, ``VR_EMPTY``,
  ``VR_UNKNOWN``): the default VR, or for a tag the dictionary does not
  know, ``SQ`` when its Value is items (``VR_INFERRED_SQ``) else ``UN``;
  lowercase (``VR_LOWERCASE``: a ``"sq"`` is a sequence whose items are
  read); combined such as ``US|SS`` or ``OB|OW`` (``VR_COMBINED``): US or
  SS as PixelRepresentation (0028,0103) says where the data set has it,
  else the dictionary's VR where listed, else the first listed;
- ``InlineBinary`` on a VR that PS3.18 F.2.7 keeps out of it
  (``INLINE_BINARY_DECODED``): decoded into ``Value`` as the VR's binary
  encoding (PS3.5 6.2, little endian); ``BulkDataURI`` on a VR whose values
  PS3.18 10.4.1.1.2 always sends inline (``BULKDATA_ON_VALUE_VR``): kept, as
  the value can only be had from there;
- member names in lowercase (``LOWERCASE_TAG``) or as ``"(0010,0010)"``
  (``TAG_FORM``); the same tag twice with equal content (``DUPLICATE_TAG``);
- PN as a plain string, ``"A^B=I^J=P^Q"`` giving its three component groups
  (``PN_STRING``), or as an object with lowercase or null groups
  (``PN_GROUP``); objects with some groups only are the standard form;
- ``"A\\\\B"`` as one value where the attribute takes several values (its
  dictionary VM is not 1, and its VR is not one of LT, ST, UT, UR, where a
  backslash is text): split (``BACKSLASH_JOINED``);
- UIDs with trailing spaces or NULs (``UID_PADDING``); members other than
  ``vr``, ``Value``, ``InlineBinary``, ``BulkDataURI`` (``EXTRA_MEMBER``,
  dropped); ``Value`` beside a binary member (``CONFLICTING_MEMBERS``: the
  binary one is kept for a binary VR, ``Value`` otherwise).

Errors
------

What cannot be read raises :class:`~metastore.errors.InvalidMetadata` whose
``path`` names the place as a JSON path such as
``"0040A730.Value[2].0040A043"`` (for naturalized input:
``"ContentSequence[2].ConceptNameCodeSequence"``); ``"$"`` is the data set
itself: a data set, attribute or sequence item that is not an object, a
member name that is not a tag, a value that does not fit its VR (an object
as a CS, text that is no number as a US, a bad AT), an ``InlineBinary`` that
is not base64 of the VR's encoding, and the same tag twice with different
content.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any, Final

from pydicom import datadict

from metastore.dicomvalues import (
    BINARY_VRS,
    HEX_TAG,
    ONE,
    TAG_FORM,
    VRS,
    PathError,
    read_element,
)
from metastore.errors import InvalidMetadata
from metastore.quirks import IGNORED, Quirk, Quirks

__all__ = [
    "NULL_VALUE_KEY",
    "RESERVED_KEYS",
    "VR_MAP_KEY",
    "denaturalize",
    "keyword_for_tag",
    "naturalize",
    "person_name_text",
    "tag_for_keyword",
]

VR_MAP_KEY: Final = "_vrMap"
"""Naturalized key of the per-data-set map of VRs that differ from the default."""

NULL_VALUE_KEY: Final = "_nullValue"
"""Naturalized key earlier versions wrote for ``"Value": null``; read, never written."""

RESERVED_KEYS: Final = frozenset({VR_MAP_KEY, NULL_VALUE_KEY})
"""Bookkeeping keys of a naturalized data set, which are not attributes."""

_BARE_TYPES: Final = frozenset({str, int, float})

# (naturalized key, default VR or None, takes several values?) of a tag
_TagInfo = tuple[str, str | None, bool]


def _default_vr(dictionary_vr: str) -> str | None:
    """The VR an attribute of a tag has unless its ``vr`` says otherwise.

    PS3.6 gives some tags alternatives ("US or SS", "OB or OW",
    "US or SS or OW"); the first is the default. Item delimiters have none.
    """
    first = dictionary_vr.split(" or ", 1)[0]
    return first if first in VRS else None


def _info(keyword: str, tag: int) -> _TagInfo:
    return (keyword, _default_vr(datadict.dictionary_VR(tag)), datadict.dictionary_VM(tag) != "1")


# Built once at import, so that a lookup on the hot path is one dict access.
# pydicom's keyword_dict is one-to-one (a keyword names one tag), so
# denaturalize finds the same tag again. Repeating-group tags are not in it.
_BY_TAG: Final[dict[str, _TagInfo]] = {
    f"{tag:08X}": _info(keyword, tag) for keyword, tag in datadict.keyword_dict.items() if keyword
}
_BY_KEYWORD: Final[dict[str, tuple[str, str | None, bool]]] = {
    keyword: (f"{tag:08X}", *_info(keyword, tag)[1:])
    for keyword, tag in datadict.keyword_dict.items()
    if keyword
}


@lru_cache(maxsize=16384)
def _tag_info(key: object) -> tuple[_TagInfo, Quirk | None, str] | None:
    """The info of a member name outside ``_BY_TAG``, and the quirk of its spelling.

    That is a private, unknown or repeating-group tag, or one spelled in
    lowercase or as ``(gggg,eeee)``; ``None`` if ``key`` is no tag. Cached,
    as the same private tags recur in every instance of a series.
    """
    if not isinstance(key, str):
        return None
    quirk: Quirk | None = None
    if HEX_TAG.fullmatch(key):
        upper = key.upper()
        if upper != key:
            quirk = Quirk.LOWERCASE_TAG
    else:
        form = TAG_FORM.fullmatch(key)
        if form is None:
            return None
        upper = (form[1] + form[2]).upper()
        quirk = Quirk.TAG_FORM
    known = _BY_TAG.get(upper)
    if known is not None:
        return known, quirk, upper
    tag = int(upper, 16)
    # Private tags have odd group numbers (PS3.5 7.8.1): no dictionary VR.
    # A dictionary tag without a keyword, or a repeating-group tag (PS3.5
    # 7.6, e.g. overlays 60xx) whose keyword names no single tag, has one.
    if not tag >> 16 & 1 and (datadict.dictionary_has_tag(tag) or datadict.mask_match(tag)):
        return _info(upper, tag), quirk, upper
    return (upper, None, False), quirk, upper


def keyword_for_tag(tag: str) -> str | None:
    """The keyword :func:`naturalize` uses for ``tag`` (eight hex digits, any case).

    ``None`` when the tag keeps its hexadecimal key (no keyword, or not a tag).
    """
    info = _BY_TAG.get(tag)
    if info is None:
        found = _tag_info(tag)
        if found is None:
            return None
        info = found[0]
    return info[0] if info[0] in _BY_KEYWORD else None


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


# -- attributes ------------------------------------------------------------------


# -- naturalize -----------------------------------------------------------------------


def naturalize(dataset: Mapping[str, Any], quirks: Quirks | None = None) -> dict[str, Any]:
    """Naturalize one DICOM JSON data set (PS3.18 F.2), as dcmjs does.

    See the module documentation for the form and the deviations read; each
    normalization is counted into ``quirks`` when given. Raises
    :class:`~metastore.errors.InvalidMetadata` naming the JSON path of what
    cannot be read.
    """
    if not isinstance(dataset, Mapping):
        raise InvalidMetadata("a DICOM JSON data set must be an object", path="$")
    try:
        return _naturalize(dataset, IGNORED if quirks is None else quirks)
    except PathError as exc:
        raise InvalidMetadata(exc.message, path=exc.path) from None


_SLOW: Final = object()


def _fast_value(element: dict[str, Any], vr: str, size: int) -> Any:
    """The naturalized value of an attribute in the standard form, else ``_SLOW``."""
    if size == 2:
        check = ONE.get(vr)
        if check is not None:
            value = element.get("Value")
            if type(value) is list and value:
                if len(value) == 1:
                    one = value[0]
                    if check(one):
                        return [dict(one)] if vr == "PN" else one
                elif all(map(check, value)):
                    return [dict(v) for v in value] if vr == "PN" else list(value)
        elif vr in BINARY_VRS:
            member = "InlineBinary" if "InlineBinary" in element else "BulkDataURI"
            data = element.get(member)
            if type(data) is str:
                return {member: data}
    elif size == 1 and vr in VRS:
        return None
    return _SLOW


def _naturalize(dataset: Mapping[Any, Any], quirks: Quirks) -> dict[str, Any]:
    """Naturalize a data set known to be a mapping; errors carry a relative path."""
    out: dict[str, Any] = {}
    vr_map: dict[str, str] = {}
    for key, element in dataset.items():
        info = _BY_TAG.get(key)
        if info is None:
            found = _tag_info(key)
            if found is None:
                raise PathError("a member name must be a tag of eight hexadecimal digits", str(key))
            info, spelling, _ = found
            if spelling is not None:
                quirks.add(spelling)
        name, default_vr, multi = info
        # The fast paths: attributes as PS3.18 F.2 writes them, or without the
        # vr dcmjs leaves out (the default VR then; a sequence is read slowly).
        if type(element) is dict and name not in out:
            vr = element.get("vr")
            size = len(element)
            missing = vr is None and "vr" not in element
            if missing and (default_vr is not None or "Value" not in element):
                vr, size = default_vr or "UN", size + 1
            if type(vr) is str:
                fast = _fast_value(element, vr, size)
                if fast is not _SLOW:
                    out[name] = fast
                    if vr != (default_vr or "UN"):
                        vr_map[name] = vr
                    if missing:
                        quirks.add(Quirk.VR_MISSING)
                    continue
        if type(element) is not dict and not isinstance(element, Mapping):
            raise PathError("an attribute must be an object", key)
        try:
            vr, payload = read_element(element, default_vr, multi, dataset, quirks)
        except PathError as exc:
            exc.path = f"{key}.{exc.path}"
            raise
        if vr == "SQ" and type(payload) is list:  # not a BulkDataURI (Orthanc's large sequences)
            result: Any = []
            for index, item in enumerate(payload):
                try:
                    result.append(_naturalize(item, quirks))
                except PathError as exc:
                    exc.path = f"{key}.Value[{index}].{exc.path}"
                    raise
        elif type(payload) is list:
            if vr == "PN" or len(payload) != 1:
                result = payload
            else:
                result = payload[0]
                # A lone object or array (UN only) keeps its list: bare, it
                # would read back as binary or as several values.
                if type(result) not in _BARE_TYPES and isinstance(result, list | tuple | Mapping):
                    result = payload
        else:
            result = payload
        if name in out:
            if out[name] != result or vr_map.get(name, default_vr or "UN") != vr:
                raise PathError("the same tag appears twice with different content", str(key))
            quirks.add(Quirk.DUPLICATE_TAG)
            continue
        out[name] = result
        if vr != (default_vr or "UN"):
            vr_map[name] = vr
    if vr_map:
        out[VR_MAP_KEY] = vr_map
    return out


# -- denaturalize ---------------------------------------------------------------------


def denaturalize(
    dataset: Mapping[str, Any], shared: dict[Any, tuple[str, dict[str, Any]]] | None = None
) -> dict[str, Any]:
    """Turn a naturalized data set into the standard DICOM JSON model (PS3.18 F.2).

    The inverse of :func:`naturalize`, also for metadata built by hand or
    stored by earlier versions: an attribute without a ``_vrMap`` entry gets
    its tag's default VR, a bare string as a PN becomes
    ``[{"Alphabetic": string}]``, a single object as a sequence becomes its
    one item, and any deviation :func:`naturalize` reads is written in the
    standard form. Raises :class:`~metastore.errors.InvalidMetadata` naming
    the JSON path when a key is neither a keyword nor a tag, two keys name the
    same tag, a sequence item is not an object, a value does not fit its VR,
    or a bookkeeping key is malformed.

    ``shared``, a dict kept across calls (say, over the instances of one
    series, which repeat most of their values), takes the attribute objects
    of single plain values (strings, integers, floats but zero) from earlier
    calls: the same answer, several times faster, but those objects are then
    shared between the data sets returned, so use it only for answers that
    are read, not changed (encoded, say).
    """
    if not isinstance(dataset, Mapping):
        raise InvalidMetadata("a naturalized data set must be an object", path="$")
    try:
        return _denaturalize(dataset, shared)
    except PathError as exc:
        raise InvalidMetadata(exc.message, path=exc.path) from None


def _denaturalize(
    dataset: Mapping[Any, Any], shared: dict[Any, tuple[str, dict[str, Any]]] | None = None
) -> dict[str, Any]:
    """Denaturalize a data set known to be a mapping; errors carry a relative path."""
    vr_map = dataset.get(VR_MAP_KEY)
    if vr_map is not None and not isinstance(vr_map, Mapping):
        raise PathError(f"{VR_MAP_KEY} must be an object", VR_MAP_KEY)
    nulls = dataset.get(NULL_VALUE_KEY)
    if nulls is not None and not isinstance(nulls, list):
        raise PathError(f"{NULL_VALUE_KEY} must be an array", NULL_VALUE_KEY)

    ignored = IGNORED  # what is normalized on the way out is not an ingest's to count
    out: dict[str, Any] = {}
    for name, value in dataset.items():
        key = None
        if shared is not None and _shareable(value):
            # What an attribute becomes depends on its name, value, the
            # value's type (1 and 1.0 are equal keys) and its _vrMap entry
            # (absent and null differ).
            vr_entry = vr_map.get(name, _NO_ENTRY) if vr_map else _NO_ENTRY
            if vr_entry is None or type(vr_entry) is str or vr_entry is _NO_ENTRY:
                key = (name, value, type(value), vr_entry)
                known = shared.get(key)
                if known is not None and known[0] not in out:
                    out[known[0]] = known[1]
                    continue
        info = _BY_KEYWORD.get(name)
        if info is None:
            if name in RESERVED_KEYS:
                continue
            found = _tag_info(name)
            if found is None:
                raise PathError(
                    "a key must be a DICOM keyword or eight hexadecimal digits", str(name)
                )
            info = (found[2], found[0][1], found[0][2])
        tag, default_vr, multi = info

        # The fast paths: values as naturalize leaves them.
        vr = vr_map.get(name, default_vr or "UN") if vr_map else default_vr or "UN"
        if type(vr) is str and tag not in out:
            if value is None:
                if vr in VRS:
                    out[tag] = {"vr": vr}
                    continue
            elif (check := ONE.get(vr)) is not None:
                if type(value) is list:
                    if value and all(map(check, value)):
                        values = [dict(v) for v in value] if vr == "PN" else list(value)
                        out[tag] = {"vr": vr, "Value": values}
                        continue
                elif vr != "PN" and check(value):
                    out[tag] = {"vr": vr, "Value": [value]}
                    if key is not None:
                        shared[key] = (tag, out[tag])  # type: ignore[index]
                    continue
            elif vr in BINARY_VRS and type(value) is dict and len(value) == 1:
                data = value.get("InlineBinary", value.get("BulkDataURI"))
                if type(data) is str:
                    out[tag] = {"vr": vr, **value}
                    continue

        element: dict[str, Any] = {}
        if vr_map and name in vr_map:
            vr = vr_map[name]
            if vr is not None and type(vr) is not str:
                raise PathError("a VR must be a string or null", f"{VR_MAP_KEY}.{name}")
            if vr is not None:
                element["vr"] = vr
        elif default_vr is not None:
            element["vr"] = default_vr
        else:
            element["vr"] = "UN"
        if value is not None:
            if (
                type(value) is dict
                and len(value) == 1
                and ("InlineBinary" in value or "BulkDataURI" in value)
            ):
                element.update(value)
            else:
                element["Value"] = value if isinstance(value, list) else [value]
        try:
            vr, payload = read_element(element, default_vr, multi, {}, ignored)
        except PathError as exc:
            exc.path = f"{name}{_natural_path(exc.path)}"
            raise
        standard: dict[str, Any] = {"vr": vr}
        if vr == "SQ" and payload is not None:
            items = []
            for index, item in enumerate(payload):
                try:
                    items.append(_denaturalize(item, shared))
                except PathError as exc:
                    exc.path = f"{name}[{index}].{exc.path}"
                    raise
            standard["Value"] = items
        elif type(payload) is list:
            standard["Value"] = payload
        elif payload is not None:
            standard.update(payload)
        if tag in out:
            raise PathError("two keys name the same tag", str(name))
        out[tag] = standard
        if key is not None:
            shared[key] = (tag, standard)  # type: ignore[index]
    return out


_NO_ENTRY: Final = object()


def _shareable(value: Any) -> bool:
    # Not 0.0: -0.0 is an equal key but is written differently.
    kind = type(value)
    return kind is str or kind is int or (kind is float and value != 0)


def _natural_path(path: str) -> str:
    """A path inside an attribute object as the naturalized value's path."""
    if path.startswith("Value"):
        return path[len("Value") :]
    return f".{path}"
