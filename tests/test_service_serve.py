"""End to end: a real ``metastore serve`` process, spoken to by dicomweb-client, stopped by SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import httpx
import pytest
from dicomweb_client.api import DICOMwebClient
from servers import Orthanc
from service_helpers import (
    AUTH_ENV,
    by_sop,
    free_socket,
    ingest_orthanc,
    orthanc_client,
    strip_bulkdata,
    wait_ready,
)

TOKEN = "end-to-end-token"


def test_metastore_serve_end_to_end(
    db_url: str, orthanc: Orthanc, monkeypatch: pytest.MonkeyPatch
) -> None:
    ingest_orthanc(db_url, orthanc, monkeypatch)
    sock = free_socket()
    port = sock.getsockname()[1]
    sock.close()
    base = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        AUTH_ENV: orthanc.authorization,
        "E2E_TOKEN": TOKEN,
        "METASTORE_DATABASE_URL": db_url,
        "METASTORE_SERVE_PORT": str(port),
    }
    command = [
        sys.executable,
        "-m",
        "metastore.cli",
        "serve",
        "--workers",
        "2",
        "--token-env",
        "E2E_TOKEN",
        "--public-url",
        base,
        "--cors-origin",
        "http://viewer.test",
    ]
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        wait_ready(process, f"{base}/changefeed/latest", headers)
        assert httpx.get(f"{base}/changefeed/latest").status_code == 401
        ours = DICOMwebClient(url=f"{base}/dicomweb", headers=headers)
        theirs = orthanc_client(orthanc)
        (study,) = theirs.search_for_studies(search_filters={"PatientID": "GEN-CT"})
        study_uid = study["0020000D"]["Value"][0]
        (mine,) = ours.search_for_studies(search_filters={"PatientID": "GEN-CT"})
        assert mine["0020000D"]["Value"] == [study_uid]
        series_uid = theirs.search_for_series(study_uid)[0]["0020000E"]["Value"][0]
        expected = by_sop(theirs.retrieve_series_metadata(study_uid, series_uid))
        got = by_sop(ours.retrieve_series_metadata(study_uid, series_uid))
        assert strip_bulkdata(got) == strip_bulkdata(expected)
        sop = sorted(expected)[0]
        octets = ("application/octet-stream",)
        assert ours.retrieve_instance_frames(
            study_uid, series_uid, sop, frame_numbers=[1], media_types=octets
        ) == theirs.retrieve_instance_frames(
            study_uid, series_uid, sop, frame_numbers=[1], media_types=octets
        )
        preflight = httpx.options(
            f"{base}/dicomweb/studies",
            headers={
                "Origin": "http://viewer.test",
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "authorization",
            },
        )
        assert preflight.headers["access-control-allow-origin"] == "http://viewer.test"
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            _, stderr = process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
    assert process.returncode == 0, stderr
    assert "Traceback" not in stderr
    assert f"GET /dicomweb/studies/{study_uid}/series/{series_uid}/metadata 200" in stderr
    assert TOKEN not in stderr and orthanc.password not in stderr
