"""The metastore command: help everywhere, env twins, one-line errors, core commands."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import instances, series_meta

from metastore import MetaStore, cli, db
from metastore.cli._common import EnvDefault, EnvFlag


def _parsers(parser: argparse.ArgumentParser, path: str = "metastore"):  # type: ignore[no-untyped-def]
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help for choice in action._choices_actions}
            for name, sub in action.choices.items():
                assert helps.get(name), f"{path} {name} has no help"
                yield from _parsers(sub, f"{path} {name}")


def test_every_command_has_help_and_every_option_an_env_twin() -> None:
    seen = 0
    for path, parser in _parsers(cli.build_parser()):
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction | argparse._SubParsersAction):
                continue
            assert action.help, f"{path} {action.dest} has no help"
            if action.option_strings:
                assert isinstance(action, EnvDefault | EnvFlag), (
                    f"{path} {action.option_strings[0]} has no METASTORE_* twin"
                )
                assert action.env.startswith("METASTORE_")
                assert action.env in action.help
                seen += 1
    assert seen >= 5


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_db_commands_and_env_twin(
    empty_db_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(db.URL_ENV, empty_db_url)
    code, out, _ = run(capsys, "db", "current")
    assert code == 0 and "(empty)" in out and "metastore db upgrade" in out
    code, out, _ = run(capsys, "db", "upgrade")
    assert code == 0 and out.strip().endswith(f"-> {db.head_revision()}")
    code, out, _ = run(capsys, "db", "current")
    assert code == 0 and out.startswith(f"{db.head_revision()} (at head)")


def test_show_stats_changes(store: MetaStore, capsys: pytest.CaptureFixture[str]) -> None:
    store.add_series_metadata([series_meta()], source="pacs")
    store.add_instances(instances(count=3), source="pacs")
    code, out, _ = run(capsys, "--db", store.url, "show", "study", "1.2.3")
    assert code == 0
    assert json.loads(out) == json.loads(json.dumps(store.get_study("1.2.3")))
    code, out, _ = run(capsys, "--db", store.url, "stats", "--json")
    assert code == 0
    assert json.loads(out) == [
        {"source": "pacs", "modality": "CT", "studies": 1, "series": 1, "instances": 3}
    ]
    code, out, _ = run(capsys, "--db", store.url, "stats")
    assert code == 0 and "pacs" in out and "total: 1 series, 3 instances" in out
    code, out, _ = run(capsys, "--db", store.url, "changes", "--after", "1")
    lines = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and [e["type"] for e in lines] == ["INSTANCES_ADDED"]
    assert lines[0]["seq"] > 1


def test_changes_limit_from_env(
    store: MetaStore, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for n in range(3):
        store.add_instances(instances(series=f"1.2.3.{n + 1}", count=1))
    monkeypatch.setenv("METASTORE_LIMIT", "2")
    code, out, _ = run(capsys, "--db", store.url, "changes")
    assert code == 0 and len(out.splitlines()) == 2


def test_expected_errors_are_one_line(
    db_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out, err = run(capsys, "--db", db_url, "show", "study", "9.9.9")
    assert code == 1 and out == ""
    assert err.strip() == "metastore: error: study 9.9.9 is not in the index"
    monkeypatch.setattr(db, "head_revision", lambda: "9999")
    code, _, err = run(capsys, "--db", db_url, "stats")
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert "metastore db upgrade" in err and "Traceback" not in err


def test_console_script_runs(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    script = Path(sys.executable).with_name("metastore")
    done = subprocess.run(
        [str(script), "--db", url, "show", "study", "1.2"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr.strip() == "metastore: error: study 1.2 is not in the index"
    done = subprocess.run(
        [str(script), "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0 and "METASTORE_DATABASE_URL" in done.stdout
