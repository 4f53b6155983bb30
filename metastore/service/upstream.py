"""Pixels and bulk data from the archive an instance was indexed from, streamed through.

The index keeps metadata, not pixels. For instance retrieval, frames,
rendered images and bulk data the service finds the instance's ``url`` (for
a DICOMweb source its WADO-RS instance URL, PS3.18 10.4) and the source it
came from, and streams the archive's answer to the client as it arrives.
Only URLs the index holds are ever fetched; a path from a request only
selects among them.

Credentials come from the environment or from a file the source's
settings name, never from the database:

- ``METASTORE_SOURCE_AUTH_<NAME>`` (the source name upper-cased, every
  other character than a letter or digit as ``_``): the ``Authorization``
  header value, e.g. ``Basic ...`` or ``Bearer ...``;
- the setting ``credentials_env``: the name of another variable holding it;
- the setting ``headers_file``: a file of ``Name: value`` lines.

They are sent only to the source's own origin (scheme, host and port of
its root URL), and neither they nor the URL reach an error message.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from metastore.dicom import denaturalize
from metastore.errors import (
    ConfigurationError,
    SourceRefused,
    SourceTimeout,
    SourceUnavailable,
)
from metastore.schema import instances, sources
from metastore.service.metadata import one_instance
from metastore.sources.dicomweb import auth_headers
from metastore.store import MetaStore
from metastore.tls import client_context

log = logging.getLogger(__name__)

#: Prefixes OHIF puts before an instance URL in an imageId.
_SCHEMES = ("dicomweb:", "wadouri:", "wadors:")
# A WADO-RS instance URL ends so (PS3.18 10.4.1.1.3).
_WADO_RS_INSTANCE = re.compile(r"/studies/[^/]+/series/[^/]+/instances/[^/]+$")
#: Headers of the archive's answer that reach the client.
_PASSED_HEADERS = ("content-type", "content-length", "content-location", "etag", "last-modified")


@dataclass(frozen=True, kw_only=True)
class Location:
    """Where an instance's pixels live: its url and the source it was indexed from."""

    study_uid: str
    series_uid: str
    sop_uid: str
    url: str | None
    source: str
    root_url: str | None
    settings: Mapping[str, Any] = field(repr=False)
    metadata: Mapping[str, Any] | None = field(default=None, repr=False)

    @property
    def http_url(self) -> str | None:
        """The url without an imageId scheme, if it is an http(s) URL."""
        url = self.url or ""
        for scheme in _SCHEMES:
            if url.startswith(scheme):
                url = url[len(scheme) :]
                break
        return url if urlsplit(url).scheme in ("http", "https") else None

    def wado_rs_url(self) -> str:
        """The WADO-RS instance URL, or ``SourceRefused`` when the source has none."""
        url = self.http_url
        if url is None or not _WADO_RS_INSTANCE.search(urlsplit(url).path):
            raise SourceRefused(
                f"instance {self.sop_uid} was indexed from source {self.source!r}, "
                "which serves no WADO-RS frames or renderings for it",
                source=self.source,
                status=404,
            )
        return url

    def bulkdata_url(self, path: Sequence[str]) -> str:
        """The source's BulkDataURI at a tag path (``7FE00010``, ``00540016/0/00181072``)."""
        found: Any = denaturalize(self.metadata or {})
        for step, part in enumerate(path):
            if step % 2 == 0:
                element = found.get(part.upper()) if isinstance(found, dict) else None
                if not isinstance(element, dict):
                    break
                if step == len(path) - 1:
                    uri = element.get("BulkDataURI")
                    if isinstance(uri, str) and urlsplit(uri).scheme in ("http", "https"):
                        return uri
                    break
                found = element.get("Value")
            else:
                if not part.isdigit() or not isinstance(found, list) or int(part) >= len(found):
                    break
                found = found[int(part)]
        raise SourceRefused(
            f"instance {self.sop_uid} has no bulk data at {'/'.join(path)}",
            source=self.source,
            status=404,
        )


def locate(
    store: MetaStore, study_uid: str, series_uid: str, sop_uid: str, *, metadata: bool = False
) -> Location | None:
    """The instance's url and source (first source by name), or None when not indexed."""
    columns: list[Any] = [instances.c.url, sources.c.name, sources.c.root_url, sources.c.settings]
    if metadata:
        columns.append(instances.c.metadata)
    query = one_instance(study_uid, series_uid, sop_uid, *columns)
    with store.reading(f"locating instance {sop_uid}") as connection:
        row = connection.execute(query).mappings().first()
    if row is None:
        return None
    return Location(
        study_uid=study_uid,
        series_uid=series_uid,
        sop_uid=sop_uid,
        url=row["url"],
        source=row["name"],
        root_url=row["root_url"],
        settings=row["settings"] or {},
        metadata=row["metadata"] if metadata else None,
    )


def credentials(
    source: str, settings: Mapping[str, Any], environ: Mapping[str, str] = os.environ
) -> dict[str, str]:
    """The headers that authenticate to a source, from the environment or a file.

    Errors name the variable or file, never a value.
    """
    headers: dict[str, str] = {}
    file_name = settings.get("headers_file")
    if file_name:
        try:
            lines = Path(str(file_name)).read_text().splitlines()
        except OSError as err:
            raise ConfigurationError(
                f"source {source!r}: cannot read headers_file {file_name}: {err.strerror}",
                source=source,
            ) from None
        headers.update(auth_headers([line for line in lines if line.strip()]))
    variable = str(settings.get("credentials_env") or env_name(source))
    value = environ.get(variable, "").strip()
    if value:
        headers["Authorization"] = value
    elif settings.get("credentials_env"):
        raise ConfigurationError(
            f"source {source!r}: the environment variable {variable} holds no credentials",
            source=source,
        )
    return headers


def env_name(source: str) -> str:
    """The variable holding a source's Authorization value: ``METASTORE_SOURCE_AUTH_<NAME>``."""
    return "METASTORE_SOURCE_AUTH_" + re.sub(r"[^A-Za-z0-9]", "_", source).upper()


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme, parts.netloc.rpartition("@")[2].lower()


class Upstream:
    """The archives behind the service: one pooled async HTTP client with explicit timeouts."""

    def __init__(
        self,
        *,
        connect_timeout: float,
        timeout: float,
        environ: Mapping[str, str] = os.environ,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout, connect=connect_timeout),
            follow_redirects=False,
            transport=transport,  # tests inject faults here
            verify=client_context(),
        )
        self._environ = environ

    async def aclose(self) -> None:
        """Close every pooled connection."""
        await self._client.aclose()

    def headers_for(self, location: Location, url: str, accept: str | None) -> dict[str, str]:
        """The request headers for ``url``: Accept, and credentials for the source's origin."""
        headers = {"Accept": accept} if accept else {}
        if location.root_url and _origin(url) == _origin(location.root_url):
            headers.update(credentials(location.source, location.settings, self._environ))
        return headers

    async def open(
        self,
        location: Location,
        url: str,
        *,
        accept: str | None,
        params: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """Send the request and return the streaming response once its headers are in.

        Raises ``SourceTimeout`` (no answer in time), ``SourceUnavailable``
        (unreachable, 5xx) or ``SourceRefused`` (4xx, with ``status``),
        naming the source and instance but never the URL or a credential.
        """
        what = f"the archive of source {location.source!r} (instance {location.sop_uid})"
        request = self._client.build_request(
            "GET", url, headers=self.headers_for(location, url, accept), params=params
        )
        try:
            try:
                response = await self._client.send(request, stream=True)
            except httpx.RemoteProtocolError as err:
                # The archive closed the connection without answering: most often a
                # kept-alive connection it had just timed out (Orthanc after 1 s idle)
                # as the request went. A GET: asked once more, on a new connection.
                log.info("%s closed the connection unanswered (%s); asking again", what, err)
                response = await self._client.send(request, stream=True)
        except httpx.TimeoutException as err:
            raise SourceTimeout(
                f"{what} did not answer in time ({type(err).__name__})", source=location.source
            ) from None
        except httpx.HTTPError as err:
            raise SourceUnavailable(
                f"{what} is unreachable ({type(err).__name__})", source=location.source
            ) from None
        if response.status_code >= 400:
            await response.aclose()
            status = response.status_code
            if status in (404, 406, 410):
                raise SourceRefused(
                    f"{what} answered {status}", source=location.source, status=status
                )
            raise SourceUnavailable(
                f"{what} answered {status}", source=location.source, status=status
            )
        return response


def passed_headers(response: httpx.Response) -> dict[str, str]:
    """The archive's headers the client gets (no Content-Length once decoded)."""
    decoded = "content-encoding" in response.headers
    return {
        name: response.headers[name]
        for name in _PASSED_HEADERS
        if name in response.headers and not (decoded and name == "content-length")
    }


async def relay(response: httpx.Response, what: str) -> AsyncIterator[bytes]:
    """The archive's body as it arrives; closes the archive's stream however it ends.

    A client that goes away cancels this generator, which closes the
    upstream connection. An archive that stalls or drops mid-body raises,
    so the client's connection is cut rather than ended as if complete.
    """
    try:
        async for chunk in response.aiter_bytes():
            yield chunk
    except httpx.TimeoutException:
        log.warning("%s stalled mid-answer; cutting the client off", what)
        raise
    except httpx.HTTPError as err:
        log.warning("%s failed mid-answer (%s); cutting the client off", what, type(err).__name__)
        raise
    finally:
        await response.aclose()
