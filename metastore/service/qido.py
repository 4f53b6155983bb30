"""QIDO-RS (PS3.18 10.6) and launch files over HTTP, through ``metastore.search``.

Query parameters are percent-decoded once (by the ASGI server's parser) and
handed to the search as they came: keywords or tags, repeated keys as
lists, ``includefield``, ``fuzzymatching``, ``limit`` and ``offset``. No
match is ``200 []``; a query the search cannot read is ``400`` with its
one-line reason. When the page cap cut the answer, or a feature asked for
was not honoured, the answer carries ``Warning: 299`` (PS3.18 8.3.4.3).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from metastore.errors import QueryError
from metastore.launchfile.write import encode_launch_file, launch_study
from metastore.search import SearchResult, search_instances, search_series, search_studies
from metastore.service.handlers import context, dicomweb_base, path_uid
from metastore.service.launch import served_study
from metastore.service.responses import dicom_json
from metastore.store import MetaStore

Query = dict[str, str | list[str]]

#: The warning agent (RFC 7234 5.5) naming this service.
_AGENT = "metastore"
_TRUNCATED = (
    "The number of results exceeded the maximum supported by the server. "
    "Additional results can be requested."
)


def query_of(request: Request) -> Query:
    """The request's query parameters, decoded once; a repeated key as a list."""
    query: Query = {}
    for key in request.query_params:
        values = request.query_params.getlist(key)
        query[key] = values[0] if len(values) == 1 else values
    return query


def warning_header(result: SearchResult) -> dict[str, str]:
    """``Warning: 299`` for a truncated answer and for each feature not honoured."""
    texts = ([_TRUNCATED] if result.truncated else []) + list(result.warnings)
    if not texts:
        return {}
    quoted = [text.replace("\\", "\\\\").replace('"', '\\"') for text in texts]
    return {"Warning": ", ".join(f'299 {_AGENT} "{text}"' for text in quoted)}


async def _answer(request: Request, search: Callable[..., SearchResult], **scope: Any) -> Response:
    ctx = context(request)
    result = await run_in_threadpool(
        search, ctx.store, query_of(request), max_limit=ctx.settings.max_limit, **scope
    )
    return dicom_json(
        request,
        orjson.dumps(result.rows),
        min_gzip=ctx.settings.gzip_min_size,
        headers=warning_header(result),
    )


async def studies(request: Request) -> Response:
    return await _answer(request, search_studies)


async def series(request: Request) -> Response:
    return await _answer(request, search_series, study_uid=path_uid(request, "study"))


async def instances(request: Request) -> Response:
    return await _answer(
        request,
        search_instances,
        study_uid=path_uid(request, "study"),
        series_uid=path_uid(request, "series"),
    )


def _launch_chunks(
    store: MetaStore, uids: list[str], source: str | None, base: str
) -> Iterator[bytes]:
    def found() -> Iterator[dict[str, Any]]:
        for uid in uids:
            study = store.get_study(uid)
            launched = (
                None if study is None else launch_study(served_study(study, base), source=source)
            )
            if launched is not None:
                yield launched

    return encode_launch_file(found())


async def dicomjson(request: Request) -> Response:
    """The OHIF launch file (as ``metastore export dicomjson`` writes it) of the matching studies.

    ``StudyInstanceUID=a,b`` (or ``a\\b``) or any QIDO-RS study query;
    ``source=NAME`` keeps one source's series lists, as the export does.
    The instances' URLs point at this service (``metastore.service.launch``).
    """
    ctx = context(request)
    query = query_of(request)
    source = query.pop("source", None)
    if isinstance(source, list):
        raise QueryError("source may be given once")
    for key in [k for k in query if k.lower() in ("studyinstanceuid", "0020000d")]:
        values = query[key] if isinstance(query[key], list) else [str(query[key])]
        query[key] = "\\".join(v.strip() for value in values for v in value.split(","))
    query["includefield"] = "0020000D"
    result = await run_in_threadpool(
        search_studies, ctx.store, query, max_limit=ctx.settings.max_limit
    )
    uids = [row["0020000D"]["Value"][0] for row in result.rows]
    return StreamingResponse(
        _launch_chunks(ctx.store, uids, source, dicomweb_base(request)),
        media_type="application/json",
        headers=warning_header(result),
    )
