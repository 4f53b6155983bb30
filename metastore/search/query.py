"""QIDO-RS query parameters read and checked: what to match, what to return.

A client sends ``PatientName=Doe*&00080061=CT&includefield=00081030&limit=25``
(PS3.18 8.3.4). :func:`parse` turns such a mapping (already percent-decoded;
a value may be a list when a parameter repeats) into a :class:`Search`: one
:class:`Term` per matching key, each holding its alternatives already read
by the rules of its VR (PS3.4 C.2.2.2), so that the SQL compiler only has to
spell them. Anything it cannot read raises ``QueryError`` naming the
parameter and the value.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

from pydicom import datadict

from metastore.dicom import keyword_for_tag, tag_for_keyword
from metastore.errors import ConfigurationError, QueryError
from metastore.matching import DATE_TIME_PAIRS, range_bounds
from metastore.search.attributes import Level, level_of

WILDCARD_VRS = frozenset({"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT"})
RANGE_VRS = frozenset({"DA", "TM", "DT"})
NUMBER_VRS = frozenset({"IS", "DS", "US", "UL", "SS", "SL", "FL", "FD", "SV", "UV"})
MAX_UIDS = 1000  # UIDs in one list; more is not a search but an export

_HEX_TAG = re.compile(r"[0-9A-Fa-f]{8}")
_KEYWORD = re.compile(r"[A-Za-z][A-Za-z0-9]*")
# NUL and the C0 controls other than TAB, LF, FF, CR and ESC (PS3.5 6.1.2.3
# allows those in text values): no DICOM value holds them.
_BAD_CHARS = re.compile(r"[\x00-\x08\x0b\x0e-\x1a\x1c-\x1f\x7f]")


@dataclass(frozen=True, kw_only=True)
class Exact:
    """Single value matching (C.2.2.2.1): the value, spaces aside."""

    text: str


@dataclass(frozen=True, kw_only=True)
class Pattern:
    """Wildcard matching (C.2.2.2.4): ``*`` any run, ``?`` one character, whole value."""

    text: str


@dataclass(frozen=True, kw_only=True)
class Name:
    """A person name (PN): case-insensitive, per component group; fuzzy: word prefixes."""

    text: str
    fuzzy: bool = False


@dataclass(frozen=True, kw_only=True)
class Number:
    """A numeric VR: equal as numbers."""

    value: float


@dataclass(frozen=True, kw_only=True)
class Uids:
    """UID list matching (C.2.2.2.2)."""

    uids: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class Range:
    """DA/TM/DT single value or range (C.2.2.2.5), bounds in sortable form (None: open)."""

    low: str | None
    high: str | None


@dataclass(frozen=True, kw_only=True)
class DateTimeRange:
    """A DA key and its TM key read as one date-time range (C.2.2.2.5.2).

    Bounds are ``YYYYMMDD`` + sortable time (``HHMMSS.FFFFFF``).
    """

    low: str | None
    high: str | None


Match = Exact | Pattern | Name | Number | Uids | Range | DateTimeRange


@dataclass(frozen=True, kw_only=True)
class Term:
    """One matching key: where the attribute is, its VR, and its alternatives (any may match)."""

    key: str  # as the client wrote it
    path: tuple[str, ...]  # naturalized member names: keywords, or tags without one
    vr: str
    level: Level
    alternatives: tuple[Match, ...]
    partner: tuple[str, ...] | None = None  # the TM path of a combined date-time range

    @property
    def name(self) -> str:
        return ".".join(self.path)


@dataclass(frozen=True, kw_only=True)
class Search:
    """A checked QIDO-RS query."""

    terms: tuple[Term, ...] = ()
    includefield: tuple[str, ...] = ()  # top-level attributes asked for, matching keys too
    include_all: bool = False
    fuzzy: bool = False
    limit: int | None = None
    offset: int = 0
    warnings: tuple[str, ...] = ()


def parse(query: Mapping[str, str | Sequence[str]]) -> Search:
    """Read QIDO-RS parameters; ``QueryError`` names the parameter and value it cannot read."""
    limit: int | None = None
    offset = 0
    fuzzy = False
    include: list[str] = []
    include_all = False
    raw_terms: list[tuple[str, tuple[str, ...], str]] = []
    for key, raw in query.items():
        values = _values(key, raw)
        control = key.lower()
        if control == "limit":
            limit = _whole(key, values)
        elif control == "offset":
            offset = _whole(key, values) or 0
        elif control == "fuzzymatching":
            fuzzy = _boolean(key, values)
        elif control == "includefield":
            for value in values:
                for field in (v.strip() for v in value.split(",")):
                    if field.lower() == "all":
                        include_all = True
                    elif field:
                        path = resolve(field, key)
                        if path[0] not in include:
                            include.append(path[0])
        else:
            path = resolve(key, key)
            if path[0] not in include:  # a matching key is also returned (PS3.18 8.3.4.3)
                include.append(path[0])
            # A repeated parameter is a list of alternatives, as "\" separates them.
            raw_terms.append((key, path, "\\".join(values)))
    terms = _terms(raw_terms, fuzzy)
    warnings: list[str] = []
    if fuzzy:
        for term in terms:
            if term.vr != "PN" and any(isinstance(m, Pattern | Exact) for m in term.alternatives):
                warnings.append(
                    f"fuzzy matching applies to person names only; {term.key} matched exactly"
                )
    return Search(
        terms=tuple(terms),
        includefield=tuple(include),
        include_all=include_all,
        fuzzy=fuzzy,
        limit=limit,
        offset=offset,
        warnings=tuple(warnings),
    )


def resolve(key: str, parameter: str) -> tuple[str, ...]:
    """The naturalized path of a key: keywords or 8-hex tags, dot-separated for sequences."""
    path: list[str] = []
    for part in key.strip().split("."):
        if _HEX_TAG.fullmatch(part):
            path.append(keyword_for_tag(part.upper()) or part.upper())
        elif _KEYWORD.fullmatch(part) and tag_for_keyword(part) is not None:
            path.append(part)
        else:
            raise QueryError(
                f"query parameter {parameter!r}: {part!r} is not a DICOM keyword or tag",
                parameter=parameter,
                value=part,
            )
    for part in path[:-1]:
        if vr_of(part) != "SQ":
            raise QueryError(
                f"query parameter {parameter!r}: {part} is not a sequence",
                parameter=parameter,
                value=key,
            )
    return tuple(path)


@lru_cache(maxsize=2048)
def vr_of(name: str) -> str:
    """The default VR of a keyword or tag (the first of "US or SS"); UN when unknown."""
    try:
        tag = int(name, 16) if _HEX_TAG.fullmatch(name) else datadict.tag_for_keyword(name)
        vr = datadict.dictionary_VR(tag) if tag is not None else "UN"
    except KeyError:
        vr = "UN"
    return vr.split(" or ")[0]


def _values(key: str, raw: str | Sequence[str]) -> list[str]:
    items = [raw] if isinstance(raw, str) else list(raw)
    for item in items:
        if not isinstance(item, str):
            raise QueryError(
                f"query parameter {key!r} must be text, not {type(item).__name__}",
                parameter=key,
                value=item,
            )
        if _BAD_CHARS.search(item):
            raise QueryError(
                f"query parameter {key!r} holds a control character: {item[:80]!r}",
                parameter=key,
                value=item,
            )
    return items


def _whole(key: str, values: list[str]) -> int | None:
    if len(values) != 1:
        raise QueryError(f"query parameter {key!r} is given {len(values)} times", parameter=key)
    text = values[0].strip()
    if text == "":
        return None
    if not text.isdigit() or len(text) > 9:
        raise QueryError(
            f"query parameter {key!r} must be a whole number, not {values[0]!r}",
            parameter=key,
            value=values[0],
        )
    return int(text)


def _boolean(key: str, values: list[str]) -> bool:
    text = values[-1].strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no", ""):
        return False
    raise QueryError(
        f"query parameter {key!r} must be true or false, not {values[-1]!r}",
        parameter=key,
        value=values[-1],
    )


def _terms(raw: list[tuple[str, tuple[str, ...], str]], fuzzy: bool) -> list[Term]:
    by_path = {path: (key, value) for key, path, value in raw}
    terms: list[Term] = []
    combined: set[tuple[str, ...]] = set()
    for key, path, value in raw:
        if path in combined:
            continue
        vr = vr_of(path[-1])
        partner_name = DATE_TIME_PAIRS.get(path[-1])
        partner = (*path[:-1], partner_name) if partner_name else None
        if vr == "DA" and len(path) == 1 and partner in by_path:
            time_key, time_value = by_path[partner]
            if value.strip() and _is_range(time_value):
                combined.add(partner)
                terms.append(_date_time_term(key, path, value, time_key, partner, time_value))
                continue
        if value == "" or (vr in WILDCARD_VRS and "*" in value and value.strip("*") == ""):
            continue  # universal matching (C.2.2.2.3)
        alternatives = _alternatives(key, vr, value, fuzzy)
        terms.append(
            Term(key=key, path=path, vr=vr, level=level_of(path[0]), alternatives=alternatives)
        )
    return terms


def _is_range(value: str) -> bool:
    return "-" in value.strip()


def _alternatives(key: str, vr: str, value: str, fuzzy: bool) -> tuple[Match, ...]:
    if vr == "UI":
        uids = tuple(dict.fromkeys(u.strip() for u in re.split(r"[\\,]", value) if u.strip()))
        if len(uids) > MAX_UIDS:
            raise QueryError(
                f"query parameter {key!r} lists {len(uids)} UIDs; at most {MAX_UIDS}",
                parameter=key,
            )
        return (Uids(uids=uids),)
    return tuple(_one(key, vr, text, fuzzy) for text in value.split("\\"))


def _one(key: str, vr: str, text: str, fuzzy: bool) -> Match:
    if vr == "PN":
        return Name(text=_clean_name(text), fuzzy=fuzzy)
    if vr in RANGE_VRS:
        return _range(key, vr, text)
    if vr in NUMBER_VRS:
        try:
            return Number(value=float(text))
        except ValueError:
            raise QueryError(
                f"query parameter {key!r} ({vr}) must be a number, not {text!r}",
                parameter=key,
                value=text,
            ) from None
    if vr in WILDCARD_VRS and ("*" in text or "?" in text):
        return Pattern(text=text.strip())
    return Exact(text=text.strip())


def _clean_name(name: str) -> str:
    return name.strip().rstrip("^").strip()


# -- dates and times (C.2.2.2.5) ---------------------------------------------


def _range(key: str, vr: str, text: str) -> Range:
    low, high = _bounds(key, vr, text)
    return Range(low=low, high=high)


def _bounds(key: str, vr: str, text: str) -> tuple[str | None, str | None]:
    """``matching.range_bounds`` (the one reading of DA/TM/DT values), with a QueryError."""
    try:
        low, high = range_bounds(vr, text, key)
    except ConfigurationError as err:
        raise QueryError(str(err), parameter=key, value=text) from None
    if low is not None and high is not None and low > high:
        raise QueryError(
            f"query parameter {key!r}: the range {text.strip()!r} ends before it starts",
            parameter=key,
            value=text,
        )
    return low, high


def _date_time_term(
    date_key: str,
    date_path: tuple[str, ...],
    date_value: str,
    time_key: str,
    time_path: tuple[str, ...],
    time_value: str,
) -> Term:
    date_low, date_high = _bounds(date_key, "DA", date_value)
    time_low, time_high = _bounds(time_key, "TM", time_value)
    # The time bounds apply to the first and the last day only (C.2.2.2.5.2).
    low = None if date_low is None else date_low + (time_low or "000000.000000")
    high = None if date_high is None else date_high + (time_high or "999999.999999")
    return Term(
        key=f"{date_key}+{time_key}",
        path=date_path,
        vr="DA",
        level=level_of(date_path[0]),
        alternatives=(DateTimeRange(low=low, high=high),),
        partner=time_path,
    )
