"""Faults a DICOMweb server can throw, injected with httpx.MockTransport."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from helpers import DATA, read_gz

from metastore import MetaStore, SourceError, records
from metastore.errors import BadResponse, SourceRefused, SourceUnavailable
from metastore.quirks import Quirk
from metastore.sources import SourceConfig
from metastore.sources import dicomweb as dicomweb_module
from metastore.sources.dicomweb import DicomWebSource

ROOT = "http://archive.test/dicom-web"
Handler = Callable[[httpx.Request], httpx.Response]


def json_response(data: Any, status: int = 200, **headers: str) -> httpx.Response:
    return httpx.Response(
        status,
        content=orjson.dumps(data),
        headers={"Content-Type": "application/dicom+json", **headers},
    )


def study_rows(count: int) -> list[dict[str, Any]]:
    return [
        {
            "0020000D": {"vr": "UI", "Value": [f"1.2.3.{n}"]},
            "00100020": {"vr": "LO", "Value": ["P"]},
        }
        for n in range(count)
    ]


class Recorder:
    """A MockTransport handler that answers from a script and records the requests."""

    def __init__(self, *answers: httpx.Response | Exception | Handler) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        if isinstance(answer, httpx.Response):
            return answer
        return answer(request)


@pytest.fixture
def delays(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The backoff delays the source asks for (recorded instead of slept)."""
    asked: list[float] = []
    monkeypatch.setattr(dicomweb_module.time, "sleep", asked.append)
    return asked


def source(handler: Recorder, **settings: Any) -> DicomWebSource:
    config = SourceConfig(
        name="mock",
        kind="dicomweb",
        root=ROOT,
        settings={"retries": 2, "backoff": 0.5, **settings},
        headers={"Authorization": "Bearer secret-token-xyz"},
    )
    return DicomWebSource(config, transport=httpx.MockTransport(handler))


def test_429_honours_retry_after(delays: list[float]) -> None:
    handler = Recorder(httpx.Response(429, headers={"Retry-After": "3"}), json_response([]))
    with source(handler) as web:
        assert list(web.search_studies()) == []
    assert delays == [3.0]
    assert len(handler.requests) == 2
    assert handler.requests[0].headers["Accept"] == "application/dicom+json"
    assert handler.requests[0].headers["Authorization"] == "Bearer secret-token-xyz"


def test_500_then_success_backs_off_with_jitter(delays: list[float]) -> None:
    handler = Recorder(httpx.Response(500), httpx.Response(503), json_response(study_rows(2)))
    with source(handler) as web:
        rows = list(web.search_studies({"PatientID": "P", "limit": 2}))
    assert [r["StudyInstanceUID"] for r in rows] == ["1.2.3.0", "1.2.3.1"]
    assert len(delays) == 2
    assert 0.25 <= delays[0] <= 0.5 and 0.5 <= delays[1] <= 1.0  # doubling, with jitter
    assert handler.requests[-1].url.params["PatientID"] == "P"


def test_persistent_5xx_gives_up_with_the_status(delays: list[float]) -> None:
    handler = Recorder(httpx.Response(502))
    with source(handler) as web, pytest.raises(SourceUnavailable, match="502") as caught:
        list(web.search_studies())
    assert len(handler.requests) == 3  # the first try and two retries
    assert caught.value.context["status"] == 502
    assert "secret-token-xyz" not in str(caught.value)


def test_timeouts_are_retried(delays: list[float]) -> None:
    handler = Recorder(httpx.ReadTimeout("slow"), json_response([]))
    with source(handler) as web:
        assert list(web.search_studies()) == []
    always = Recorder(httpx.ConnectTimeout("down"))
    with source(always) as web, pytest.raises(SourceUnavailable, match="timed out"):
        list(web.search_studies())
    assert len(always.requests) == 3


def test_a_truncated_body_is_retried_then_reported(delays: list[float]) -> None:
    whole = orjson.dumps(study_rows(3))
    cut = httpx.Response(
        200, content=whole[:-20], headers={"Content-Type": "application/dicom+json"}
    )
    handler = Recorder(cut, json_response(study_rows(3)), json_response([]))
    with source(handler) as web:
        assert len(list(web.search_studies())) == 3
    with source(Recorder(cut)) as web, pytest.raises(SourceUnavailable, match="ends early"):
        list(web.search_studies())


def test_a_non_json_body_is_a_bad_response(delays: list[float]) -> None:
    garbage = httpx.Response(
        200, content=b"<html>login</html>", headers={"Content-Type": "application/dicom+json"}
    )
    handler = Recorder(garbage)
    with source(handler) as web, pytest.raises(BadResponse, match="not JSON"):
        list(web.search_studies())
    assert len(handler.requests) == 1  # not retried: it will not get better


def test_a_wrong_content_type_is_named(delays: list[float]) -> None:
    html = httpx.Response(200, content=b"[]", headers={"Content-Type": "text/html"})
    with source(Recorder(html)) as web, pytest.raises(BadResponse, match="text/html"):
        list(web.search_studies())


def test_a_json_object_instead_of_an_array(delays: list[float]) -> None:
    web = source(Recorder(json_response({"error": "x"})))
    with web, pytest.raises(BadResponse, match="JSON array"):
        list(web.search_studies())


def test_404_is_refused_not_retried(delays: list[float]) -> None:
    handler = Recorder(httpx.Response(404))
    with source(handler) as web, pytest.raises(SourceRefused, match="404"):
        web.retrieve_series_metadata("1.2", "1.2.3")
    assert len(handler.requests) == 1


def test_a_server_that_caps_pages_silently(delays: list[float]) -> None:
    rows = study_rows(25)

    def capped(request: httpx.Request) -> httpx.Response:
        offset = int(request.url.params["offset"])
        return json_response(rows[offset : offset + 7])  # whatever limit was asked

    handler = Recorder(capped)
    with source(handler, page_size=10) as web:
        found = [r["StudyInstanceUID"] for r in web.search_studies()]
    assert found == [f"1.2.3.{n}" for n in range(25)]
    offsets = [int(r.url.params["offset"]) for r in handler.requests]
    assert offsets == [0, 7, 14, 21, 25]
    assert all(r.url.params["limit"] == "10" for r in handler.requests)


def _included(request: httpx.Request) -> list[str]:
    """The attributes a request names in includefield (comma lists or repeated)."""
    return [k for v in request.url.params.get_list("includefield") for k in v.split(",") if k]


def test_searches_ask_for_the_indexed_attributes(delays: list[float]) -> None:
    handler = Recorder(json_response(study_rows(1)), json_response([]))
    with source(handler) as web:
        assert len(list(web.search_studies({"PatientID": "P"}))) == 1
        web.search_series("1.2.3.0")
        list(web.search_studies({"includefield": "all"}))
    study_search, _, series_search, own = handler.requests
    assert _included(study_search) == list(records.STUDY_KEYS)
    assert "StudyDescription" in _included(study_search)
    assert study_search.url.params["PatientID"] == "P"
    assert _included(series_search) == list(records.SERIES_KEYS)
    assert "SeriesDescription" in _included(series_search)
    assert _included(own) == ["all"]  # a query's own includefield is sent as it is


def test_a_server_that_refuses_includefield_is_searched_without_it(
    delays: list[float], caplog: pytest.LogCaptureFixture
) -> None:
    def strict(request: httpx.Request) -> httpx.Response:
        if "includefield" in request.url.params:
            return httpx.Response(400, text="includefield is not supported")
        if request.url.path.endswith("/series"):
            return json_response([])
        return json_response(study_rows(3)[int(request.url.params["offset"]) :])

    handler = Recorder(strict)
    with source(handler) as web:
        found = [r["StudyInstanceUID"] for r in web.search_studies()]
        assert web.search_series("1.2.3.0") == []
    assert found == ["1.2.3.0", "1.2.3.1", "1.2.3.2"]
    # Refused once; the rest (the study search's two pages, the series search) no longer ask.
    asked = [(r.url.path.rsplit("/", 1)[-1], bool(_included(r))) for r in handler.requests]
    assert asked == [("studies", True), ("studies", False), ("studies", False), ("series", False)]
    assert "searching without includefield" in caplog.text
    with source(Recorder(httpx.Response(403))) as web, pytest.raises(SourceRefused, match="403"):
        list(web.search_studies())  # another refusal is not taken for this one


def test_a_server_that_ignores_offset_is_an_error(delays: list[float]) -> None:
    handler = Recorder(lambda request: json_response(study_rows(5)))
    with source(handler, page_size=5) as web, pytest.raises(BadResponse, match="ignores offset"):
        list(web.search_studies())
    assert len(handler.requests) == 2


def test_every_httpx_error_becomes_a_source_error(delays: list[float]) -> None:
    def all_subclasses(cls: type) -> list[type]:
        return [cls] + [s for sub in cls.__subclasses__() for s in all_subclasses(sub)]

    raised = [c for c in all_subclasses(httpx.HTTPError) if c not in (httpx.HTTPStatusError,)]
    assert len(raised) > 10
    for cls in raised:
        error = cls("boom") if cls is not httpx.HTTPStatusError else None
        with source(Recorder(error), retries=0) as web, pytest.raises(SourceError):
            list(web.search_studies())


def test_unreadable_instances_are_rejected_and_the_rest_read(delays: list[float]) -> None:
    def instance(series: str, sop: str | None) -> dict[str, Any]:
        item = {
            "0020000D": {"vr": "UI", "Value": ["1.2"]},
            "0020000E": {"vr": "UI", "Value": [series]},
        }
        if sop is not None:
            item["00080018"] = {"vr": "UI", "Value": sop}  # bare, as dcmjs may write it
        return item

    answer = [
        instance("9.9.9", "1.2.3.1"),
        instance("1.2.3", "1.2.3.7"),
        "not an object",
        instance("1.2.3", None),
        {**instance("1.2.3", "1.2.3.8"), "00280010": {"vr": "US", "Value": ["wide"]}},
    ]
    with source(Recorder(json_response(answer))) as web:
        found = web.retrieve_series_metadata("1.2", "1.2.3")
        quirks, rejected = web.report.take()
    assert [i["SOPInstanceUID"] for i in found] == ["1.2.3.7"]
    assert [(r.series, r.instance) for r in rejected] == [
        ("1.2.3", "1.2.3.1"),
        ("1.2.3", "[2]"),
        ("1.2.3", "[3]"),
        ("1.2.3", "[4]"),
    ]
    assert "[0]: the server sent an instance of another SeriesInstanceUID" in rejected[0].error
    assert "[2]: a DICOM JSON data set must be an object" in rejected[1].error
    assert "no SOPInstanceUID" in rejected[2].error
    assert "(at 00280010.Value[0])" in rejected[3].error
    assert quirks[Quirk.BARE_VALUE] >= 2
    assert web.report.take()[1] == []  # taken once


def test_a_series_of_10000_instances(delays: list[float], tmp_path: Path) -> None:
    # A real CT instance (NLST), about 4.6 kB of DICOM JSON, 10,000 times.
    template = read_gz(next((DATA / "studies").glob("*/series/*619089952642/metadata.gz")))[0]
    study_uid = template["0020000D"]["Value"][0]
    series_uid = template["0020000E"]["Value"][0]
    items = []
    for n in range(10_000):
        item = copy.copy(template)
        item["00080018"] = {"vr": "UI", "Value": [f"1.2.826.0.1.99.{n}"]}
        item["00200013"] = {"vr": "IS", "Value": [n + 1]}
        items.append(item)
    body = orjson.dumps(items)
    handler = Recorder(
        httpx.Response(200, content=body, headers={"Content-Type": "application/dicom+json"})
    )
    with source(handler) as web:
        instances = web.retrieve_series_metadata(study_uid, series_uid)
    assert len(instances) == 10_000
    assert instances[-1]["url"].endswith("/instances/1.2.826.0.1.99.9999")
    with MetaStore(f"sqlite:///{tmp_path / 'big.db'}") as store:
        result = store.add_instances(instances, source="mock")
        assert result.inserted == 10_000
        series = store.get_series(study_uid, series_uid)
        assert series is not None and series["NumberOfSeriesRelatedInstances"] == 10_000
