"""Running the service on uvicorn: ``serve`` is what ``metastore serve`` calls.

With one worker the app runs in this process. With several, uvicorn
spawns worker processes that build the app from the environment
(``app_from_env``), each with its own database pool; the settings travel
to them in ``METASTORE_SERVE_CONFIG`` (the token with them, as it came
from the environment). uvicorn stops cleanly on SIGTERM and SIGINT: it
stops accepting, lets running requests finish, then shuts the app down.

After a clean stop uvicorn's server raises the signal again on itself, so a
single-worker process would die of it (exit 143 on SIGTERM) where the
several-worker supervisor exits 0. ``_Server`` catches the signals the same
way and does not raise them again: a clean stop is exit 0 either way.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import signal
import threading
from collections.abc import Iterator
from typing import Any

import orjson
import uvicorn
from starlette.applications import Starlette

from metastore.errors import MetastoreError
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
        server = _Server(uvicorn.Config(create_app(url, settings), **common))
        server.run()
        if not server.started:
            raise MetastoreError(f"the service did not start on {host}:{port} (see the log above)")
        return
    os.environ[_CONFIG_ENV] = orjson.dumps(
        {"url": url, "settings": dataclasses.asdict(settings)}
    ).decode()
    uvicorn.run(f"{__name__}:app_from_env", factory=True, workers=workers, **common)


class _Server(uvicorn.Server):
    """uvicorn's server, stopping on SIGTERM/SIGINT without raising the signal again after."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        stops = (signal.SIGINT, signal.SIGTERM)
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in stops}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def app_from_env() -> Starlette:
    """The app of a worker process, from what ``serve`` put in the environment."""
    config = orjson.loads(os.environ[_CONFIG_ENV])
    values = dict(config["settings"])
    values["cors_origins"] = tuple(values["cors_origins"])
    return create_app(config["url"], Settings.from_mapping(values))
