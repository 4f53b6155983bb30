"""`metastore displaysets STUDY_UID`: JSON on stdout, errors on stderr, entry points honoured."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from displaysets_helpers import load_real

from metastore import MetaStore
from metastore.cli import main
from metastore.displaysets import get_display_sets, handlers

PETCT = "1.3.6.1.4.1.25403.345050719074.3824.20170125113417.1"
PLUGINS = Path(__file__).resolve().parent / "plugins"


def test_prints_the_display_sets_of_a_study_as_json(
    db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with MetaStore(db_url) as store:
        load_real(store, only={PETCT})
        load_real(store, source="mirror", only={PETCT})
        expected = get_display_sets(store, PETCT)
    assert main(["--db", db_url, "displaysets", PETCT]) == 0
    printed = orjson.loads(capsys.readouterr().out)
    assert printed == expected
    assert {d["source"] for d in printed} == {"real", "mirror"}
    assert main(["--db", db_url, "displaysets", "--source", "mirror", PETCT]) == 0
    mirror = orjson.loads(capsys.readouterr().out)
    assert [d["source"] for d in mirror] == ["mirror"] * 3
    assert {d["SOPClassHandlerId"] for d in mirror} == {handlers.STACK}


def test_the_source_option_has_an_environment_twin(
    db_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with MetaStore(db_url) as store:
        load_real(store, only={PETCT})
    with MetaStore(db_url) as store:
        store.register_source("elsewhere", "client")
    monkeypatch.setenv("METASTORE_DISPLAYSETS_SOURCE", "elsewhere")
    assert main(["--db", db_url, "displaysets", PETCT]) == 0
    assert orjson.loads(capsys.readouterr().out) == []
    # A source that does not exist is an error, not an empty answer.
    monkeypatch.setenv("METASTORE_DISPLAYSETS_SOURCE", "nope")
    assert main(["--db", db_url, "displaysets", PETCT]) == 1
    assert "no source named 'nope'" in capsys.readouterr().err


def test_an_unknown_study_is_one_line_on_stderr(
    db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--db", db_url, "displaysets", "9.9.9"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == "metastore: error: study 9.9.9 is not in the index\n"


def test_the_command_uses_handlers_installed_through_entry_points(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'metastore.db'}"
    with MetaStore(url) as store:
        load_real(store, only={PETCT})
    environment = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(PLUGINS), os.environ.get("PYTHONPATH")])),
    }
    completed = subprocess.run(
        [sys.executable, "-m", "metastore.cli", "--db", url, "displaysets", PETCT],
        capture_output=True,
        env=environment,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    made = {d["SeriesInstanceUID"]: d["SOPClassHandlerId"] for d in orjson.loads(completed.stdout)}
    assert made["1.3.6.1.4.1.25403.345050719074.3824.20170125113545.4"] == "sample.large-ct"
    assert made["1.3.6.1.4.1.25403.345050719074.3824.20170125113608.4"] == handlers.STACK
