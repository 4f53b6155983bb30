"""``metastore events tail|prune``, ``relay webhook``, ``consumers``: the change feed."""

from __future__ import annotations

import argparse
import sys
from datetime import timedelta
from typing import Any

from metastore import events
from metastore.cli._common import (
    command_group,
    flag,
    open_store,
    option,
    print_json,
    print_json_line,
    print_table,
    stop_on_signals,
)
from metastore.errors import MetastoreError
from metastore.events import Event


def _print_event(event: Event) -> None:
    print_json_line(event.to_dict())
    sys.stdout.flush()


def _events_tail(args: argparse.Namespace) -> int:
    with open_store(args) as store, stop_on_signals() as stop:
        events.tail(
            store,
            _print_event,
            consumer=args.consumer,
            after=args.after,
            events=args.type,
            follow=args.follow,
            stop=stop,
            poll_interval=args.poll_interval,
        )
    return 0


def _events_prune(args: argparse.Namespace) -> int:
    older = None if args.older_than is None else timedelta(days=args.older_than)
    with open_store(args) as store:
        deleted = events.prune(store, before=args.before, older_than=older, force=args.force)
    print(f"deleted {deleted} events")
    return 0


def _relay_webhook(args: argparse.Namespace) -> int:
    with open_store(args) as store, stop_on_signals() as stop:
        delivered = events.relay_webhook(
            store,
            args.url,
            consumer=args.consumer,
            secret_env=args.secret_env,
            events=args.type,
            stop=stop,
            timeout=args.timeout,
            poll_interval=args.poll_interval,
            max_retry_delay=args.max_retry_delay,
            start=args.start,
        )
    print(f"delivered {delivered} events", file=sys.stderr)
    return 0


def _consumers(args: argparse.Namespace) -> int:
    with open_store(args) as store:
        if args.remove:
            if not events.remove_consumer(store, args.remove):
                raise MetastoreError(f"no consumer named {args.remove!r}")
            print(f"removed consumer {args.remove}")
            return 0
        rows = [info.to_dict() for info in events.list_consumers(store)]
    if args.json:
        print_json(rows)
        return 0
    print_table(("name", "last_seq", "lag", "lease_owner", "lease_expires_at"), rows)
    return 0


def add_commands(commands: Any) -> None:
    """``events tail|prune``, ``relay webhook``, ``consumers``."""
    feed_commands = command_group(commands, "events", "follow and prune the change feed", "ACTION")
    tail = feed_commands.add_parser("tail", help="print events as JSON lines")
    option(tail, "--consumer", metavar="NAME", help="read as this consumer, advancing its cursor")
    flag(tail, "--follow", help="keep printing new events until interrupted")
    option(
        tail,
        "--type",
        env="METASTORE_EVENT_TYPES",
        metavar="TYPE[,TYPE]",
        help="only these event types (SERIES_ADDED, INSTANCES_ADDED, STUDY_DELETED, SERIES_REMOVED)",
    )
    option(tail, "--after", type=int, default=0, help="without --consumer: start after this seq")
    option(tail, "--poll-interval", type=float, default=1.0, help="seconds between polls (SQLite)")
    tail.set_defaults(handler=_events_tail)

    prune = feed_commands.add_parser(
        "prune", help="delete events every registered consumer has processed"
    )
    option(
        prune,
        "--before",
        type=int,
        env="METASTORE_PRUNE_BEFORE",
        metavar="SEQ",
        help="events with a lower sequence number",
    )
    option(
        prune,
        "--older-than",
        type=float,
        env="METASTORE_PRUNE_OLDER_THAN",
        metavar="DAYS",
        help="events written more than DAYS ago",
    )
    flag(
        prune,
        "--force",
        env="METASTORE_PRUNE_FORCE",
        help="delete them even if a consumer has not processed them",
    )
    prune.set_defaults(handler=_events_prune)

    relay_commands = command_group(commands, "relay", "push the change feed to other systems")
    webhook = relay_commands.add_parser(
        "webhook", help="POST each event as JSON to a URL, as a durable consumer"
    )
    webhook.add_argument("url", metavar="URL", help="the endpoint (http or https)")
    option(webhook, "--consumer", metavar="NAME", required=True, help="the consumer's name")
    option(
        webhook,
        "--secret-env",
        env="METASTORE_WEBHOOK_SECRET_ENV",
        metavar="VAR",
        help="sign each body with HMAC-SHA256 under the secret in this environment variable",
    )
    option(
        webhook,
        "--type",
        env="METASTORE_EVENT_TYPES",
        metavar="TYPE[,TYPE]",
        help="only these event types",
    )
    option(
        webhook,
        "--timeout",
        type=float,
        default=10.0,
        env="METASTORE_WEBHOOK_TIMEOUT",
        help="seconds to wait for the endpoint",
    )
    option(
        webhook,
        "--max-retry-delay",
        type=float,
        default=30.0,
        env="METASTORE_WEBHOOK_MAX_RETRY_DELAY",
        help="the longest wait between retries of a failing endpoint, in seconds",
    )
    option(
        webhook, "--poll-interval", type=float, default=1.0, help="seconds between polls (SQLite)"
    )
    option(
        webhook,
        "--start",
        choices=("earliest", "latest"),
        default="earliest",
        env="METASTORE_CONSUMER_START",
        help="where a new consumer begins",
    )
    webhook.set_defaults(handler=_relay_webhook)

    registry = commands.add_parser("consumers", help="list consumers, their cursor and lag")
    flag(registry, "--json", env="METASTORE_CONSUMERS_JSON", help="print JSON instead of a table")
    option(
        registry,
        "--remove",
        env="METASTORE_CONSUMERS_REMOVE",
        metavar="NAME",
        help="forget this consumer (it no longer holds back prune)",
    )
    registry.set_defaults(handler=_consumers)
