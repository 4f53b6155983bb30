"""scripts/bench_reads.py runs end to end on a small index (figures printed, never asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import POSTGRES_URL

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "bench_reads.py"


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def test_bench_prints_reads_beside_their_baseline(
    backend: str, request: pytest.FixtureRequest
) -> None:
    args = [sys.executable, str(SCRIPT), "--repeat", "2", "--filler", "0", "--backends", backend]
    if backend == "postgresql":
        request.getfixturevalue("postgres")  # skips, or fails in CI, when the server is away
        args += ["--postgres", POSTGRES_URL]
    done = subprocess.run(args, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stdout.splitlines() if line.startswith(f"{backend}: ")]
    reads = [line for line in lines if "ratio" in line]
    assert [line.split(" (")[0] for line in reads] == [
        f"{backend}: get_study, 1,000 instances",
        f"{backend}: get_study, 100 instances",
        f"{backend}: get_series, 100 instances",
        f"{backend}: get_instance",
    ]
    assert "(1,000 rows)" in reads[0] and "(100 rows)" in reads[1] and "(1 rows)" in reads[3]
    assert ("JSONB rendered" in done.stdout) == (backend == "postgresql")
    assert "load average at start" in done.stdout
