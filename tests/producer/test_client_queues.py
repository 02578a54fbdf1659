"""A producer names labelq's queues by their short or full names; any other name is refused before anything is
sent (found by a newcomer check: `submit(..., queue="bluk")` returned an id and pushed onto a list no worker
consumes, so the request was never answered and nothing said why)."""

from __future__ import annotations

import pytest

from labelq.local_redis import free_port
from producer import Client
from producer.client import queue_name
from schemas.transport import QUEUE_BULK, QUEUE_REALTIME

REQUEST = {"text": "hello", "labels": ["a", "b"]}


@pytest.mark.parametrize(
    ("given", "queue"),
    [("realtime", QUEUE_REALTIME), ("bulk", QUEUE_BULK), (QUEUE_REALTIME, QUEUE_REALTIME), (QUEUE_BULK, QUEUE_BULK)],
)
def test_labelqs_queues_by_short_or_full_name(given: str, queue: str) -> None:
    assert queue_name(given) == queue


@pytest.mark.parametrize("given", ["bluk", "Bulk", "labelq.bluk", "celery", ""])
def test_another_queue_name_is_refused_before_anything_is_sent(given: str) -> None:
    with Client(f"redis://127.0.0.1:{free_port()}/0") as client:  # nothing listens: refused before connecting
        with pytest.raises(ValueError, match=r"realtime.*bulk"):
            client.submit(REQUEST, queue=given)
        with pytest.raises(ValueError, match=r"realtime.*bulk"):
            client.submit_many([REQUEST], queue=given)
