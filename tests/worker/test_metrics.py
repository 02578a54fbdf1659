"""The Prometheus endpoint of a worker host, scraped during a real run (two worker processes, one endpoint)."""

from __future__ import annotations

import base64
import json
import time
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from labelq.local_redis import free_port
from producer import Client
from schemas import ClassifyRequest
from schemas.transport import QUEUE_REALTIME
from tests.conftest import WorkerFactory
from tests.worker.test_streaming import raw_celery_message


def scrape(port: int) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def total(samples: dict[str, dict[tuple[tuple[str, str], ...], float]], name: str) -> float:
    return sum(samples.get(name, {}).values())


def test_500_requests_show_up_as_500_outcomes(start_worker: WorkerFactory, client: Client) -> None:
    port = free_port()
    start_worker(worker_processes=2, metrics_port=port)
    valid = [
        ClassifyRequest(id=f"m-{i}", text=f"I was charged twice ({i})", labels=["billing", "bug", "praise"])  # type: ignore[arg-type]
        for i in range(470)
    ]
    client.submit_many(valid[:235], queue="realtime")
    client.submit_many(valid[235:], queue="bulk")
    for i in range(20):  # invalid requests: error results
        client.redis.lpush(
            QUEUE_REALTIME, raw_celery_message({"id": f"bad-{i}", "text": "", "labels": ["a"]}, QUEUE_REALTIME)
        )
    for _ in range(10):  # not even JSON: dead letters
        garbage = json.loads(raw_celery_message({}, QUEUE_REALTIME))
        garbage["body"] = base64.b64encode(b"\xff not json").decode()
        client.redis.lpush(QUEUE_REALTIME, json.dumps(garbage))
    deadline = time.monotonic() + 120
    samples = scrape(port)
    while total(samples, "labelq_results_total") < 500 and time.monotonic() < deadline:
        time.sleep(0.5)
        samples = scrape(port)
    outcomes = {dict(labels)["outcome"]: value for labels, value in samples["labelq_results_total"].items()}
    print(
        f"\nmetrics after 500 requests: outcomes {outcomes}; "
        f"batches {total(samples, 'labelq_batch_size_count'):.0f}; "
        f"end-to-end observations {total(samples, 'labelq_end_to_end_seconds_count'):.0f}"
    )
    assert outcomes == {"ok": 470.0, "empty_text": 20.0, "dead_lettered": 10.0}
    assert total(samples, "labelq_requests_received_total") == 500
    assert total(samples, "labelq_end_to_end_seconds_count") == 470  # non-empty latency histograms
    assert total(samples, "labelq_queue_wait_seconds_count") == 470
    assert total(samples, "labelq_end_to_end_seconds_sum") > 0
    assert total(samples, "labelq_batch_size_count") >= 2
    assert {dict(labels)["queue"] for labels in samples["labelq_batch_size_count"]} == {
        "labelq.realtime",
        "labelq.bulk",
    }
    assert total(samples, "labelq_model_load_seconds") > 0


def test_a_label_sets_acceptance_and_scores_are_metrics(start_worker: WorkerFactory, client: Client) -> None:
    """Drift you can see: results of the built-in `moderation` set, by version and label."""
    port = free_port()
    start_worker(metrics_port=port)
    spam = "WINNER!! You have won a 1000 pound prize. Call 09061701461 now to claim"
    texts = [spam] * 3 + ["see you at practice tomorrow", "thanks for the lift home"]
    ids = [client.submit(ClassifyRequest(id=f"d-{i}", text=t, label_set="moderation")) for i, t in enumerate(texts)]
    assert all(client.wait(i, timeout_s=30) for i in ids)
    samples = scrape(port)
    results = samples["labelq_labelset_results_total"]
    assert results == {(("label_set", "moderation"), ("scorer", "head"), ("version", "0")): 5.0}  # 0: built in
    accepted = {dict(labels)["label"]: value for labels, value in samples["labelq_labelset_accepted_total"].items()}
    assert accepted.get("spam") == 3.0 and "hateful" not in accepted
    counts = {dict(labels)["label"]: value for labels, value in samples["labelq_labelset_score_count"].items()}
    assert counts == {"hateful": 5.0, "offensive": 5.0, "spam": 5.0}
