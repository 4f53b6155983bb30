"""``metastore events tail|prune``, ``relay webhook``, ``consumers``: the change feed."""

from __future__ import annotations

import argparse
import sys
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from metastore.cli._common import (
    command_group,
    count_int,
    flag,
    non_negative_float,
    open_store,
    option,
    positive_float,
    print_json,
    print_json_line,
    print_table,
    stop_on_signals,
)
from metastore.errors import MetastoreError

if TYPE_CHECKING:
    from metastore.events import Event


def _print_event(event: Event) -> None:
    print_json_line(event.to_dict())
    sys.stdout.flush()


def _events_tail(args: argparse.Namespace) -> int:
    from metastore import events

    # Without a consumer, tailing only reads; a consumer's cursor is written.
    read_only = args.consumer is None
    with open_store(args, read_only=read_only) as store, stop_on_signals() as stop:
        events.tail(
            store,
            _print_event,
            consumer=args.consumer,
            after=args.after,
            events=args.type,
            follow=args.follow,
            stop=stop,
            poll_interval=args.poll_interval,
            lease_seconds=args.lease,
        )
    return 0


def _events_prune(args: argparse.Namespace) -> int:
    from metastore import events

    older = None if args.older_than is None else timedelta(days=args.older_than)
    with open_store(args) as store:
        deleted = events.prune(store, before=args.before, older_than=older, force=args.force)
    print(f"deleted {deleted} events")
    return 0


def _relay_webhook(args: argparse.Namespace) -> int:
    from metastore import events

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
            lease_seconds=args.lease,
        )
    print(f"delivered {delivered} events", file=sys.stderr)
    return 0


def _consumers(args: argparse.Namespace) -> int:
    from metastore import events

    with open_store(args, read_only=not args.remove) as store:
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


def _lease_option(parser: argparse.ArgumentParser, default: float | None) -> None:
    option(
        parser,
        "--lease",
        type=positive_float,
        default=default,
        help="seconds the consumer's lease lasts; another process takes over a crashed "
        "holder's after it (default 60, for a relay at least four timeouts)",
    )


def add_commands(commands: Any) -> None:
    """``events tail|prune``, ``relay webhook``, ``consumers``."""
    feed_commands = command_group(commands, "events", "follow and prune the change feed", "ACTION")
    tail = feed_commands.add_parser("tail", help="print events as JSON lines")
    option(tail, "--consumer", metavar="NAME", help="read as this consumer, advancing its cursor")
    flag(tail, "--follow", help="keep printing new events until interrupted")
    option(
        tail,
        "--type",
        metavar="TYPE[,TYPE]",
        help="only these event types (SERIES_ADDED, INSTANCES_ADDED, STUDY_DELETED)",
    )
    option(
        tail, "--after", type=count_int, default=0, help="without --consumer: start after this seq"
    )
    option(
        tail,
        "--poll-interval",
        type=positive_float,
        default=1.0,
        help="seconds between polls (SQLite)",
    )
    _lease_option(tail, 60.0)
    tail.set_defaults(handler=_events_tail)

    prune = feed_commands.add_parser(
        "prune", help="delete events every registered consumer has processed"
    )
    option(
        prune,
        "--before",
        type=count_int,
        metavar="SEQ",
        help="events with a lower sequence number",
    )
    option(
        prune,
        "--older-than",
        type=non_negative_float,
        metavar="DAYS",
        help="events written more than DAYS ago",
    )
    flag(
        prune,
        "--force",
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
        metavar="VAR",
        help="sign each body with HMAC-SHA256 under the secret in this environment variable",
    )
    option(
        webhook,
        "--type",
        metavar="TYPE[,TYPE]",
        help="only these event types",
    )
    option(
        webhook,
        "--timeout",
        type=positive_float,
        default=10.0,
        help="seconds to wait for the endpoint",
    )
    option(
        webhook,
        "--max-retry-delay",
        type=positive_float,
        default=30.0,
        help="the longest wait between retries of a failing endpoint, in seconds",
    )
    option(
        webhook,
        "--poll-interval",
        type=positive_float,
        default=1.0,
        help="seconds between polls (SQLite)",
    )
    _lease_option(webhook, None)
    option(
        webhook,
        "--start",
        choices=("earliest", "latest"),
        default="earliest",
        help="where a new consumer begins",
    )
    webhook.set_defaults(handler=_relay_webhook)

    registry = commands.add_parser("consumers", help="list consumers, their cursor and lag")
    flag(registry, "--json", help="print JSON instead of a table")
    option(
        registry,
        "--remove",
        metavar="NAME",
        help="forget this consumer (it no longer holds back prune)",
    )
    registry.set_defaults(handler=_consumers)
