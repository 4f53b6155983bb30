"""Counting the deviations from the DICOM JSON model that the reader normalized.

Real writers (dcmjs, converters, anonymizers, old archives) bend PS3.18 F.2
in a handful of recurring ways. :func:`metastore.dicom.naturalize` reads
them all, writes the standard form, and counts each kind of normalization
into a :class:`Quirks` its caller passes, so an ingest can report once, per
kind, what it had to straighten out (never one line per element)::

    quirks = Quirks()
    for item in answer:
        instances.append(naturalize(item, quirks))
    log.info("normalized: %s", quirks)   # "bare value 12, vr missing 3"

:class:`Quirk` names the kinds; its values are what the summary and the log
show.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from enum import StrEnum
from typing import Final

__all__ = ["IGNORED", "KEPT_AS_WRITTEN", "Quirk", "Quirks"]


class Quirk(StrEnum):
    """One kind of deviation the reader normalizes (PS3.18 F.2 is the standard form)."""

    BARE_VALUE = "bare value"
    """A single value where the ``Value`` array is due (F.2.4): wrapped in an array."""
    BARE_ITEM = "bare sequence item"
    """A sequence item given as an object instead of an array of items: wrapped."""
    NULL_VALUE = "null Value"
    """``"Value": null``: an empty attribute has no ``Value`` at all (F.2.5)."""
    LONE_NULL = "lone null value"
    """``"Value": [null]`` (one empty value) is an empty attribute (F.2.5)."""
    EMPTY_ARRAY = "empty Value array"
    """``"Value": []`` outside a sequence is an empty attribute (F.2.5)."""
    EMPTY_STRING = "empty string value"
    """``""`` where an empty value is due: ``null`` in an array (F.2.5), or no ``Value``."""
    NUMBER_AS_STRING = "number as string"
    """A US/UL/SS/SL/FL/FD value sent as a string: made a JSON number (F.2.3)."""
    STRING_AS_NUMBER = "string as number"
    """A JSON number where a string VR is due (not DS/IS, which may be either): made text."""
    WHOLE_FLOAT = "whole float as integer"
    """``512.0`` for an integer VR (US, UL, SS, SL, SV, UV): made ``512``."""
    AT_FORM = "AT form"
    """An AT value not as eight uppercase hex digits (``"0062000b"``, ``"(0062,000B)"``, an integer)."""
    VR_MISSING = "vr missing"
    """No ``vr`` member (F.2.3 requires one): taken from the dictionary, else ``UN``."""
    VR_EMPTY = "vr empty"
    """``"vr": ""``: taken from the dictionary, else ``UN``."""
    VR_LOWERCASE = "vr lowercase"
    """``"vr": "sq"``: made uppercase (a lowercase ``sq`` is still a sequence)."""
    VR_UNKNOWN = "vr unknown"
    """A ``vr`` that is no VR of PS3.5 6.2: taken from the dictionary, else ``UN``."""
    VR_COMBINED = "vr combined"
    """``"US|SS"``, ``"OB|OW"``: the dictionary's VR where it allows it, else the first."""
    VR_INFERRED_SQ = "vr inferred SQ"
    """A tag without dictionary VR and without a usable ``vr`` whose Value is items: a sequence."""
    INLINE_BINARY_DECODED = "InlineBinary on a non-binary VR"
    """``InlineBinary`` allowed only for OB/OD/OF/OL/OV/OW/UN (F.2.7): decoded into ``Value``."""
    BULKDATA_ON_VALUE_VR = "BulkDataURI on a VR without bulk data"
    """A ``BulkDataURI`` on a VR PS3.18 keeps inline (CS, UI, PN, ...): kept as the reference."""
    LOWERCASE_TAG = "lowercase tag"
    """A member name in lowercase hex (F.2.2 spells tags in uppercase): made uppercase."""
    TAG_FORM = "tag form"
    """A member name such as ``"(0010,0010)"`` or ``"0010,0010"``: made eight hex digits."""
    DUPLICATE_TAG = "duplicate tag"
    """The same tag spelled twice (in two cases or forms) with equal content: kept once."""
    PN_STRING = "PN as string"
    """A person name as a plain string (``"Doe^Jane"`` or ``"A=I=P"``): made component groups."""
    PN_GROUP = "PN group"
    """A person name object with lowercase group names or null groups: straightened."""
    BACKSLASH_JOINED = "backslash-joined values"
    """``"A\\\\B"`` as one value where the attribute takes several: split (F.2.4)."""
    DATE_FORM = "DA old form"
    """A date as ``YYYY.MM.DD`` (ACR-NEMA) or ``YYYY-MM-DD``: kept; key columns get ``YYYYMMDD``."""
    TIME_FORM = "TM old form"
    """A time as ``HH:MM:SS``: kept; key columns get ``HHMMSS``."""
    UID_PADDING = "UID padding"
    """A UID with trailing spaces or NULs (binary padding, PS3.5 9.1): stripped."""
    NUL_CHARACTER = "NUL in a string"
    """U+0000 inside a string value (binary padding or stray bytes; PostgreSQL keeps none): removed."""
    EXTRA_MEMBER = "extra attribute member"
    """A member other than vr, Value, InlineBinary, BulkDataURI in an attribute: dropped."""
    CONFLICTING_MEMBERS = "several value members"
    """Value with InlineBinary/BulkDataURI (F.2.2 allows one): the one fitting the VR is kept."""


KEPT_AS_WRITTEN = frozenset({Quirk.BULKDATA_ON_VALUE_VR, Quirk.DATE_FORM, Quirk.TIME_FORM})
"""Kinds counted but kept in the metadata as written (the standard form has no other spelling)."""


class Quirks:
    """A count per :class:`Quirk` kind; what one ingest (or one call) normalized.

    Cheap to pass around and to merge: ``a.update(b)`` adds ``b``'s counts to
    ``a``. ``str()`` gives the one-line summary a log shows, most frequent
    first; a ``Quirks`` with nothing counted is false.
    """

    __slots__ = ("_counts",)

    def __init__(self, counts: Mapping[Quirk | str, int] | None = None) -> None:
        self._counts: Counter[Quirk] = Counter()
        if counts:
            for kind, n in counts.items():
                self.add(Quirk(kind), n)

    def add(self, kind: Quirk, n: int = 1) -> None:
        """Count ``n`` more of ``kind``."""
        self._counts[kind] += n

    def update(self, other: Quirks | Iterable[Quirk]) -> None:
        """Add another counter's counts (or one count per kind in an iterable)."""
        if isinstance(other, Quirks):
            self._counts.update(other._counts)
        else:
            self._counts.update(other)

    def __getitem__(self, kind: Quirk) -> int:
        return self._counts[kind]

    def __iter__(self) -> Iterator[Quirk]:
        return iter(self._counts)

    def __len__(self) -> int:
        return len(self._counts)

    def __bool__(self) -> bool:
        return bool(self._counts)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Quirks):
            return NotImplemented
        return self._counts == other._counts

    __hash__ = None  # type: ignore[assignment]  # mutable

    def total(self) -> int:
        """All normalizations counted, of every kind."""
        return self._counts.total()

    def as_dict(self) -> dict[str, int]:
        """``{kind value: count}``, most frequent first (for JSON summaries)."""
        return {str(kind): n for kind, n in self._sorted()}

    def _sorted(self) -> list[tuple[Quirk, int]]:
        return sorted(self._counts.items(), key=lambda pair: (-pair[1], pair[0].value))

    def __str__(self) -> str:
        if not self._counts:
            return "none"
        return ", ".join(f"{kind.value} {n}" for kind, n in self._sorted())

    def __repr__(self) -> str:
        return f"Quirks({self.as_dict()!r})"


class _Ignored(Quirks):
    """A counter that keeps nothing (for reading that is not an ingest's to count)."""

    __slots__ = ()

    def add(self, kind: Quirk, n: int = 1) -> None:
        pass

    def update(self, other: Quirks | Iterable[Quirk]) -> None:
        pass


IGNORED: Final = _Ignored()
"""The counter :func:`~metastore.dicom.naturalize` uses when its caller passes none."""
