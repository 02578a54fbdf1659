"""One delivery attempt against receivers written as plain functions (httpx.MockTransport), and the retries."""

from __future__ import annotations

import contextlib
import random
import socket
import threading
import time
from collections.abc import Callable

import httpx
import psutil
import pytest

from schemas.webhooks import verify
from tests.schemas.test_webhook_signatures import SECRET
from worker.delivery.egress import EgressPolicy
from worker.delivery.webhooks import Attempt, RetryPolicy, WebhookHttp, attempt_delivery, parse_retry_after

BODY = b'{"status": "ok", "id": "r1"}'
PUBLIC = EgressPolicy(resolver=lambda host, port: ["93.184.216.34"])


def deliver(
    handler: Callable[[httpx.Request], httpx.Response],
    url: str = "https://hooks.example.com/in",
    policy: EgressPolicy = PUBLIC,
) -> tuple[Attempt, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return handler(request)

    http = WebhookHttp(transport=httpx.MockTransport(record))
    attempt = attempt_delivery(http, policy, url=url, body=BODY, message_id="r1", secret=SECRET, timeout_s=2.0)
    http.close()
    return attempt, seen


def test_delivered_signed_to_the_checked_address() -> None:
    attempt, seen = deliver(lambda request: httpx.Response(204))
    assert attempt.outcome == "delivered" and attempt.status == 204
    (request,) = seen
    assert str(request.url) == "https://93.184.216.34/in"  # connected to the checked address
    assert request.headers["host"] == "hooks.example.com"
    assert request.extensions["sni_hostname"] == "hooks.example.com"
    verify(SECRET, dict(request.headers), request.content)  # a receiver's check passes
    assert request.content == BODY


@pytest.mark.parametrize(
    ("response", "outcome"),
    [
        (httpx.Response(500), "retry"),
        (httpx.Response(503, headers={"retry-after": "120"}), "retry"),
        (httpx.Response(429), "retry"),
        (httpx.Response(410), "give_up"),
        (httpx.Response(404), "give_up"),
        (httpx.Response(400), "give_up"),
        (httpx.Response(302, headers={"location": "http://169.254.169.254/"}), "give_up"),
    ],
)
def test_status_decides_the_outcome(response: httpx.Response, outcome: str) -> None:
    attempt, seen = deliver(lambda request: response)
    assert attempt.outcome == outcome and attempt.status == response.status_code
    assert len(seen) == 1  # a redirect is not followed


def test_retry_after_is_read() -> None:
    attempt, _ = deliver(lambda request: httpx.Response(503, headers={"retry-after": "120"}))
    assert attempt.retry_after_s == 120.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now_s=1445412470.0) == pytest.approx(10.0)
    assert parse_retry_after("garbage", now_s=0) is None


def test_network_errors_and_timeouts_retry() -> None:
    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    def hangs(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    assert deliver(down)[0].outcome == "retry" and "network" in (deliver(down)[0].error or "")
    assert deliver(hangs)[0].outcome == "retry" and "timeout" in (deliver(hangs)[0].error or "")


def test_refused_egress_never_connects() -> None:
    private = EgressPolicy(resolver=lambda host, port: ["10.0.0.5"])
    attempt, seen = deliver(lambda request: httpx.Response(200), policy=private)
    assert attempt.outcome == "give_up" and "webhook_private_address" in (attempt.error or "") and seen == []


def test_backoff_grows_with_jitter_honours_retry_after_and_ends() -> None:
    policy = RetryPolicy(delays_s=(5.0, 30.0, 120.0), jitter=0.2)
    rng = random.Random(1)
    retry = Attempt(0.0, "retry", status=503)
    delays = [policy.next_delay_s([retry] * n, rng) for n in (1, 2, 3)]
    assert [d is not None and base * 0.8 <= d <= base * 1.2 for d, base in zip(delays, (5, 30, 120), strict=True)] == [
        True,
        True,
        True,
    ]
    assert policy.next_delay_s([retry] * 4, rng) is None  # retries used up
    asked = Attempt(0.0, "retry", status=429, retry_after_s=600.0)
    assert policy.next_delay_s([asked], rng) == 600.0  # Retry-After longer than the backoff wins
    assert RetryPolicy(max_retry_after_s=60).next_delay_s([Attempt(0, "retry", retry_after_s=1e9)], rng) <= 60 * 1.2
    assert policy.next_delay_s([Attempt(0.0, "give_up", status=410)], rng) is None
    assert policy.next_delay_s([Attempt(0.0, "delivered", status=200)], rng) is None


# --- hostile receivers on a real socket ---


class Receiver(threading.Thread):
    """A TCP receiver on loopback that reads a request, then answers with `reply(connection)`."""

    def __init__(self, reply: Callable[[socket.socket], None]) -> None:
        super().__init__(daemon=True)
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.reply = reply

    def run(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                connection, _ = self.server.accept()
                threading.Thread(target=self._serve, args=(connection,), daemon=True).start()

    def _serve(self, connection: socket.socket) -> None:
        with contextlib.suppress(OSError), connection:
            connection.recv(65_536)
            self.reply(connection)

    def __enter__(self) -> str:
        self.start()
        return f"http://localhost:{self.port}/hook"

    def __exit__(self, *_: object) -> None:
        self.server.close()


LOCAL = EgressPolicy(private_hosts=("localhost",), resolver=lambda host, port: ["127.0.0.1"])


def trickle(connection: socket.socket) -> None:
    """Headers one byte every 0.2 s, forever: under any per-read timeout."""
    for byte in b"HTTP/1.1 200 OK\r\n" * 1000:
        connection.sendall(bytes([byte]))
        time.sleep(0.2)


def endless(connection: socket.socket) -> None:
    """Prompt headers, then a chunked body that never ends (64 KiB a chunk)."""
    connection.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    chunk = b"10000\r\n" + b"x" * 65_536 + b"\r\n"
    while True:
        connection.sendall(chunk)


@pytest.mark.parametrize("timeout_s", [0.5, 1.5])
def test_a_receiver_that_trickles_cannot_hold_an_attempt_past_its_deadline(timeout_s: float) -> None:
    """Before: each byte came within the per-read timeout, so the attempt never ended (16 such receivers held
    every delivery thread; a healthy receiver got 0 of 10 in 120 s)."""
    http = WebhookHttp()
    with Receiver(trickle) as url:
        started = time.monotonic()
        attempt = attempt_delivery(http, LOCAL, url=url, body=BODY, message_id="r1", secret=SECRET, timeout_s=timeout_s)
        took_s = time.monotonic() - started
    http.close()
    assert attempt.outcome == "retry" and attempt.error is not None and attempt.error.startswith("timeout")
    assert timeout_s <= took_s < timeout_s + 0.5


def test_an_endless_response_body_is_not_read_past_its_cap() -> None:
    """Before: a receiver streaming an endless body grew a webhook worker from 108 MB to 1.6 GB on one delivery."""
    http = WebhookHttp()
    process = psutil.Process()
    before = process.memory_info().rss
    with Receiver(endless) as url:
        started = time.monotonic()
        attempt = attempt_delivery(http, LOCAL, url=url, body=BODY, message_id="r1", secret=SECRET, timeout_s=5.0)
    http.close()
    assert attempt.outcome == "delivered" and time.monotonic() - started < 2  # the status is all it needs
    assert process.memory_info().rss - before < 20 * 1024 * 1024


def test_a_healthy_receiver_is_served_while_slow_ones_hold_their_attempts() -> None:
    """Attempts on other threads against trickling receivers do not delay one to a healthy receiver."""
    http = WebhookHttp()
    with Receiver(trickle) as slow_url, Receiver(lambda c: c.sendall(b"HTTP/1.1 204 No Content\r\n\r\n")) as ok_url:
        slow = [
            threading.Thread(
                target=attempt_delivery,
                args=(http, LOCAL),
                kwargs={"url": slow_url, "body": BODY, "message_id": f"s{i}", "secret": SECRET, "timeout_s": 3.0},
            )
            for i in range(8)
        ]
        for thread in slow:
            thread.start()
        started = time.monotonic()
        attempt = attempt_delivery(http, LOCAL, url=ok_url, body=BODY, message_id="ok", secret=SECRET, timeout_s=3.0)
        assert attempt.outcome == "delivered" and time.monotonic() - started < 1
        for thread in slow:
            thread.join()
    http.close()
