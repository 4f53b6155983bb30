"""QIDO matching: does a data set match a query, by DICOM's rules.

One implementation of the attribute matching of DICOM PS3.4 C.2.2.2 as
QIDO-RS (PS3.18 8.3.4) uses it, for every place that filters on the client:
the static DICOMweb source (a static tree answers every search with
everything) and, later, the index's own search.

A query maps attribute names (a keyword such as ``PatientID``, or a tag as
eight hexadecimal digits; a dotted path such as
``ReferencedSeriesSequence.SeriesInstanceUID`` reaches into sequences) to
values, as QIDO-RS query parameters do. ``limit``, ``offset``,
``includefield`` and ``fuzzymatching`` are the QIDO-RS controls, not
attributes. The rules, by the matching key's VR:

- universal matching (C.2.2.2.3): an empty value, or a value of only ``*``
  where wildcards are allowed, matches every data set, also one without the
  attribute;
- UID list matching (C.2.2.2.2): UI values are one UID or a list
  separated by ``\\`` (or by ``,``, as PS3.18 8.3.4.1 writes lists in a URL);
  a data set matches when one of its UIDs is in the list;
- wildcard matching (C.2.2.2.4): ``*`` (any run of characters, also none)
  and ``?`` (one character) in the text VRs (AE, CS, LO, LT, PN, SH, ST, UC,
  UR, UT); the pattern matches the whole value, so ``Doe*`` is a prefix match,
  not a substring match;
- range matching (C.2.2.2.5): DA, TM and DT values ``a-b``, ``a-`` and
  ``-b``, inclusive; a bound with less precision covers all of its period
  (``-1030`` takes 10:30:59);
- single value matching (C.2.2.2.1): otherwise the value must equal the
  attribute's, case-sensitively, leading and trailing spaces aside; numbers
  (IS, DS and the binary numbers) compare as numbers;
- person names match case-insensitively (PS3.4 C.2.2.2.1 leaves PN
  insensitivity to the implementation), each component group (alphabetic,
  ideographic, phonetic) on its own, trailing empty components ignored; with
  ``fuzzymatching=true`` accents are ignored too and each part of the query
  name need only begin a part of the stored name, in any order;
- several values in the query separated by ``\\`` match when one of them
  matches; an attribute with several values matches when one of its values
  matches;
- sequence matching (C.2.2.2.6): a dotted path matches when one item of the
  sequence matches the rest of the path;
- combined date and time (C.2.2.2.5.2): a date key (``StudyDate``, ...)
  with its time key (``StudyTime``, ...) given as a range is one date-time
  range: ``StudyDate=20130124-20130125&StudyTime=1100-1200`` runs from
  2013-01-24 11:00 to 2013-01-25 12:00 (a missing time counts as 00:00).

OHIF's StaticWadoClient treats ``x*`` as a substring match, compares
case-sensitively and never matches a list of UIDs; we follow the standard.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from pydicom import datadict

from metastore.dicom import keyword_for_tag
from metastore.errors import ConfigurationError

__all__ = ["CONTROL_KEYS", "DATE_TIME_PAIRS", "Criterion", "Query", "parse_query", "range_bounds"]

#: QIDO-RS query parameters that control the search rather than match (PS3.18 8.3.4).
CONTROL_KEYS = frozenset({"limit", "offset", "includefield", "fuzzymatching"})

_WILDCARD_VRS = frozenset({"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT"})
_RANGE_VRS = frozenset({"DA", "TM", "DT"})
_NUMBER_VRS = frozenset({"IS", "DS", "US", "UL", "SS", "SL", "FL", "FD", "SV", "UV"})
# Text VRs that hold one value and may contain a backslash (PS3.5 6.2).
_SINGLE_TEXT_VRS = frozenset({"LT", "ST", "UT", "UR"})
_HEX_TAG = re.compile(r"[0-9A-Fa-f]{8}")
_PN_GROUPS = ("Alphabetic", "Ideographic", "Phonetic")


@dataclass(frozen=True, kw_only=True)
class Criterion:
    """One matching key: the attribute path (keywords), its VR and the query value."""

    path: tuple[str, ...]
    vr: str
    value: str
    # A date key read together with its time key (C.2.2.2.5.2): the time criterion.
    time: Criterion | None = None

    @property
    def name(self) -> str:
        return ".".join(self.path)


@dataclass(frozen=True, kw_only=True)
class Query:
    """A parsed QIDO query: the matching keys and the controls."""

    criteria: tuple[Criterion, ...] = ()
    fuzzy: bool = False
    limit: int | None = None
    offset: int = 0

    def matches(self, dataset: Mapping[str, Any]) -> bool:
        """Whether a naturalized data set matches every key of the query."""
        return all(
            _matches_date_time(dataset, c, c.time)
            if c.time is not None
            else _matches_path(dataset, c.path, c, self.fuzzy)
            for c in self.criteria
        )

    def filter(self, datasets: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
        """The matching data sets, in order, after ``offset``, at most ``limit``."""
        found = [d for d in datasets if self.matches(d)]
        end = None if self.limit is None else self.offset + self.limit
        return found[self.offset : end]


def parse_query(query: Mapping[str, Any] | None) -> Query:
    """A ``Query`` from QIDO-style parameters; ``ConfigurationError`` names a bad key or value.

    Values may be strings, numbers, or lists (read as a ``\\``-separated list).
    """
    if not query:
        return Query()
    criteria: list[Criterion] = []
    fuzzy = False
    limit: int | None = None
    offset = 0
    for key, raw in query.items():
        lowered = str(key).lower()
        if lowered == "fuzzymatching":
            fuzzy = str(raw).lower() in ("true", "1", "yes")
        elif lowered == "limit":
            limit = _count(key, raw)
        elif lowered == "offset":
            offset = _count(key, raw)
        elif lowered == "includefield":
            continue
        else:
            path = tuple(_keyword(part, key) for part in str(key).split("."))
            criteria.append(Criterion(path=path, vr=_vr(path[-1], key), value=_text(key, raw)))
    return Query(criteria=_combined(criteria), fuzzy=fuzzy, limit=limit, offset=offset)


def _count(key: str, raw: Any) -> int:
    try:
        value = int(raw)
    except (TypeError, ValueError):
        raise ConfigurationError(
            f"query parameter {key} must be a whole number, not {raw!r}"
        ) from None
    if value < 0:
        raise ConfigurationError(f"query parameter {key} must not be negative, not {value}")
    return value


def _text(key: str, raw: Any) -> str:
    if raw is None:
        return ""
    if isinstance(raw, list | tuple):
        return "\\".join(_text(key, item) for item in raw)
    if isinstance(raw, bool) or not isinstance(raw, str | int | float):
        raise ConfigurationError(f"query value of {key} must be text, not {type(raw).__name__}")
    return str(raw)


def _keyword(part: str, key: str) -> str:
    if _HEX_TAG.fullmatch(part):
        return keyword_for_tag(part.upper()) or part.upper()
    if datadict.tag_for_keyword(part) is None:
        raise ConfigurationError(f"query key {key!r}: {part!r} is not a DICOM keyword or tag")
    return part


@lru_cache(maxsize=1024)
def _vr(name: str, key: str) -> str:
    try:
        tag = int(name, 16) if _HEX_TAG.fullmatch(name) else datadict.tag_for_keyword(name)
        vr = datadict.dictionary_VR(tag) if tag is not None else "UN"
    except KeyError:
        vr = "UN"  # private or unknown: compared as text
    return vr.split(" or ")[0]


# -- matching ---------------------------------------------------------------


def _matches_path(
    dataset: Mapping[str, Any], path: tuple[str, ...], criterion: Criterion, fuzzy: bool
) -> bool:
    if _is_universal(criterion):
        return True
    value = dataset.get(path[0])
    if len(path) > 1:
        items = value if isinstance(value, list) else []
        return any(
            isinstance(item, Mapping) and _matches_path(item, path[1:], criterion, fuzzy)
            for item in items
        )
    values = _values(value, criterion.vr)
    if not values:
        return False
    test = _matcher(criterion, fuzzy)
    return any(test(v) for v in values)


def _is_universal(criterion: Criterion) -> bool:
    value = criterion.value
    return value == "" or (
        criterion.vr in _WILDCARD_VRS and value.strip("*") == "" and "*" in value
    )


def _values(value: Any, vr: str) -> list[Any]:
    """The attribute's values, one list, empty when it has none."""
    if value is None:
        return []
    items = value if isinstance(value, list) else [value]
    out: list[Any] = []
    for item in items:
        if item is None or isinstance(item, Mapping) and vr != "PN":
            continue
        if isinstance(item, str) and vr not in _SINGLE_TEXT_VRS and "\\" in item:
            out.extend(item.split("\\"))  # a multi-valued string sent as one value
        else:
            out.append(item)
    return out


def _matcher(criterion: Criterion, fuzzy: bool) -> Callable[[Any], bool]:
    vr, text = criterion.vr, criterion.value
    if vr == "UI":
        wanted = {uid.strip() for uid in re.split(r"[\\,]", text) if uid.strip()}
        return lambda v: isinstance(v, str) and v.strip() in wanted
    tests = [
        _one_matcher(vr, alternative, criterion.name, fuzzy) for alternative in text.split("\\")
    ]
    if len(tests) == 1:
        return tests[0]
    return lambda v: any(test(v) for test in tests)


def _one_matcher(vr: str, text: str, name: str, fuzzy: bool) -> Callable[[Any], bool]:
    if vr == "PN":
        return _name_matcher(text, fuzzy)
    if vr in _RANGE_VRS:
        return _range_matcher(vr, text, name)
    if vr in _NUMBER_VRS:
        return _number_matcher(text, name)
    if vr in _WILDCARD_VRS and ("*" in text or "?" in text):
        pattern = _wildcard(text.strip(), ignore_case=False)
        return lambda v: isinstance(v, str) and pattern.fullmatch(v.strip()) is not None
    wanted = text.strip()
    return lambda v: _as_text(v).strip() == wanted


def _as_text(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


@lru_cache(maxsize=512)
def _wildcard(text: str, *, ignore_case: bool) -> re.Pattern[str]:
    pieces = [".*" if ch == "*" else "." if ch == "?" else re.escape(ch) for ch in text]
    return re.compile("".join(pieces), re.DOTALL | (re.IGNORECASE if ignore_case else 0))


def _number_matcher(text: str, name: str) -> Callable[[Any], bool]:
    try:
        wanted = float(text)
    except ValueError:
        raise ConfigurationError(f"query value of {name} must be a number, not {text!r}") from None

    def test(value: Any) -> bool:
        try:
            return float(value) == wanted
        except (TypeError, ValueError):
            return False

    return test


# -- dates and times (C.2.2.2.5) ---------------------------------------------

# A DT value; an offset (+/-hhmm) only after the hour, so "2013-2014" reads as a range.
_DT_VALUE = r"(?:\d{4}(?:\d{2}){0,2}|\d{10}(?:\d{2}){0,2}(?:\.\d{1,6})?(?:[+-]\d{4})?)"
_FORMS = {
    "DA": r"\d{8}",
    "TM": r"\d{2,6}(?:\.\d{1,6})?",
    "DT": _DT_VALUE,
}
_WIDTH = {"DA": 8, "TM": 6, "DT": 14}


def range_bounds(vr: str, text: str, name: str) -> tuple[str | None, str | None]:
    """A DA, TM or DT query value as sortable (low, high) bounds; None where a range is open.

    A single value is its own instant (both bounds); a range ``a-b``, ``a-``
    or ``-b`` pads its high bound with 9s so that it covers its period.
    ``ConfigurationError`` names the attribute when the value is neither.
    """
    text = text.strip().replace(":", "") if vr == "TM" else text.strip()
    if vr == "DA" and re.fullmatch(r"\d{4}\.\d{2}\.\d{2}", text):
        text = text.replace(".", "")  # the ACR-NEMA form
    form = _FORMS[vr]
    if re.fullmatch(form, text):
        instant = _normalize(vr, text, "0")
        return instant, instant
    bounds = re.fullmatch(f"({form})?-({form})?", text)
    if bounds is None or text == "-":
        raise ConfigurationError(
            f"query value of {name} ({vr}) must be a {vr} value or a range a-b, a- or -b, "
            f"not {text!r}"
        )
    low = None if bounds.group(1) is None else _normalize(vr, bounds.group(1), "0")
    high = None if bounds.group(2) is None else _normalize(vr, bounds.group(2), "9")
    return low, high


def _range_matcher(vr: str, text: str, name: str) -> Callable[[Any], bool]:
    low, high = range_bounds(vr, text, name)

    def test(value: Any) -> bool:
        if not isinstance(value, str) or not value.strip():
            return False
        stored = _normalize(vr, value, "0")
        return (low is None or stored >= low) and (high is None or stored <= high)

    return test


def _normalize(vr: str, value: str, pad: str) -> str:
    """A sortable form: separators gone, timezone offset dropped, padded to full precision."""
    value = value.strip()
    if vr == "DA":
        return value.replace(".", "").replace("-", "")
    value = re.sub(r"[+-]\d{4}$", "", value) if vr == "DT" else value.replace(":", "")
    whole, _, fraction = value.partition(".")
    return whole.ljust(_WIDTH[vr], pad) + "." + fraction.ljust(6, pad)


# -- person names -------------------------------------------------------------


def _name_matcher(text: str, fuzzy: bool) -> Callable[[Any], bool]:
    query = _clean_name(text, fuzzy)
    if fuzzy:
        parts = [p for p in re.split(r"[\^ ]+", query) if p]

        def fuzzy_test(value: Any) -> bool:
            for stored in _name_groups(value):
                words = [w for w in re.split(r"[\^ ]+", _clean_name(stored, True)) if w]
                if all(
                    any(_wildcard(p + "*", ignore_case=True).fullmatch(w) for w in words)
                    for p in parts
                ):
                    return True
            return False

        return fuzzy_test
    pattern = _wildcard(query, ignore_case=True)
    return lambda v: any(pattern.fullmatch(_clean_name(s, False)) for s in _name_groups(v))


def _name_groups(value: Any) -> list[str]:
    """The component groups of a naturalized PN value (a ``{"Alphabetic": ...}`` or a string)."""
    if isinstance(value, Mapping):
        return [value[g] for g in _PN_GROUPS if isinstance(value.get(g), str)]
    if isinstance(value, str):
        return value.split("=")
    return []


def _clean_name(name: str, fuzzy: bool) -> str:
    name = name.strip().rstrip("^").strip()
    if fuzzy:
        decomposed = unicodedata.normalize("NFKD", name)
        name = "".join(ch for ch in decomposed if not unicodedata.combining(ch)).casefold()
    return name


# -- combined date and time (C.2.2.2.5.2) ---------------------------------------

#: Date keys and their time keys, which a combined date-time range reads together.
DATE_TIME_PAIRS = {
    "StudyDate": "StudyTime",
    "SeriesDate": "SeriesTime",
    "AcquisitionDate": "AcquisitionTime",
    "ContentDate": "ContentTime",
    "PerformedProcedureStepStartDate": "PerformedProcedureStepStartTime",
    "PatientBirthDate": "PatientBirthTime",
}


def _combined(criteria: list[Criterion]) -> tuple[Criterion, ...]:
    """Top-level date keys whose time key is a range become one date-time criterion."""
    by_path = {c.path: c for c in criteria}
    paired: dict[tuple[str, ...], Criterion] = {}
    for c in criteria:
        time_name = DATE_TIME_PAIRS.get(c.path[0]) if len(c.path) == 1 else None
        time = by_path.get((time_name,)) if time_name else None
        if time is not None and c.value.strip() and "-" in time.value:
            paired[c.path] = time
    times = {t.path for t in paired.values()}
    return tuple(
        Criterion(path=c.path, vr=c.vr, value=c.value, time=paired[c.path])
        if c.path in paired
        else c
        for c in criteria
        if c.path not in times
    )


def _matches_date_time(dataset: Mapping[str, Any], date: Criterion, time: Criterion) -> bool:
    date_low, date_high = range_bounds("DA", date.value, date.name)
    time_low, time_high = range_bounds("TM", time.value, time.name)
    low = None if date_low is None else date_low + (time_low or "000000.000000")
    high = None if date_high is None else date_high + (time_high or "999999.999999")
    stored_date = dataset.get(date.path[0])
    stored_time = dataset.get(time.path[0])
    if not isinstance(stored_date, str) or not stored_date.strip():
        return False
    moment = _normalize("DA", stored_date, "0") + _normalize(
        "TM", stored_time if isinstance(stored_time, str) else "", "0"
    )
    return (low is None or moment >= low) and (high is None or moment <= high)
