"""Archive change feeds: what an archive says changed, behind a small protocol.

An archive that announces its changes (Orthanc's ``/changes``, Microsoft's
DICOM service ``/changefeed``, a webhook receiving Pub/Sub-style pushes)
is read through a :class:`ChangeFeed`: pages of :class:`ArchiveChange`
from a cursor the follower keeps in the database
(:mod:`metastore.ingest.follow`). A feed never touches the database.

Kinds are looked up by name: the built-in ``orthanc``, and others
registered through the ``metastore.feeds`` entry-point group, each naming a
factory ``factory(config: SourceConfig) -> ChangeFeed`` (``config.root``
is the feed's URL, ``config.headers`` its credentials).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib import import_module
from importlib.metadata import entry_points
from typing import Protocol, runtime_checkable

from metastore.errors import UnknownSource
from metastore.sources import SourceConfig

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "metastore.feeds"
UPDATED, DELETED = "updated", "deleted"


@dataclass(frozen=True, kw_only=True)
class ArchiveChange:
    """One study the archive says changed: stable after new instances, or deleted.

    ``resource`` is the archive's own id of the study; ``study_uid`` is
    None where the feed cannot say it (a deletion naming only the archive's
    id: :meth:`ChangeFeed.resource_id` then matches indexed studies).
    """

    action: str
    resource: str
    study_uid: str | None


@dataclass(frozen=True, kw_only=True)
class ChangePage:
    """Changes after a cursor, the cursor after them, and whether the feed has no more now."""

    changes: Sequence[ArchiveChange]
    position: str | None
    done: bool


@runtime_checkable
class ChangeFeed(Protocol):
    """An archive's change feed."""

    kind: str
    config: SourceConfig

    def read(self, position: str | None, limit: int) -> ChangePage:
        """The changes after ``position`` (None: from the feed's start), at most ``limit``."""
        ...

    def latest(self) -> str | None:
        """The cursor of the feed's end now (where a follower starting at "latest" begins)."""
        ...

    def resource_id(self, patient_id: str | None, study_uid: str) -> str | None:
        """The archive's id of a study, where it can be computed (None: it cannot)."""
        ...

    def study_count(self) -> int | None:
        """How many studies the archive holds now; None for a feed that announces deletions.

        A feed whose archive forgets deleted resources (Orthanc drops their
        changes) answers this cheaply; a change in it makes the follower
        compare :meth:`study_ids` with the index.
        """
        ...

    def study_ids(self) -> set[str]:
        """The archive's ids of every study it holds now (see :meth:`study_count`)."""
        ...

    def close(self) -> None: ...

    def __enter__(self) -> ChangeFeed: ...

    def __exit__(self, *exc_info: object) -> None: ...


FeedFactory = Callable[[SourceConfig], ChangeFeed]
_BUILTINS = {"orthanc": "metastore.sources.orthanc:OrthancFeed"}


def open_feed(
    kind: str, root: str, *, name: str, headers: Mapping[str, str] | None = None
) -> ChangeFeed:
    """The change feed of ``kind`` at ``root`` (built-in or from an entry point)."""
    config = SourceConfig(name=name, kind=kind, root=root, headers=dict(headers or {}))
    if kind in _BUILTINS:
        module, _, attribute = _BUILTINS[kind].partition(":")
        factory: FeedFactory = getattr(import_module(module), attribute)
        return factory(config)
    for ep in entry_points(group=ENTRY_POINT_GROUP, name=kind):
        loaded: FeedFactory = ep.load()
        log.debug("change feed %s from entry point %s", kind, ep.value)
        return loaded(config)
    known = sorted({*_BUILTINS, *(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))})
    raise UnknownSource(f"unknown change feed {kind!r}; known: {', '.join(known)}", kind=kind)
