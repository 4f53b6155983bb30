"""Open a path or an http(s) URL as a stream of bytes, gunzipped when it is gzip.

Launch files are read incrementally, so a file of any size costs one read
buffer here: a local file is read as it is parsed, a URL's body is streamed
(httpx) and never held whole. A gzip body (magic bytes ``1f 8b``, whatever the
name or the Content-Type says) is decompressed on the fly. httpx's errors are
translated once, here, into ``SourceError`` naming the (redacted) URL.
"""

from __future__ import annotations

import gzip
import io
import logging
import os
import zlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, cast
from urllib.parse import urlsplit, urlunsplit

import httpx

from metastore.errors import SourceError
from metastore.progress import Counter, Progress

log = logging.getLogger(__name__)

_GZIP_MAGIC = b"\x1f\x8b"
_BOM = b"\xef\xbb\xbf"
_TIMEOUT = httpx.Timeout(30.0, connect=10.0)
_CHUNK = 1 << 16


def is_url(location: str) -> bool:
    """Whether ``location`` is an http(s) URL rather than a path."""
    return location.startswith(("http://", "https://"))


def redact_url(location: str) -> str:
    """A URL as it may be stored or logged: no user info, no query string.

    A launch file's URL may be pre-signed (a token in the query string) or
    carry a password; neither reaches the database or the logs.
    """
    if not is_url(location):
        return location
    parts = urlsplit(location)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def display_name(location: str) -> str:
    """The name of a path or URL for messages: the path as given, or the redacted URL."""
    return redact_url(location)


def stem(location: str) -> str:
    """The file name without ``.json``/``.gz`` suffixes: the default source name."""
    name = Path(urlsplit(location).path if is_url(location) else location).name
    for suffix in (".gz", ".json"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
    return name or "dicomjson"


class _Counted(io.RawIOBase):
    """A raw file whose reads are counted (bytes) on a progress counter."""

    def __init__(self, raw: io.RawIOBase, progress: Counter) -> None:
        self._raw = raw
        self._progress = progress

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        size = self._raw.readinto(buffer) or 0
        if size:
            self._progress.update(size)
        return size

    def close(self) -> None:
        self._raw.close()
        super().close()


class _ChunkReader(io.RawIOBase):
    """A read-only binary file over an iterator of byte chunks."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        while not self._pending:
            try:
                self._pending = next(self._chunks)
            except StopIteration:
                return 0
        size = min(len(buffer), len(self._pending))
        buffer[:size] = self._pending[:size]
        self._pending = self._pending[size:]
        return size


def _maybe_gunzip(buffered: io.BufferedReader[Any]) -> IO[bytes]:
    """The stream, decompressed if it is gzip, past a UTF-8 byte order mark if it has one."""
    stream: Any = buffered
    if buffered.peek(2)[:2] == _GZIP_MAGIC:
        stream = io.BufferedReader(gzip.GzipFile(fileobj=buffered, mode="rb"), _CHUNK)
    try:
        if stream.peek(3)[:3] == _BOM:  # Windows editors write one; JSON parsers refuse it
            stream.read(3)
    except (EOFError, OSError, zlib.error):
        pass  # broken gzip: the reader meets it again and says where
    return cast(IO[bytes], stream)


@contextmanager
def open_bytes(
    location: str,
    *,
    headers: Mapping[str, str] | None = None,
    timeout: float | None = None,
    progress: Progress | None = None,
) -> Iterator[IO[bytes]]:
    """A binary stream over the file or URL, decompressed if it is gzip.

    Raises ``SourceError`` when the file cannot be opened or the server
    refuses or fails; the message names the path or the redacted URL.
    A URL's own query string (``?key=a%26b``) is sent exactly as given.
    ``progress`` counts the bytes read (as stored: compressed for gzip),
    its total the file's size (a URL's Content-Length, when sent).
    """
    if is_url(location):
        with _open_url(location, headers or {}, timeout, progress) as stream:
            yield stream
        return
    try:
        file: io.RawIOBase = io.FileIO(location, "rb")
        if progress is not None:
            progress.set_total(os.fstat(file.fileno()).st_size)
            file = _Counted(file, progress)
        raw = io.BufferedReader(file, _CHUNK)
    except OSError as err:
        raise SourceError(f"cannot open {location}: {err.strerror or err}", file=location) from err
    try:
        yield _maybe_gunzip(raw)
    finally:
        raw.close()


@contextmanager
def _open_url(
    location: str, headers: Mapping[str, str], timeout: float | None, progress: Progress | None
) -> Iterator[IO[bytes]]:
    shown = redact_url(location)
    limits = _TIMEOUT if timeout is None else httpx.Timeout(timeout)
    # httpx keeps a URL's percent-encoding as given, so the query reaches
    # the server byte for byte.
    with httpx.Client(timeout=limits, follow_redirects=True, headers=dict(headers)) as client:
        try:
            with client.stream("GET", location) as response:
                if response.status_code >= 400:
                    raise SourceError(
                        f"GET {shown} failed: HTTP {response.status_code} {response.reason_phrase}",
                        file=shown,
                        status=response.status_code,
                    )
                log.info("reading %s", shown)
                length = response.headers.get("Content-Length", "")
                encoded = response.headers.get("Content-Encoding", "identity") != "identity"
                if progress is not None and length.isdigit() and not encoded:
                    progress.set_total(int(length))
                chunks = _ChunkReader(_translated(response.iter_bytes(_CHUNK), shown, progress))
                yield _maybe_gunzip(io.BufferedReader(chunks, _CHUNK))
        except httpx.HTTPError as err:
            raise SourceError(f"GET {shown} failed: {err}", file=shown) from err


def _translated(chunks: Iterator[bytes], shown: str, progress: Counter | None) -> Iterator[bytes]:
    """The body's chunks (counted); a transport failure mid-body becomes ``SourceError``."""
    try:
        for chunk in chunks:
            if progress is not None:
                progress.update(len(chunk))
            yield chunk
    except httpx.HTTPError as err:
        raise SourceError(f"reading {shown} failed: {err}", file=shown) from err
