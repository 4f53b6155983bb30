"""Backup while an ingest writes, restore, finish the ingest from the restored copy: nothing lost.

The README's recipes, run for real: SQLite's online backup API (what
``sqlite3 metastore.db ".backup copy.db"`` uses) and ``pg_dump -Fc`` /
``pg_restore``. The backup runs in a thread while the ingest goes on.
"""

from __future__ import annotations

import glob
import shutil
import sqlite3
import subprocess
import threading
from pathlib import Path

import pytest
import sqlalchemy as sa
from launch_helpers import launch_study, table_rows, write_launch

from metastore import EVENTS, MetaStore
from metastore.check import check
from metastore.ingest import ingest_launch_file

STUDIES = 6


def _pg_tool(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}")) or [shutil.which(name) or ""]
    assert found[-1], f"{name} is not installed"
    return found[-1]


def _libpq(url: str) -> str:
    return sa.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def backup(url: str, target: Path) -> None:
    """The README's backup recipe for the engine of ``url``."""
    if url.startswith("sqlite"):
        source = sqlite3.connect(sa.make_url(url).database or "")
        copy = sqlite3.connect(target)
        with copy:
            source.backup(copy)
        copy.close()
        source.close()
        return
    subprocess.run([_pg_tool("pg_dump"), "-Fc", "-f", str(target), _libpq(url)], check=True)


def restore(url: str, dump: Path, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The README's restore recipe: a fresh database from the backup; its URL."""
    if url.startswith("sqlite"):
        restored = tmp_path / "restored.db"
        shutil.copyfile(dump, restored)
        return f"sqlite:///{restored}"
    server = request.getfixturevalue("postgres")
    target = server.url(server.create())
    subprocess.run(
        [_pg_tool("pg_restore"), "--no-owner", "-d", _libpq(target), str(dump)], check=True
    )
    return str(target)


def feed(store: MetaStore) -> list[tuple[str, str, str | None]]:
    return sorted((str(e.type), e.study_uid, e.series_uid) for e in store.changes(limit=100_000))


def test_a_backup_taken_mid_ingest_restores_and_the_ingest_finishes(
    db_url: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    studies = [launch_study(f"1.2.{n}", series=3, instances=20) for n in range(STUDIES)]
    path = write_launch(tmp_path / "night.json", studies)
    dump = tmp_path / "backup.dump"
    taken = threading.Event()
    copier: list[threading.Thread] = []
    with MetaStore(db_url) as store:

        def take() -> None:
            backup(db_url, dump)
            taken.set()

        def start_backup(_event: object) -> None:
            # After the second study, in a thread, while the ingest goes on.
            if len(store.study_uids()) >= 2 and not copier:
                thread = threading.Thread(target=take)
                copier.append(thread)
                thread.start()

        store.subscribe(EVENTS.INSTANCES_ADDED, start_backup)
        ingest_launch_file(store, str(path), source="night")
        copier[0].join(120)
        assert taken.is_set()
        straight_rows, straight_feed = table_rows(store), feed(store)

    restored_url = restore(db_url, dump, request, tmp_path)
    with MetaStore(restored_url) as restored:
        assert check(restored).clean
        got = set(restored.study_uids())
        assert 2 <= len(got) <= STUDIES  # a mid-ingest snapshot
        # finish the night's ingest from the restored copy
        ingest_launch_file(restored, str(path), source="night")
        assert table_rows(restored) == straight_rows
        # every study's events once: the ones before the backup, and the rest written now
        assert feed(restored) == straight_feed
        report = check(restored)
        assert report.clean, report.findings
