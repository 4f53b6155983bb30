"""The metastore command: help everywhere, env twins, one-line errors, core commands."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import instances, series_meta

import metastore
from metastore import MetaStore, cli, db
from metastore.cli._common import EnvAppend, EnvDefault, EnvFlag


def _parsers(parser: argparse.ArgumentParser, path: str = "metastore"):  # type: ignore[no-untyped-def]
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help for choice in action._choices_actions}
            for name, sub in action.choices.items():
                assert helps.get(name), f"{path} {name} has no help"
                yield from _parsers(sub, f"{path} {name}")


_NOT_OPTIONS = (argparse._HelpAction, argparse._SubParsersAction, argparse._VersionAction)


def _options() -> list[tuple[str, argparse.Action]]:
    return [
        (path, action)
        for path, parser in _parsers(cli.build_parser())
        for action in parser._actions
        if action.option_strings and not isinstance(action, _NOT_OPTIONS)
    ]


def test_every_command_has_help_and_every_option_an_env_twin_by_the_rule() -> None:
    """The rule: METASTORE_ + the command's words + the option's long name (--db: DATABASE_URL)."""
    seen: dict[str, str] = {}
    for path, parser in _parsers(cli.build_parser()):
        for action in parser._actions:
            if isinstance(action, _NOT_OPTIONS):
                continue
            assert action.help, f"{path} {action.dest} has no help"
    for path, action in _options():
        name = next(o for o in action.option_strings if o.startswith("--"))
        assert isinstance(action, EnvDefault), f"{path} {name} has no METASTORE_* twin"
        words = [*path.split()[1:], name[2:]]
        expected = "METASTORE_" + "_".join(words).upper().replace("-", "_")
        if path == "metastore" and name == "--db":
            expected = "METASTORE_DATABASE_URL"
        assert action.env == expected, f"{path} {name}"
        assert f"[env: {expected}]" in (action.help or "")
        assert expected not in seen, f"{expected} serves {seen.get(expected)} and {path} {name}"
        seen[expected] = f"{path} {name}"
    assert len(seen) >= 40


def _sample(action: argparse.Action) -> tuple[str, object]:
    """A value for an option's twin and what the option should then default to."""
    if isinstance(action, EnvFlag):
        return "yes", True
    if action.choices:
        choice = sorted(action.choices)[-1]
        return str(choice).lower(), choice
    if isinstance(action, EnvAppend):
        return "one\ntwo\n", ["one", "two"]
    convert = action.type or str
    return "3", convert("3")  # type: ignore[operator]


def test_every_twin_sets_its_option(monkeypatch: pytest.MonkeyPatch) -> None:
    options = _options()
    for _path, action in options:
        monkeypatch.setenv(action.env, _sample(action)[0])  # type: ignore[attr-defined]
    for path, action in _options():
        expected = _sample(action)[1]
        assert action.default == expected, (path, action.option_strings, action.default)


def test_a_bad_twin_is_a_usage_error_of_its_command_only(
    db_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("METASTORE_CHANGES_LIMIT", "abc")
    # Another command does not read it: it runs, --help too.
    code, out, _ = run(capsys, "--db", db_url, "stats")
    assert code == 0 and "total:" in out
    with pytest.raises(SystemExit) as done:
        cli.main(["--help"])
    assert done.value.code == 0
    with pytest.raises(SystemExit) as done:
        cli.main(["--db", db_url, "changes"])
    err = capsys.readouterr().err
    assert done.value.code == 2
    assert "$METASTORE_CHANGES_LIMIT='abc'" in err and "not a whole number" in err
    monkeypatch.setenv("METASTORE_STATS_JSON", "maybe")
    with pytest.raises(SystemExit) as done:
        cli.main(["--db", db_url, "stats"])
    assert done.value.code == 2 and "METASTORE_STATS_JSON" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["changes", "--limit", "-5"],
        ["changes", "--limit", "0"],
        ["changes", "--after", "-1"],
        ["jobs", "--limit", "x"],
        ["--log-level", "LOUD", "stats"],
        ["ingest", "folder", ".", "--workers", "0"],
        ["events", "tail", "--poll-interval", "0"],
    ],
)
def test_bad_values_are_refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        cli.main(argv)
    assert done.value.code == 2
    assert "error: argument" in capsys.readouterr().err


def test_log_level_any_case_and_version(capsys: pytest.CaptureFixture[str], db_url: str) -> None:
    code, _, _ = run(capsys, "--log-level", "info", "--db", db_url, "stats")
    assert code == 0
    with pytest.raises(SystemExit) as done:
        cli.main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"metastore {metastore.__version__}"


def test_db_upgrade_to_an_unknown_revision_is_one_line(
    db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "--db", db_url, "db", "upgrade", "--revision", "9999")
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert "cannot upgrade to revision '9999'" in err and "Traceback" not in err


def test_job_states_agree_with_the_queue() -> None:
    from metastore.cli.ingest import JOB_STATES
    from metastore.ingest import STATES

    assert JOB_STATES == STATES


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_db_commands_and_env_twin(
    empty_db_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(db.URL_ENV, empty_db_url)
    code, out, err = run(capsys, "db", "current")
    path = db.sqlite_path(empty_db_url)
    if path is None:
        assert code == 0 and "(empty)" in out and "metastore db upgrade" in out
    else:  # reading never creates an SQLite file
        assert code == 1 and f"no database at {path}" in err and not path.exists()
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
    monkeypatch.setenv("METASTORE_CHANGES_LIMIT", "2")
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
    assert done.stderr.strip().startswith(f"metastore: error: no database at {tmp_path / 'x.db'}")
    assert not (tmp_path / "x.db").exists()
    done = subprocess.run(
        [str(script), "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0 and "METASTORE_DATABASE_URL" in done.stdout
