"""The real OHIF viewer (npm ``@ohif/app``) in Debian's chromium, pointed at DICOMweb.

First the harness itself, against a real Orthanc behind a CORS-adding proxy:
the study list, a study's series and a drawn CT. Then the viewer pointed at
``metastore serve`` (a real process) over an index ingested from a real
Orthanc: every indexed study listed, including one whose series carry no
Modality (Orthanc's own answer for it breaks the viewer's whole list), a
study's series, a CT drawn from pixels that come through metastore from
Orthanc, and the launch-file route over the service's ``/dicomjson``.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pydicom
import pytest
from ohif import (
    Viewer,
    ViewerPage,
    browser_series,
    cors_proxy,
    drawn_share,
    snapshot,
    study_rows,
    wait_for,
)
from servers import GENERATED_SERIES, IN_CI, Orthanc, pydicom_files

from metastore.ingest import ingest_source
from metastore.service.ohif import app_config
from metastore.sources import SourceConfig

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
from orthanc_local import LocalOrthanc, OrthancUnavailable, ct_study, free_port  # noqa: E402

# A drawn CT fills most of the viewport; an empty one shows only its overlay text.
DRAWN = 0.2


def qido(root: str, path: str, headers: dict[str, str] | None = None) -> list[dict[str, Any]]:
    response = httpx.get(
        f"{root}{path}", headers={"Accept": "application/dicom+json", **(headers or {})}
    )
    response.raise_for_status()
    rows: list[dict[str, Any]] = response.json()
    return rows


def value(row: dict[str, Any], tag: str) -> Any:
    return row.get(tag, {}).get("Value", [None])[0]


def listed(rows: list[str]) -> list[tuple[str, int]]:
    """Each study-list row as (patient family name, instances): its first and last cells."""
    return sorted((re.match(r"[^, ]*", row)[0], int(row.rsplit(" ", 1)[1])) for row in rows)  # type: ignore[index]


def expected_rows(studies: list[dict[str, Any]]) -> list[tuple[str, int]]:
    """What the study list shows for QIDO study rows."""
    return sorted(
        (
            ((value(row, "00100010") or {}).get("Alphabetic") or "").split("^")[0],
            int(value(row, "00201208")),
        )
        for row in studies
    )


def study_uid(root: str, patient_id: str, headers: dict[str, str] | None = None) -> str:
    (row,) = qido(root, f"/studies?PatientID={patient_id}", headers)
    uid: str = value(row, "0020000D")
    return uid


def series_uids(root: str, study: str, headers: dict[str, str] | None = None) -> set[str]:
    return {value(row, "0020000E") for row in qido(root, f"/studies/{study}/series", headers)}


def fetched_frames(opened: ViewerPage, base: str) -> list[str]:
    """The frames the page fetched from the DICOMweb root under ``base`` (WADO-RS, PS3.18 10.4)."""
    root = f"{base}/dicomweb/studies/"
    return [url for url in opened.requests if url.startswith(root) and "/frames/" in url]


def test_the_harness_on_orthanc(orthanc: Orthanc, viewer: Viewer, viewer_page: ViewerPage) -> None:
    """The viewer on a real archive: every study listed, a study's series, a drawn CT."""
    auth = {"Authorization": orthanc.authorization}
    page = viewer_page.page
    with cors_proxy(orthanc.root, auth) as proxy:
        viewer.app_config = app_config(proxy.base)
        page.goto(viewer.url("/"))
        studies = qido(orthanc.root, "/studies", auth)
        assert listed(study_rows(page, len(studies))) == expected_rows(studies)
        assert proxy.forwarded[0].startswith("/dicomweb/studies?")
        snapshot(page, "orthanc-study-list")

        generated = study_uid(orthanc.root, "GEN-CT", auth)
        series = series_uids(orthanc.root, generated, auth)
        assert len(series) == GENERATED_SERIES
        page.goto(viewer.url(f"/viewer?StudyInstanceUIDs={generated}"))
        assert browser_series(page, series) == series

        page.goto(viewer.url(f"/viewer?StudyInstanceUIDs={study_uid(orthanc.root, '1CT1', auth)}"))
        assert drawn_share(page) > DRAWN
        snapshot(page, "orthanc-ct")
    assert fetched_frames(viewer_page, proxy.base)
    assert viewer_page.blocked == []


# ------------------------------------------------ the viewer on metastore serve


def no_modality_study() -> Iterator[bytes]:
    """A generated study whose one series carries no Modality."""
    for data in ct_study(series=1, instances=2, patient="NO-MODALITY", index=7):
        dataset = pydicom.dcmread(io.BytesIO(data))
        del dataset.Modality
        buffer = io.BytesIO()
        dataset.save_as(buffer, enforce_file_format=True)
        yield buffer.getvalue()


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalOrthanc]:
    """An Orthanc of its own (no credentials): a CT, an MR, a generated CT, a study without Modality."""
    try:
        server = LocalOrthanc(tmp_path_factory.mktemp("archive")).start()
    except OrthancUnavailable as err:
        if IN_CI:
            pytest.fail(f"Orthanc is needed in CI: {err}")
        pytest.skip(str(err))
    try:
        server.upload(pydicom_files()[:2])  # CT_small, MR_small
        server.upload(ct_study(series=2, instances=4, patient="GEN-OHIF", index=3))
        server.upload(no_modality_study())
        yield server
    finally:
        server.stop()


def test_orthancs_answer_for_a_study_without_modality_breaks_the_list(
    archive: LocalOrthanc, viewer: Viewer, viewer_page: ViewerPage
) -> None:
    """Why metastore must answer differently: the check below that passes on metastore fails on Orthanc."""
    (row,) = qido(archive.root, "/studies?PatientID=NO-MODALITY")
    assert "00080061" in row and "Value" not in row["00080061"]
    page = viewer_page.page
    with cors_proxy(archive.root, {}) as proxy:
        viewer.app_config = app_config(proxy.base)
        page.goto(viewer.url("/"))
        text = wait_for(
            page,
            lambda: page.evaluate("() => document.body.innerText"),
            lambda text: "Data Source Connection Error" in text or "No studies" in text,
            "the viewer's answer to Orthanc's study list",
        )
    snapshot(page, "orthanc-no-modality")
    assert "Data Source Connection Error" in text


@pytest.fixture
def service(db_url: str, archive: LocalOrthanc, viewer: Viewer) -> Iterator[str]:
    """``metastore serve`` as a real process over an index ingested from the archive."""
    summary = ingest_source(
        db_url, SourceConfig(name="archive", kind="dicomweb", root=archive.root)
    )
    assert summary.failures == 0 and summary.studies == 4
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    metastore = str(Path(sys.executable).with_name("metastore"))
    command = [metastore, "--db", db_url, "serve"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--cors-origin", viewer.origin]
    process = subprocess.Popen(command, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        with httpx.Client(timeout=2.0) as client:
            wait_until_up(client, f"{base}/dicomweb/studies", process)
        # The viewer's configuration as the command prints it.
        printed = subprocess.run(
            [metastore, "ohif-config", "--url", base], capture_output=True, text=True, check=True
        )
        viewer.app_config = printed.stdout
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_until_up(client: httpx.Client, url: str, process: subprocess.Popen[bytes]) -> None:
    for _ in range(300):
        if process.poll() is not None:
            pytest.fail(f"metastore serve exited with {process.returncode}")
        try:
            if client.get(url).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    pytest.fail(f"metastore serve did not answer {url}")


# The browser sees the service's answers, not the database: SQLite is enough
# here; the service's own tests run every endpoint on both backends.
@pytest.mark.parametrize("backend", ["sqlite"])
def test_the_viewer_on_metastore(
    service: str, archive: LocalOrthanc, viewer: Viewer, viewer_page: ViewerPage, backend: str
) -> None:
    """Every indexed study listed, a study's series, a CT drawn through metastore, launch files.

    A launch file from the service is drawn through the service too.
    """
    page = viewer_page.page
    page.goto(viewer.url("/"))
    studies = qido(archive.root, "/studies")
    assert len(studies) == 4
    rows = study_rows(page, len(studies))
    assert listed(rows) == expected_rows(studies)
    # Each study's description, which Orthanc sends only when asked, is in its row.
    described = qido(archive.root, "/studies?includefield=StudyDescription")
    descriptions = {value(row, "00081030") for row in described} - {None}
    assert len(descriptions) >= 2
    assert [d for d in descriptions if not any(d in row for row in rows)] == [], rows
    snapshot(page, f"metastore-{backend}-study-list")

    generated = study_uid(archive.root, "GEN-OHIF")
    series = series_uids(archive.root, generated)
    assert len(series) == 2
    page.goto(viewer.url(f"/viewer?StudyInstanceUIDs={generated}"))
    assert browser_series(page, series) == series
    snapshot(page, f"metastore-{backend}-series")

    ct = study_uid(archive.root, "1CT1")
    page.goto(viewer.url(f"/viewer?StudyInstanceUIDs={ct}"))
    assert drawn_share(page) > DRAWN
    assert fetched_frames(viewer_page, service)
    snapshot(page, f"metastore-{backend}-ct")

    page.goto(viewer.launch_url(f"{service}/dicomjson?StudyInstanceUID={generated}"))
    assert browser_series(page, series) == series
    snapshot(page, f"metastore-{backend}-launch-file")

    # The served launch file names the service's frames: the image is drawn
    # through metastore, the browser never reaching the archive.
    before = len(fetched_frames(viewer_page, service))
    page.goto(viewer.launch_url(f"{service}/dicomjson?StudyInstanceUID={ct}"))
    assert drawn_share(page) > DRAWN
    assert len(fetched_frames(viewer_page, service)) > before
    assert not [url for url in viewer_page.requests if archive.root in url]
    snapshot(page, f"metastore-{backend}-launch-file-ct")
    assert viewer_page.blocked == []
