"""Envelopes as other Celery clients send them (tests/fixtures/celery_clients: one captured from celery-node's own
LPUSH, the others built from the clients' documented wire formats), answered and read back the way those clients
read results: Celery's result backend key, `celery-task-meta-<task id>`."""

from __future__ import annotations

import base64
import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from producer import Client
from schemas.transport import QUEUE_REALTIME
from tests.conftest import WorkerFactory

FIXTURES = sorted((Path(__file__).resolve().parents[1] / "fixtures" / "celery_clients").glob("*.json"))


def envelope(fixture: Path, task_id: str) -> str:
    spec: dict[str, Any] = json.loads(fixture.read_text().replace("{ID}", task_id))["envelope"]
    body_json = spec.pop("body_json", None)
    if body_json is not None:  # built here: the body as the client encodes it
        spec["body"] = base64.b64encode(json.dumps(body_json).encode()).decode()
    return json.dumps(spec)


@pytest.mark.parametrize("fixture", FIXTURES, ids=[f.stem for f in FIXTURES])
def test_a_celery_clients_envelope_is_answered_in_the_result_backend(
    start_worker: WorkerFactory, client: Client, fixture: Path
) -> None:
    start_worker(enable_fake_model=True, model="fake")
    task_id = str(uuid.uuid4())
    client.redis.lpush(QUEUE_REALTIME, envelope(fixture, task_id))
    deadline = time.monotonic() + 30
    while (meta := client.redis.get(f"celery-task-meta-{task_id}")) is None:
        assert time.monotonic() < deadline, f"{fixture.stem}: no result in the backend"
        time.sleep(0.05)
    stored = json.loads(meta)
    assert stored["status"] == "SUCCESS" and stored["task_id"] == task_id
    assert stored["result"]["top"] == "refund" and stored["result"]["id"] == task_id
    assert client.redis.llen("labelq:dead") == 0
