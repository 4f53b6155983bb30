"""The static DICOMweb source against the bundled tree, served as static hosts serve it."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from helpers import DATA, read_gz
from servers import StaticTree

from metastore import MetaStore
from metastore.ingest import ingest_source
from metastore.sources import SourceConfig, open_source
from metastore.sources.dicomweb import dicomweb_config
from metastore.sources.static_wado import StaticWadoSource

THORAX = "1.3.46.670589.30.1.3.1.1625260923.1632320482484.1"


def config(tree: StaticTree) -> SourceConfig:
    return SourceConfig(name="static", kind="static_wado", root=tree.root)


def tree_counts() -> tuple[int, int, int]:
    studies = read_gz(DATA / "studies" / "index.json.gz")
    series = instances = 0
    for study_dir in (p for p in (DATA / "studies").iterdir() if p.is_dir()):
        for series_dir in (p for p in (study_dir / "series").iterdir() if p.is_dir()):
            series += 1
            instances += len(read_gz(series_dir / "metadata.gz"))
    return len(studies), series, instances


def test_queries_are_filtered_on_the_client(static_tree: StaticTree) -> None:
    before = len(static_tree.requests)
    with open_source(config(static_tree)) as source:
        assert isinstance(source, StaticWadoSource)
        everything = list(source.search_studies())
        thorax = list(source.search_studies({"PatientName": "test^röntgen"}))
        listed = list(source.search_studies({"StudyInstanceUID": f"9.9.9,{THORAX}"}))
        ct = list(source.search_studies({"ModalitiesInStudy": "CT", "limit": 1}))
    assert len(everything) == 8
    assert [r["StudyInstanceUID"] for r in thorax] == [THORAX]
    assert [r["StudyInstanceUID"] for r in listed] == [THORAX]  # OHIF never matches a UID list
    assert len(ct) == 1 and "CT" in ct[0]["ModalitiesInStudy"]
    # Every search asked for the whole study index, without parameters.
    asked = static_tree.requests[before:]
    assert asked == ["/studies"] * 4


def test_relative_bulkdata_resolves_against_the_study(static_tree: StaticTree) -> None:
    study_dir = DATA / "studies" / "1.2.826.0.13854362241694438965858641723883466450351448"
    uris: list[str] = []
    with StaticWadoSource(config(static_tree)) as source:
        for series_dir in sorted(p for p in (study_dir / "series").iterdir() if p.is_dir()):
            instances = source.retrieve_series_metadata(study_dir.name, series_dir.name)
            assert len(instances) == len(read_gz(series_dir / "metadata.gz"))
            uris += [
                value["BulkDataURI"]
                for instance in instances
                for value in instance.values()
                if isinstance(value, dict) and "BulkDataURI" in value
            ]
    # The tree writes "bulkdata/..." beside the study, as static-wado lays it out.
    assert f"{static_tree.root}/studies/{study_dir.name}/bulkdata/" in "".join(uris)
    assert all(urlsplit(uri).scheme == "http" for uri in uris)


@pytest.mark.parametrize("workers", [1, 2], ids=["1-worker", "2-workers"])
def test_ingest_the_whole_tree(static_tree: StaticTree, db_url: str, workers: int) -> None:
    studies, series, instances = tree_counts()
    summary = ingest_source(db_url, config(static_tree), workers=workers, lease=30)
    assert summary.failures == 0, summary.errors
    assert (summary.studies, summary.series, summary.instances) == (studies, series, instances)
    with MetaStore(db_url) as store:
        stats = store.stats()
        assert sum(row["instances"] for row in stats) == instances
        assert sum(row["series"] for row in stats) == series
        thorax = store.get_study(THORAX)
        assert thorax is not None and thorax["PatientName"][0]["Alphabetic"] == "Test^Röntgen"
        frames = [i for lst in thorax["seriesLists"] for s in lst["series"] for i in s["instances"]]
        assert all(i["imageId"].startswith(f"wadors:{static_tree.root}/studies/") for i in frames)


def test_a_tree_on_disk_is_read_in_place(db_url: str) -> None:
    studies, series, instances = tree_counts()
    config = dicomweb_config(str(DATA), static=True, name="bundled")
    assert config.root == DATA.absolute().as_uri()
    summary = ingest_source(db_url, config)
    assert summary.failures == 0, summary.errors
    assert (summary.studies, summary.series, summary.instances) == (studies, series, instances)
    with MetaStore(db_url) as store:
        source = store.get_source("bundled")
    assert source is not None and source.kind == "static_wado" and source.root_url == config.root
