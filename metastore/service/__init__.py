"""``metastore serve``: a read-only DICOMweb service over the index.

``create_app(store_or_url, settings)`` returns the ASGI application (Starlette),
so a backend can mount it; ``metastore serve`` runs it on uvicorn. The names
load on first use (PEP 562), so the command line can read the settings'
help without loading the application.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from metastore.service.app import create_app, routes
    from metastore.service.settings import SETTINGS, Setting, Settings

__all__ = ["SETTINGS", "Setting", "Settings", "create_app", "routes"]

_HOMES = {
    "SETTINGS": "metastore.service.settings",
    "Setting": "metastore.service.settings",
    "Settings": "metastore.service.settings",
    "create_app": "metastore.service.app",
    "routes": "metastore.service.app",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'metastore.service' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value
