"""`metastore ingest dicomweb`, `metastore worker` and `metastore jobs`, end to end."""

from __future__ import annotations

import pytest
from helpers import DATA, read_gz
from servers import Orthanc, StaticTree

from metastore import MetaStore
from metastore.cli import build_parser, main


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_help_names_every_option_and_its_env_twin(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    for argv in (["ingest", "dicomweb", "--help"], ["worker", "--help"], ["jobs", "--help"]):
        with pytest.raises(SystemExit) as done:
            parser.parse_args(argv)
        assert done.value.code == 0
        text = capsys.readouterr().out
        assert (
            "METASTORE_INGEST_DICOMWEB_LEASE" in text
            or "METASTORE_WORKER_LEASE" in text
            or ("METASTORE_JOBS_STATE" in text)
        )
    with pytest.raises(SystemExit):
        parser.parse_args(["ingest", "dicomweb", "--help"])
    text = capsys.readouterr().out
    for option in ("HEADER", "TOKEN_ENV", "QUERY", "WORKERS", "PREFETCH"):
        assert f"METASTORE_INGEST_DICOMWEB_{option}" in text
    # `sync dicomweb` takes the same connection options (one shared definition).
    with pytest.raises(SystemExit):
        parser.parse_args(["sync", "dicomweb", "--help"])
    text = capsys.readouterr().out
    for option in ("PAGE_SIZE", "TIMEOUT", "RETRIES", "MAX_ATTEMPTS", "PREFETCH", "LEASE"):
        assert f"METASTORE_SYNC_DICOMWEB_{option}" in text


def test_ingest_the_static_tree(
    static_tree: StaticTree, db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--db", db_url, "ingest", "dicomweb", static_tree.root, "--static-wado"]
    code, out, _ = run(capsys, *args, "--source", "tree", "--query", "ModalitiesInStudy=CT")
    assert code == 0, out
    with MetaStore(db_url) as store:
        studies = {row["source"]: row for row in store.stats()}
        assert set(studies) == {"tree"}
        source = store.get_source("tree")
        assert source is not None and source.kind == "static_wado"
    ct = [
        row
        for row in read_gz(DATA / "studies" / "index.json.gz")
        if "CT" in row.get("00080061", {}).get("Value", [])
    ]
    assert ct and f"{len(ct)} studies queued" in out
    code, out, _ = run(capsys, "--db", db_url, "jobs")
    assert code == 0 and out.count("done") == len(ct)
    code, out, _ = run(capsys, "--db", db_url, "jobs", "--state", "failed")
    assert code == 0 and out == ""


def test_ingest_orthanc_with_a_header_and_two_workers(
    orthanc: Orthanc, db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(
        capsys,
        "--db",
        db_url,
        "ingest",
        "dicomweb",
        orthanc.root,
        "--source",
        "orthanc",
        "--header",
        f"Authorization: {orthanc.authorization}",
        "--workers",
        "2",
        "--page-size",
        "2",
    )
    assert code == 0, out + err
    with MetaStore(db_url) as store:
        total = sum(row["instances"] for row in store.stats())
    with orthanc.server.client() as client:
        assert total == client.get("/statistics").json()["CountInstances"]
    assert orthanc.password not in out + err


def test_bad_credentials_fail_the_jobs_and_exit_1(
    orthanc: Orthanc,
    tmp_path: pytest.TempPathFactory,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = f"sqlite:///{tmp_path}/cli.db"
    monkeypatch.setenv("ORTHANC_TOKEN", "not-the-token-4711")
    code, out, err = run(
        capsys, "--db", url, "ingest", "dicomweb", orthanc.root, "--token-env", "ORTHANC_TOKEN"
    )
    assert code == 1  # the search itself was refused
    assert "401" in err and "not-the-token-4711" not in out + err
    monkeypatch.delenv("ORTHANC_TOKEN")
    code, out, err = run(
        capsys, "--db", url, "ingest", "dicomweb", orthanc.root, "--token-env", "ORTHANC_TOKEN"
    )
    assert code == 1 and "ORTHANC_TOKEN holds no token" in err


def test_worker_serves_queued_jobs(
    static_tree: StaticTree, tmp_path: pytest.TempPathFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path}/w.db"
    # Queue with one command (no workers: a filter nothing matches leaves 0 jobs), then
    # queue for real and let `metastore worker --once` drain.
    from metastore.ingest import enqueue_studies
    from metastore.sources.dicomweb import dicomweb_config
    from metastore.sources.static_wado import StaticWadoSource

    config = dicomweb_config(static_tree.root, name="tree", static=True)
    with MetaStore(url) as store, StaticWadoSource(config) as source:
        store.register_source("tree", config.kind, root_url=config.root)
        assert enqueue_studies(store, source, query={"StudyDescription": "ECG"}) == 1
    code, out, _ = run(capsys, "--db", url, "worker", "--once", "--source", "tree")
    assert code == 0 and "1 studies" in out and "0 failed" in out
    code, out, err = run(capsys, "--db", url, "worker", "--once", "--header", "X-Key: v")
    assert code == 1 and "need --source" in err
