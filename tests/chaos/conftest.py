"""The chaos suite's knobs and the PostgreSQL cluster it owns.

``--chaos-rounds N`` (or ``METASTORE_CHAOS_ROUNDS``) sets the number of
seeded rounds; CI runs the bounded default. ``METASTORE_CHAOS_SEED`` picks
the seed (default 15). The cluster is this suite's own (``initdb`` +
``pg_ctl`` in a temporary folder on a free loopback port), never the
machine's, so restarting it and killing its backends hurts nobody else.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from orthanc_local import free_port
from servers import IN_CI

BOUNDED_ROUNDS = 2


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--chaos-rounds", type=int, default=None, help="chaos rounds (long form)")


@pytest.fixture(scope="session")
def chaos_rounds(request: pytest.FixtureRequest) -> int:
    given = request.config.getoption("--chaos-rounds")
    return int(given or os.environ.get("METASTORE_CHAOS_ROUNDS", BOUNDED_ROUNDS))


@pytest.fixture(scope="session")
def chaos_seed() -> int:
    return int(os.environ.get("METASTORE_CHAOS_SEED", "15"))


def _pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        message = f"PostgreSQL's {name} is not installed"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return found[-1]


class Cluster:
    """A PostgreSQL cluster in a temporary folder, run as the ``postgres`` user when root."""

    def __init__(self, folder: Path, port: int) -> None:
        self.folder = folder
        self.data = folder / "data"
        self.port = port
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{port}/metastore"
        self.restarts = 0
        self.terminated = 0

    def _run(self, *argv: str) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        subprocess.run([*prefix, *argv], check=True, capture_output=True, timeout=120)

    def _options(self) -> str:
        return f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.folder} -c fsync=off"

    def init(self) -> Cluster:
        if os.geteuid() == 0:
            shutil.chown(self.folder, "postgres")
        self._run(
            _pg_bin("initdb"),
            "-D",
            str(self.data),
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
            "-E",
            "UTF8",
        )
        self.start()
        admin = sa.create_engine(self.admin_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.exec_driver_sql("CREATE DATABASE metastore")
        admin.dispose()
        return self

    @property
    def admin_url(self) -> str:
        return self.url.rsplit("/", 1)[0] + "/postgres"

    def start(self) -> None:
        self._run(
            _pg_bin("pg_ctl"),
            "-D",
            str(self.data),
            "-o",
            self._options(),
            "-l",
            str(self.folder / "log"),
            "-w",
            "start",
        )

    def restart(self) -> None:
        """``pg_ctl restart -m fast``: every session is cut, the server comes back."""
        self._run(
            _pg_bin("pg_ctl"),
            "-D",
            str(self.data),
            "-o",
            self._options(),
            "-l",
            str(self.folder / "log"),
            "-m",
            "fast",
            "-w",
            "restart",
        )
        self.restarts += 1

    def terminate_backends(self) -> int:
        """``pg_terminate_backend`` on every session of the metastore database."""
        admin = sa.create_engine(self.admin_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            killed = connection.exec_driver_sql(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = 'metastore' AND pid <> pg_backend_pid()"
            ).scalar_one()
        admin.dispose()
        self.terminated += int(killed)
        return int(killed)

    def stop(self) -> None:
        self._run(_pg_bin("pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    # Under /tmp itself: pytest's own temporary folders are private to root.
    folder = Path(tempfile.mkdtemp(prefix="metastore-chaos-pg-"))
    os.chmod(folder, 0o755)
    own = Cluster(folder, free_port()).init()
    try:
        yield own
    finally:
        own.stop()
        shutil.rmtree(folder, ignore_errors=True)
