"""The two shapes a SOP class handler deals in: the handler and what it makes."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

Instance = Mapping[str, Any]


@dataclass(frozen=True, kw_only=True)
class DisplaySet:
    """What a handler makes of some instances of one series.

    ``instances`` are the instances the display set shows, in display
    order; they are taken from the group the handler was given, and the
    instances no display set takes pass on to the next handler. ``fields``
    are the handler's own fields (``isReconstructable``, ``imageIds``,
    ``numImageFrames``, ``referencedSeriesInstanceUID``, ...); they may
    replace the common ``Modality``, ``numImageFrames`` and ``imageIds``.
    ``key`` tells two display sets of one handler, series and SOP class
    apart in the stable ``displaySetInstanceUID``; without it, the
    SOPInstanceUIDs of ``instances`` do. A display set that gathers a whole
    group (a stack, a report series) gives a fixed key, so its UID survives
    the series growing.
    """

    instances: Sequence[Instance]
    fields: Mapping[str, Any] = field(default_factory=dict)
    key: str | None = None


GetDisplaySets = Callable[[Sequence[Instance]], Iterable[DisplaySet]]


@dataclass(frozen=True, kw_only=True)
class SopClassHandler:
    """Turns the instances of one series and one SOP class into display sets.

    ``sop_class_uids`` are the SOP Class UIDs the handler is offered (None:
    every class, even a missing one). ``get_display_sets`` receives the
    instances of one series that share a SOPClassUID and that no earlier
    handler took, ordered by InstanceNumber; returning nothing passes them
    all to the next handler. Handlers are tried by descending ``priority``;
    the built-ins have priority 0 and come first among equals, so a custom
    handler needs a priority above 0 to be tried before them.
    """

    id: str
    sop_class_uids: frozenset[str] | None
    get_display_sets: GetDisplaySets
    priority: int = 0

    def claims(self, sop_class_uid: str | None) -> bool:
        """Whether instances of this SOP class are offered to the handler."""
        if self.sop_class_uids is None:
            return True
        return sop_class_uid is not None and sop_class_uid in self.sop_class_uids
