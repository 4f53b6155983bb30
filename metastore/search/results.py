"""Result rows as DICOM JSON (PS3.18 F.2): the return attributes of each row.

A row returns its level's default attributes (PS3.18 Tables 6.7.1-2, -2a,
-2b), the ones named by ``includefield`` (or every stored one for
``includefield=all``) and the matching keys of the query (PS3.18 8.3.4.3).
An attribute the index does not hold is left out rather than sent empty:
viewers read an element without ``Value`` badly (OHIF 3.13 fails on an
empty ModalitiesInStudy).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from metastore.dicom import NULL_VALUE_KEY, RESERVED_KEYS, VR_MAP_KEY, denaturalize
from metastore.search.attributes import Level, defaults
from metastore.search.query import Search


def return_keys(search: Search, level: Level, scoped: Level | None) -> tuple[str, ...]:
    """The attributes a row returns (``includefield=all`` adds every stored one)."""
    keys = list(defaults(level, scoped))
    keys.extend(name for name in search.includefield if name not in keys)
    return tuple(keys)


def dicom_row(
    keys: Sequence[str],
    include_all: bool,
    documents: Sequence[Mapping[str, Any]],
    computed: Mapping[str, Any],
) -> dict[str, Any]:
    """One result row: the keys taken from ``computed`` first, then the documents in order."""
    wanted: list[str] = list(keys)
    if include_all:
        seen = set(wanted)
        for document in documents:
            for name in document:
                if name not in seen and name not in RESERVED_KEYS:
                    seen.add(name)
                    wanted.append(name)
        wanted.extend(name for name in computed if name not in seen)
    picked: dict[str, Any] = {}
    vr_map: dict[str, Any] = {}
    nulls: list[str] = []
    for name in wanted:
        if name in computed:
            if computed[name] is not None:
                picked[name] = computed[name]
            continue
        for document in documents:
            if name in document:
                picked[name] = document[name]
                own_vrs = document.get(VR_MAP_KEY) or {}
                if name in own_vrs:
                    vr_map[name] = own_vrs[name]
                if name in (document.get(NULL_VALUE_KEY) or ()):
                    nulls.append(name)
                break
    if vr_map:
        picked[VR_MAP_KEY] = vr_map
    if nulls:
        picked[NULL_VALUE_KEY] = nulls
    return dict(sorted(denaturalize(picked).items()))


def multi(text: str | None, separator: str) -> list[str] | None:
    """A stored multi-value text (``CT\\SR``) as its values; None when empty."""
    if not text:
        return None
    return sorted(v for v in text.split(separator) if v) or None
