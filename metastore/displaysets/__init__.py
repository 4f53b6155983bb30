"""Display sets: what a viewer shows of a study, computed from the index.

OHIF turns each series into *display sets* through SOP class handler
modules; this package does the same without a viewer, for services that
read the index (study lists, hanging protocols, prefetchers)::

    from metastore import MetaStore
    from metastore.displaysets import get_display_sets

    with MetaStore() as store:
        for display_set in get_display_sets(store, study_uid) or []:
            print(display_set["SOPClassHandlerId"], display_set["numImageFrames"])

Every display set is a JSON-ready dict with ``displaySetInstanceUID``
(stable: derived from its content, see ``display_set_uid``),
``SOPClassHandlerId``, ``source``, ``StudyInstanceUID``,
``SeriesInstanceUID``, ``Modality``, ``SeriesNumber``,
``SeriesDescription``, ``SeriesDate``, ``SeriesTime``, ``SOPClassUID``,
``sopClassUids``, ``numInstances``, ``SOPInstanceUIDs``,
``numImageFrames`` and ``imageIds``, then its handler's own fields
(``isReconstructable`` and ``messages`` for images, ``unsupported`` for what
no handler takes, ``referencedSeriesInstanceUID`` and
``referencedDisplaySetInstanceUID`` for a SEG, ...).

``imageIds`` are what a viewer loads: one per frame for images (stacks,
multi-frame images, segmentations, parametric maps), one per instance for
objects not shown frame by frame (video, PDF, SR, waveforms, RT structure
sets, whole-slide pyramids). ``numImageFrames`` counts frames (0 for
objects without any).

Custom handlers: see ``metastore.displaysets.registry``.
"""

from __future__ import annotations

from metastore.displaysets.build import (
    UID_NAMESPACE,
    display_set_uid,
    resolve_references,
    series_display_sets,
    study_display_sets,
)
from metastore.displaysets.geometry import Issue, Reconstructability, check_multiframe, check_stack
from metastore.displaysets.handlers import BUILTIN_HANDLERS
from metastore.displaysets.indexed import get_display_sets
from metastore.displaysets.model import DisplaySet, GetDisplaySets, SopClassHandler
from metastore.displaysets.registry import ENTRY_POINT_GROUP, all_handlers, refresh, register

__all__ = [
    "BUILTIN_HANDLERS",
    "ENTRY_POINT_GROUP",
    "UID_NAMESPACE",
    "DisplaySet",
    "GetDisplaySets",
    "Issue",
    "Reconstructability",
    "SopClassHandler",
    "check_multiframe",
    "check_stack",
    "display_set_uid",
    "get_display_sets",
    "all_handlers",
    "refresh",
    "register",
    "resolve_references",
    "series_display_sets",
    "study_display_sets",
]
