"""Relays: the change feed pushed to other systems.

``WebhookRelay`` POSTs each event as JSON to a URL; ``relay_webhook`` runs
it as a durable ``Consumer``, so an endpoint that fails (an error status, a
refused connection, a timeout) is retried with backoff while the cursor
stays before the failing event: nothing is lost or skipped however long the
endpoint is down. Delivery is at least once; receivers should drop repeats
by the ``X-Metastore-Seq`` header (or the body's ``seq``).

With a secret, each request carries ``X-Metastore-Signature: sha256=<hex>``,
the HMAC-SHA256 of the exact body bytes under the secret (the scheme GitHub
webhooks use), which a receiver checks with ``verify_signature``. The
secret is never logged or stored.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import threading
from collections.abc import Iterable, Mapping

import httpx
import orjson

from metastore.errors import ConfigurationError, DeliveryError
from metastore.events.consumer import Consumer
from metastore.outbox import Event, EventType
from metastore.store import MetaStore
from metastore.tls import client_context
from metastore.version import __version__

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Metastore-Signature"
SEQ_HEADER = "X-Metastore-Seq"
EVENT_HEADER = "X-Metastore-Event"
CONSUMER_HEADER = "X-Metastore-Consumer"


def sign(secret: bytes, body: bytes) -> str:
    """The signature header's value for ``body``: ``sha256=<hex HMAC-SHA256>``."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def verify_signature(secret: bytes, body: bytes, header: str | None) -> bool:
    """Whether ``header`` is the signature of ``body`` under ``secret`` (constant time)."""
    return header is not None and hmac.compare_digest(sign(secret, body), header)


def _display(url: httpx.URL) -> str:
    # No credentials or query (tokens hide there) in logs and messages.
    return str(url.copy_with(username=None, password=None, query=None, fragment=None))


class WebhookRelay:
    """A consumer handler that POSTs each event as JSON to ``url``.

    Any response but 2xx, and any transport failure, raises
    ``DeliveryError`` so the consumer retries the event. Owns one
    ``httpx.Client``; close it, or use the relay as a context manager.
    """

    def __init__(
        self,
        url: str,
        *,
        secret: bytes | None = None,
        timeout: float = 10.0,
        consumer: str | None = None,
        headers: Mapping[str, str] | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        try:
            self.url = httpx.URL(url)
        except httpx.InvalidURL as err:
            raise ConfigurationError(f"not a webhook URL: {err}") from err
        if self.url.scheme not in ("http", "https") or not self.url.host:
            raise ConfigurationError(f"a webhook URL must be http(s)://host/...: {url!r}")
        if secret is not None and not secret:
            raise ConfigurationError("the webhook secret is empty")
        self._secret = secret
        base = {
            "Content-Type": "application/json",
            "User-Agent": f"metastore/{__version__}",
        }
        if consumer is not None:
            base[CONSUMER_HEADER] = consumer
        base.update(headers or {})
        self._client = httpx.Client(
            timeout=httpx.Timeout(timeout),
            headers=base,
            transport=transport,
            verify=client_context(),
        )

    def __repr__(self) -> str:
        return f"<WebhookRelay {_display(self.url)}>"

    def __enter__(self) -> WebhookRelay:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._client.close()

    def __call__(self, event: Event) -> None:
        """POST the event; raises ``DeliveryError`` unless the endpoint answers 2xx."""
        body = orjson.dumps(event.to_dict())
        headers = {SEQ_HEADER: str(event.seq), EVENT_HEADER: str(event.type)}
        if self._secret is not None:
            headers[SIGNATURE_HEADER] = sign(self._secret, body)
        where = _display(self.url)
        try:
            response = self._client.post(self.url, content=body, headers=headers)
        except httpx.HTTPError as err:
            raise DeliveryError(
                f"POST {where} failed: {type(err).__name__}: {err}", url=where, seq=event.seq
            ) from err
        if not response.is_success:
            excerpt = response.text[:200].strip()
            raise DeliveryError(
                f"POST {where} answered {response.status_code}"
                + (f": {excerpt}" if excerpt else ""),
                url=where,
                seq=event.seq,
                status=response.status_code,
            )
        log.debug("delivered event %s to %s", event.seq, where)


def relay_webhook(
    store: MetaStore,
    url: str,
    *,
    consumer: str,
    secret: bytes | None = None,
    secret_env: str | None = None,
    events: Iterable[EventType | str] | None = None,
    stop: threading.Event | None = None,
    timeout: float = 10.0,
    poll_interval: float = 1.0,
    retry_delay: float = 0.5,
    max_retry_delay: float = 30.0,
    start: str = "earliest",
    lease_seconds: float | None = None,
) -> int:
    """POST every event to ``url`` as consumer ``consumer``, live, until ``stop`` is set.

    Returns how many events were delivered. ``secret_env`` names the
    environment variable that holds the secret, instead of ``secret``. The
    lease (``lease_seconds``, by default 60 s or four timeouts) must outlast
    twice the request ``timeout``, as a handler call must.
    """
    if secret_env:
        value = os.environ.get(secret_env)
        if not value:
            raise ConfigurationError(f"the environment variable {secret_env} is not set")
        secret = value.encode()
    lease = max(60.0, 4 * timeout) if lease_seconds is None else lease_seconds
    if lease <= 2 * timeout:
        raise ConfigurationError(f"the lease ({lease} s) must outlast two timeouts ({timeout} s)")
    with (
        WebhookRelay(url, secret=secret, timeout=timeout, consumer=consumer) as relay,
        Consumer(
            store,
            consumer,
            events,
            lease_seconds=lease,
            poll_interval=poll_interval,
            retry_delay=retry_delay,
            max_retry_delay=max_retry_delay,
            start=start,
        ) as durable,
    ):
        log.info(
            "relaying the change feed as consumer %s to %s%s",
            consumer,
            _display(relay.url),
            " (signed)" if secret else "",
        )
        return durable.run(relay, stop)
