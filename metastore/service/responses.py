"""Answers of the service: DICOM JSON bodies with ETag and gzip, one-line errors.

Bodies are bytes built once (orjson, or kept gzip) and sent with an explicit
media type. Errors are a status and one line of plain text: the reason,
naming what was asked for, never a credential or an archive's URL.
"""

from __future__ import annotations

import gzip
from collections.abc import Mapping

from starlette.requests import Request
from starlette.responses import Response

from metastore.errors import (
    ConfigurationError,
    DatabaseError,
    MetastoreError,
    QueryError,
    SourceError,
    SourceRefused,
    SourceTimeout,
)

DICOM_JSON = "application/dicom+json"
#: gzip level for answers compressed on the fly (kept answers are compressed once, better).
_ON_THE_FLY_LEVEL = 1


def accepts_gzip(request: Request) -> bool:
    """Whether the client takes ``Content-Encoding: gzip`` (RFC 9110 12.5.3)."""
    for part in request.headers.get("accept-encoding", "").split(","):
        coding, _, params = part.strip().partition(";")
        if coding.strip().lower() in ("gzip", "*"):
            return params.replace(" ", "") not in ("q=0", "q=0.0", "q=0.00", "q=0.000")
    return False


def accepts_json(request: Request) -> bool:
    """Whether the Accept header allows DICOM JSON (absent, ``*/*``, ``application/*``, JSON)."""
    accept = request.headers.get("accept", "")
    if not accept.strip():
        return True
    for part in accept.split(","):
        media = part.split(";")[0].strip().lower()
        if media in ("*/*", "application/*", DICOM_JSON, "application/json"):
            return True
    return False


def _matches(if_none_match: str, etag: str) -> bool:
    tags = [t.strip().removeprefix("W/") for t in if_none_match.split(",")]
    return "*" in tags or f'"{etag}"' in tags


def dicom_json(
    request: Request,
    data: bytes | None,
    *,
    gzipped: bytes | None = None,
    etag: str | None = None,
    min_gzip: int = 1024,
    headers: Mapping[str, str] | None = None,
    media_type: str = DICOM_JSON,
) -> Response:
    """A DICOM JSON answer: 304 when the client's copy is current, gzip when it accepts it.

    Give the body as ``data`` (JSON), ``gzipped`` (kept compressed), or both.
    """
    extra = dict(headers or {})
    if etag is not None:
        extra["ETag"] = f'"{etag}"'
        extra["Cache-Control"] = "no-cache"  # keep it, but ask again (with If-None-Match)
        if _matches(request.headers.get("if-none-match", ""), etag):
            return Response(status_code=304, headers=extra)
    extra["Vary"] = "Accept-Encoding"
    if accepts_gzip(request):
        if gzipped is None and data is not None and len(data) >= min_gzip:
            gzipped = gzip.compress(data, _ON_THE_FLY_LEVEL, mtime=0)
        if gzipped is not None:
            extra["Content-Encoding"] = "gzip"
            return Response(gzipped, media_type=media_type, headers=extra)
    if data is None:
        data = gzip.decompress(gzipped or b"")
    return Response(data, media_type=media_type, headers=extra)


def error(status: int, message: str, headers: Mapping[str, str] | None = None) -> Response:
    """A one-line plain-text error."""
    line = " ".join(message.split())
    return Response(f"{line}\n", status_code=status, media_type="text/plain", headers=headers)


def status_of(exc: MetastoreError) -> int:
    """The HTTP status of one of our errors (the caller's fault: 4xx; an archive's: 502/504)."""
    if isinstance(exc, SourceTimeout):
        return 504
    if isinstance(exc, SourceRefused) and getattr(exc, "status", None) in (404, 410):
        return 404
    if isinstance(exc, SourceRefused) and getattr(exc, "status", None) == 406:
        return 406
    if isinstance(exc, SourceError):
        return 502
    if isinstance(exc, DatabaseError):
        return 503
    if isinstance(exc, ConfigurationError):
        return 500
    if isinstance(exc, QueryError):
        return 400
    return 500
