"""Search over the index: QIDO-RS queries (PS3.18 8.3.4) compiled to SQL.

``search_studies``, ``search_series`` and ``search_instances`` take the query
parameters as a QIDO-RS client sends them and return a page of DICOM JSON
rows; the matching rules are those of ``metastore.matching`` (PS3.4
C.2.2.2), applied by the database, never by filtering rows in Python.
"""

from __future__ import annotations

from metastore.errors import QueryError
from metastore.search.execute import (
    DEFAULT_MAX_LIMIT,
    SearchResult,
    search_instances,
    search_series,
    search_statements,
    search_studies,
)

__all__ = [
    "DEFAULT_MAX_LIMIT",
    "QueryError",
    "SearchResult",
    "search_instances",
    "search_series",
    "search_statements",
    "search_studies",
]
