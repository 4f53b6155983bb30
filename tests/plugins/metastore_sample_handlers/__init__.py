"""A package of custom SOP class handlers, as a third party would ship one.

Its entry points (``metastore_sample_handlers-1.0.dist-info/entry_points.txt``,
what an installer writes from the package's ``pyproject.toml``)::

    [metastore.sop_class_handlers]
    key-objects = metastore_sample_handlers:KEY_OBJECTS
    volumes = metastore_sample_handlers:volume_handlers

The tests put this directory on ``sys.path``, which is all installing it
would do.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from metastore.displaysets import DisplaySet, SopClassHandler

KEY_OBJECT_SELECTION = "1.2.840.10008.5.1.4.1.1.88.59"
CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
MIN_VOLUME_SLICES = 100


def _key_objects(instances: Sequence[Mapping[str, Any]]) -> list[DisplaySet]:
    """One display set per Key Object Selection document (no built-in claims them)."""
    return [
        DisplaySet(
            instances=[instance],
            fields={"isDerivedDisplaySet": True, "keyImages": _referenced_count(instance)},
        )
        for instance in instances
    ]


def _referenced_count(instance: Mapping[str, Any]) -> int:
    return sum(
        len(series.get("ReferencedSOPSequence") or [])
        for study in instance.get("CurrentRequestedProcedureEvidenceSequence") or []
        for series in study.get("ReferencedSeriesSequence") or []
    )


def _large_ct_volumes(instances: Sequence[Mapping[str, Any]]) -> list[DisplaySet]:
    """Large CT series as one volume display set; smaller ones pass on to the next handler."""
    if len(instances) < MIN_VOLUME_SLICES:
        return []
    return [
        DisplaySet(
            instances=instances,
            fields={"numImageFrames": len(instances), "volume": True},
            key="volume",
        )
    ]


KEY_OBJECTS = SopClassHandler(
    id="sample.key-objects",
    sop_class_uids=frozenset({KEY_OBJECT_SELECTION}),
    get_display_sets=_key_objects,
)


def volume_handlers() -> list[SopClassHandler]:
    """A factory, like OHIF's getSopClassHandlerModule; priority 10 goes before the built-ins."""
    return [
        SopClassHandler(
            id="sample.large-ct",
            sop_class_uids=frozenset({CT_IMAGE}),
            get_display_sets=_large_ct_volumes,
            priority=10,
        )
    ]
