"""Running the service on uvicorn: ``serve`` is what ``metastore serve`` calls.

With one worker the app runs in this process. With several, uvicorn
spawns worker processes that build the app from the environment
(``app_from_env``), each with its own database pool; the settings travel
to them in ``METASTORE_SERVE_CONFIG`` (the token with them, as it came
from the environment). uvicorn stops cleanly on SIGTERM and SIGINT: it
stops accepting, lets running requests finish, then shuts the app down.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any

import orjson
import uvicorn
from starlette.applications import Starlette

from metastore.service.app import create_app
from metastore.service.settings import Settings
from metastore.store import MetaStore

log = logging.getLogger(__name__)

_CONFIG_ENV = "METASTORE_SERVE_CONFIG"


def log_config(level: str) -> dict[str, Any]:
    """uvicorn's logging setup plus metastore's loggers (access lines always at INFO)."""
    config: dict[str, Any] = dict(uvicorn.config.LOGGING_CONFIG)
    config["loggers"] = {
        **config["loggers"],
        "metastore": {"handlers": ["default"], "level": level.upper(), "propagate": False},
        "metastore.service.access": {"handlers": ["default"], "level": "INFO", "propagate": False},
    }
    return config


def serve(
    url: str,
    settings: Settings,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    workers: int = 1,
    log_level: str = "warning",
) -> None:
    """Serve the index at ``url`` until SIGTERM or SIGINT.

    The database is opened (and a brand-new one migrated) first, so a
    database behind head stops here with ``SchemaNotAtHead``.
    """
    MetaStore(url).close()
    common: dict[str, Any] = {
        "host": host,
        "port": port,
        "access_log": False,  # ours: metastore.service.access
        "log_config": log_config(log_level),
        "log_level": log_level.lower(),
        "timeout_graceful_shutdown": 10,
    }
    log.info("serving %s on http://%s:%d with %d worker(s)", url, host, port, workers)
    if workers <= 1:
        uvicorn.run(create_app(url, settings), **common)
        return
    os.environ[_CONFIG_ENV] = orjson.dumps(
        {"url": url, "settings": dataclasses.asdict(settings)}
    ).decode()
    uvicorn.run(f"{__name__}:app_from_env", factory=True, workers=workers, **common)


def app_from_env() -> Starlette:
    """The app of a worker process, from what ``serve`` put in the environment."""
    config = orjson.loads(os.environ[_CONFIG_ENV])
    values = dict(config["settings"])
    values["cors_origins"] = tuple(values["cors_origins"])
    return create_app(config["url"], Settings.from_mapping(values))
