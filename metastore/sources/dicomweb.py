"""A DICOMweb archive as a source: QIDO-RS searches and WADO-RS series metadata over httpx.

Requests (PS3.18):

- ``GET {root}/studies?...`` (QIDO-RS, study level), paged with ``limit`` and
  ``offset`` until a page comes back empty: servers cap pages silently, so a
  short page is not taken as the end;
- ``GET {root}/studies/{study}/series`` (QIDO-RS, series level), paged alike;

  both with ``includefield`` naming the attributes the index keeps for a
  study or series (:data:`metastore.records.STUDY_KEYS`, ``SERIES_KEYS``):
  a server's default answer leaves some out (StudyDescription and
  SeriesDescription are not among PS3.18's required return keys, and
  Orthanc omits them). A server that answers 400 to ``includefield`` is
  searched again without it, and not asked for it again;
- ``GET {root}/studies/{study}/series/{series}/metadata`` (WADO-RS metadata),
  ``Accept: application/dicom+json``.

Answers are naturalized with :mod:`metastore.dicom`. Relative BulkDataURIs
are made absolute against the series URL (the standard's reading; the
``bulkdata_relative`` setting ``studies`` resolves them against the study,
as OHIF's ``bulkDataURI.relativeResolution`` does). Each instance gets
``url`` (its WADO-RS instance URL) and ``imageId`` (the WADO-RS URL of its
first frame, ``wadors:...frames/1``; :meth:`DicomWebSource.get_image_ids`
gives one per frame).

Every request retries timeouts, connection errors, 429 (waiting as long as
``Retry-After`` asks) and 5xx with exponential backoff and jitter; what is
still failing after the last try raises ``SourceUnavailable``, which a
worker retries later. Headers (``config.headers``, and credentials given in
the root URL, which are moved into an ``Authorization`` header) are sent
with every request and never appear in a log line or an error message.
"""

from __future__ import annotations

import email.utils
import gzip
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
import orjson

from metastore import records
from metastore.dicom import naturalize
from metastore.errors import (
    BadResponse,
    ConfigurationError,
    InvalidMetadata,
    SourceError,
    SourceRefused,
    SourceUnavailable,
)
from metastore.imageids import frame_image_ids
from metastore.retry import backoff
from metastore.sources import ReadReport, Rejected, SourceConfig
from metastore.sources.stream import redirect_guard, split_credentials
from metastore.tls import client_context

log = logging.getLogger(__name__)

DICOM_JSON = "application/dicom+json"
#: Settings a dicomweb source takes (all optional, none secret).
SETTINGS = {
    "page_size": "QIDO-RS page size (limit) [1000]",
    "timeout": "seconds to wait for a response [30]",
    "connect_timeout": "seconds to wait for a connection [10]",
    "retries": "tries after the first, per request [4]",
    "backoff": "first retry delay in seconds, doubled each try [0.5]",
    "max_backoff": "longest delay between tries, and longest Retry-After honoured [30]",
    "bulkdata_relative": "what relative BulkDataURIs resolve against: series or studies [series]",
}
_DEFAULTS: dict[str, Any] = {
    "page_size": 1000,
    "timeout": 30.0,
    "connect_timeout": 10.0,
    "retries": 4,
    "backoff": 0.5,
    "max_backoff": 30.0,
    "bulkdata_relative": "series",
    # Origins (scheme://host:port) besides the root's that a redirect may lead to.
    "redirect_origins": [],
}


class DicomWebSource:
    """A QIDO-RS/WADO-RS server. ``config.root`` is the DICOMweb root URL."""

    kind = "dicomweb"
    #: Content types a response may carry (a substring test: ``+json`` and ``json`` pass).
    accepted_types: tuple[str, ...] = ("json",)
    default_bulkdata_relative = "series"
    #: httpx.Client is thread-safe: a worker may fetch the next series while writing one.
    thread_safe = True

    def __init__(
        self, config: SourceConfig, *, transport: httpx.BaseTransport | None = None
    ) -> None:
        scheme = urlsplit(config.root or "").scheme
        # file:// only for a tree on disk, which brings its own transport.
        if not config.root or scheme not in ("http", "https", "file" if transport else ""):
            raise ConfigurationError(
                f"source {config.name!r}: the root must be an http(s) URL, not {config.root!r}",
                source=config.name,
            )
        self.config = config
        root, auth = split_credentials(config.root.rstrip("/"))
        self.root = root
        settings = {**_DEFAULTS, "bulkdata_relative": self.default_bulkdata_relative}
        settings.update(config.settings)
        try:
            self.page_size = int(settings["page_size"])
            self.retries = int(settings["retries"])
            self.backoff = float(settings["backoff"])
            self.max_backoff = float(settings["max_backoff"])
            timeout = httpx.Timeout(
                float(settings["timeout"]), connect=float(settings["connect_timeout"])
            )
        except (TypeError, ValueError) as err:
            raise ConfigurationError(f"source {config.name!r}: bad setting: {err}") from None
        if self.page_size < 1 or self.retries < 0:
            raise ConfigurationError(f"source {config.name!r}: page_size >= 1, retries >= 0")
        self.bulkdata_relative = str(settings["bulkdata_relative"])
        if self.bulkdata_relative not in ("series", "studies"):
            raise ConfigurationError(
                f"source {config.name!r}: bulkdata_relative must be series or studies"
            )
        headers = {"Accept": DICOM_JSON, **auth, **dict(config.headers)}
        redirects = settings["redirect_origins"]
        if isinstance(redirects, str) or not all(isinstance(o, str) for o in redirects):
            raise ConfigurationError(f"source {config.name!r}: redirect_origins is a list of URLs")
        self._client: httpx.Client | None = httpx.Client(
            timeout=timeout,
            headers=headers,
            follow_redirects=True,
            event_hooks={"response": [redirect_guard(root, redirects)]},
            transport=transport,  # tests inject faults here
            verify=client_context(),
        )
        self.requests = 0
        #: False once the server has refused a search with ``includefield`` (400).
        self.includefield = True
        #: Deviations normalized and parts rejected while reading (see ReadReport).
        self.report = ReadReport()

    # -- the Source protocol ------------------------------------------------

    def search_studies(self, query: Mapping[str, Any] | None = None) -> Iterator[dict[str, Any]]:
        """Study rows matching a QIDO-RS query (all pages), naturalized."""
        url = f"{self.root}/studies"
        yield from self._search(url, dict(query or {}), "StudyInstanceUID", records.STUDY_KEYS)

    def search_series(self, study_uid: str) -> list[dict[str, Any]]:
        """The series rows of one study (all pages), naturalized."""
        url = f"{self.root}/studies/{quote(study_uid)}/series"
        rows = self._search(url, {}, "SeriesInstanceUID", records.SERIES_KEYS)
        return self._series_rows(rows, url, study_uid)

    def retrieve_series_metadata(self, study_uid: str, series_uid: str) -> list[dict[str, Any]]:
        """Every instance's metadata (WADO-RS), with ``url`` and ``imageId``."""
        return self.fetch_series_metadata(study_uid, series_uid)(self.report)

    def fetch_series_metadata(
        self, study_uid: str, series_uid: str
    ) -> Callable[[ReadReport], list[dict[str, Any]]]:
        """Fetch a series' metadata now (the request, its retries, the JSON); read it later.

        The function returned makes the instances (naturalized, checked, with
        ``url`` and ``imageId``), reporting into the report it is given: a
        prefetching worker fetches on its reading thread and reads on its
        writing thread, so the server is not kept waiting while a series is
        read.
        """
        series_url = f"{self.root}/studies/{quote(study_uid)}/series/{quote(series_uid)}"
        url = f"{series_url}/metadata"
        datasets = self._get_json(url, None, f"series {series_uid} metadata")

        def read(report: ReadReport) -> list[dict[str, Any]]:
            made = (
                self._instance(item, index, study_uid, series_uid, url, report)
                for index, item in enumerate(datasets)
            )
            return [instance for instance in made if instance is not None]

        return read

    def get_image_ids(self, instance: Mapping[str, Any]) -> list[str]:
        """One ``wadors:`` imageId per frame of the instance."""
        image_id = instance.get("imageId")
        if not isinstance(image_id, str):
            raise InvalidMetadata("the instance has no imageId", field="imageId")
        frames = instance.get("NumberOfFrames")
        try:
            count = int(frames[0] if isinstance(frames, list) else frames or 1)
        except (TypeError, ValueError):
            count = 1
        return frame_image_ids(image_id, count)

    def close(self) -> None:
        """Close the HTTP client; closing twice is harmless."""
        if self._client is not None:
            self._client.close()
            self._client = None

    def __enter__(self) -> DicomWebSource:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.config.name!r} {self.root}>"

    # -- instances ----------------------------------------------------------

    def _instance(
        self, item: Any, index: int, study_uid: str, series_uid: str, url: str, report: ReadReport
    ) -> dict[str, Any] | None:
        """One instance of a series' metadata, or None when it cannot be read (rejected).

        What cannot be read costs that instance only: it goes into the
        report with its JSON path, and the rest of the series is read.
        """
        sop_uid = None
        try:
            meta = naturalize(item, report.quirks)
            sop_uid = meta.get("SOPInstanceUID")
            if not isinstance(sop_uid, str) or not sop_uid:
                sop_uid = None
                raise InvalidMetadata("an instance has no SOPInstanceUID", path="$")
            for key, wanted in (
                ("StudyInstanceUID", study_uid),
                ("SeriesInstanceUID", series_uid),
            ):
                found = meta.setdefault(key, wanted)
                if found != wanted:
                    raise InvalidMetadata(
                        f"the server sent an instance of another {key} ({found})", path=key
                    )
        except InvalidMetadata as err:
            error = f"{url} [{index}]: {err.args[0]}"
            report.reject(Rejected(series=series_uid, instance=sop_uid or f"[{index}]", error=error))
            log.warning("instance rejected: %s", error)
            return None
        study_url = f"{self.root}/studies/{quote(study_uid)}"
        series_url = f"{study_url}/series/{quote(series_uid)}"
        base = study_url if self.bulkdata_relative == "studies" else series_url
        _absolute_bulkdata(meta, base, self.root)
        instance_url = f"{series_url}/instances/{quote(sop_uid)}"
        meta["url"] = instance_url
        meta["imageId"] = f"wadors:{instance_url}/frames/1"
        return meta

    # -- HTTP ---------------------------------------------------------------

    def _search(
        self, url: str, query: dict[str, Any], uid_key: str, fields: tuple[str, ...]
    ) -> Iterator[dict[str, Any]]:
        """A QIDO-RS search asking for ``fields`` too, or without them if the server refuses.

        A query that names its own ``includefield`` is sent as it is.
        """
        if not self.includefield or "includefield" in query:
            yield from self._paged(url, query, uid_key)
            return
        found = False
        try:
            for row in self._paged(url, {**query, "includefield": list(fields)}, uid_key):
                found = True
                yield row
            return
        except SourceRefused as err:
            if found or err.context.get("status") != 400:
                raise
            log.warning("%s; searching without includefield from now on", err)
            self.includefield = False
        yield from self._paged(url, query, uid_key)

    def _paged(self, url: str, query: dict[str, Any], uid_key: str) -> Iterator[dict[str, Any]]:
        """All rows of a QIDO-RS search, page by page, until a page comes back empty.

        A server may return fewer rows than ``limit`` asked for without
        saying so (a silent cap), so paging stops only on an empty page, or
        at the caller's own ``limit``. A server that ignores ``offset``
        (a page of nothing new) is an error rather than an endless loop.
        """
        wanted = query.pop("limit", None)
        remaining = None if wanted is None else int(wanted)
        offset = int(query.pop("offset", 0) or 0)
        params = {key: _param(value) for key, value in query.items()}
        seen: set[str] = set()
        while remaining is None or remaining > 0:
            limit = self.page_size if remaining is None else min(self.page_size, remaining)
            page = self._get_json(url, {**params, "limit": limit, "offset": offset}, "search")
            if not page:
                return
            rows = [self._row(item, url, offset + i) for i, item in enumerate(page)]
            fresh = [row for row in rows if row is not None and row.get(uid_key) not in seen]
            if not fresh:
                raise BadResponse(
                    f"{url}: the server ignores offset (page at offset {offset} repeats "
                    "what came before)",
                    url=url,
                )
            seen.update(str(row.get(uid_key)) for row in fresh)
            yield from fresh
            if len(page) < limit:
                log.debug("%s: %d rows for limit %d: the end or a cap", url, len(page), limit)
            offset += len(page)
            if remaining is not None:
                remaining -= len(page)

    def _row(self, item: Any, url: str, position: int) -> dict[str, Any] | None:
        """A search row, naturalized; None when it cannot be read (rejected, not fatal)."""
        try:
            return naturalize(item, self.report.quirks)
        except InvalidMetadata as err:
            error = f"{url} [{position}]: {err.args[0]}"
            self.report.reject(Rejected(series=None, error=error))
            log.warning("search row rejected: %s", error)
            return None

    def _series_rows(
        self, rows: Iterable[dict[str, Any] | None], url: str, study_uid: str
    ) -> list[dict[str, Any]]:
        """The readable series rows of a study, each naming the study; the others rejected."""
        found = []
        for position, row in enumerate(rows):
            if row is None:
                continue
            uid = row.get("SeriesInstanceUID")
            if not isinstance(uid, str) or not uid:
                self.report.reject(
                    Rejected(series=None, error=f"{url}: row [{position}] has no SeriesInstanceUID")
                )
                continue
            row.setdefault("StudyInstanceUID", study_uid)
            found.append(row)
        return found

    def _get_json(self, url: str, params: Mapping[str, Any] | None, what: str) -> list[Any]:
        """GET a DICOM JSON array, with retries; 204 (no matches) is an empty array."""
        attempt = 0
        while True:
            try:
                return self._get_once(url, params, what)
            except SourceUnavailable as err:
                if attempt >= self.retries:
                    raise
                delay = self._delay(attempt, err.context.get("retry_after"))
                attempt += 1
                log.info("%s; try %d of %d in %.2fs", err, attempt + 1, self.retries + 1, delay)
                time.sleep(delay)

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_backoff)
        return backoff(attempt + 1, self.backoff, self.max_backoff)

    def _get_once(self, url: str, params: Mapping[str, Any] | None, what: str) -> list[Any]:
        if self._client is None:
            raise SourceError(f"source {self.config.name!r} is closed", source=self.config.name)
        self.requests += 1
        try:
            response = self._client.get(url + query_string(params))
            body = response.content
        except httpx.TimeoutException as exc:
            raise SourceUnavailable(
                f"{what}: {url} timed out ({type(exc).__name__})", url=url
            ) from exc
        except httpx.TransportError as exc:
            # Refused or dropped connections, and bodies cut short of their length.
            raise SourceUnavailable(
                f"{what}: {url} failed: {type(exc).__name__}: {exc}", url=url
            ) from exc
        except httpx.HTTPError as exc:  # anything else httpx raises
            raise SourceError(f"{what}: {url} failed: {type(exc).__name__}", url=url) from exc
        return self._decode(response, body, url, what)

    def _decode(self, response: httpx.Response, body: bytes, url: str, what: str) -> list[Any]:
        status = response.status_code
        if status == 429 or status >= 500:
            raise SourceUnavailable(
                f"{what}: {url} answered {status} {response.reason_phrase}",
                url=url,
                status=status,
                retry_after=_retry_after(response.headers.get("Retry-After")),
            )
        if status == 204:
            return []
        if status in (401, 403):
            raise SourceRefused(
                f"{what}: {url} answered {status} {response.reason_phrase}: "
                "check the source's --header / --token-env credentials",
                url=url,
                status=status,
            )
        if status >= 300:
            raise SourceRefused(
                f"{what}: {url} answered {status} {response.reason_phrase}", url=url, status=status
            )
        content_type = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if not any(accepted in content_type for accepted in self.accepted_types):
            raise BadResponse(
                f"{what}: {url} answered with Content-Type {content_type or '(none)'}, "
                f"not {DICOM_JSON}",
                url=url,
                content_type=content_type,
            )
        if body[:2] == b"\x1f\x8b":  # gzip without Content-Encoding, as object stores serve it
            try:
                body = gzip.decompress(body)
            except (OSError, EOFError) as err:
                raise SourceUnavailable(
                    f"{what}: {url}: truncated gzip body: {err}", url=url
                ) from err
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError as err:
            if err.pos >= len(body.rstrip()) - 1:
                # The body ends mid-document: most likely cut off on the way.
                raise SourceUnavailable(
                    f"{what}: {url}: the body ends early ({len(body)} bytes): {err}", url=url
                ) from err
            raise BadResponse(f"{what}: {url}: the body is not JSON: {err}", url=url) from err
        if not isinstance(data, list):
            raise BadResponse(
                f"{what}: {url}: expected a JSON array of data sets, got {type(data).__name__}",
                url=url,
            )
        return data


def _item_path(index: int, err: InvalidMetadata) -> str:
    """The JSON path of a problem inside item ``index`` of a response array."""
    inner = err.context.get("path")
    return f"[{index}]" if inner in (None, "$") else f"[{index}].{inner}"


# Query characters sent as they are: printable ASCII but for what a browser
# encodes in a query (space " # < > ', WHATWG URL "query percent-encode set")
# and the separators & = + and % itself. Servers that do not decode query
# values (Orthanc 1.10 matches "%2A" literally) then see `*`, `?`, `^` and
# `,` as OHIF in a browser sends them.
_QUERY_SAFE = "".join(
    c for c in map(chr, range(0x21, 0x7F)) if c.isalnum() is False and c not in "\"#<>'&=+%"
)


def query_string(params: Mapping[str, Any] | None) -> str:
    """``?key=value&...`` with only what must be percent-encoded encoded (see ``_QUERY_SAFE``)."""
    if not params:
        return ""
    pairs = (
        f"{quote(str(key), safe=_QUERY_SAFE)}={quote(str(value), safe=_QUERY_SAFE)}"
        for key, value in params.items()
    )
    return "?" + "&".join(pairs)


def _param(value: Any) -> str:
    """A QIDO-RS parameter value: lists become comma lists (PS3.18 8.3.4.1)."""
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value)
    return str(value)


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delay seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _absolute_bulkdata(dataset: dict[str, Any], base: str, root: str) -> None:
    """Make every BulkDataURI in a naturalized data set absolute, in place (sequences too)."""
    for value in dataset.values():
        if isinstance(value, dict) and isinstance(value.get("BulkDataURI"), str):
            value["BulkDataURI"] = _resolve(value["BulkDataURI"], base, root)
        elif isinstance(value, list):
            for item in value:
                if isinstance(item, dict) and "BulkDataURI" not in item:
                    _absolute_bulkdata(item, base, root)


def _resolve(uri: str, base: str, root: str) -> str:
    if urlsplit(uri).scheme:
        return uri
    if uri.startswith("/"):
        parts = urlsplit(root)
        return f"{parts.scheme}://{parts.netloc}{uri}"
    return f"{base}/{uri}"


def auth_headers(
    lines: Iterable[str] = (),
    *,
    token_env: str | None = None,
    environ: Mapping[str, str] = os.environ,
) -> dict[str, str]:
    """Headers from ``Name: value`` lines and a bearer token read from an environment variable.

    Errors name the header or variable, never a value.
    """
    headers: dict[str, str] = {}
    for number, line in enumerate(lines, 1):
        name, sep, value = line.partition(":")
        if not sep or not name.strip() or any(ch.isspace() for ch in name.strip()):
            raise ConfigurationError(f"header {number} is not of the form 'Name: value'")
        headers[name.strip()] = value.strip()
    if token_env:
        token = environ.get(token_env, "").strip()
        if not token:
            raise ConfigurationError(f"the environment variable {token_env} holds no token")
        headers["Authorization"] = f"Bearer {token}"
    return headers


def dicomweb_config(
    root: str,
    *,
    name: str | None = None,
    static: bool = False,
    headers: Mapping[str, str] | None = None,
    settings: Mapping[str, Any] | None = None,
) -> SourceConfig:
    """The configuration of a DICOMweb (or static DICOMweb) source at ``root``.

    Credentials written into the URL (``https://user:password@host/...``)
    move into an ``Authorization`` header, so the root that is stored and
    logged holds none. The name defaults to the root's host and port.
    """
    clean, from_url = split_credentials(root.rstrip("/"))
    if static and not urlsplit(clean).scheme and Path(clean).is_dir():
        clean = Path(clean).absolute().as_uri()  # a static tree on disk
    return SourceConfig(
        name=name or urlsplit(clean).netloc or clean.rstrip("/").rsplit("/", 1)[-1],
        kind="static_wado" if static else "dicomweb",
        root=clean,
        settings={key: value for key, value in (settings or {}).items() if value is not None},
        headers={**from_url, **dict(headers or {})},
    )
