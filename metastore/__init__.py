"""metastore: a persistent, SQL-backed index of DICOM study, series and instance metadata."""

from __future__ import annotations

import logging

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
from metastore.version import __version__ as __version__

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

logging.getLogger(__name__).addHandler(logging.NullHandler())
