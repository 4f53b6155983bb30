"""A static DICOMweb tree as a source: the server returns everything, the client filters.

A static tree (files on a web server or an object store, often gzip-encoded,
as OHIF's "staticWado" data sources read them) answers
``GET {root}/studies``, ``{root}/studies/{s}/series`` and
``{root}/studies/{s}/series/{r}/metadata`` from files and ignores query
parameters. So this source asks without parameters and filters the answers
with :mod:`metastore.matching`, by the rules of DICOM PS3.4 C.2.2.2 (where
OHIF's StaticWadoClient bends them: see that module).

Bodies may come gzip-compressed without a ``Content-Encoding`` header, and
with whatever content type the host guesses; both are accepted. Relative
BulkDataURIs resolve against the study URL by default, as static-wado trees
write them (``bulkdata/...`` beside the study).

A tree on disk is read in place: its root is a ``file://`` URL (the
command line turns a folder path into one), and each request is answered
from the files a static host would serve for it (``studies`` from
``studies/index.json.gz``, ``.../metadata`` from ``.../metadata.gz``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import httpx

from metastore.matching import parse_query
from metastore.sources import SourceConfig
from metastore.sources.dicomweb import DicomWebSource

# What a static host serves for a request path, in the order tried.
_CANDIDATES = ("{}/index.json.gz", "{}/index.json", "{}.gz", "{}")


class FolderTransport(httpx.BaseTransport):
    """Answers ``GET file:///...`` from a static DICOMweb tree on disk (404 when absent)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder.resolve()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        path = Path(unquote(request.url.path)).resolve()
        if path != self.folder and self.folder not in path.parents:
            return httpx.Response(404, request=request)
        for candidate in _CANDIDATES:
            found = Path(candidate.format(path))
            if found.is_file():
                return httpx.Response(
                    200,
                    content=found.read_bytes(),
                    headers={"Content-Type": "application/dicom+json"},
                    request=request,
                )
        return httpx.Response(404, request=request)


class StaticWadoSource(DicomWebSource):
    """A static DICOMweb tree at ``config.root`` (an http(s) URL, or ``file://`` on disk)."""

    kind = "static_wado"
    # Static hosts label files as they please (JSON, gzip, octet-stream, none):
    # any content type passes, and the body must still parse as JSON.
    accepted_types = ("",)
    default_bulkdata_relative = "studies"

    def __init__(
        self, config: SourceConfig, *, transport: httpx.BaseTransport | None = None
    ) -> None:
        parts = urlsplit(config.root or "")
        self._folder: FolderTransport | None = None
        if config.root and not parts.scheme and Path(config.root).is_dir():
            config = dataclasses.replace(config, root=Path(config.root).absolute().as_uri())
            parts = urlsplit(config.root or "")
        if parts.scheme == "file":
            self._folder = FolderTransport(Path(unquote(parts.path)))
        super().__init__(config, transport=transport or self._folder)

    def _get_once(self, url: str, params: Mapping[str, Any] | None, what: str) -> list[Any]:
        if self._folder is None:
            return super()._get_once(url, params, what)
        self.requests += 1  # a tree on disk: read the file (httpx does not do file://)
        response = self._folder.handle_request(httpx.Request("GET", url))
        return self._decode(response, response.content, url, what)

    def search_studies(self, query: Mapping[str, Any] | None = None) -> Iterator[dict[str, Any]]:
        """Every study of the tree that matches ``query`` (QIDO rules, on the client)."""
        parsed = parse_query(query)
        rows = (
            self._row(item, f"{self.root}/studies", i)
            for i, item in enumerate(self._get_json(f"{self.root}/studies", None, "search"))
        )
        for row in parsed.filter(row for row in rows if row is not None):
            yield dict(row)

    def search_series(self, study_uid: str) -> list[dict[str, Any]]:
        """The series of one study (the tree's series index of that study)."""
        url = f"{self.root}/studies/{quote(study_uid)}/series"
        rows = self._series_rows(
            (self._row(item, url, i) for i, item in enumerate(self._get_json(url, None, "search"))),
            url,
            study_uid,
        )
        return [row for row in rows if row["StudyInstanceUID"] == study_uid]
