"""Webhook delivery end to end: real workers (classify + webhook), a real receiver on 127.0.0.1."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from producer import Client
from schemas import ClassificationResult, ClassifyRequest, ErrorCode, ErrorResult, parse_result
from schemas.transport import DEAD_LETTER_KEY, WEBHOOK_CLAIMED_KEY, WEBHOOK_SCHEDULE_KEY
from tests.conftest import WorkerFactory
from tests.webhook_receiver import Receiver

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
LABELS = ["billing", "technical problem", "praise"]
WEBHOOK_SETTINGS: dict[str, Any] = {
    "webhook_secrets": {"default": SECRET},
    "webhook_private_hosts": ["127.0.0.1"],  # the test receiver is on loopback: explicitly allowed
    "webhook_retry_delays_s": [0.3, 0.6, 1.0],
    "webhook_timeout_s": 1.0,
}


@pytest.fixture
def workers(start_worker: WorkerFactory) -> None:
    start_worker(**WEBHOOK_SETTINGS)
    start_worker(role="webhooks", **WEBHOOK_SETTINGS)


@pytest.fixture
def receiver_factory() -> Iterator[Any]:
    servers = []

    def make(behaviour: Any = None) -> tuple[Receiver, str]:
        receiver = Receiver(SECRET, behaviour) if behaviour else Receiver(SECRET)
        server, url = receiver.serve()
        servers.append(server)
        return receiver, url

    yield make
    for server in servers:
        server.shutdown()
        server.server_close()


def wait_until(condition: Any, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def dead_letters(client: Client) -> list[dict[str, Any]]:
    return [json.loads(x) for x in client.redis.lrange(DEAD_LETTER_KEY, 0, -1)]


def send(client: Client, n: int, url: str, prefix: str) -> list[str]:
    return client.submit_many(
        [
            ClassifyRequest(
                id=f"{prefix}-{i}",
                text=f"I was charged twice, ticket {i}",
                labels=LABELS,  # type: ignore[arg-type]
                reply_to=f"{url}/hook",
            )
            for i in range(n)
        ]
    )


def test_every_result_is_delivered_signed(workers: None, client: Client, receiver_factory: Any) -> None:
    receiver, url = receiver_factory()
    ids = send(client, 30, url, "ok")
    assert wait_until(lambda: len(receiver.deliveries) >= 30, 60), f"{len(receiver.deliveries)} delivered"
    assert all(d.verified for d in receiver.deliveries)  # a spec-only receiver verifies every signature
    assert sorted(d.webhook_id for d in receiver.deliveries) == sorted(ids)
    for delivery in receiver.deliveries:
        result = parse_result(delivery.body)
        assert isinstance(result, ClassificationResult) and result.id == delivery.webhook_id
        assert result.top == "billing" and delivery.path == "/hook"
    assert client.redis.zcard(WEBHOOK_SCHEDULE_KEY) == 0
    assert wait_until(lambda: client.redis.zcard(WEBHOOK_CLAIMED_KEY) == 0, 5)


@pytest.mark.reliability
def test_receiver_down_then_back_gets_everything(workers: None, client: Client, receiver_factory: Any) -> None:
    first: list[float] = []  # down for 1.5 s from the first POST (not from the test's start: a loaded machine
    # may send nothing in the first 1.5 s, and then no attempt would fail)

    def down_then_back(n: int) -> tuple[int, float]:
        if not first:
            first.append(time.monotonic())
        return (503, 0.0) if time.monotonic() < first[0] + 1.5 else (200, 0.0)

    receiver, url = receiver_factory(down_then_back)
    ids = send(client, 10, url, "down")
    assert wait_until(lambda: len({d.webhook_id for d in receiver.deliveries}) >= 10, 60)
    assert {d.webhook_id for d in receiver.deliveries} == set(ids)
    assert receiver.requests > 10  # some attempts failed and were retried
    print(
        f"\nreceiver down 1.5 s: 10 results, {receiver.requests} POSTs, {len(receiver.deliveries)} deliveries "
        f"(verified: {sum(d.verified for d in receiver.deliveries)}), 0 dead letters"
    )
    assert not [d for d in dead_letters(client) if d["reason"].startswith("webhook")]


@pytest.mark.reliability
def test_a_receiver_that_keeps_failing_is_dead_lettered_with_every_attempt(
    workers: None, client: Client, receiver_factory: Any
) -> None:
    receiver, url = receiver_factory(lambda n: (500, 0.0))
    send(client, 2, url, "fail")
    assert wait_until(lambda: len(dead_letters(client)) >= 2, 60)
    letters = dead_letters(client)
    assert Counter(d["reason"] for d in letters) == {"webhook_retries_exhausted": 2}
    for letter in letters:
        assert [a["status"] for a in letter["attempts"]] == [500, 500, 500, 500]  # first try + 3 retries
        assert parse_result(json.loads(letter["raw"])["body"]).status == "ok"  # the result is kept
    assert receiver.requests == 8
    print(
        f"\nreceiver always 500: 2 results, {receiver.requests} POSTs, "
        f"dead letters {dict(Counter(d['reason'] for d in letters))}"
    )


@pytest.mark.reliability
def test_a_hanging_receiver_times_out_and_does_not_stall_classification(
    workers: None, client: Client, receiver_factory: Any
) -> None:
    _, url = receiver_factory(lambda n: (200, 5.0))  # answers after the 1 s timeout
    send(client, 3, url, "hang")
    started = time.monotonic()
    quick = client.submit(ClassifyRequest(text="the app crashes", labels=LABELS, reply_to="results:q"))  # type: ignore[arg-type]
    result = client.wait(quick, timeout_s=10)
    answered_s = time.monotonic() - started
    assert isinstance(result, ClassificationResult) and answered_s < 5
    assert wait_until(lambda: len(dead_letters(client)) >= 3, 60)
    letters = dead_letters(client)
    assert {d["reason"] for d in letters} == {"webhook_retries_exhausted"}
    assert all(a["error"].startswith("timeout") for d in letters for a in d["attempts"])
    print(
        f"\nhanging receiver: a queue request answered in {answered_s:.2f} s meanwhile; 3 webhooks dead-lettered "
        f"after {len(letters[0]['attempts'])} timed-out attempts each"
    )


def test_gone_stops_at_once(workers: None, client: Client, receiver_factory: Any) -> None:
    receiver, url = receiver_factory(lambda n: (410, 0.0))
    send(client, 1, url, "gone")
    assert wait_until(lambda: len(dead_letters(client)) >= 1, 30)
    (letter,) = dead_letters(client)
    assert letter["reason"] == "webhook_gone" and len(letter["attempts"]) == 1 and receiver.requests == 1


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.5/hook",
        "http://localhost:9/hook",
        "http://[::1]:9/hook",
    ],
)
def test_internal_targets_are_refused_before_inference(start_worker: WorkerFactory, client: Client, url: str) -> None:
    start_worker(**{**WEBHOOK_SETTINGS, "webhook_private_hosts": []})
    request_id = client.submit(ClassifyRequest(text="hello", labels=LABELS, reply_to=url))  # type: ignore[arg-type]
    result = client.wait(request_id, timeout_s=30)
    assert isinstance(result, ErrorResult) and result.code == ErrorCode.WEBHOOK_REFUSED
    assert result.field == "reply_to" and "non-public address" in result.message
    assert wait_until(lambda: len(dead_letters(client)) == 1, 10)
    assert dead_letters(client)[0]["reason"] == "webhook_refused"
    assert client.redis.zcard(WEBHOOK_SCHEDULE_KEY) == 0  # nothing scheduled


def test_an_unknown_secret_name_is_refused(start_worker: WorkerFactory, client: Client) -> None:
    start_worker(**WEBHOOK_SETTINGS)
    request_id = client.submit(
        ClassifyRequest(
            text="hello",
            labels=LABELS,
            reply_to="https://hooks.example.com/x",  # type: ignore[arg-type]
            webhook_secret="nope",
        )
    )
    result = client.wait(request_id, timeout_s=30)
    assert isinstance(result, ErrorResult) and result.code == ErrorCode.WEBHOOK_REFUSED
    assert "no webhook secret named 'nope'" in result.message
