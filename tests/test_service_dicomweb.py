"""The service through a real DICOMweb client (dicomweb-client), against data pulled from Orthanc.

Every answer is compared with Orthanc's own answer to the same request:
WADO-RS metadata tag for tag, frames, instances, renderings and bulk data
byte for byte (they are streamed from Orthanc through the service).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
from dicomweb_client.api import DICOMwebClient
from requests import HTTPError
from servers import GENERATED_INSTANCES, Orthanc
from service_helpers import (
    by_sop,
    ingest_orthanc,
    orthanc_client,
    serving,
    strip_bulkdata,
)

from metastore import naturalize
from metastore.service import Settings, create_app

TOKEN = "s3cret-token-for-tests"
# Orthanc refuses dicomweb-client's default Accept for frames and bulk data
# (multipart/related; type="*/*") with 400, so the tests name the type.
OCTETS = ("application/octet-stream",)


@pytest.fixture
def clients(
    db_url: str, orthanc: Orthanc, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[DICOMwebClient, DICOMwebClient, str]]:
    """(the service's client, Orthanc's client, the service's base URL), both holding the same data."""
    ingest_orthanc(db_url, orthanc, monkeypatch)
    with serving(lambda base: create_app(db_url, Settings(token=TOKEN, public_url=base))) as base:
        ours = DICOMwebClient(url=f"{base}/dicomweb", headers={"Authorization": f"Bearer {TOKEN}"})
        yield ours, orthanc_client(orthanc), base


def _study_uids(theirs: DICOMwebClient) -> list[str]:
    return [s["0020000D"]["Value"][0] for s in theirs.search_for_studies()]


def test_wado_metadata_equals_orthancs(
    clients: tuple[DICOMwebClient, DICOMwebClient, str],
) -> None:
    ours, theirs, base = clients
    studies = _study_uids(theirs)
    assert len(studies) >= 2
    compared = 0
    for study in studies:
        expected = by_sop(theirs.retrieve_study_metadata(study))
        got = by_sop(ours.retrieve_study_metadata(study))
        assert set(got) == set(expected)
        for sop, dataset in expected.items():
            assert strip_bulkdata(got[sop]) == strip_bulkdata(dataset), sop
            compared += 1
        for series in theirs.search_for_series(study):
            series_uid = series["0020000E"]["Value"][0]
            expected_series = by_sop(theirs.retrieve_series_metadata(study, series_uid))
            got_series = ours.retrieve_series_metadata(study, series_uid)
            assert strip_bulkdata(by_sop(got_series)) == strip_bulkdata(expected_series)
            sop = sorted(expected_series)[0]
            one = ours.retrieve_instance_metadata(study, series_uid, sop)
            assert strip_bulkdata(one) == strip_bulkdata(expected_series[sop])
    assert compared == sum(
        int(s["00201208"]["Value"][0]) for s in theirs.search_for_studies(fields=["00201208"])
    )


def _bulk_uris(dataset: object, found: list[str]) -> list[str]:
    if isinstance(dataset, dict):
        for value in dataset.values():
            if isinstance(value, dict) and "BulkDataURI" in value:
                found.append(value["BulkDataURI"])
            else:
                _bulk_uris(value, found)
    elif isinstance(dataset, list):
        for item in dataset:
            _bulk_uris(item, found)
    return found


def test_bulkdata_uris_point_at_the_service_and_give_orthancs_bytes(
    clients: tuple[DICOMwebClient, DICOMwebClient, str], orthanc: Orthanc
) -> None:
    ours, theirs, base = clients
    # Orthanc writes its BulkDataURIs for the Host header, which dicomweb-client
    # sends without the port: put the port back.
    netloc = urlsplit(orthanc.root).netloc
    checked = 0
    for study in _study_uids(theirs):
        expected = by_sop(theirs.retrieve_study_metadata(study))
        for sop, dataset in by_sop(ours.retrieve_study_metadata(study)).items():
            mine, original = _bulk_uris(dataset, []), _bulk_uris(expected[sop], [])
            assert len(mine) == len(original)
            for uri, theirs_uri in zip(mine, original, strict=True):
                assert uri.startswith(f"{base}/dicomweb/studies/{study}/series/")
                if checked < 6:
                    got = ours.retrieve_bulkdata(uri, media_types=OCTETS)
                    theirs_uri = urlunsplit(urlsplit(theirs_uri)._replace(netloc=netloc))
                    assert got == theirs.retrieve_bulkdata(theirs_uri, media_types=OCTETS)
                    assert got and got[0]
                    checked += 1
    assert checked > 0


def test_frames_instances_and_renderings_are_orthancs_bytes(
    clients: tuple[DICOMwebClient, DICOMwebClient, str],
) -> None:
    ours, theirs, _ = clients
    (generated,) = theirs.search_for_studies(search_filters={"PatientID": "GEN-CT"})
    study = generated["0020000D"]["Value"][0]
    series = theirs.search_for_series(study)[0]["0020000E"]["Value"][0]
    instances = [i["00080018"]["Value"][0] for i in theirs.search_for_instances(study, series)]
    assert len(instances) == GENERATED_INSTANCES
    for sop in instances[:4]:
        got = ours.retrieve_instance_frames(
            study, series, sop, frame_numbers=[1], media_types=OCTETS
        )
        assert got == theirs.retrieve_instance_frames(
            study, series, sop, frame_numbers=[1], media_types=OCTETS
        )
        assert len(got[0]) == 8 * 8 * 2
    sop = instances[0]
    mine = ours.retrieve_instance(study, series, sop)
    original = theirs.retrieve_instance(study, series, sop)
    assert mine.SOPInstanceUID == sop and mine.PixelData == original.PixelData
    rendered = ours.retrieve_instance_rendered(study, series, sop, media_types=("image/png",))
    assert rendered[:8] == b"\x89PNG\r\n\x1a\n"
    assert rendered == theirs.retrieve_instance_rendered(
        study, series, sop, media_types=("image/png",)
    )
    framed = ours.retrieve_instance_frames_rendered(
        study, series, sop, frame_numbers=[1], media_types=("image/png",)
    )
    assert framed == theirs.retrieve_instance_frames_rendered(
        study, series, sop, frame_numbers=[1], media_types=("image/png",)
    )


def test_multiframe_frames_through_the_service(
    clients: tuple[DICOMwebClient, DICOMwebClient, str],
) -> None:
    ours, theirs, _ = clients
    (dose,) = theirs.search_for_instances(search_filters={"Modality": "RTDOSE"})
    study, series, sop = (dose[tag]["Value"][0] for tag in ("0020000D", "0020000E", "00080018"))
    frames = [1, 2, 15]
    got = ours.retrieve_instance_frames(
        study, series, sop, frame_numbers=frames, media_types=OCTETS
    )
    assert len(got) == 3
    assert got == theirs.retrieve_instance_frames(
        study, series, sop, frame_numbers=frames, media_types=OCTETS
    )
    assert got[0] != got[2]


def test_served_launch_file_urls_resolve_through_the_service(
    clients: tuple[DICOMwebClient, DICOMwebClient, str], orthanc: Orthanc
) -> None:
    """/dicomjson names the service's frames, not Orthanc's; each gives Orthanc's bytes."""
    ours, theirs, base = clients
    uids = ",".join(_study_uids(theirs))
    answer = httpx.get(
        f"{base}/dicomjson?StudyInstanceUID={uids}", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert answer.status_code == 200
    assert urlsplit(orthanc.root).netloc not in answer.text
    frames: dict[str, list[str]] = {}
    for study in answer.json()["studies"]:
        for series in study["series"]:
            prefix = f"wadors:{base}/dicomweb/studies/{study['StudyInstanceUID']}/series/"
            for entry in series["instances"]:
                assert entry["url"].startswith(prefix + series["SeriesInstanceUID"] + "/"), entry
                frames.setdefault(entry["metadata"]["SOPInstanceUID"], []).append(entry["url"])
    (dose,) = theirs.search_for_instances(search_filters={"Modality": "RTDOSE"})
    dose_sop = dose["00080018"]["Value"][0]
    generated = theirs.search_for_instances(search_filters={"PatientID": "GEN-CT"})
    checked = [(dose_sop, n) for n in (1, 2)] + [(generated[0]["00080018"]["Value"][0], 1)]
    for sop, number in checked:
        url = frames[sop][number - 1]
        assert url.endswith(f"/instances/{sop}/frames/{number}")
        got = ours.retrieve_bulkdata(url.removeprefix("wadors:"), media_types=OCTETS)
        study, series = (
            _instance(theirs, sop)[tag]["Value"][0] for tag in ("0020000D", "0020000E")
        )
        expected = theirs.retrieve_instance_frames(
            study, series, sop, frame_numbers=[number], media_types=OCTETS
        )
        assert got == expected and got[0]
    assert len(frames[dose_sop]) > 2 and len(set(frames[dose_sop])) == len(frames[dose_sop])


def _instance(client: DICOMwebClient, sop: str) -> dict[str, Any]:
    (found,) = client.search_for_instances(search_filters={"SOPInstanceUID": sop})
    return found


def _values(rows: list[dict[str, Any]], tag: str) -> dict[str, Any]:
    """Per UID (the first Value of ``tag``), the row naturalized."""
    return {row[tag]["Value"][0]: naturalize(row) for row in rows}


# The required study return keys that carry data here (PS3.18 Table 10.6.3-3),
# and StudyDescription, which OHIF's study list shows and Orthanc's default
# QIDO study answer leaves out: the ingest asks for it.
STUDY_KEYS = (
    "PatientID",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "NumberOfStudyRelatedSeries",
    "NumberOfStudyRelatedInstances",
    "StudyDescription",
    "ReferringPhysicianName",
    "PatientBirthDate",
    "PatientSex",
    "StudyID",
)


def _modalities(row: dict[str, Any]) -> set[str]:
    value = row.get("ModalitiesInStudy")
    return set(value if isinstance(value, list) else [value] if value else [])


def test_qido_answers_agree_with_orthancs(
    clients: tuple[DICOMwebClient, DICOMwebClient, str],
) -> None:
    ours, theirs, _ = clients
    fields = ["00081030", "00080061", "00201206", "00201208", "00080050", "00080030"]
    expected = _values(theirs.search_for_studies(fields=fields), "0020000D")
    assert {row.get("StudyDescription") for row in expected.values()} >= {"ECG", "e+1"}
    got_rows = ours.search_for_studies(fields=fields)
    got = _values(got_rows, "0020000D")
    assert set(got) == set(expected)
    for uid, row in expected.items():
        for key in STUDY_KEYS:
            assert got[uid].get(key) == row.get(key), (uid, key)
        assert str(got[uid]["PatientName"]) == str(row["PatientName"])
        assert _modalities(got[uid]) == _modalities(row), uid
    # OHIF 3.13 reads ModalitiesInStudy.Value.length: never present without a Value.
    for row in got_rows:
        assert "00080061" not in row or row["00080061"].get("Value"), row
    for filters in (
        {"PatientID": "GEN-CT"},
        {"ModalitiesInStudy": "CT"},
        {"ModalitiesInStudy": "RTPLAN"},
        {"StudyDate": "20000101-"},
        {"PatientID": "no-such-patient"},
        {"StudyDescription": "ECG"},
    ):
        mine = set(_values(ours.search_for_studies(search_filters=filters), "0020000D"))
        assert mine == set(_values(theirs.search_for_studies(search_filters=filters), "0020000D"))
    # Orthanc 1.x finds nothing by PatientName here (not even the exact name);
    # the standard's rule (PS3.4 C.2.2.2.4) finds the generated study.
    by_name = ours.search_for_studies(search_filters={"PatientName": "generated*"})
    assert [row["00100020"]["Value"][0] for row in by_name] == ["GEN-CT"]
    paged = [
        row
        for offset in range(0, len(expected), 2)
        for row in ours.search_for_studies(limit=2, offset=offset)
    ]
    assert set(_values(paged, "0020000D")) == set(expected)
    for study in expected:
        theirs_series = _values(theirs.search_for_series(study), "0020000E")
        our_series = _values(ours.search_for_series(study), "0020000E")
        assert set(our_series) == set(theirs_series)
        for uid, row in theirs_series.items():
            for key in ("Modality", "SeriesNumber", "NumberOfSeriesRelatedInstances"):
                assert our_series[uid].get(key) == row.get(key), (uid, key)
            theirs_instances = _values(theirs.search_for_instances(study, uid), "00080018")
            our_instances = _values(ours.search_for_instances(study, uid), "00080018")
            assert set(our_instances) == set(theirs_instances)
            for sop, item in theirs_instances.items():
                for key in ("SOPClassUID", "InstanceNumber"):
                    assert our_instances[sop].get(key) == item.get(key), (sop, key)
        assert set(_values(ours.search_for_instances(study), "00080018")) == set(
            _values(theirs.search_for_instances(study), "00080018")
        )
    assert set(_values(ours.search_for_series(), "0020000E")) == set(
        _values(theirs.search_for_series(), "0020000E")
    )
    (dose,) = ours.search_for_instances(search_filters={"Modality": "RTDOSE"})
    assert dose["00080018"]["Value"] == [
        row["00080018"]["Value"][0]
        for row in theirs.search_for_instances(search_filters={"Modality": "RTDOSE"})
    ]


def test_qido_refuses_a_malformed_query(
    clients: tuple[DICOMwebClient, DICOMwebClient, str],
) -> None:
    ours, _, _ = clients
    with pytest.raises(HTTPError) as caught:
        ours.search_for_studies(search_filters={"StudyDate": "2024-13-45x"})
    assert caught.value.response.status_code == 400
    assert "StudyDate" in caught.value.response.text
