"""labelq as Celery users meet it: `send_task(...).get()` from a plain Celery app, group results, a chain and a
chord into ordinary tasks on a standard Celery worker (examples/chatbot_router.py), `link_error`, and task
events read with Celery's own event receiver."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from celery import Celery, group

from producer import Client
from tests.conftest import WorkerFactory
from tests.worker.conftest import close

ROOT = Path(__file__).resolve().parents[2]
CELERY = [sys.executable, "-m", "celery"]
ROUTER_FLAGS = ["--without-mingle", "--without-gossip", "-n", "router@%h", "--loglevel", "INFO"]
FAKE = {"enable_fake_model": True, "model": "fake"}
REQUEST = {"text": "refund please", "labels": ["refund", "bug"]}


def test_send_task_get_returns_the_result(start_worker: WorkerFactory, celery_app: Celery) -> None:
    start_worker(**FAKE)
    result = celery_app.send_task("labelq.classify", args=[REQUEST], queue="labelq.realtime")
    answer = result.get(timeout=30)
    assert answer["status"] == "ok" and answer["top"] == "refund" and answer["id"] == result.id
    assert result.state == "SUCCESS" and result.ready()
    parts = group(
        celery_app.signature("labelq.classify", args=[{**REQUEST, "text": f"text {i}"}], queue="labelq.realtime")
        for i in range(5)
    )()
    assert [item["status"] for item in parts.get(timeout=30)] == ["ok"] * 5


def test_an_invalid_request_raises_on_get_with_its_error_code(start_worker: WorkerFactory, celery_app: Celery) -> None:
    start_worker(**FAKE)
    result = celery_app.send_task("labelq.classify", args=[{"text": "", "labels": ["a"]}], queue="labelq.realtime")
    with pytest.raises(Exception) as raised:
        result.get(timeout=30)
    assert type(raised.value).__name__ == "EmptyText" and raised.value.args[0]["code"] == "empty_text"
    assert result.state == "FAILURE"
    returned = result.get(timeout=1, propagate=False)
    assert returned.args[0]["id"] == result.id and returned.args[0]["status"] == "error"


def test_results_expire_as_celery_says(start_worker: WorkerFactory, celery_app: Celery, client: Client) -> None:
    start_worker(**FAKE, result_expires_s=120)
    result = celery_app.send_task("labelq.classify", args=[REQUEST], queue="labelq.realtime")
    result.get(timeout=30)
    assert 0 < client.redis.ttl(f"celery-task-meta-{result.id}") <= 120


def test_the_backend_can_be_turned_off(start_worker: WorkerFactory, client: Client) -> None:
    start_worker(**FAKE, result_backend="disabled")
    request_id = client.submit(REQUEST)
    assert client.wait(request_id, timeout_s=30) is not None
    assert not client.redis.exists(f"celery-task-meta-{request_id}")


@pytest.fixture
def router(redis_url: str, tmp_path: Path) -> Iterator[ModuleType]:
    """examples/chatbot_router.py: its module here (to send), and its own standard Celery worker."""
    os.environ["REDIS_URL"] = redis_url
    module = importlib.reload(importlib.import_module("examples.chatbot_router"))
    with (tmp_path / "router.log").open("wb") as log:
        worker = subprocess.Popen(
            [*CELERY, "-A", "examples.chatbot_router", "worker", "-P", "solo", *ROUTER_FLAGS],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 60
    while b" ready." not in (tmp_path / "router.log").read_bytes():
        assert worker.poll() is None and time.monotonic() < deadline, (tmp_path / "router.log").read_text()
        time.sleep(0.1)
    yield module
    worker.terminate()
    worker.wait(timeout=30)
    close(module.app)
    del os.environ["REDIS_URL"]


def test_a_chain_a_chord_and_link_error_into_ordinary_tasks(
    start_worker: WorkerFactory, router: ModuleType, client: Client
) -> None:
    start_worker(**FAKE)
    routed = router.route("I was charged twice for my subscription").get(timeout=30)
    assert routed["team"] == router.TEAMS[routed["intent"]] and routed["intent"] in router.INTENTS
    summary = router.triage([f"message {i}" for i in range(4)]).get(timeout=30)
    assert sum(summary.values()) == 4
    failed = router.classify("").apply_async(link_error=router.record_failure.s())
    deadline = time.monotonic() + 30
    while client.redis.lrange("router:failures", 0, -1) != [failed.id.encode()]:
        assert time.monotonic() < deadline, "the errback never ran"
        time.sleep(0.1)
    print(f"\ncelery canvas: chain -> {routed}; chord over 4 -> {summary}; link_error got {failed.id}")


def test_an_errback_of_celerys_recommended_form_is_called_with_request_exc_and_traceback(
    start_worker: WorkerFactory, router: ModuleType, client: Client
) -> None:
    """`link_error` to `(request, exc, traceback)`: with its module in LABELQ_CELERY_IMPORTS, labelq's worker
    calls it as a Celery worker that knows the errback does (it would fail with a TypeError sent as a task)."""
    start_worker(**FAKE, celery_imports=["examples.chatbot_router"])
    failed = router.classify("").apply_async(link_error=router.report_failure.s())
    _wait_for(lambda: client.redis.lrange("router:reports", 0, -1), "the errback never ran")
    assert client.redis.lrange("router:reports", 0, -1) == [f"{failed.id} EmptyText".encode()]


def test_a_module_that_cannot_be_imported_is_named_at_start(start_worker: WorkerFactory) -> None:
    worker = start_worker(wait=False, **FAKE, celery_imports=["examples.no_such_module"])
    assert worker.wait(timeout=60) == 2


def test_started_and_extended_results_are_stored_as_celery_stores_them(
    start_worker: WorkerFactory, celery_app: Celery
) -> None:
    start_worker(**FAKE, fake_model_run_ms=500, task_track_started=True, result_extended=True)
    result = celery_app.send_task("labelq.classify", args=[REQUEST], queue="labelq.realtime")
    seen = []
    deadline = time.monotonic() + 30
    while not result.ready() and time.monotonic() < deadline:
        seen.append(result.state)
        time.sleep(0.02)
    assert result.get(timeout=5)["top"] and "STARTED" in seen and "SUCCESS" not in seen[: seen.index("STARTED")]
    meta = celery_app.backend.get_task_meta(result.id)
    assert meta["status"] == "SUCCESS" and meta["name"] == "labelq.classify" and meta["queue"] == "labelq.realtime"
    assert meta["args"][0]["text"] == REQUEST["text"] and meta["worker"].startswith("test-0@")


def test_task_events_reach_celerys_event_receiver(
    start_worker: WorkerFactory, celery_app: Celery, tmp_path: Path
) -> None:
    start_worker(**FAKE, celery_events=True)
    seen: list[dict[str, Any]] = []
    receivers: list[Any] = []

    def listen() -> None:
        with celery_app.connection_for_read() as connection:
            receiver = celery_app.events.Receiver(connection, handlers={"*": seen.append})
            receivers.append(receiver)
            receiver.capture(limit=None, timeout=None, wakeup=False)

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    try:
        _wait_for(lambda: bool(seen), "no event at all (the worker's heartbeat comes every 2 s)")
        ok = celery_app.send_task("labelq.classify", args=[REQUEST], queue="labelq.realtime")
        bad = celery_app.send_task("labelq.classify", args=[{"text": "", "labels": ["a"]}], queue="labelq.realtime")
        ok.get(timeout=30)
        bad.get(timeout=30, propagate=False)
        wanted = {(ok.id, "task-succeeded"), (bad.id, "task-failed")}
        worker_log = tmp_path / "worker-0.log"
        _wait_for(lambda: wanted <= {(e.get("uuid"), e["type"]) for e in seen}, lambda: worker_log.read_text()[-3000:])
    finally:
        if receivers:
            receivers[0].should_stop = True
        listener.join(10)
    kinds = [e["type"] for e in seen if e.get("uuid") == ok.id]
    assert kinds == ["task-received", "task-started", "task-succeeded"]
    assert [e["type"] for e in seen if e.get("uuid") == bad.id][-1] == "task-failed"
    succeeded = next(e for e in seen if e.get("uuid") == ok.id and e["type"] == "task-succeeded")
    received = next(e for e in seen if e.get("uuid") == ok.id and e["type"] == "task-received")
    assert succeeded["runtime"] >= 0 and received["name"] == "labelq.classify"


def _wait_for(condition: Any, message: Any, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, message() if callable(message) else message
        time.sleep(0.05)


def test_a_chord_with_a_failed_part_fails_as_celery_says(
    start_worker: WorkerFactory, router: ModuleType, client: Client
) -> None:
    start_worker(**FAKE)
    result = router.triage(["refund please", ""])  # the second part is an invalid request: empty_text
    with pytest.raises(Exception) as raised:
        result.get(timeout=30)
    assert type(raised.value).__name__ == "EmptyText"  # Celery raises the failed part first, as for any chord
    callback = result.get(timeout=5, propagate=False)
    assert type(callback).__name__ == "ChordError" and "EmptyText" in str(callback) and result.state == "FAILURE"


def test_a_chain_whose_classification_fails_fails_instead_of_waiting(
    start_worker: WorkerFactory, router: ModuleType
) -> None:
    start_worker(**FAKE)
    with pytest.raises(Exception) as raised:
        router.route("").get(timeout=30)  # an empty text: the chain's next task never runs
    assert type(raised.value).__name__ == "EmptyText"


def test_what_a_celery_client_may_send_is_answered_as_celery_would(
    start_worker: WorkerFactory, celery_app: Celery, client: Client
) -> None:
    """A group link routed to kombu's sweep lock, a task id with a space, and a task already expired."""
    start_worker(**FAKE)
    link = group(celery_app.signature("x.a", queue="unacked_mutex"), celery_app.signature("x.b", queue="unacked_mutex"))
    refused = celery_app.send_task("labelq.classify", args=[REQUEST], queue="labelq.realtime", link=link)
    with pytest.raises(Exception) as raised:
        refused.get(timeout=30)
    assert type(raised.value).__name__ == "InvalidMessage" and client.redis.type("unacked_mutex") == b"none"
    for task_id in ("order 42", "tâche-1", "x" * 250):
        sent = celery_app.send_task("labelq.classify", args=[REQUEST], queue="labelq.realtime", task_id=task_id)
        assert sent.get(timeout=30)["top"] == "refund"
    expired = celery_app.send_task("labelq.classify", args=[REQUEST], queue="labelq.realtime", expires=-1)
    with pytest.raises(Exception) as raised:
        expired.get(timeout=30)
    assert type(raised.value).__name__ == "Expired"
