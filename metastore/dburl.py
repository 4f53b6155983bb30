"""Which database: the URL rule (``--db``, else ``METASTORE_DATABASE_URL``, else the default).

Kept apart from :mod:`metastore.db` so that the command line can show it
without loading SQLAlchemy.
"""

from __future__ import annotations

import os

DEFAULT_URL = "sqlite:///metastore.db"
URL_ENV = "METASTORE_DATABASE_URL"


def resolve_url(url: str | None = None) -> str:
    """The database URL: the argument, else ``METASTORE_DATABASE_URL``, else the default."""
    chosen = url or os.environ.get(URL_ENV) or DEFAULT_URL
    # psycopg 3 is our PostgreSQL driver; accept the short spellings too.
    for prefix in ("postgresql://", "postgres://"):
        if chosen.startswith(prefix):
            chosen = "postgresql+psycopg://" + chosen[len(prefix) :]
    return chosen
