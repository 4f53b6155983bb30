"""metastore: a persistent, SQL-backed index of DICOM study, series and instance metadata.

The names below are loaded on first use (PEP 562), so that ``import
metastore.cli`` (and ``metastore --help``) does not load SQLAlchemy,
pydicom and the rest before a command needs them.
"""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING, Any

from metastore.version import __version__ as __version__

if TYPE_CHECKING:
    from metastore.dicom import denaturalize, naturalize
    from metastore.errors import (
        BadResponse,
        ConfigurationError,
        ConsumerError,
        DatabaseError,
        DeliveryError,
        HandlerFailed,
        InvalidMetadata,
        LeaseLost,
        MetastoreError,
        SchemaNotAtHead,
        SourceError,
        SourceRefused,
        SourceTimeout,
        SourceUnavailable,
        StoreClosed,
        UnknownSource,
    )
    from metastore.events import EVENTS, Consumer, Event, EventType
    from metastore.quirks import Quirk, Quirks
    from metastore.store import MetaStore, SourceInfo, WriteResult

#: Where each exported name lives.
_HOMES = {
    "BadResponse": "metastore.errors",
    "ConfigurationError": "metastore.errors",
    "Consumer": "metastore.events",
    "ConsumerError": "metastore.errors",
    "DatabaseError": "metastore.errors",
    "DeliveryError": "metastore.errors",
    "EVENTS": "metastore.events",
    "Event": "metastore.events",
    "EventType": "metastore.events",
    "HandlerFailed": "metastore.errors",
    "InvalidMetadata": "metastore.errors",
    "LeaseLost": "metastore.errors",
    "MetaStore": "metastore.store",
    "MetastoreError": "metastore.errors",
    "Quirk": "metastore.quirks",
    "Quirks": "metastore.quirks",
    "SchemaNotAtHead": "metastore.errors",
    "SourceError": "metastore.errors",
    "SourceInfo": "metastore.store",
    "SourceRefused": "metastore.errors",
    "SourceTimeout": "metastore.errors",
    "SourceUnavailable": "metastore.errors",
    "StoreClosed": "metastore.errors",
    "UnknownSource": "metastore.errors",
    "WriteResult": "metastore.store",
    "denaturalize": "metastore.dicom",
    "naturalize": "metastore.dicom",
}

__all__ = [
    "BadResponse",
    "ConfigurationError",
    "Consumer",
    "ConsumerError",
    "DatabaseError",
    "DeliveryError",
    "EVENTS",
    "Event",
    "EventType",
    "HandlerFailed",
    "InvalidMetadata",
    "LeaseLost",
    "MetaStore",
    "MetastoreError",
    "Quirk",
    "Quirks",
    "SchemaNotAtHead",
    "SourceError",
    "SourceInfo",
    "SourceRefused",
    "SourceTimeout",
    "SourceUnavailable",
    "StoreClosed",
    "UnknownSource",
    "WriteResult",
    "denaturalize",
    "naturalize",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'metastore' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


logging.getLogger(__name__).addHandler(logging.NullHandler())
