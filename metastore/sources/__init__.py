"""Where metadata comes from: the ``Source`` protocol and the registry of kinds.

A source adapter turns one backend into naturalized metadata (the shape
``MetaStore`` takes); it never touches the database: ``metastore.ingest``
writes what it yields. A source that reads a whole file or folder in one
pass also yields :class:`StudyMetadata`, one study at a time. Its methods follow
OHIF's data source module: search studies, search the series of a study,
retrieve a series' instance metadata, and the image ids of an instance.

Kinds are looked up by name. The built-ins are imported lazily (a kind's
dependencies load only when it is used); custom kinds register through the
``metastore.sources`` entry-point group, each entry point naming a factory
``factory(config: SourceConfig) -> Source``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import import_module
from importlib.metadata import entry_points
from typing import Any, Protocol, runtime_checkable

from metastore.errors import UnknownSource
from metastore.quirks import Quirks

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "metastore.sources"


@dataclass(frozen=True, kw_only=True)
class SourceConfig:
    """How to reach a backend.

    ``settings`` are non-secret and may be stored with the source;
    ``headers`` may carry credentials and are never stored or logged.
    """

    name: str
    kind: str
    root: str | None = None
    settings: Mapping[str, Any] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)


@dataclass(frozen=True, kw_only=True)
class StudyMetadata:
    """One study as a source yields it, ready to be written.

    ``study`` holds the study-level fields, ``summaries`` the series-level
    fields of each series (one ``SERIES_ADDED``), ``series`` each series'
    instances, read one series at a time as it is iterated (one
    ``INSTANCES_ADDED`` each).
    """

    study: Mapping[str, Any]
    summaries: Sequence[Mapping[str, Any]]
    series: Iterable[list[dict[str, Any]]]


@dataclass(frozen=True, kw_only=True)
class Rejected:
    """A part of a study a source could not read: a series, or one instance of it.

    ``series`` is None when not even the series is known (an unreadable
    search row); ``instance`` is None when the whole series is lost.
    """

    series: str | None
    instance: str | None = None
    error: str

    def to_dict(self) -> dict[str, str | None]:
        return {"series": self.series, "instance": self.instance, "error": self.error}

    def __str__(self) -> str:
        where = f"series {self.series}" if self.series else "a search row"
        if self.instance:
            where += f" instance {self.instance}"
        return f"{where}: {self.error}"


class ReadReport:
    r"""What a source straightened out (:class:`Quirks`) and what it could not read.

    A source that reads DICOM JSON keeps one as its ``report`` attribute and
    adds to it as it reads; whoever drives the source :meth:`take`\ s it per
    unit of work (a worker, per job). Safe to add to from a prefetching
    thread.
    """

    def __init__(self) -> None:
        self.quirks = Quirks()
        self.rejected: list[Rejected] = []
        self._lock = threading.Lock()

    def reject(self, part: Rejected) -> None:
        with self._lock:
            self.rejected.append(part)

    def take(self) -> tuple[Quirks, list[Rejected]]:
        """What was counted and rejected since the last take, leaving the report empty."""
        with self._lock:
            taken = self.quirks, self.rejected
            self.quirks, self.rejected = Quirks(), []
        return taken


@runtime_checkable
class Source(Protocol):
    """A backend the index is filled from.

    A source whose methods may be called from two threads at once can set
    a class attribute ``thread_safe = True``: workers then fetch the next
    series while they write the current one. A source may keep a
    :class:`ReadReport` as ``report``: workers then report the deviations it
    normalized, and store the rest of a study when it rejects a part of it.
    A thread-safe source may also offer ``fetch_series_metadata(study_uid,
    series_uid)``, which fetches a series and returns a function that reads
    it into instances, reporting into the ``ReadReport`` it is given: a
    worker reading ahead then fetches on one thread and reads on the other.
    """

    config: SourceConfig

    def search_studies(self, query: Mapping[str, Any] | None = None) -> Iterable[dict[str, Any]]:
        """Naturalized study-level rows matching a QIDO-style query (all when None)."""
        ...

    def search_series(self, study_uid: str) -> list[dict[str, Any]]:
        """Naturalized series-level rows of one study."""
        ...

    def retrieve_series_metadata(self, study_uid: str, series_uid: str) -> list[dict[str, Any]]:
        """Naturalized metadata of every instance of a series, each with ``url`` and ``imageId``."""
        ...

    def get_image_ids(self, instance: Mapping[str, Any]) -> list[str]:
        """The imageIds a viewer uses for an instance: one per frame."""
        ...

    def close(self) -> None:
        """Release connections and files."""
        ...


SourceFactory = Callable[[SourceConfig], Source]

# Built-in kinds, as "module:attribute", imported on first use.
_BUILTINS: dict[str, str] = {
    "dicomweb": "metastore.sources.dicomweb:DicomWebSource",
    "static_wado": "metastore.sources.static_wado:StaticWadoSource",
    "dicomjson": "metastore.sources.dicomjson:DicomJsonSource",
    "folder": "metastore.sources.folder:FolderSource",
}
_registered: dict[str, SourceFactory] = {}


def register(kind: str, factory: SourceFactory) -> None:
    """Register (or replace) the factory of a source kind in this process."""
    _registered[kind] = factory


def kinds() -> list[str]:
    """Every kind known here: built-in, registered and from entry points."""
    found = set(_BUILTINS) | set(_registered)
    found.update(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))
    return sorted(found)


def factory_for(kind: str) -> SourceFactory:
    """The factory of a kind, or ``UnknownSource``."""
    if kind in _registered:
        return _registered[kind]
    if kind in _BUILTINS:
        module, _, attribute = _BUILTINS[kind].partition(":")
        factory: SourceFactory = getattr(import_module(module), attribute)
        return factory
    for ep in entry_points(group=ENTRY_POINT_GROUP, name=kind):
        loaded: SourceFactory = ep.load()
        log.debug("source kind %s from entry point %s", kind, ep.value)
        return loaded
    raise UnknownSource(f"unknown source kind {kind!r}; known: {', '.join(kinds())}", kind=kind)


def open_source(config: SourceConfig) -> Source:
    """A source for the configuration, from its kind's factory."""
    return factory_for(config.kind)(config)


__all__ = [
    "ENTRY_POINT_GROUP",
    "ReadReport",
    "Rejected",
    "Source",
    "SourceConfig",
    "SourceFactory",
    "StudyMetadata",
    "factory_for",
    "kinds",
    "open_source",
    "register",
]
