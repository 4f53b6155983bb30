"""The DICOMweb service in-process (Starlette's TestClient) on SQLite and PostgreSQL."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path

import orjson
import pytest
import sqlalchemy as sa
from helpers import instance_meta, instances
from starlette.testclient import TestClient

from metastore import ConfigurationError, DatabaseError, MetaStore, denaturalize
from metastore.launchfile.export import export_launch_file
from metastore.schema import rendered_series
from metastore.service import SETTINGS, Settings, create_app

STUDY, SERIES = "1.2.3", "1.2.3.1"
META = f"/dicomweb/studies/{STUDY}/series/{SERIES}/metadata"


def _client(store: MetaStore, **settings: object) -> TestClient:
    return TestClient(create_app(store, Settings.from_mapping(settings)))


@pytest.fixture
def client(store: MetaStore) -> Iterator[TestClient]:
    store.add_instances(instances(STUDY, SERIES, 5), source="pacs")
    with _client(store, public_url="http://viewer.test/base/") as opened:
        yield opened


def _kept(store: MetaStore) -> int:
    with store.engine.connect() as connection:
        return int(
            connection.execute(sa.select(sa.func.count()).select_from(rendered_series)).scalar_one()
        )


def test_series_metadata_is_the_stored_metadata_in_dicom_json(
    client: TestClient, store: MetaStore
) -> None:
    response = client.get(META)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/dicom+json"
    stored = store.get_series(STUDY, SERIES)
    assert stored is not None
    expected = [
        denaturalize({k: v for k, v in i.items() if k not in ("url", "imageId")})
        for i in stored["instances"]
    ]
    assert response.json() == expected
    (one,) = client.get(
        f"/dicomweb/studies/{STUDY}/series/{SERIES}/instances/{SERIES}.3/metadata"
    ).json()
    assert one == expected[2]
    assert client.get(f"/dicomweb/studies/{STUDY}/metadata").json() == expected


def test_etag_304_and_gzip(client: TestClient, store: MetaStore) -> None:
    first = client.get(META, headers={"Accept-Encoding": "gzip"})
    etag = first.headers["etag"]
    assert first.headers["content-encoding"] == "gzip"
    plain = client.get(META, headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers
    assert plain.json() == first.json()  # the test client decompresses the gzip answer
    assert plain.headers["etag"] == etag
    again = client.get(META, headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    assert client.get(META, headers={"If-None-Match": '"other"'}).status_code == 200
    for path in (f"/dicomweb/studies/{STUDY}/metadata",):
        tagged = client.get(path)
        assert (
            client.get(path, headers={"If-None-Match": tagged.headers["etag"]}).status_code == 304
        )


def test_a_write_to_the_series_drops_its_rendered_answer_in_the_same_transaction(
    client: TestClient, store: MetaStore
) -> None:
    before = client.get(META)
    assert _kept(store) == 1
    # Unchanged data writes nothing and keeps the answer.
    store.add_instances(instances(STUDY, SERIES, 5), source="pacs")
    assert _kept(store) == 1
    changed = instance_meta(STUDY, SERIES, 2, SeriesDescription="changed")
    store.add_instances([changed], source="pacs", made_in_client=True)
    assert _kept(store) == 0  # gone at commit, before anyone reads
    after = client.get(META)
    assert after.headers["etag"] != before.headers["etag"]
    descriptions = [i.get("0008103E", {}).get("Value") for i in after.json()]
    assert descriptions.count(["changed"]) == 1
    assert client.get(META, headers={"If-None-Match": before.headers["etag"]}).status_code == 200
    store.add_instances([instance_meta(STUDY, SERIES, 6)], source="pacs")
    assert len(client.get(META).json()) == 6
    store.add_series_metadata(
        [{"StudyInstanceUID": STUDY, "SeriesInstanceUID": SERIES, "Modality": "MR"}],
        source="pacs",
    )
    assert _kept(store) == 0
    client.get(META)
    store.delete_study(STUDY)
    assert _kept(store) == 0
    assert client.get(META).status_code == 404


def test_bulkdata_uris_point_at_the_service(client: TestClient, store: MetaStore) -> None:
    archive = "http://archive.test/dicomweb/studies/1.2.3/series/1.2.3.1/instances/1.2.3.1.9/bulk"
    item = instance_meta(
        STUDY,
        SERIES,
        9,
        PixelData={"BulkDataURI": f"{archive}/7fe00010"},
        ReferencedImageSequence=[{"00091001": {"BulkDataURI": f"{archive}/nested"}}],
    )
    store.add_instances([item], source="pacs")
    documents = {d["00080018"]["Value"][0]: d for d in client.get(META).json()}
    served = documents[f"{SERIES}.9"]
    prefix = f"http://viewer.test/base/dicomweb/studies/{STUDY}/series/{SERIES}/instances/{SERIES}.9/bulk"
    assert served["7FE00010"]["BulkDataURI"] == f"{prefix}/7FE00010"
    nested = served["00081140"]["Value"][0]["00091001"]["BulkDataURI"]
    assert nested == f"{prefix}/00081140/0/00091001"


def test_unknown_and_malformed_requests(client: TestClient) -> None:
    instance = f"/dicomweb/studies/{STUDY}/series/{SERIES}/instances/{SERIES}.1"
    for path in (
        "/dicomweb/studies/9.9/metadata",
        f"/dicomweb/studies/{STUDY}/series/9.9/metadata",
        f"/dicomweb/studies/{STUDY}/series/{SERIES}/instances/9.9/metadata",
        f"/dicomweb/studies/{STUDY}/series/{SERIES}/instances/9.9/frames/1",
        "/dicomweb/studies/1.2.3'%20OR%20'1'='1/metadata",
    ):
        response = client.get(path)
        assert response.status_code == 404, path
        assert response.text.count("\n") == 1 and "not in the index" in response.text
    assert client.get(f"/dicomweb/studies/{'1' * 65}/metadata").status_code == 400
    for frames in ("0", "1,,2", "x", "-1"):
        response = client.get(f"{instance}/frames/{frames}")
        assert response.status_code == 400 and "frame" in response.text
    for path in ("..%2F..%2Fetc%2Fpasswd", "7FE00010/0", "../../x"):
        assert client.get(f"{instance}/bulk/{path}").status_code in (400, 404)
    # The stored url is not a WADO-RS URL of an archive the service can reach.
    unreachable = client.get(f"{instance}/bulk/7FE00010")
    assert unreachable.status_code == 404 and "no bulk data" in unreachable.text
    assert client.get(META, headers={"Accept": "application/dicom+xml"}).status_code == 406


def test_read_only(client: TestClient) -> None:
    for method, path in (
        ("POST", "/dicomweb/studies"),  # STOW-RS
        ("POST", f"/dicomweb/studies/{STUDY}"),
        ("DELETE", f"/dicomweb/studies/{STUDY}"),
        ("DELETE", f"/dicomweb/studies/{STUDY}/series/{SERIES}"),
        ("PUT", META),
        ("POST", "/changefeed"),
    ):
        assert client.request(method, path).status_code == 405, (method, path)
    assert client.get(f"/dicomweb/studies/{STUDY}").status_code == 406


def test_bearer_token_on_every_route(store: MetaStore) -> None:
    store.add_instances(instances(STUDY, SERIES, 2), source="pacs")
    with _client(store, token="tok-123") as client:
        for path in (META, "/changefeed", "/changefeed/latest", "/nowhere"):
            refused = client.get(path)
            assert refused.status_code == 401, path
            assert refused.headers["www-authenticate"].startswith("Bearer")
            wrong = client.get(path, headers={"Authorization": "Bearer tok-124"})
            assert wrong.status_code == 401
            assert client.get(path, headers={"Authorization": "Basic tok-123"}).status_code == 401
        good = {"Authorization": "Bearer tok-123"}
        assert client.get(META, headers=good).status_code == 200
        assert client.get("/changefeed/latest", headers=good).status_code == 200
        assert client.get("/nowhere", headers=good).status_code == 404


def test_cors_only_for_configured_origins(store: MetaStore) -> None:
    store.add_instances(instances(STUDY, SERIES, 2), source="pacs")
    preflight = {
        "Origin": "http://viewer.test",
        "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "Accept, Authorization",
    }
    with _client(store, cors_origins=("http://viewer.test",), token="t") as client:
        allowed = client.options(META, headers=preflight)
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == "http://viewer.test"
        granted = allowed.headers["access-control-allow-headers"].lower()
        assert "accept" in granted and "authorization" in granted
        other = client.options(META, headers={**preflight, "Origin": "http://evil.test"})
        assert other.status_code == 400
        assert "access-control-allow-origin" not in other.headers
        real = client.get(
            META, headers={"Origin": "http://viewer.test", "Authorization": "Bearer t"}
        )
        assert real.headers["access-control-allow-origin"] == "http://viewer.test"
        assert "ETag" in real.headers["access-control-expose-headers"]
    with _client(store) as client:
        plain = client.get(META, headers={"Origin": "http://viewer.test"})
        assert "access-control-allow-origin" not in plain.headers
        assert client.options(META, headers=preflight).status_code == 405


def test_one_access_log_line_per_request(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="metastore.service.access"):
        client.get(META)
        client.get("/dicomweb/studies/9.9/metadata")
    lines = [r.getMessage() for r in caplog.records if r.name == "metastore.service.access"]
    assert len(lines) == 2
    assert f"GET {META} 200" in lines[0]
    assert "GET /dicomweb/studies/9.9/metadata 404" in lines[1]


def test_changefeed_pages_filters_and_latest(client: TestClient, store: MetaStore) -> None:
    store.add_series_metadata(
        [{"StudyInstanceUID": STUDY, "SeriesInstanceUID": "1.2.3.2", "Modality": "SR"}],
        source="pacs",
    )
    store.add_instances(instances(STUDY, "1.2.3.2", 1), source="pacs")
    every = store.changes()
    latest = client.get("/changefeed/latest").json()
    assert latest == {"seq": every[-1].seq}
    page = client.get("/changefeed?after=0&limit=2").json()
    assert [e["seq"] for e in page["events"]] == [e.seq for e in every[:2]]
    assert page["next"] == every[1].seq
    rest = client.get(f"/changefeed?after={page['next']}").json()
    assert [e["seq"] for e in rest["events"]] == [e.seq for e in every[2:]]
    assert rest["events"][0] == orjson.loads(orjson.dumps(every[2].to_dict()))
    typed = client.get("/changefeed?type=SERIES_ADDED").json()
    assert [e["type"] for e in typed["events"]] == ["SERIES_ADDED"]
    assert typed["next"] == every[-1].seq
    for bad in ("after=x", "limit=0", "type=NOPE", "wait=-1", "after=-3"):
        response = client.get(f"/changefeed?{bad}")
        assert response.status_code == 400, bad
        assert response.text.count("\n") == 1


def test_changefeed_long_poll_wakes_on_a_commit(client: TestClient, store: MetaStore) -> None:
    head = client.get("/changefeed/latest").json()["seq"]
    empty = client.get(f"/changefeed?after={head}&wait=0.2").json()
    assert empty == {"events": [], "next": head}

    def write_later() -> None:
        time.sleep(0.5)
        store.add_instances(instances(STUDY, "1.2.3.7", 1), source="pacs")

    writer = threading.Thread(target=write_later)
    writer.start()
    woken = client.get(f"/changefeed?after={head}&wait=30").json()
    writer.join()
    assert [e["series_uid"] for e in woken["events"]][-1] == "1.2.3.7"
    assert woken["next"] == woken["events"][-1]["seq"]


def test_settings_are_named_checked_and_documented() -> None:
    assert [s.name for s in SETTINGS] == [f.name for f in fields(Settings)]
    assert all(s.help for s in SETTINGS)
    assert Settings().max_limit == next(s.default for s in SETTINGS if s.name == "max_limit")
    with pytest.raises(ConfigurationError, match="unknown setting 'page_cap'"):
        Settings.from_mapping({"page_cap": 3})
    with pytest.raises(ConfigurationError, match="max_limit"):
        Settings(max_limit=0)
    with pytest.raises(ConfigurationError, match="upstream_timeout"):
        Settings(upstream_timeout=0)
    assert "tok" not in repr(Settings(token="tok"))


def test_qido_no_match_bad_query_and_warnings(store: MetaStore) -> None:
    for n in range(4):
        store.add_instances(instances(f"1.2.{n}", f"1.2.{n}.1", 1), source="pacs")
    with _client(store, max_limit=3) as client:
        capped = client.get("/dicomweb/studies")
        assert capped.status_code == 200 and len(capped.json()) == 3
        assert capped.headers["warning"].startswith('299 metastore "The number of results')
        asked = client.get("/dicomweb/studies?limit=2")
        assert len(asked.json()) == 2 and "warning" not in asked.headers
        rest = client.get("/dicomweb/studies?offset=3")
        assert len(rest.json()) == 1 and "warning" not in rest.headers
        none = client.get("/dicomweb/studies?PatientID=nobody")
        assert none.status_code == 200 and none.content == b"[]"
        assert none.headers["content-type"] == "application/dicom+json"
        fuzzy = client.get("/dicomweb/studies?PatientID=PAT001&fuzzymatching=true")
        assert fuzzy.status_code == 200 and "PatientID" in fuzzy.headers["warning"]
        for bad in ("StudyDate=2024x", "NoSuchKeyword=1", "limit=-1"):
            response = client.get(f"/dicomweb/studies?{bad}")
            assert response.status_code == 400, bad
            assert response.text.count("\n") == 1
        # Percent-decoded once: %252A is a literal "%2A", not a wildcard.
        assert client.get("/dicomweb/studies?PatientID=PAT%252A").json() == []
        assert len(client.get("/dicomweb/studies?PatientID=PAT%2A").json()) == 3
        series = client.get("/dicomweb/studies/1.2.1/series").json()
        assert [s["0020000E"]["Value"][0] for s in series] == ["1.2.1.1"]
        (one,) = client.get("/dicomweb/studies/1.2.1/series/1.2.1.1/instances").json()
        assert one["00080018"]["Value"] == ["1.2.1.1.1"]


def test_dicomjson_is_the_export(store: MetaStore, tmp_path: Path) -> None:
    for n in range(3):
        store.add_instances(instances(f"1.2.{n}", f"1.2.{n}.1", 2), source="pacs")
    export_launch_file(store, tmp_path / "two.json", ["1.2.0", "1.2.2"])
    with _client(store) as client:
        listed = client.get("/dicomjson?StudyInstanceUID=1.2.0,1.2.2")
        assert listed.status_code == 200
        assert listed.headers["content-type"] == "application/json"
        served = orjson.loads(listed.content)
        # The same, but the instances' URLs name the service, not the archive.
        on_disk = (tmp_path / "two.json").read_bytes()
        assert b"http://archive/" in on_disk
        written = orjson.loads(on_disk.replace(b"http://archive/", b"http://testserver/dicomweb/"))
        key = lambda s: s["StudyInstanceUID"]  # noqa: E731
        assert sorted(served["studies"], key=key) == sorted(written["studies"], key=key)
        every = orjson.loads(client.get("/dicomjson?PatientID=PAT001").content)
        assert len(every["studies"]) == 3
        assert orjson.loads(client.get("/dicomjson?PatientID=nobody").content) == {"studies": []}
        assert client.get("/dicomjson?StudyDate=bad").status_code == 400


def test_a_study_without_modalities_keeps_the_study_list_readable(store: MetaStore) -> None:
    """OHIF 3.13 reads ModalitiesInStudy.Value.length for every study of the list."""
    bare = [{k: v for k, v in i.items() if k != "Modality"} for i in instances("1.2.9", "1.2.9.1")]
    store.add_instances(bare, source="pacs")
    store.add_instances(instances(STUDY, SERIES, 1), source="pacs")
    with _client(store) as client:
        rows = client.get("/dicomweb/studies?includefield=00080061").json()
    assert len(rows) == 2
    for row in rows:
        assert "00080061" not in row or row["00080061"]["Value"], row


def _read_only_store(db_url: str, backend: str, request: pytest.FixtureRequest) -> MetaStore:
    """The database as a reader that cannot write sees it: a hot standby's rules, or a
    SQLite file opened read-only."""
    if backend == "sqlite":
        return MetaStore(db_url, read_only=True)
    server = request.getfixturevalue("postgres")
    name = sa.make_url(db_url).database
    with server.admin.connect() as connection:  # new sessions only: what a standby enforces
        connection.exec_driver_sql(f"ALTER DATABASE {name} SET default_transaction_read_only = on")
    return MetaStore(db_url)


def test_a_database_that_refuses_writes_is_served_without_keeping(
    store: MetaStore, db_url: str, backend: str, request: pytest.FixtureRequest
) -> None:
    store.add_instances(instances(STUDY, SERIES, 5), source="pacs")
    with _client(store) as writable:
        expected = {
            path: writable.get(path).content
            for path in (META, META.rsplit("/", 3)[0] + "/metadata")
        }
    with store.engine.begin() as connection:
        connection.execute(sa.delete(rendered_series))  # as on a replica of a cold primary
    assert not store.read_only
    store.close()
    with _read_only_store(db_url, backend, request) as reader, _client(reader) as client:
        assert reader.read_only
        for path, body in expected.items():
            for _ in range(2):  # rendered again, the same answer
                response = client.get(path)
                assert response.status_code == 200, response.text
                assert response.content == body
        assert (
            client.get(f"{META.rsplit('/', 1)[0]}/instances/{SERIES}.2/metadata").status_code == 200
        )
        assert [row["0020000D"]["Value"] for row in client.get("/dicomweb/studies").json()] == [
            [STUDY]
        ]
        assert _kept(reader) == 0
        with pytest.raises(DatabaseError, match="read-only|readonly"):
            reader.add_instances(instances(STUDY, "1.2.3.9", 1), source="pacs")
