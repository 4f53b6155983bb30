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
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import quote

from metastore.matching import parse_query
from metastore.sources.dicomweb import DicomWebSource


class StaticWadoSource(DicomWebSource):
    """A static DICOMweb tree at ``config.root``."""

    kind = "static_wado"
    # Static hosts label files as they please (JSON, gzip, octet-stream, none):
    # any content type passes, and the body must still parse as JSON.
    accepted_types = ("",)
    default_bulkdata_relative = "studies"

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
