"""The service through a real DICOMweb client (dicomweb-client), against data pulled from Orthanc.

Every answer is compared with Orthanc's own answer to the same request:
WADO-RS metadata tag for tag, frames, instances, renderings and bulk data
byte for byte (they are streamed from Orthanc through the service).
"""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import pytest
from dicomweb_client.api import DICOMwebClient
from servers import GENERATED_INSTANCES, Orthanc
from service_helpers import (
    by_sop,
    ingest_orthanc,
    orthanc_client,
    serving,
    strip_bulkdata,
)

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
