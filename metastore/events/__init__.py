"""The change feed for services: durable consumers, live wake-ups, retention, relays.

- :mod:`~metastore.events.consumer`: a ``Consumer`` keeps its own cursor in
  ``consumers`` and hands events to a handler, at least once, in sequence
  order, from where it left off;
- :mod:`~metastore.events.wakeup`: it wakes on ``NOTIFY`` on PostgreSQL and
  polls on SQLite;
- :mod:`~metastore.events.feed`: ``tail`` reads without a cursor of its
  own, ``prune`` deletes what every consumer has processed, and the
  consumer registry;
- :mod:`~metastore.events.relay`: the feed pushed to a webhook.

The outbox itself (event types, writing, ordered reading, and why no event
is ever skipped) is :mod:`metastore.outbox`; its names are re-exported here.
"""

from __future__ import annotations

from metastore.events.consumer import Consumer
from metastore.events.feed import ConsumerInfo, list_consumers, prune, remove_consumer, tail
from metastore.events.relay import WebhookRelay, relay_webhook, verify_signature
from metastore.outbox import (
    EVENTS,
    NOTIFY_CHANNEL,
    Event,
    EventType,
    Handler,
    parse_types,
    read_changes,
    write_events,
)

__all__ = [
    "EVENTS",
    "NOTIFY_CHANNEL",
    "Consumer",
    "ConsumerInfo",
    "Event",
    "EventType",
    "Handler",
    "WebhookRelay",
    "list_consumers",
    "parse_types",
    "prune",
    "read_changes",
    "relay_webhook",
    "remove_consumer",
    "tail",
    "verify_signature",
    "write_events",
]
