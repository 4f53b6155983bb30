"""Display sets of an indexed study: read it from the store, then build them."""

from __future__ import annotations

from typing import Any

from metastore.displaysets.build import study_display_sets
from metastore.store import MetaStore


def get_display_sets(
    store: MetaStore, study_uid: str, *, source: str | None = None
) -> list[dict[str, Any]] | None:
    """What a viewer shows of the study: its display sets.

    Read with ``store.get_study`` (three queries whatever the size of the
    study); None when the study is not indexed. ``source`` keeps the
    series list of one source.
    """
    study = store.get_study(study_uid)
    return None if study is None else study_display_sets(study, source=source)
