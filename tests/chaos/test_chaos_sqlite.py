"""Chaos on SQLite: several processes write at once (one killed midway), and the disk fills up."""

from __future__ import annotations

import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from launch_helpers import launch_study, write_launch
from servers import IN_CI

from metastore import MetaStore
from metastore.check import check

pytestmark = pytest.mark.chaos


def metastore(*argv: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "metastore.cli", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )


def counts(url: str) -> dict[tuple[str, str], int]:
    """(source, study) -> instance rows."""
    with MetaStore(url) as store, store.engine.connect() as connection:
        return {
            (source, study): int(n)
            for source, study, n in connection.exec_driver_sql(
                "SELECT so.name, st.study_uid, count(i.id) FROM instances i "
                "JOIN series s ON s.id = i.series_id JOIN studies st ON st.id = s.study_id "
                "JOIN sources so ON so.id = s.source_id GROUP BY so.name, st.study_uid"
            )
        }


def test_several_processes_write_at_once_one_killed(
    sqlite_template: Path, tmp_path: Path, chaos_seed: int, chaos_rounds: int
) -> None:
    rng = random.Random(chaos_seed)
    path = tmp_path / "busy.db"
    shutil.copyfile(sqlite_template, path)
    url = f"sqlite:///{path}"
    # Four files, each with its own source; studies overlap, so writers meet on study rows.
    files = [
        write_launch(
            tmp_path / f"part{n}.json",
            [launch_study(f"1.2.{(n + k) % 6}", series=2, instances=15) for k in range(4)],
        )
        for n in range(4)
    ]
    for _round in range(max(1, chaos_rounds // 2)):
        running = [metastore("--db", url, "ingest", "dicomjson", str(f)) for f in files]
        victim = rng.randrange(len(running))
        time.sleep(rng.uniform(0.3, 1.5))
        os.killpg(running[victim].pid, signal.SIGKILL)
        for process in running:
            _out, err = process.communicate(timeout=300)
            if process is not running[victim]:
                assert process.returncode == 0, err.decode()
        # the killed one is run again, as an operator would
        again = metastore("--db", url, "ingest", "dicomjson", str(files[victim]))
        _out, err = again.communicate(timeout=300)
        assert again.returncode == 0, err.decode()
        found = counts(url)
        assert found == {(f"part{n}", f"1.2.{(n + k) % 6}"): 30 for n in range(4) for k in range(4)}
        with MetaStore(url) as store:
            report = check(store)
            assert report.clean, report.findings


@pytest.fixture
def small_disk() -> Iterator[Path]:
    """A 3 MiB tmpfs (needs root and mount), unmounted afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="metastore-full-"))
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(folder)], capture_output=True
    )
    if mounted.returncode != 0:
        reason = f"cannot mount a small tmpfs here: {mounted.stderr.decode().strip()}"
        folder.rmdir()
        if IN_CI:
            pytest.fail(reason)
        pytest.skip(reason)
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=False)
        folder.rmdir()


def test_a_full_disk_mid_ingest(small_disk: Path, sqlite_template: Path, tmp_path: Path) -> None:
    path = small_disk / "full.db"
    shutil.copyfile(sqlite_template, path)
    url = f"sqlite:///{path}"
    # Small studies: a launch file writes them many to a transaction, and the disk must
    # fill after some transactions have committed.
    studies = [launch_study(f"1.2.{n}", series=2, instances=20) for n in range(400)]
    big = write_launch(tmp_path / "big.json", studies)
    process = metastore("--db", url, "ingest", "dicomjson", str(big))
    out, err = process.communicate(timeout=300)
    lines = err.decode().strip().splitlines()
    assert process.returncode == 1
    assert len(lines) == 1 and lines[0].startswith("metastore: error: "), lines
    assert "full" in lines[0], lines[0]
    # the database is whole: integrity, every stored study complete, check clean
    connection = sqlite3.connect(path)
    assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    connection.close()
    found = counts(url)
    assert found and len(found) < len(studies)  # some went in before the disk filled
    # a study of a launch file is written whole or not at all
    assert set(found.values()) == {40}, found
    with MetaStore(url) as store:
        report = check(store)
        assert report.clean, report.findings
