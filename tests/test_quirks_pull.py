"""A static DICOMweb pull of a tree whose studies carry real writers' deviations and bad parts.

The bundled tree is copied twice into tmp_path: a *plain* copy (in the
standard form, plus dcmjs' DimensionIndexSequence on one instance) and a
*quirky* one, every attribute of every instance and search row rewritten
with a deviation (tests/quirk_mutations.py), dcmjs' bare AT string
(``"Value": "0062000b"`` inside 00209222 > 00209165) included, and with
unreadable parts: an instance that is not an object, one without
SOPInstanceUID, and a series whose metadata file is not JSON. Pulled on
SQLite and PostgreSQL: every readable study and instance is stored exactly
as the plain tree stores it, the bad parts cost themselves only, the job,
the summary, `metastore jobs` and the exit status name them, and the next
run pulls only the series that failed.
"""

from __future__ import annotations

import gzip
import random
import shutil
from pathlib import Path
from typing import Any

import orjson
import pytest
from helpers import DATA
from quirk_mutations import mutate_everywhere, standard
from servers import StaticTree, serve_tree

from metastore import MetaStore
from metastore.cli import main
from metastore.ingest import FAILED, JobQueue, ingest_source
from metastore.quirks import Quirk
from metastore.sources import SourceConfig

SEG_STUDY = "1.2.826.0.13854362241694438965858641723883466450351448"
DCMJS_AT = {"00209222": {"vr": "SQ", "Value": [{"00209165": {"vr": "AT", "Value": "0062000b"}}]}}
DCMJS_AT_STANDARD = {
    "00209222": {"vr": "SQ", "Value": [{"00209165": {"vr": "AT", "Value": ["0062000B"]}}]}
}
CT_STUDY = "1.2.840.113654.2.55.242841386983064378162007136685545369722"


def _read(path: Path) -> Any:
    with gzip.open(path) as stream:
        return orjson.loads(stream.read())


def _write(path: Path, content: Any) -> None:
    path.write_bytes(gzip.compress(orjson.dumps(content)))


def _metadata_files(tree: Path) -> list[Path]:
    return sorted(tree.rglob("metadata.gz"))


def _index_files(tree: Path) -> list[Path]:
    return sorted(p for p in tree.rglob("index.json.gz") if "/instances/" not in str(p))


def _make_trees(base: Path) -> tuple[Path, Path, dict[str, Any]]:
    """The plain and the quirky copy of the bundled tree, and what was broken in the quirky one."""
    plain, quirky = base / "plain", base / "quirky"
    shutil.copytree(DATA, plain)
    rng = random.Random(2026)
    applied: set[Quirk] = set()
    for path in _metadata_files(plain) + _index_files(plain):
        content = _read(path)
        rows = [standard(item) for item in (content if isinstance(content, list) else [content])]
        if path.name == "metadata.gz" and SEG_STUDY in str(path):
            rows[0].update(DCMJS_AT_STANDARD)
        _write(path, rows if isinstance(content, list) else rows[0])
    shutil.copytree(plain, quirky)
    for path in _metadata_files(quirky) + _index_files(quirky):
        content = _read(path)
        rows = [
            mutate_everywhere(item, rng, applied)
            for item in (content if isinstance(content, list) else [content])
        ]
        if path.name == "metadata.gz" and SEG_STUDY in str(path):
            rows[0].update(DCMJS_AT)  # written exactly as dcmjs writes it
        _write(path, rows if isinstance(content, list) else rows[0])
    # Unreadable parts: two instances of a CT series, and a whole series of the same study.
    [ct_series, lost_series] = sorted(
        p.parent for p in _metadata_files(quirky) if CT_STUDY in str(p)
    )[:2]
    ct_bytes = (ct_series / "metadata.gz").read_bytes()
    instances = _read(ct_series / "metadata.gz")
    # SOPInstanceUID gone, however the mutations spelled its tag
    nameless = {k: v for k, v in instances[0].items() if _hex(k) != "00080018"}
    _write(ct_series / "metadata.gz", [*instances, "not an object", nameless])
    lost = lost_series / "metadata.gz"
    original = lost.read_bytes()
    lost.write_bytes(gzip.compress(b"<html>502 Bad Gateway</html>"))
    return (
        plain,
        quirky,
        {
            "ct_series": ct_series,
            "ct_bytes": ct_bytes,
            "lost": lost,
            "lost_bytes": original,
            "applied": applied,
        },
    )


def _hex(key: str) -> str:
    return "".join(c for c in key if c not in "(,)").upper()


@pytest.fixture
def trees(tmp_path: Path) -> tuple[Path, Path, dict[str, Any]]:
    return _make_trees(tmp_path)


def _stored(store: MetaStore, source: str, root: str) -> dict[tuple[str, str], bytes]:
    """Every instance stored for a source, keyed by (series, SOP), its root URL blanked."""
    found = {}
    for study_uid in _study_uids(store):
        study = store.get_study(study_uid)
        assert study is not None
        for series_list in study["seriesLists"]:
            if series_list["source"] != source:
                continue
            for series in series_list["series"]:
                for instance in series["instances"]:
                    text = orjson.dumps(instance, option=orjson.OPT_SORT_KEYS)
                    key = (series["SeriesInstanceUID"], instance["SOPInstanceUID"])
                    found[key] = text.replace(root.encode(), b"ROOT")
    return found


def _study_uids(store: MetaStore) -> list[str]:
    with store.engine.connect() as connection:
        from sqlalchemy import text

        return [row[0] for row in connection.execute(text("SELECT study_uid FROM studies"))]


def _pull(db_url: str, tree: StaticTree, name: str) -> Any:
    return ingest_source(
        db_url, SourceConfig(name=name, kind="static_wado", root=tree.root), workers=1
    )


def test_a_quirky_static_tree_stores_every_readable_part(
    trees: tuple[Path, Path, dict[str, Any]], db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    plain_dir, quirky_dir, broken = trees
    with serve_tree(plain_dir) as plain_tree:
        plain = _pull(db_url, plain_tree, "plain")
    assert plain.ok and not plain.quirks, plain  # the standard form reads without a deviation

    with serve_tree(quirky_dir) as quirky_tree:
        quirky = _pull(db_url, quirky_tree, "quirky")
        # every study read; the one with bad parts stored but for them
        assert quirky.studies == plain.studies
        [failure] = quirky.failures
        assert failure.study_uid == CT_STUDY
        assert len(failure.parts) == 3
        assert any("data set must be an object" in part for part in failure.parts)
        assert any("no SOPInstanceUID" in part for part in failure.parts)
        assert any(broken["lost"].parent.name in part for part in failure.parts)
        # a count per kind of what was normalized, every kind applied among them
        assert set(broken["applied"]) <= {Quirk(kind) for kind in quirky.quirks}
        assert quirky.quirks[str(Quirk.AT_FORM)] >= 1
        assert "normalized:" in str(quirky)

        with MetaStore(db_url) as store:
            want = _stored(store, "plain", plain_tree.root)
            got = _stored(store, "quirky", quirky_tree.root)
            lost_series = broken["lost"].parent.name
            assert got == {key: v for key, v in want.items() if key[0] != lost_series}
            seg = [v for (series, _), v in got.items() if b"DimensionIndexPointer" in v]
            assert seg and b'"DimensionIndexPointer":"0062000B"' in seg[0]
            [(_, job)] = JobQueue(store).jobs(state=FAILED, source="quirky")
            assert job.unit == CT_STUDY and job.failed_parts is not None
            assert {part["series"] for part in job.failed_parts} == {
                broken["ct_series"].name,
                lost_series,
            }

        code = main(["--db", db_url, "jobs", "--state", "failed"])
        out = capsys.readouterr().out
        assert code == 0 and CT_STUDY in out and out.count("not read:") == 3

        # the CLI: exit 1, naming the parts
        code = main(
            ["--db", db_url, "ingest", "dicomweb", quirky_tree.root, "--static-wado"]
            + ["--source", "quirky", "--study", CT_STUDY]
        )
        out, err = capsys.readouterr()
        assert code == 1
        assert "data set must be an object" in err and lost_series in err
        assert "normalized:" in out

        # fixed at the source: the next run pulls only the series that failed
        broken["lost"].write_bytes(broken["lost_bytes"])
        (broken["ct_series"] / "metadata.gz").write_bytes(broken["ct_bytes"])
        before = len(quirky_tree.requests)
        again = ingest_source(
            db_url,
            SourceConfig(name="quirky", kind="static_wado", root=quirky_tree.root),
            study_uids=[CT_STUDY],
        )
        asked = [path for path in quirky_tree.requests[before:] if path.endswith("/metadata")]
        assert again.ok, again.errors
        assert sorted(path.split("/")[-2] for path in asked) == sorted(
            [broken["ct_series"].name, lost_series]
        )
        with MetaStore(db_url) as store:
            assert _stored(store, "quirky", quirky_tree.root) == want
            assert JobQueue(store).jobs(state=FAILED, source="quirky") == []
