"""SQLite from the command line: reads never create or change a database, errors name the file."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from helpers import instances, series_meta

from metastore import MetaStore, cli, db
from metastore.errors import DatabaseError

SCRIPT = Path(sys.executable).with_name("metastore")


def _filled(path: Path) -> str:
    url = f"sqlite:///{path}"
    with MetaStore(url) as store:
        store.add_series_metadata([series_meta()], source="pacs")
        store.add_instances(instances(count=3), source="pacs")
    return url


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


READ_COMMANDS = [
    ["stats"],
    ["changes"],
    ["show", "study", "1.2.3"],
    ["displaysets", "1.2.3"],
    ["jobs"],
    ["consumers"],
    ["events", "tail"],
    ["db", "current"],
]


@pytest.mark.parametrize("argv", READ_COMMANDS, ids=lambda a: " ".join(a))
def test_a_read_never_creates_a_database(
    argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "typo.db"
    code = cli.main(["--db", f"sqlite:///{missing}", *argv])
    err = capsys.readouterr().err
    assert code == 1 and f"no database at {missing}" in err
    assert not missing.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("argv", READ_COMMANDS, ids=lambda a: " ".join(a))
def test_a_read_leaves_the_file_as_it_was(
    argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "index.db"
    url = _filled(path)
    before = _digest(path)
    assert cli.main(["--db", url, *argv]) == 0
    capsys.readouterr()
    assert _digest(path) == before


def test_read_connections_refuse_writes(tmp_path: Path) -> None:
    url = _filled(tmp_path / "index.db")
    engine = db.create_engine(url, read_only=True)
    try:
        with (
            pytest.raises(DatabaseError, match="readonly"),
            db.writing(engine, "a write") as connection,
        ):
            connection.execute(sa.text("DELETE FROM instances"))
        with db.reading(engine, "a read") as connection:
            assert connection.execute(sa.text("SELECT count(*) FROM instances")).scalar() == 3
    finally:
        engine.dispose()


def test_a_database_on_a_read_only_medium_can_be_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "index.db"
    url = _filled(path)
    before = sorted(p.name for p in tmp_path.iterdir())
    # What a read-only medium looks like to metastore: the folder cannot be written.
    real_access = os.access
    monkeypatch.setattr(
        os, "access", lambda p, mode: False if mode == os.W_OK else real_access(p, mode)
    )
    assert cli.main(["--db", url, "stats"]) == 0
    assert "total: 1 series, 3 instances" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no -wal, no -shm


def test_a_write_to_a_missing_folder_names_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "nowhere" / "index.db"
    code = cli.main(["--db", f"sqlite:///{target}", "ingest", "folder", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 1 and f"the folder {target.parent} does not exist" in err


def test_an_empty_file_is_not_an_index(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "empty.db"
    path.write_bytes(b"")
    assert cli.main(["--db", f"sqlite:///{path}", "stats"]) == 1
    assert f"{path} holds no metastore index yet" in capsys.readouterr().err
    assert path.read_bytes() == b""


def test_a_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'index.db'}"
    with MetaStore(url) as store:
        for n in range(300):
            store.add_instances(instances(series=f"1.2.3.{n + 1}", count=1), source="pacs")
    done = subprocess.run(
        f"'{SCRIPT}' --db '{url}' changes | head -1",
        shell=True,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.stdout.count("\n") == 1 and '"seq"' in done.stdout
    assert done.stderr == ""
