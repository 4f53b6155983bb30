"""The webhook relay against a real HTTP server on loopback that fails on purpose."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import httpx
import pytest
from feed_helpers import WAIT, Endpoint, add_events, cursor, until

from metastore import ConfigurationError, DeliveryError, Event, MetaStore
from metastore.events import EVENTS
from metastore.events.relay import SIGNATURE_HEADER, WebhookRelay, relay_webhook, verify_signature

SECRET = b"correct horse battery staple"


@pytest.fixture
def endpoint() -> Iterator[Endpoint]:
    server = Endpoint(SECRET)
    server.start()
    yield server
    server.stop()


def start_relay(db_url: str, hook_url: str, name: str, secret: bytes | None) -> Callable[[], int]:
    """Run ``relay_webhook`` in a thread on its own store; returns a function that
    stops it and returns how many events it delivered."""
    stop = threading.Event()
    result: dict[str, int] = {}

    def run() -> None:
        with MetaStore(db_url) as own:
            result["delivered"] = relay_webhook(
                own,
                hook_url,
                consumer=name,
                secret=secret,
                stop=stop,
                timeout=2.0,
                poll_interval=0.05,
                retry_delay=0.01,
                max_retry_delay=0.05,
            )

    thread = threading.Thread(target=run)
    thread.start()

    def join() -> int:
        stop.set()
        thread.join(WAIT)
        assert not thread.is_alive()
        return result["delivered"]

    return join


def test_relay_survives_an_outage_losing_and_skipping_nothing(
    store: MetaStore, db_url: str, endpoint: Endpoint, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="metastore.events")
    endpoint.fail_next = 3  # a bad start: three 503s
    seqs = add_events(store, 5, 0)
    join = start_relay(db_url, endpoint.url, "hook", SECRET)
    try:
        until(lambda: len(endpoint.accepted) == 5, "the first events")
        endpoint.stop()  # down: connections refused
        seqs += add_events(store, 5, 5)
        until(
            lambda: sum(f"event {seqs[5]}" in r.getMessage() for r in caplog.records) >= 3,
            "retries against the refusing endpoint",
        )
        assert cursor(store, "hook") == seqs[4]  # the cursor waits at the failing event
        endpoint.fail_next = 2  # back, but still unwell for two requests
        endpoint.start()
        until(lambda: len(endpoint.accepted) == 10, "the rest after the outage")
    finally:
        delivered = join()
    assert [event["seq"] for event in endpoint.accepted] == seqs  # none lost, none skipped, once
    assert delivered == 10
    assert endpoint.failed == 5
    assert endpoint.refused_signatures == 0
    assert all(event["type"] == "INSTANCES_ADDED" for event in endpoint.accepted)
    assert endpoint.accepted[0]["payload"]["added"] == 1
    assert cursor(store, "hook") == seqs[-1]
    assert all(h["X-Metastore-Consumer"] == "hook" for h in endpoint.headers)
    refused = [r.getMessage() for r in caplog.records if "handler failed" in r.getMessage()]
    assert any("ConnectError" in message for message in refused)
    assert any("answered 503" in message for message in refused)
    logged = caplog.text
    assert SECRET.decode() not in logged
    assert "t0ps3cret" not in logged  # the URL's query is not logged


def test_a_wrong_secret_is_refused_and_the_event_kept(
    store: MetaStore, db_url: str, endpoint: Endpoint
) -> None:
    add_events(store, 2, 0)
    join = start_relay(db_url, endpoint.url, "wrong-secret", b"not the secret")
    try:
        until(lambda: endpoint.refused_signatures >= 3, "refusals")
    finally:
        join()
    assert endpoint.accepted == []
    assert cursor(store, "wrong-secret") == 0


def test_without_a_secret_there_is_no_signature(store: MetaStore, db_url: str) -> None:
    unsigned = Endpoint(None)
    unsigned.start()
    try:
        seqs = add_events(store, 2, 0)
        join = start_relay(db_url, unsigned.url, "plain", None)
        try:
            until(lambda: len(unsigned.accepted) == 2, "delivery")
        finally:
            join()
    finally:
        unsigned.stop()
    assert [event["seq"] for event in unsigned.accepted] == seqs
    assert all(SIGNATURE_HEADER not in h for h in unsigned.headers)


def _event() -> Event:
    return Event(
        seq=7,
        type=EVENTS.SERIES_ADDED,
        study_uid="1.2.3",
        series_uid=None,
        source="pacs",
        payload={"SeriesInstanceUIDs": ["1.2.3.1"]},
        created_at=datetime(2026, 1, 2, tzinfo=UTC),
    )


def test_signature_is_hmac_sha256_of_the_exact_body() -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200)

    with WebhookRelay(
        "http://hooks.test/x", secret=SECRET, transport=httpx.MockTransport(answer)
    ) as relay:
        relay(_event())
    [request] = seen
    body = request.content
    assert json.loads(body)["payload"] == {"SeriesInstanceUIDs": ["1.2.3.1"]}
    expected = "sha256=" + hmac.new(SECRET, body, hashlib.sha256).hexdigest()
    assert request.headers[SIGNATURE_HEADER] == expected
    assert verify_signature(SECRET, body, expected)
    assert not verify_signature(SECRET, body + b" ", expected)
    assert not verify_signature(SECRET, body, None)


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        (httpx.ReadTimeout("timed out"), "ReadTimeout"),
        (httpx.RemoteProtocolError("peer closed"), "RemoteProtocolError"),
    ],
)
def test_transport_faults_become_delivery_errors(fault: Exception, message: str) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        raise fault

    relay = WebhookRelay(
        "http://user:pw@hooks.test/x?token=abc", transport=httpx.MockTransport(answer)
    )
    with relay, pytest.raises(DeliveryError, match=message) as failed:
        relay(_event())
    assert failed.value.seq == 7
    assert "abc" not in str(failed.value) and "pw" not in str(failed.value)


@pytest.mark.parametrize("status", [301, 400, 500])
def test_anything_but_2xx_is_a_failure(status: int) -> None:
    transport = httpx.MockTransport(lambda request: httpx.Response(status, text="nope"))
    relay = WebhookRelay("https://hooks.test/x", transport=transport)
    with relay, pytest.raises(DeliveryError, match=f"answered {status}: nope") as failed:
        relay(_event())
    assert failed.value.status == status


@pytest.mark.parametrize("url", ["ftp://hooks.test/x", "not a url", "http:///nohost"])
def test_bad_urls_are_refused(url: str) -> None:
    with pytest.raises(ConfigurationError):
        WebhookRelay(url)
