"""``metastore serve``: a read-only DICOMweb service over the index.

``create_app(store_or_url, settings)`` returns the ASGI application (Starlette),
so a backend can mount it; ``metastore serve`` runs it on uvicorn.
"""

from __future__ import annotations

from metastore.service.app import create_app, routes
from metastore.service.settings import SETTINGS, Setting, Settings

__all__ = ["SETTINGS", "Setting", "Settings", "create_app", "routes"]
