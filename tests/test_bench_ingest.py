"""scripts/bench_ingest.py runs end to end on a tiny file (figures printed, never asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import POSTGRES_URL

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "bench_ingest.py"


@pytest.mark.parametrize(
    "backend", ["--sqlite", pytest.param("--postgres", marks=pytest.mark.postgres)]
)
def test_bench_prints_ingest_and_floor(backend: str, request: pytest.FixtureRequest) -> None:
    args = [sys.executable, str(SCRIPT), "--instances", "300", "--per-series", "40", backend]
    if backend == "--postgres":
        request.getfixturevalue("postgres")  # skips, or fails in CI, when the server is away
        args.append(POSTGRES_URL)
    done = subprocess.run(args, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    name = "sqlite" if backend == "--sqlite" else "postgresql"
    [line] = [line for line in done.stdout.splitlines() if line.startswith(name)]
    assert "300 instances" in line and "floor: orjson parse" in line and "ratio" in line


def test_real_shape_mode_draws_whole_idc_studies(tmp_path: Path) -> None:
    """--real-shape: series sizes and modalities of whole IDC studies, here from the
    bundled excerpt of the IDC series index (the bench extra reads the whole index)."""
    excerpt = Path(__file__).resolve().parent / "data" / "idc_series_excerpt.csv"
    args = [sys.executable, str(SCRIPT), "--real-shape", "--instances", "400", "--sqlite"]
    args += ["--idc", str(excerpt)]
    done = subprocess.run(args, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr
    [generated] = [line for line in done.stdout.splitlines() if line.startswith("generated")]
    assert "400 instances in" in generated and "IDC studies" in generated
    [line] = [line for line in done.stdout.splitlines() if line.startswith("sqlite")]
    assert "400 instances" in line and "ratio" in line
