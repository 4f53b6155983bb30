"""The DICOMweb source and ingestion against a real Orthanc (tests/servers.py)."""

from __future__ import annotations

import base64
import logging
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from servers import GENERATED_INSTANCES, GENERATED_SERIES, PYDICOM_FILES, Orthanc

from metastore import MetaStore, SourceError, naturalize
from metastore.ingest import JobQueue, drain, ingest_source
from metastore.schema import metadata as schema_metadata
from metastore.sources import SourceConfig, open_source
from metastore.sources.dicomweb import DicomWebSource, dicomweb_config


def config(orthanc: Orthanc, **settings: Any) -> SourceConfig:
    return SourceConfig(
        name="orthanc",
        kind="dicomweb",
        root=orthanc.root,
        settings=settings,
        headers={"Authorization": orthanc.authorization},
    )


def orthanc_rest(orthanc: Orthanc, path: str) -> Any:
    with orthanc.server.client() as client:
        response = client.get(path)
        response.raise_for_status()
        return response.json()


def orthanc_qido(orthanc: Orthanc, path: str) -> list[dict[str, Any]]:
    """Orthanc's own answer to a DICOMweb request, unpaged, naturalized."""
    with orthanc.server.client() as client:
        response = client.get(f"/dicom-web{path}", headers={"Accept": "application/dicom+json"})
        response.raise_for_status()
        return [naturalize(item) for item in response.json()]


def test_search_pages_until_exhausted_and_matches_orthancs_counts(orthanc: Orthanc) -> None:
    statistics = orthanc_rest(orthanc, "/statistics")
    with DicomWebSource(config(orthanc, page_size=2)) as source:
        rows = list(source.search_studies())
        requests = source.requests
    uids = [row["StudyInstanceUID"] for row in rows]
    assert len(uids) == len(set(uids)) == statistics["CountStudies"]
    assert set(uids) == {r["StudyInstanceUID"] for r in orthanc_qido(orthanc, "/studies")}
    # Pages of two, and one more request that comes back empty.
    assert requests == len(uids) // 2 + 1 + (len(uids) % 2 > 0)


def test_query_parameters_reach_the_server(orthanc: Orthanc) -> None:
    with DicomWebSource(config(orthanc)) as source:
        generated = list(source.search_studies({"PatientID": "GEN-CT"}))
        by_modality = list(source.search_studies({"ModalitiesInStudy": "RTPLAN"}))
        limited = list(source.search_studies({"limit": 2}))
    assert [row["PatientID"] for row in generated] == ["GEN-CT"]
    assert generated[0]["NumberOfStudyRelatedSeries"] == GENERATED_SERIES
    assert len(by_modality) == 1 and "RTPLAN" in str(by_modality[0]["ModalitiesInStudy"])
    assert len(limited) == 2


def test_series_metadata_urls_and_frames(orthanc: Orthanc) -> None:
    with open_source(config(orthanc)) as source:
        assert isinstance(source, DicomWebSource)
        (study,) = source.search_studies({"PatientID": "GEN-CT"})
        study_uid = study["StudyInstanceUID"]
        series = source.search_series(study_uid)
        assert len(series) == GENERATED_SERIES
        series_uid = series[0]["SeriesInstanceUID"]
        instances = source.retrieve_series_metadata(study_uid, series_uid)
        assert len(instances) == GENERATED_INSTANCES
        first = instances[0]
        sop = first["SOPInstanceUID"]
        expected = f"{orthanc.root}/studies/{study_uid}/series/{series_uid}/instances/{sop}"
        assert first["url"] == expected
        assert first["imageId"] == f"wadors:{expected}/frames/1"
        assert source.get_image_ids(first) == [f"wadors:{expected}/frames/1"]
        # The 15-frame RT dose pydicom ships: one imageId per frame.
        (dose,) = source.search_studies({"ModalitiesInStudy": "RTDOSE"})
        (dose_series,) = source.search_series(dose["StudyInstanceUID"])
        (dose_instance,) = source.retrieve_series_metadata(
            dose["StudyInstanceUID"], dose_series["SeriesInstanceUID"]
        )
        frames = source.get_image_ids(dose_instance)
        assert len(frames) == 15
        assert frames[0].endswith("/frames/1") and frames[-1].endswith("/frames/15")


# Study attributes PS3.18 does not make a server return by default (or Orthanc
# leaves out): the index keeps them all the same, for the study list.
STUDY_ATTRIBUTES = (
    "StudyDescription",
    "ReferringPhysicianName",
    "PatientBirthDate",
    "PatientSex",
    "PatientAge",
    "StudyID",
)


def test_ingest_matches_the_server(orthanc: Orthanc, db_url: str) -> None:
    summary = ingest_source(db_url, config(orthanc, page_size=3), workers=1, lease=30)
    statistics = orthanc_rest(orthanc, "/statistics")
    assert summary.failures == 0
    assert summary.queued == summary.studies == statistics["CountStudies"]
    assert summary.series == statistics["CountSeries"]
    assert summary.instances == statistics["CountInstances"]
    # Orthanc answers these only when asked (repeated includefield, as Orthanc 1.10 reads it).
    asked = "&".join(f"includefield={key}" for key in STUDY_ATTRIBUTES)
    described = {row["StudyInstanceUID"]: row for row in orthanc_qido(orthanc, f"/studies?{asked}")}
    assert {described[uid].get("StudyDescription") for uid in described} >= {"ECG", "e+1"}
    with MetaStore(db_url) as store:
        assert JobQueue(store).counts("orthanc")["done"] == statistics["CountStudies"]
        with store.engine.connect() as connection:
            query = sa.text("SELECT study_uid, study_description FROM studies")
            columns = {uid: text for uid, text in connection.execute(query)}
        assert columns == {uid: row.get("StudyDescription") for uid, row in described.items()}
        for study_row in orthanc_qido(orthanc, "/studies"):
            study_uid = study_row["StudyInstanceUID"]
            study = store.get_study(study_uid)
            assert study is not None
            assert study["NumberOfStudyRelatedSeries"] == study_row["NumberOfStudyRelatedSeries"]
            assert (
                study["NumberOfStudyRelatedInstances"] == study_row["NumberOfStudyRelatedInstances"]
            )
            assert study["PatientID"] == study_row["PatientID"]
            for key in STUDY_ATTRIBUTES:
                assert study.get(key) == described[study_uid].get(key), (study_uid, key)
            (series_list,) = study["seriesLists"]
            assert series_list["source"] == "orthanc"
            for series in series_list["series"]:
                wado = orthanc_qido(
                    orthanc, f"/studies/{study_uid}/series/{series['SeriesInstanceUID']}/metadata"
                )
                stored = {i["SOPInstanceUID"]: i for i in series["instances"]}
                assert set(stored) == {i["SOPInstanceUID"] for i in wado}
                for instance in wado:
                    kept = {k: v for k, v in stored[instance["SOPInstanceUID"]].items()}
                    for key, value in instance.items():
                        if not isinstance(value, dict):  # BulkDataURIs are made absolute
                            assert kept[key] == value, key
        # Re-running changes nothing and announces nothing.
        events = len(store.changes(limit=100_000))
    again = ingest_source(db_url, config(orthanc), workers=1, lease=30)
    assert again.failures == 0 and again.studies == summary.studies
    with MetaStore(db_url) as store:
        assert len(store.changes(limit=100_000)) == events


def test_bulkdata_uris_are_absolute(orthanc: Orthanc) -> None:
    with DicomWebSource(config(orthanc)) as source:
        (study,) = source.search_studies({"ModalitiesInStudy": "ECG"})
        (series,) = source.search_series(study["StudyInstanceUID"])
        (instance,) = source.retrieve_series_metadata(
            study["StudyInstanceUID"], series["SeriesInstanceUID"]
        )
    uris: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            if isinstance(value.get("BulkDataURI"), str):
                uris.append(value["BulkDataURI"])
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(instance)
    assert uris, "the ECG waveform carries bulk data"
    assert all(uri.startswith("http://127.0.0.1:") for uri in uris)


def test_without_credentials_the_error_says_so(orthanc: Orthanc) -> None:
    bare = SourceConfig(name="orthanc", kind="dicomweb", root=orthanc.root)
    with DicomWebSource(bare) as source, pytest.raises(SourceError, match="401") as caught:
        list(source.search_studies())
    assert "--header" in str(caught.value)
    assert caught.value.context["status"] == 401


def test_credentials_in_the_url_become_a_header(orthanc: Orthanc, tmp_path: Any) -> None:
    host = orthanc.root.removeprefix("http://")
    made = dicomweb_config(f"http://{orthanc.user}:{orthanc.password}@{host}", name="u")
    assert made.root == orthanc.root
    assert orthanc.password not in made.root and orthanc.password not in repr(made)
    url = f"sqlite:///{tmp_path / 'u.db'}"
    summary = ingest_source(url, made, study_uids=[], query={"PatientID": "GEN-CT"})
    assert summary.studies == 1 and summary.failures == 0
    with MetaStore(url) as store:
        source = store.get_source("u")
        assert source is not None and source.root_url == orthanc.root


def _dump(url: str) -> str:
    """Every value of every table, as text."""
    engine = sa.create_engine(url)
    with engine.connect() as connection:
        text = "\n".join(
            str(row)
            for table in schema_metadata.sorted_tables
            for row in connection.execute(sa.select(table))
        )
    engine.dispose()
    return text


def test_credentials_never_reach_the_database_logs_or_errors(
    orthanc: Orthanc, db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    token = orthanc.authorization.split()[1]
    secrets = {orthanc.password, token}
    good = ingest_source(db_url, config(orthanc), query={"PatientID": "GEN-CT"})
    assert good.studies == 1
    # A wrong password: every study fails, and the error is kept without it.
    wrong = base64.b64encode(b"metastore:wrong-password-123").decode()
    bad_config = SourceConfig(
        name="orthanc",
        kind="dicomweb",
        root=orthanc.root,
        headers={"Authorization": f"Basic {wrong}"},
        settings={"retries": 0},
    )
    with MetaStore(db_url) as store:
        # Queue with good credentials, then work with bad ones.
        JobQueue(store).enqueue("orthanc", [(good_uid, {}) for good_uid in _uids(orthanc)])
    stats = drain(db_url, source="orthanc", secrets={"orthanc": bad_config.headers}, lease=30)
    assert stats.failures == len(_uids(orthanc))
    secrets.add(wrong)
    with MetaStore(db_url) as store:
        failed = JobQueue(store).jobs(state="failed")
    assert failed and all("401" in (job.last_error or "") for _, job in failed)
    everything = _dump(db_url) + caplog.text + "\n".join(stats.errors)
    for secret in secrets:
        assert secret not in everything


def _uids(orthanc: Orthanc) -> list[str]:
    return sorted(r["StudyInstanceUID"] for r in orthanc_qido(orthanc, "/studies"))


def test_the_test_data_is_what_we_think(orthanc: Orthanc) -> None:
    statistics = orthanc_rest(orthanc, "/statistics")
    assert (
        statistics["CountInstances"] == len(PYDICOM_FILES) + GENERATED_SERIES * GENERATED_INSTANCES
    )
    assert httpx.get(f"{orthanc.root}/studies").status_code == 401  # auth is on


@pytest.mark.parametrize(
    ("query", "patient_ids"),
    [
        ({"PatientID": "GEN*"}, ["GEN-CT"]),
        ({"PatientName": "*"}, None),  # every study
        ({"PatientName": "Generated^Patient0"}, ["GEN-CT"]),
        ({"PatientName": "generated^pat*"}, ["GEN-CT"]),  # PN: any case, a wildcard
        ({"PatientID": "GEN-C?"}, ["GEN-CT"]),
        ({"PatientID": ["GEN-CT", "nope"]}, ["GEN-CT"]),  # a list: a comma list
    ],
)
def test_wildcard_and_person_name_queries_match_on_orthanc(
    orthanc: Orthanc, query: dict[str, Any], patient_ids: list[str] | None
) -> None:
    everything = orthanc_qido(orthanc, "/studies")
    with DicomWebSource(config(orthanc)) as source:
        rows = list(source.search_studies(query))
    found = sorted(str(row["PatientID"]) for row in rows)
    assert found == (patient_ids or sorted(str(r["PatientID"]) for r in everything))


def test_query_characters_sent_as_a_browser_sends_them() -> None:
    from metastore.sources.dicomweb import query_string

    text = query_string({"PatientName": "Doe^J* ?", "A&B": "x=y+z%", "ids": "1,2"})
    assert text == "?PatientName=Doe^J*%20?&A%26B=x%3Dy%2Bz%25&ids=1,2"


def test_an_empty_search_warns(orthanc: Orthanc, db_url: str, caplog: Any) -> None:
    with caplog.at_level(logging.WARNING, logger="metastore"):
        summary = ingest_source(
            db_url, config(orthanc), query={"PatientID": "NOBODY*"}, progress=False
        )
    assert summary.queued == 0
    assert any("matched no study" in r.getMessage() for r in caplog.records)


def test_a_study_the_server_does_not_have_fails(orthanc: Orthanc, db_url: str) -> None:
    summary = ingest_source(db_url, config(orthanc), study_uids=["1.2.3.999"], progress=False)
    assert not summary.ok
    assert [f.study_uid for f in summary.failures] == ["1.2.3.999"]


def test_a_failed_ingest_registers_no_source(db_url: str) -> None:
    refused = SourceConfig(name="gone", kind="dicomweb", root="http://127.0.0.1:9/dicom-web")
    with pytest.raises(SourceError):
        ingest_source(db_url, refused, progress=False)
    with MetaStore(db_url) as store:
        assert store.get_source("gone") is None
