"""Which SOP class handlers there are, and the order they are tried in.

Three kinds: the built-ins (``metastore.displaysets.handlers``), handlers
registered in this process with ``register``, and handlers other packages
install through the ``metastore.sop_class_handlers`` entry-point group.
An entry point names either a ``SopClassHandler`` or a callable taking no
arguments that returns one or a list of them (like OHIF's
``getSopClassHandlerModule``)::

    [project.entry-points."metastore.sop_class_handlers"]
    keyimages = "my_package.handlers:KEY_IMAGES"

Order (the precedence rule): descending ``priority``; among equal
priorities the built-ins first, in their fixed order, then the others in
the order they were registered (entry points by name, after ``register``
calls). The built-ins have priority 0, so a custom handler with priority 1
or more is tried before all of them, and one with priority 0 or less only
gets what they leave. A custom handler whose id is a built-in's replaces
that built-in.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from metastore.displaysets.handlers import BUILTIN_HANDLERS
from metastore.displaysets.model import SopClassHandler
from metastore.errors import ConfigurationError

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "metastore.sop_class_handlers"

_registered: list[SopClassHandler] = []
_from_entry_points: list[SopClassHandler] | None = None


def register(handler: SopClassHandler) -> Callable[[], None]:
    """Add a handler in this process; returns a function that removes it again."""
    _check(handler, f"register({handler!r})")
    _registered.append(handler)

    def unregister() -> None:
        if handler in _registered:
            _registered.remove(handler)

    return unregister


def refresh() -> None:
    """Forget the handlers read from entry points (read again on next use)."""
    global _from_entry_points
    _from_entry_points = None


def all_handlers() -> list[SopClassHandler]:
    """Every handler, in the order they are tried."""
    custom = [*_registered, *_entry_point_handlers()]
    replaced = {handler.id: handler for handler in custom}
    ranked: list[tuple[int, int, SopClassHandler]] = []
    for rank, builtin in enumerate(BUILTIN_HANDLERS):
        chosen = replaced.pop(builtin.id, builtin)
        ranked.append((-chosen.priority, rank, chosen))
    rank = len(BUILTIN_HANDLERS)
    for handler in custom:
        if replaced.get(handler.id) is handler:
            ranked.append((-handler.priority, rank, handler))
            rank += 1
    ranked.sort(key=lambda entry: entry[:2])
    return [handler for _, _, handler in ranked]


def _entry_point_handlers() -> list[SopClassHandler]:
    global _from_entry_points
    if _from_entry_points is None:
        found: list[SopClassHandler] = []
        for entry_point in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name):
            found.extend(_load(entry_point))
        _from_entry_points = found
    return _from_entry_points


def _load(entry_point: EntryPoint) -> list[SopClassHandler]:
    origin = f"entry point {entry_point.name} = {entry_point.value} ({ENTRY_POINT_GROUP})"
    try:
        loaded: Any = entry_point.load()
        if not isinstance(loaded, SopClassHandler) and callable(loaded):
            loaded = loaded()
    except Exception as exc:
        raise ConfigurationError(
            f"cannot load SOP class handler {origin}: {exc}", entry_point=entry_point.name
        ) from exc
    found = list(loaded) if isinstance(loaded, Iterable) else [loaded]
    for handler in found:
        _check(handler, origin)
        log.debug(
            "SOP class handler %s (priority %s) from %s", handler.id, handler.priority, origin
        )
    return found


def _check(handler: Any, origin: str) -> None:
    if not isinstance(handler, SopClassHandler):
        raise ConfigurationError(
            f"{origin} gives {type(handler).__name__}, not a SopClassHandler", origin=origin
        )
    uids = handler.sop_class_uids
    if not isinstance(handler.id, str) or not handler.id.strip():
        raise ConfigurationError(f"{origin}: a handler id must be a non-empty string")
    if uids is not None and (
        not isinstance(uids, frozenset) or not all(isinstance(uid, str) for uid in uids)
    ):
        raise ConfigurationError(
            f"{origin}: handler {handler.id} must claim a frozenset of SOP Class UIDs, or None"
        )
    if not callable(handler.get_display_sets) or isinstance(handler.priority, bool):
        raise ConfigurationError(f"{origin}: handler {handler.id} is malformed")
    if not isinstance(handler.priority, int):
        raise ConfigurationError(f"{origin}: handler {handler.id} has a non-integer priority")
