"""Security: credentials never leak, redirects stay home, the folder source stays in its folder."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from urllib.parse import urlsplit

import orjson
import pytest
import sqlalchemy as sa
from launch_helpers import http_server, launch_study
from pydicom.data import get_testdata_file
from servers import Orthanc
from starlette.testclient import TestClient

from metastore import MetaStore, cli
from metastore.errors import SourceRefused
from metastore.ingest import ingest_folder, ingest_launch_file
from metastore.schema import metadata as schema_metadata
from metastore.service import Settings, create_app
from metastore.sources import SourceConfig
from metastore.sources.dicomweb import DicomWebSource

CANARY_HEADER = "canary-header-5f1e0c"
CANARY_TOKEN = "canary-token-a93b27"
CANARY_USER = "canary-userinfo-77d2e1"
CANARY_QUERY = "canary-presigned-0b44c9"
CANARY_SERVE = "canary-serve-token-d10a5e"


def dump(url: str) -> str:
    """Every row of every table, as text."""
    with MetaStore(url) as store, store.engine.connect() as connection:
        return "\n".join(
            str(row)
            for table in schema_metadata.sorted_tables
            for row in connection.execute(sa.select(table))
        )


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_a_canary_credential_passed_every_way_never_appears(
    orthanc: Orthanc,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    caplog.set_level(logging.DEBUG)
    db = f"sqlite:///{tmp_path / 'm.db'}"
    host = urlsplit(orthanc.root)
    with_userinfo = f"{host.scheme}://{orthanc.user}:{orthanc.password}@{host.netloc}{host.path}"
    seen = []
    # userinfo (the archive's real password is the canary here) and a --header
    code, out = run(
        capsys,
        "--db",
        db,
        "ingest",
        "dicomweb",
        with_userinfo,
        "--source",
        "pacs",
        "--header",
        f"X-Canary: {CANARY_HEADER}",
        "--workers",
        "1",
    )
    assert code == 0, out
    seen.append(out)
    # --token-env: the archive refuses the token; the error text must not hold it
    monkeypatch.setenv("CANARY_TOKEN", CANARY_TOKEN)
    code, out = run(
        capsys,
        "--db",
        db,
        "ingest",
        "dicomweb",
        orthanc.root,
        "--source",
        "pacs2",
        "--token-env",
        "CANARY_TOKEN",
        "--workers",
        "1",
    )
    assert code == 1 and "401" in out
    seen.append(out)
    # a launch file by URL with userinfo and a header
    with http_server() as served:
        served.routes[f"/studies.json?sig={CANARY_QUERY}"] = (
            200,
            {},
            orjson.dumps({"studies": [launch_study("1.2.3")]}),
        )
        base = urlsplit(served.base)
        url = f"http://user:{CANARY_USER}@{base.netloc}/studies.json?sig={CANARY_QUERY}"
        code, out = run(capsys, "--db", db, "ingest", "dicomjson", url)
        assert code == 0, out
        seen.append(out)
        # the server did get it: the test would see a leak if there were one
        ((_, headers),) = served.requests
        assert headers["Authorization"].startswith("Basic")
    for argv in (
        ["jobs", "--json"],
        ["changes"],
        ["stats"],
        ["consumers"],
        ["show", "study", "1.2.3"],
    ):
        code, out = run(capsys, "--db", db, *argv)
        assert code == 0, out
        seen.append(out)
    # the service, guarded by the serve token: its answers and its access log
    with MetaStore(db) as store:
        uid = store.study_uids()[0]
        with TestClient(create_app(store, Settings(token=CANARY_SERVE))) as client:
            bearer = {"Authorization": f"Bearer {CANARY_SERVE}"}
            for path in (
                "/dicomweb/studies",
                "/dicomweb/series",
                "/dicomweb/instances?includefield=all",
                f"/dicomweb/studies/{uid}/metadata",
                "/changefeed",
                "/changefeed/latest",
                f"/dicomjson?StudyInstanceUID={uid}",
                "/dicomweb/studies?PatientName=nobody",
            ):
                answer = client.get(path, headers=bearer)
                assert answer.status_code in (200, 204), (path, answer.status_code)
                seen.append(answer.text + str(answer.headers))
            refused = client.get("/dicomweb/studies", headers={"Authorization": "Bearer x"})
            seen.append(refused.text + str(refused.headers))
    assert "SERIES_ADDED" in "".join(seen) and "INSTANCES_ADDED" in "".join(seen)
    everything = dump(db) + caplog.text + "\n".join(seen)
    assert "1.2.3" in everything and "pacs" in everything  # the haystack is the real one
    canaries = (CANARY_HEADER, CANARY_TOKEN, CANARY_USER, CANARY_QUERY, CANARY_SERVE)
    for canary in (*canaries, orthanc.password):
        assert canary not in everything, canary


# -- redirects ---------------------------------------------------------------------


def test_a_launch_file_redirect_stays_on_its_origin(store: MetaStore) -> None:
    document = orjson.dumps({"studies": [launch_study("1.2.3")]})
    with http_server() as elsewhere, http_server() as home:
        elsewhere.routes["/stolen.json"] = (200, {}, document)
        home.routes["/moved.json"] = (302, {"Location": "/studies.json"}, b"")
        home.routes["/studies.json"] = (200, {}, document)
        home.routes["/away.json"] = (302, {"Location": f"{elsewhere.base}/stolen.json"}, b"")
        home.routes["/ftp.json"] = (302, {"Location": "ftp://127.0.0.1/x.json"}, b"")
        home.routes["/file.json"] = (302, {"Location": "file:///etc/passwd"}, b"")
        ingest_launch_file(store, f"{home.base}/moved.json", source="home")
        assert store.study_uids() == ["1.2.3"]
        for path in ("/away.json", "/ftp.json", "/file.json"):
            with pytest.raises(SourceRefused, match="redirects to .* not followed"):
                ingest_launch_file(
                    store, f"{home.base}{path}", source="other", headers={"X-Key": CANARY_HEADER}
                )
        assert elsewhere.requests == []  # nothing (and no credential) went there


def test_a_dicomweb_redirect_to_another_origin_only_when_allowed() -> None:
    with http_server() as elsewhere, http_server() as home:
        # A query naming its own includefield is sent as it is (the path is known).
        asked = "/dicom-web/studies?includefield=00081030&limit=10&offset=0"
        query = {"includefield": "00081030"}
        elsewhere.routes[asked] = (
            200,
            {"Content-Type": "application/dicom+json"},
            b"[]",
        )
        home.routes[asked] = (
            307,
            {"Location": f"{elsewhere.base}{asked}"},
            b"",
        )
        settings = {"page_size": 10, "retries": 0}
        config = SourceConfig(
            name="pacs",
            kind="dicomweb",
            root=f"{home.base}/dicom-web",
            settings=settings,
            headers={"Authorization": f"Bearer {CANARY_TOKEN}"},
        )
        refused = DicomWebSource(config)
        with pytest.raises(SourceRefused, match="not followed"):
            list(refused.search_studies(query))
        refused.close()
        assert elsewhere.requests == []
        allowed = SourceConfig(
            name="pacs",
            kind="dicomweb",
            root=f"{home.base}/dicom-web",
            settings={**settings, "redirect_origins": [elsewhere.base]},
        )
        source = DicomWebSource(allowed)
        assert list(source.search_studies(query)) == []
        source.close()
        assert len(elsewhere.requests) == 1


@pytest.mark.parametrize("root", ["ftp://127.0.0.1/dicom-web", "file:///etc", "gopher://x"])
def test_dicomweb_roots_are_http_only(root: str) -> None:
    with pytest.raises(Exception, match="http\\(s\\) URL"):
        DicomWebSource(SourceConfig(name="x", kind="dicomweb", root=root))


# -- the folder source stays in its folder -------------------------------------------


def test_symlinks_out_of_the_folder_are_refused(store: MetaStore, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = outside / "secret.dcm"
    secret.write_bytes(Path(str(get_testdata_file("MR_small.dcm"))).read_bytes())
    folder = tmp_path / "folder"
    (folder / "sub").mkdir(parents=True)
    (folder / "ct.dcm").write_bytes(Path(str(get_testdata_file("CT_small.dcm"))).read_bytes())
    os.symlink(secret, folder / "link.dcm")
    os.symlink(outside, folder / "sub" / "dirlink")  # a directory link: never walked
    os.symlink(
        folder / "ct.dcm", folder / "inside.dcm"
    )  # inside: the same instance, skipped as such
    summary = ingest_folder(store, folder, source="f", keep_going=True)
    uids = store.study_uids()
    assert len(uids) == 1
    mr = str(get_testdata_file("MR_small.dcm", read=True).StudyInstanceUID)  # type: ignore[union-attr]
    assert mr not in uids
    reasons = dict(summary.skipped_files)
    assert "outside the folder" in reasons["link.dcm"]
    assert "dirlink" not in str(reasons)  # never walked into
