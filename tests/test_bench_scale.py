"""scripts/bench_scale.py runs end to end on a tiny index of real IDC series shapes (figures printed, never asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import POSTGRES_URL

HERE = Path(__file__).resolve().parent
SCRIPT = HERE.parent / "scripts" / "bench_scale.py"
EXCERPT = HERE / "data" / "idc_series_excerpt.csv"
FAMILIES = (
    "exact ID",
    "name prefix",
    "name infix",
    "date range",
    "modality",
    "accession",
    "JSON-only",
    "sequence value",
    "deep page",
    "count (a year)",
    "series of a study",
)


def _run(backend: str, tmp_path: Path) -> tuple[str, dict[str, object]]:
    out = tmp_path / f"{backend}.json"
    args = [
        sys.executable,
        str(SCRIPT),
        "--backend",
        backend,
        "--instances",
        "2000",
        "--every",
        "200",
        "--runs",
        "3",
        "--idc",
        str(EXCERPT),
        "--postgres",
        POSTGRES_URL,
        "--sqlite-dir",
        str(tmp_path),
        "--out",
        str(out),
    ]
    done = subprocess.run(args, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout, json.loads(out.read_text())


def _check(stdout: str, figures: dict[str, object]) -> None:
    assert "\ningest " in stdout, stdout  # the rate over time (a line every --every instances)
    assert "== checkpoint at 2,000 instances" in stdout
    assert "B/instance, of which metadata JSON" in stdout
    assert "index ix_studies_newest" in stdout and "index ix_instances_url" in stdout
    assert "get_study   100 instances: p50" in stdout
    assert "get_study 1,000 instances: p50" in stdout
    for family in FAMILIES:
        assert f"search {family}" in stdout, family
    assert "WADO-RS series metadata, 100 instances: cold" in stdout
    assert "WADO-RS series metadata, 250 instances: cold" in stdout
    assert figures["instances"] == 2000
    assert figures["ingest"] and figures["ingest"][-1]["instances"] == 2000  # type: ignore[index]
    (point,) = figures["checkpoints"]  # type: ignore[misc]
    assert set(point["get_study"]) == {"100", "1000"}
    assert point["sizes"]["indexes"]


@pytest.mark.slow
def test_bench_scale_on_sqlite(tmp_path: Path) -> None:
    stdout, figures = _run("sqlite", tmp_path)
    _check(stdout, figures)
    assert list(tmp_path.glob("tmp*")) == []  # the database is gone
    (point,) = figures["checkpoints"]  # type: ignore[misc]
    assert point["sizes"]["metadata_text_kept_bytes_per_instance"] == 0  # virtual there


@pytest.mark.slow
@pytest.mark.postgres
def test_bench_scale_on_postgresql(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    request.getfixturevalue("postgres")  # skips, or fails in CI, when the server is away
    stdout, figures = _run("postgresql", tmp_path)
    _check(stdout, figures)
    (point,) = figures["checkpoints"]  # type: ignore[misc]
    sizes = point["sizes"]
    assert 0 < sizes["metadata_text_kept_bytes_per_instance"] < sizes["bytes_per_instance"]
    assert "kept again as text for reads" in stdout
    assert "autovacuum instances:" in stdout
    assert "index scans during the searches" in stdout
