"""``create_app``: the read-only DICOMweb service over the index, as an ASGI application.

Every route is listed in ``routes()``. The DICOMweb root is ``/dicomweb``
(QIDO-RS PS3.18 10.6, WADO-RS 10.4); launch files are at ``/dicomjson``
and the change feed at ``/changefeed``. Only GET (and HEAD) are routed, so
STOW-RS and DELETE answer 405. Around the routes, from the outside in: one
access log line per request, CORS for the configured origins only, and
the bearer token, compared in constant time, on every route.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from metastore.errors import MetastoreError
from metastore.service import handlers, qido
from metastore.service.feed import FeedWaker
from metastore.service.handlers import Context
from metastore.service.responses import error, status_of
from metastore.service.settings import Settings
from metastore.service.upstream import Upstream
from metastore.store import MetaStore

log = logging.getLogger(__name__)
access_log = logging.getLogger("metastore.service.access")

_INSTANCE = "/dicomweb/studies/{study}/series/{series}/instances/{instance}"


def routes() -> list[BaseRoute]:
    """Every route of the service, in one place."""
    get = ["GET"]
    return [
        Route("/dicomweb/studies", qido.studies, methods=get),
        Route("/dicomweb/series", qido.series, methods=get),
        Route("/dicomweb/instances", qido.instances, methods=get),
        Route("/dicomweb/studies/{study}/series", qido.series, methods=get),
        Route("/dicomweb/studies/{study}/instances", qido.instances, methods=get),
        Route("/dicomweb/studies/{study}/series/{series}/instances", qido.instances, methods=get),
        Route("/dicomweb/studies/{study}/metadata", handlers.study_metadata, methods=get),
        Route(
            "/dicomweb/studies/{study}/series/{series}/metadata",
            handlers.series_metadata,
            methods=get,
        ),
        Route(f"{_INSTANCE}/metadata", handlers.instance_metadata, methods=get),
        Route(_INSTANCE, handlers.retrieve_instance, methods=get),
        Route(f"{_INSTANCE}/frames/{{frames}}", handlers.frames, methods=get),
        Route(f"{_INSTANCE}/rendered", handlers.rendered, methods=get),
        Route(f"{_INSTANCE}/frames/{{frames}}/rendered", handlers.rendered, methods=get),
        Route(f"{_INSTANCE}/bulk/{{path:path}}", handlers.bulkdata, methods=get),
        Route("/dicomweb/studies/{study}", handlers.not_retrievable, methods=get),
        Route("/dicomweb/studies/{study}/series/{series}", handlers.not_retrievable, methods=get),
        Route("/dicomjson", qido.dicomjson, methods=get),
        Route("/changefeed", handlers.changefeed, methods=get),
        Route("/changefeed/latest", handlers.changefeed_latest, methods=get),
    ]


def create_app(
    store_or_url: MetaStore | str | None = None,
    settings: Settings | None = None,
    *,
    upstream: Upstream | None = None,
) -> Starlette:
    """The service over a store (or a database URL, opened and closed with the app).

    ``settings`` holds the limits, the token and the CORS origins
    (``metastore.service.settings``). ``upstream`` replaces the client that
    reaches the archives (tests inject faults with it).
    """
    settings = settings or Settings()
    owned = not isinstance(store_or_url, MetaStore)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        store = store_or_url if isinstance(store_or_url, MetaStore) else MetaStore(store_or_url)
        client = upstream or Upstream(
            connect_timeout=settings.upstream_connect_timeout, timeout=settings.upstream_timeout
        )
        waker = FeedWaker(store, settings.poll_interval)
        app.state.metastore = Context(store=store, settings=settings, upstream=client, waker=waker)
        log.info("serving %r", store)
        try:
            yield
        finally:
            waker.close()
            await client.aclose()
            if owned:
                store.close()

    middleware = [Middleware(AccessLog)]
    if settings.cors_origins:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=list(settings.cors_origins),
                allow_methods=["GET", "HEAD", "OPTIONS"],
                allow_headers=["Accept", "Authorization", "If-None-Match", "Accept-Encoding"],
                expose_headers=["ETag", "Warning", "Content-Location"],
                max_age=600,
            )
        )
    if settings.token is not None:
        middleware.append(Middleware(BearerToken, token=settings.token))
    return Starlette(
        routes=routes(),
        middleware=middleware,
        exception_handlers={MetastoreError: _metastore_error},
        lifespan=lifespan,
    )


async def _metastore_error(request: Request, exc: Exception) -> Response:
    status = status_of(exc) if isinstance(exc, MetastoreError) else 500
    if status >= 500:
        log.warning("%s %s: %s", request.method, request.url.path, exc)
    return error(status, str(exc))


class BearerToken:
    """Every request must carry ``Authorization: Bearer <token>`` (compared in constant time)."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self._expected = f"Bearer {token}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = b""
        for name, value in scope["headers"]:
            if name == b"authorization":
                given = value
                break
        if not hmac.compare_digest(given, self._expected):
            response = error(
                401,
                "this service needs Authorization: Bearer <token>",
                {"WWW-Authenticate": 'Bearer realm="metastore"'},
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


class AccessLog:
    """One line per request on ``metastore.service.access``: client, method, path, status, bytes, ms."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        seen: dict[str, Any] = {"status": 0, "bytes": 0}

        async def counting(message: Message) -> None:
            if message["type"] == "http.response.start":
                seen["status"] = message["status"]
            elif message["type"] == "http.response.body":
                seen["bytes"] += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, counting)
        finally:
            client = scope.get("client") or ("-", 0)
            query = scope.get("query_string", b"")
            path = scope.get("path", "")
            if query:
                path = f"{path}?{query.decode('latin-1')}"
            access_log.info(
                "%s %s %s %s %d %.1fms",
                client[0],
                scope.get("method", "-"),
                path,
                seen["status"] or "-",
                seen["bytes"],
                (time.perf_counter() - started) * 1000,
            )
