"""scripts/bench_search.py runs end to end on a tiny index (figures printed, never asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import POSTGRES_URL

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "bench_search.py"


@pytest.mark.postgres
def test_bench_prints_every_family_on_both_engines(request: pytest.FixtureRequest) -> None:
    request.getfixturevalue("postgres")  # skips, or fails in CI, when the server is away
    args = [
        sys.executable,
        str(SCRIPT),
        "--instances",
        "600",
        "--runs",
        "3",
        "--postgres",
        POSTGRES_URL,
    ]
    done = subprocess.run(args, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "== postgresql ==" in out and "== sqlite ==" in out
    for family in (
        "exact ID",
        "name infix",
        "date range",
        "modality",
        "sequence value",
        "deep page",
        "count",
    ):
        assert out.count(family) == 3, family  # a row per engine, and the SQLite/PostgreSQL ratio
