"""The change-feed commands: events tail/prune, relay webhook, consumers."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
import sqlalchemy as sa
from feed_helpers import WAIT, Endpoint, add_events, until
from helpers import series_meta

from metastore import MetaStore
from metastore.cli import build_parser, main
from metastore.events import list_consumers

ROOT = Path(__file__).resolve().parent.parent


def lines(text: str) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in text.splitlines() if line.strip()]


def metastore(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "metastore.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
    )


def test_tail_prints_json_lines(
    store: MetaStore, db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    store.add_series_metadata([series_meta(series="1.2.3.100")])
    seqs = add_events(store, 3)
    assert main(["--db", db_url, "events", "tail", "--after", str(seqs[0])]) == 0
    printed = lines(capsys.readouterr().out)
    assert [event["seq"] for event in printed] == seqs[1:]
    assert printed[0]["type"] == "INSTANCES_ADDED"
    assert main(["--db", db_url, "events", "tail", "--type", "SERIES_ADDED"]) == 0
    assert [event["type"] for event in lines(capsys.readouterr().out)] == ["SERIES_ADDED"]
    assert list_consumers(store) == []


def test_tail_with_a_consumer_advances_its_cursor(
    store: MetaStore, db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    seqs = add_events(store, 2)
    assert main(["--db", db_url, "events", "tail", "--consumer", "ops"]) == 0
    assert [event["seq"] for event in lines(capsys.readouterr().out)] == seqs
    more = add_events(store, 1, 5)
    assert main(["--db", db_url, "events", "tail", "--consumer", "ops"]) == 0
    assert [event["seq"] for event in lines(capsys.readouterr().out)] == more
    [info] = list_consumers(store)
    assert (info.name, info.last_seq, info.lag) == ("ops", more[0], 0)


def test_tail_follow_runs_until_sigterm(store: MetaStore, db_url: str) -> None:
    seqs = add_events(store, 1)
    follower = metastore("--db", db_url, "events", "tail", "--follow", "--poll-interval", "0.05")
    assert follower.stdout is not None
    first = follower.stdout.readline()
    seqs += add_events(store, 1, 5)
    second = follower.stdout.readline()
    follower.send_signal(signal.SIGTERM)
    out, err = follower.communicate(timeout=WAIT)
    assert follower.returncode == 0, err
    assert [event["seq"] for event in lines(first + second + out)] == seqs


def test_unknown_event_type_is_one_line_and_exit_1(
    db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--db", db_url, "events", "tail", "--type", "SERIES_GONE"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("metastore: error: unknown event type 'SERIES_GONE'")
    assert len(err.splitlines()) == 1


def test_consumers_lists_cursor_and_lag(
    store: MetaStore, db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    seqs = add_events(store, 3)
    main(["--db", db_url, "events", "tail", "--consumer", "prefetcher"])
    add_events(store, 2, 5)
    capsys.readouterr()
    assert main(["--db", db_url, "consumers"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["name", "last_seq", "lag", "lease_owner", "lease_expires_at"]
    assert table[1].split() == ["prefetcher", str(seqs[-1]), "2", "-", "-"]
    assert main(["--db", db_url, "consumers", "--json"]) == 0
    [row] = orjson.loads(capsys.readouterr().out)
    assert (row["name"], row["last_seq"], row["lag"]) == ("prefetcher", seqs[-1], 2)
    assert main(["--db", db_url, "consumers", "--remove", "prefetcher"]) == 0
    assert list_consumers(store) == []
    assert main(["--db", db_url, "consumers", "--remove", "prefetcher"]) == 1


def test_prune_respects_consumers_unless_forced(
    store: MetaStore, db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    add_events(store, 4)
    main(["--db", db_url, "events", "tail", "--consumer", "behind"])
    more = add_events(store, 2, 5)
    capsys.readouterr()
    assert main(["--db", db_url, "events", "prune", "--before", "100000"]) == 0
    assert capsys.readouterr().out.strip() == "deleted 4 events"
    assert [event.seq for event in store.changes()] == more
    assert main(["--db", db_url, "events", "prune", "--older-than", "0", "--force"]) == 0
    assert capsys.readouterr().out.strip() == "deleted 2 events"
    assert store.changes() == []
    assert main(["--db", db_url, "events", "prune"]) == 1
    assert "say what to prune" in capsys.readouterr().err


def test_relay_webhook_command_signs_and_keeps_the_secret(store: MetaStore, db_url: str) -> None:
    secret = "s3cr3t-for-the-hook"
    receiver = Endpoint(secret.encode())
    receiver.start()
    receiver.fail_next = 2
    try:
        seqs = add_events(store, 3)
        relay = metastore(
            "--db",
            db_url,
            "--log-level",
            "DEBUG",
            "relay",
            "webhook",
            receiver.url,
            "--secret-env",
            "HOOK_SECRET",
            "--poll-interval",
            "0.05",
            "--max-retry-delay",
            "0.1",
            env={"HOOK_SECRET": secret, "METASTORE_RELAY_WEBHOOK_CONSUMER": "downstream"},
        )
        until(lambda: len(receiver.accepted) == 3, "delivery")
        relay.send_signal(signal.SIGTERM)
        out, err = relay.communicate(timeout=WAIT)
    finally:
        receiver.stop()
    assert relay.returncode == 0, err
    assert [event["seq"] for event in receiver.accepted] == seqs
    assert receiver.refused_signatures == 0
    assert "delivered 3 events" in err
    assert "answered 503" in err  # the failures were logged...
    assert secret not in err + out  # ...the secret never
    [info] = list_consumers(store)
    assert (info.name, info.last_seq) == ("downstream", seqs[-1])
    with store.engine.connect() as connection:
        for table in ("consumers", "sources", "outbox"):
            dump = str(connection.execute(sa.text(f"SELECT * FROM {table}")).all())
            assert secret not in dump


def test_relay_webhook_without_its_secret_refuses_to_start(
    db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    os.environ.pop("NO_SUCH_SECRET", None)
    code = main(
        [
            "--db",
            db_url,
            "relay",
            "webhook",
            "http://127.0.0.1:9/x",
            "--consumer",
            "c",
            "--secret-env",
            "NO_SUCH_SECRET",
        ]
    )
    assert code == 1
    assert "NO_SUCH_SECRET is not set" in capsys.readouterr().err


def test_every_change_feed_option_has_help_and_an_environment_twin() -> None:
    def subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
        found: dict[str, argparse.ArgumentParser] = {}
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                found.update(action.choices)
        return found

    top = subparsers(build_parser())
    leaves = [
        subparsers(top["events"])["tail"],
        subparsers(top["events"])["prune"],
        subparsers(top["relay"])["webhook"],
        top["consumers"],
    ]
    for leaf in leaves:
        assert leaf.description or leaf.format_help()
        for action in leaf._actions:
            if action.option_strings and action.dest != "help":
                assert action.help and "[env: METASTORE_" in action.help, action.option_strings
