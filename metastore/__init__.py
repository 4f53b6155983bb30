"""metastore: a persistent, SQL-backed index of DICOM study, series and instance metadata."""

from __future__ import annotations

import logging

from metastore.dicom import denaturalize, naturalize
from metastore.errors import (
    ConfigurationError,
    DatabaseError,
    InvalidMetadata,
    MetastoreError,
    SchemaNotAtHead,
    SourceError,
    StoreClosed,
    UnknownSource,
)
from metastore.events import EVENTS, Event, EventType
from metastore.store import MetaStore, SourceInfo, WriteResult

__all__ = [
    "ConfigurationError",
    "DatabaseError",
    "EVENTS",
    "Event",
    "EventType",
    "InvalidMetadata",
    "MetaStore",
    "MetastoreError",
    "SchemaNotAtHead",
    "SourceError",
    "SourceInfo",
    "StoreClosed",
    "UnknownSource",
    "WriteResult",
    "denaturalize",
    "naturalize",
]

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())
