"""The endpoints: each parses its request, calls one library function, answers bytes.

Database work runs in Starlette's thread pool (the store is synchronous);
archive streams run on the event loop. The routes are listed in
``metastore.service.app``.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from metastore.errors import ConfigurationError, QueryError
from metastore.outbox import parse_types
from metastore.service import feed, metadata, upstream
from metastore.service.feed import FeedWaker
from metastore.service.responses import accepts_json, dicom_json, error
from metastore.service.settings import Settings
from metastore.service.upstream import Location, Upstream
from metastore.store import MetaStore

_UID_MAX = 64  # PS3.5 9.1
_FRAMES = re.compile(r"^[1-9][0-9]{0,8}(,[1-9][0-9]{0,8})*$")
#: Query parameters of a rendered request passed to the archive (PS3.18 8.3.5).
_RENDERED_PARAMS = ("annotation", "quality", "viewport", "window", "iccprofile", "charset")
#: What an instance retrieval asks the archive for when the client does not say.
_DEFAULT_INSTANCE_ACCEPT = 'multipart/related; type="application/dicom"; transfer-syntax=*'
_DEFAULT_FRAME_ACCEPT = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'


@dataclass(frozen=True, kw_only=True)
class Context:
    """What every handler reads: the store, the settings and the archives' client."""

    store: MetaStore
    settings: Settings
    upstream: Upstream
    waker: FeedWaker


def context(request: Request) -> Context:
    found: Context = request.app.state.metastore
    return found


def dicomweb_base(request: Request) -> str:
    """The DICOMweb root URL clients reach (for the BulkDataURIs written into metadata)."""
    public = context(request).settings.public_url
    root = public if public is not None else str(request.base_url).rstrip("/")
    return f"{root}/dicomweb"


def path_uid(request: Request, name: str) -> str | None:
    """A UID from the path (None when the route has no such part); 400 if it cannot be one."""
    value = request.path_params.get(name)
    if value is not None and (not value or len(value) > _UID_MAX):
        raise QueryError(f"{name} {str(value)[:80]!r} is not a UID")
    return None if value is None else str(value)


def _uids(request: Request, *names: str) -> list[str]:
    return [str(path_uid(request, name)) for name in names]


def _not_found(what: str) -> Response:
    return error(404, f"{what} is not in the index")


# -- WADO-RS metadata -----------------------------------------------------------


async def study_metadata(request: Request) -> Response:
    (study,) = _uids(request, "study")
    ctx = context(request)
    if not accepts_json(request):
        return error(406, "metadata is served as application/dicom+json")
    found = await run_in_threadpool(
        metadata.study_metadata, ctx.store, study, dicomweb_base(request)
    )
    if found is None:
        return _not_found(f"study {study}")
    etag, data = found
    return dicom_json(request, data, etag=etag, min_gzip=ctx.settings.gzip_min_size)


async def series_metadata(request: Request) -> Response:
    study, series = _uids(request, "study", "series")
    ctx = context(request)
    if not accepts_json(request):
        return error(406, "metadata is served as application/dicom+json")
    found = await run_in_threadpool(
        metadata.series_metadata, ctx.store, study, series, dicomweb_base(request)
    )
    if found is None:
        return _not_found(f"series {series} of study {study}")
    return dicom_json(request, None, gzipped=found.body, etag=found.etag)


async def instance_metadata(request: Request) -> Response:
    study, series, instance = _uids(request, "study", "series", "instance")
    ctx = context(request)
    if not accepts_json(request):
        return error(406, "metadata is served as application/dicom+json")
    data = await run_in_threadpool(
        metadata.instance_metadata, ctx.store, study, series, instance, dicomweb_base(request)
    )
    if data is None:
        return _not_found(f"instance {instance} of series {series}")
    return dicom_json(
        request, data, etag=metadata.etag_of(data), min_gzip=ctx.settings.gzip_min_size
    )


# -- pixels and bulk data, from the archive ---------------------------------------


async def _locate(request: Request, *, with_metadata: bool = False) -> Location | Response:
    study, series, instance = _uids(request, "study", "series", "instance")
    found = await run_in_threadpool(
        upstream.locate, context(request).store, study, series, instance, metadata=with_metadata
    )
    if found is None:
        return _not_found(f"instance {instance} of series {series}")
    return found


async def _stream(
    request: Request,
    location: Location,
    url: str,
    *,
    accept: str | None,
    params: dict[str, str] | None = None,
) -> Response:
    client = context(request).upstream
    response = await client.open(location, url, accept=accept, params=params)
    what = f"the archive of source {location.source!r} (instance {location.sop_uid})"
    return StreamingResponse(
        upstream.relay(response, what),
        status_code=response.status_code,
        headers=upstream.passed_headers(response),
    )


async def retrieve_instance(request: Request) -> Response:
    location = await _locate(request)
    if isinstance(location, Response):
        return location
    url = location.http_url
    if url is None:
        return error(404, f"instance {location.sop_uid} has no URL the service can fetch")
    accept = request.headers.get("accept") or _DEFAULT_INSTANCE_ACCEPT
    return await _stream(request, location, url, accept=accept)


def _frames(request: Request) -> str:
    frames = str(request.path_params["frames"])
    if not _FRAMES.match(frames):
        raise QueryError(f"frames {frames[:80]!r} is not a list of frame numbers from 1")
    return frames


async def frames(request: Request) -> Response:
    numbers = _frames(request)
    location = await _locate(request)
    if isinstance(location, Response):
        return location
    url = f"{location.wado_rs_url()}/frames/{numbers}"
    accept = request.headers.get("accept") or _DEFAULT_FRAME_ACCEPT
    return await _stream(request, location, url, accept=accept)


async def rendered(request: Request) -> Response:
    numbers = _frames(request) if "frames" in request.path_params else None
    location = await _locate(request)
    if isinstance(location, Response):
        return location
    url = location.wado_rs_url()
    if numbers is not None:
        url = f"{url}/frames/{numbers}"
    params = {k: v for k, v in request.query_params.items() if k in _RENDERED_PARAMS}
    accept = request.headers.get("accept") or "image/jpeg"
    return await _stream(request, location, f"{url}/rendered", accept=accept, params=params)


async def bulkdata(request: Request) -> Response:
    path = [part for part in str(request.path_params["path"]).split("/") if part]
    if not path or len(path) % 2 == 0 or len(path) > 15:
        return error(400, "a bulk data path is TAG or TAG/ITEM/TAG...")
    location = await _locate(request, with_metadata=True)
    if isinstance(location, Response):
        return location
    url = location.bulkdata_url(path)
    accept = request.headers.get("accept") or "multipart/related; type=application/octet-stream"
    return await _stream(request, location, url, accept=accept)


async def not_retrievable(request: Request) -> Response:
    return error(
        406,
        "study and series retrieval are not served; retrieve instances or frames "
        "(the metadata names them)",
    )


# -- the change feed ---------------------------------------------------------------


def _int(request: Request, name: str, default: int, low: int = 0) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise QueryError(f"{name}={raw[:40]!r} is not an integer") from None
    if value < low:
        raise QueryError(f"{name} must be at least {low}")
    return value


def _seconds(request: Request, name: str, cap: float) -> float:
    raw = request.query_params.get(name)
    if raw is None:
        return 0.0
    try:
        value = float(raw)
    except ValueError:
        raise QueryError(f"{name}={raw[:40]!r} is not a number of seconds") from None
    if not value >= 0:
        raise QueryError(f"{name} must not be negative")
    return min(value, cap)


async def changefeed(request: Request) -> Response:
    ctx = context(request)
    after = _int(request, "after", 0)
    limit = min(
        _int(request, "limit", ctx.settings.changefeed_max_limit, 1),
        ctx.settings.changefeed_max_limit,
    )
    wait = _seconds(request, "wait", ctx.settings.max_wait)
    try:
        types = parse_types(request.query_params.getlist("type") or None)
    except ConfigurationError as err:
        raise QueryError(str(err)) from None
    deadline = time.monotonic() + wait
    while True:
        since = ctx.waker.generation
        page = await run_in_threadpool(feed.read_page, ctx.store, after, limit, types)
        remaining = deadline - time.monotonic()
        if page["events"] or remaining <= 0 or await request.is_disconnected():
            break
        after = page["next"]
        await ctx.waker.wait(since, remaining)
    return _json(request, page)


async def changefeed_latest(request: Request) -> Response:
    return _json(request, await run_in_threadpool(feed.latest, context(request).store))


def _json(request: Request, value: Any) -> Response:
    data = orjson.dumps(value)
    return dicom_json(
        request,
        data,
        min_gzip=context(request).settings.gzip_min_size,
        media_type="application/json",
    )
