"""The streaming pieces without a broker: envelopes, the batcher, the pipeline (fakeredis + fake classifier)."""

from __future__ import annotations

import hashlib
import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import fakeredis
import pytest

from schemas import ClassificationResult, ErrorCode, ErrorResult, ParsedRequest, parse_result
from schemas.result import single_error
from schemas.transport import DEAD_LETTER_KEY, NOTIFY_KEY, QUEUE_BULK, RESULT_KEY
from worker.constants import RESTORES_KEY
from worker.engine.onnx import run_defaults
from worker.errors import ConfigError
from worker.process.runtime import policies
from worker.settings import load_settings
from worker.stream.batcher import Batcher, BatchPolicy
from worker.stream.messages import Delivery, UndecodableMessage, decode
from worker.stream.publishing import Publication, Publisher, ResultBackend

NO_ID = {"task": "labelq.classify"}  # a task message without an id
GOOD = {"id": "r1", "text": "refund please", "labels": ["refund", "bug"], "reply_to": "results:test"}


def delivery(
    body: Any,
    *,
    headers: dict[str, Any] | None = None,
    content_type: str | None = "application/json",
    queue: str = "labelq.realtime",
) -> Delivery:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return Delivery(
        queue=queue,
        body=raw,
        headers=headers if headers is not None else {"task": "labelq.classify", "id": "m-1"},
        content_type=content_type,
        received_at=time.time(),
    )


def v2(request: Any, task_id: str = "m-1") -> Delivery:
    return delivery([[request], {}, {"callbacks": None}], headers={"task": "labelq.classify", "id": task_id})


def put_back(redis: Any, message: Delivery) -> None:
    """What the sweep does when it puts a message back: count it under the sha1 of its bytes (a delivery built
    here has no ledger digest, so the pipeline counts it under its body's; tests/worker/stream/test_ledger.py
    checks a claim's digest is the sweep's key)."""
    redis.incr(RESTORES_KEY + hashlib.sha1(message.body).hexdigest())


# --- envelopes ---


def test_protocol_2_and_1_and_string_requests_decode_alike() -> None:
    expected = json.loads(json.dumps(GOOD))
    for item in (
        v2(GOOD),
        delivery({"task": "labelq.classify", "id": "m-1", "args": [GOOD], "kwargs": {}}, headers={}),
        v2(json.dumps(GOOD)),
        delivery([[], {"request": GOOD}, {}]),
    ):
        envelope = decode(item)
        request = envelope.request
        assert envelope.message_id == "m-1"
        assert (json.loads(request) if isinstance(request, bytes) else request) == expected
        parsed = envelope.parse(load_settings().limits())
        assert isinstance(parsed, ParsedRequest) and parsed.request.id == "r1"


def test_a_lone_surrogate_is_an_invalid_utf8_error_and_an_emoji_is_text() -> None:
    """A request is validated as decoded from the body, except where the body escapes a surrogate: a lone one
    decodes to no text, so that request is read as bytes and answered `invalid_utf8`; a pair is an emoji."""
    limits = load_settings().limits()
    lone = b'[[{"id": "s1", "text": "caf\\ud800", "labels": ["a"]}], {}, {}]'
    outcome = decode(delivery(lone, headers={"task": "labelq.classify", "id": "s1"})).parse(limits)
    assert isinstance(outcome, ErrorResult) and outcome.code is ErrorCode.INVALID_UTF8
    emoji = json.dumps([[{"id": "s2", "text": "love it \U0001f600", "labels": ["a"]}], {}, {}]).encode()
    assert b"\\ud83d\\ude00" in emoji  # as every Celery client's JSON (ensure_ascii) writes it
    parsed = decode(delivery(emoji, headers={"task": "labelq.classify", "id": "s2"})).parse(limits)
    assert isinstance(parsed, ParsedRequest) and parsed.request.text == "love it \U0001f600"
    plain = decode(v2({"id": "s3", "text": "caf\u00e9", "labels": ["a"]}))
    assert isinstance(plain.request, dict)  # no surrogate escape: validated as decoded


@pytest.mark.parametrize(
    ("item", "reason"),
    [
        (delivery(b"\xff\xfe not json"), "not JSON"),
        (delivery(b"{not json"), "not JSON"),
        (delivery({"hello": 1}, headers={}), "not a Celery task message"),
        (delivery([[GOOD], {}, {}], headers={"task": "other.task", "id": "x"}), "is not 'labelq.classify'"),
        (delivery([[GOOD, GOOD], {}, {}]), "exactly one argument"),
        (delivery({"a": 1}), "[args, kwargs, embed]"),
        (delivery(b"<xml/>", content_type="application/xml"), "application/json only"),
        (delivery(b"[" * 100_000), "not JSON"),
    ],
)
def test_undecodable_messages(item: Delivery, reason: str) -> None:
    with pytest.raises(UndecodableMessage, match=reason.replace("[", r"\[").replace("]", r"\]")):
        decode(item)


# --- batcher ---


def test_batcher_flushes_on_items_pairs_and_age() -> None:
    batcher: Batcher[int] = Batcher(BatchPolicy("q", max_items=3, max_pairs=10, max_wait_s=0.5))
    assert batcher.due_in_s(100.0) is None
    batcher.add(1, pairs=2, enqueued_at_s=100.0)
    assert not batcher.full() and batcher.due_in_s(100.2) == pytest.approx(0.3)
    batcher.add(2, pairs=2, enqueued_at_s=99.9)  # enqueued earlier (by the producer): the oldest counts
    assert batcher.due_in_s(100.2) == pytest.approx(0.2)
    assert batcher.due_in_s(101.0) == 0.0
    batcher.add(3, pairs=1, enqueued_at_s=100.1)
    assert batcher.full()
    assert batcher.take() == [1, 2, 3] and len(batcher) == 0 and batcher.due_in_s(0) is None
    batcher.add(4, pairs=10, enqueued_at_s=0)
    assert batcher.full()  # the pair budget alone


def test_batch_limits_must_fit_the_visibility_timeout_on_the_device() -> None:
    short = load_settings(visibility_timeout_s=30)
    with pytest.raises(ConfigError, match=r"bulk: .* 1024 pairs at 20 pairs/s .* LABELQ_VISIBILITY_TIMEOUT_S 30"):
        policies(short, run_defaults(short, cuda=False))
    # the same settings on CUDA: 4096-pair batches at its 500 pairs/s floor take 8.4 s
    bulk = {p.queue: p for p in policies(short, run_defaults(short, cuda=True))}[QUEUE_BULK]
    assert (bulk.max_items, bulk.max_pairs) == (1024, 4096)
    small = load_settings(visibility_timeout_s=10, bulk_max_pairs=100, realtime_max_pairs=50)
    realtime_too_big = load_settings(visibility_timeout_s=10, bulk_max_pairs=100)
    with pytest.raises(ConfigError, match=r"realtime: .* 256 pairs at 20 pairs/s"):
        policies(realtime_too_big, run_defaults(realtime_too_big, cuda=False))
    assert [p.max_pairs for p in policies(small, run_defaults(small, cuda=False))] == [50, 100]
    # what README's GPU section relies on: the default timeout takes CUDA's batches, not a CPU's of that size
    gpu = load_settings(bulk_max_pairs=4096)
    assert policies(gpu, run_defaults(gpu, cuda=True))
    with pytest.raises(ConfigError, match="LABELQ_BULK_MAX_PAIRS"):
        policies(gpu, run_defaults(gpu, cuda=False))


# --- pipeline ---


def dead_letters(redis: fakeredis.FakeRedis) -> list[dict[str, Any]]:
    return [json.loads(x) for x in redis.lrange(DEAD_LETTER_KEY, 0, -1)]


def test_every_outcome_is_published_and_bad_ones_dead_lettered(setup: Any) -> None:
    pipeline, redis, fake = setup
    past = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
    batch = [
        v2(GOOD, "m-1"),
        v2({**GOOD, "id": "bad", "labels": ["a", "a"]}, "m-2"),
        delivery(b"garbage", headers={"task": "labelq.classify", "id": "m-3"}),
        v2({**GOOD, "id": "late", "deadline": past}, "m-4"),
        v2({**GOOD, "id": "r2", "text": "a bug report"}, "m-5"),
    ]
    pipeline.handle([pipeline.receive(item) for item in batch])
    queue = [parse_result(x) for x in redis.lrange("results:test", 0, -1)]
    assert [(r.id, r.status) for r in queue] == [("bad", "error"), ("late", "error"), ("r1", "ok"), ("r2", "ok")]
    assert 0 < redis.ttl("results:test") <= 60  # the result queue expires with its results (refreshed per batch)
    bad, late = queue[0], queue[1]
    assert isinstance(bad, ErrorResult) and bad.code == ErrorCode.DUPLICATE_LABELS
    assert isinstance(late, ErrorResult) and late.code == ErrorCode.EXPIRED
    assert fake.calls == [2]  # the expired request cost no inference
    for rid in ("r1", "r2", "bad", "late"):
        assert redis.get(RESULT_KEY + rid) is not None and redis.llen(NOTIFY_KEY + rid) == 1
    letters = dead_letters(redis)
    assert [(d["reason"], d["message_id"]) for d in letters] == [("invalid_request", "m-2"), ("undecodable", "m-3")]
    garbage = parse_result(redis.get(RESULT_KEY + "m-3"))  # not a request, but its task id was readable
    assert isinstance(garbage, ErrorResult) and garbage.code == ErrorCode.INVALID_MESSAGE and garbage.id == "m-3"
    assert letters[0]["error"]["code"] == "duplicate_labels" and '"a", "a"' in letters[0]["raw"]
    assert letters[1]["raw"] == "garbage"
    r1 = parse_result(redis.get(RESULT_KEY + "r1"))
    assert isinstance(r1, ClassificationResult) and r1.timings.queue_ms is not None and r1.top == "refund"


def test_one_batch_writes_each_result_to_its_queue_in_order_and_an_id_less_error_to_its_queue_only(
    setup: Any,
) -> None:
    """The batch's results go out in one script call: by id (with its notify element), and onto each request's
    own result queue in the order the batch publishes them (its errors, then its answers in batch order); an
    error for a request whose id is unreadable reaches its queue only."""
    pipeline, redis, _ = setup
    batch = [
        v2({**GOOD, "id": "a1", "reply_to": "q:a"}, "m-a1"),
        v2({**GOOD, "id": "b1", "reply_to": "q:b"}, "m-b1"),
        delivery([[{"id": "bad id!", "text": "x", "labels": ["a"], "reply_to": "q:a"}], {}, {}], headers=NO_ID),
        v2({**GOOD, "id": "a2", "reply_to": "q:a"}, "m-a2"),
        v2({**GOOD, "id": "n1", "reply_to": None}, "m-n1"),
    ]
    put_back(redis, batch[0])  # m-a1 was put back once by the sweep: its counter goes once it is answered
    redis.set(RESTORES_KEY + "another", 2)  # another message's is left alone
    pipeline.handle([pipeline.receive(item) for item in batch])
    on_a = [parse_result(x) for x in redis.lrange("q:a", 0, -1)]
    assert [(r.id, r.status) for r in on_a] == [(None, "error"), ("a1", "ok"), ("a2", "ok")]
    assert [parse_result(x).id for x in redis.lrange("q:b", 0, -1)] == ["b1"]
    assert 0 < redis.ttl("q:a") <= 60 and 0 < redis.ttl("q:b") <= 60
    for rid in ("a1", "b1", "a2", "n1"):
        assert redis.get(RESULT_KEY + rid) is not None and redis.llen(NOTIFY_KEY + rid) == 1
        assert 0 < redis.ttl(RESULT_KEY + rid) <= 60 and 0 < redis.ttl(NOTIFY_KEY + rid) <= 60
    assert not redis.keys(RESULT_KEY + "bad*")
    assert redis.keys(RESTORES_KEY + "*") == [(RESTORES_KEY + "another").encode()]


def test_the_publisher_keeps_the_order_it_is_given_with_or_without_an_id(setup: Any) -> None:
    _, redis, _ = setup
    publisher = Publisher(redis, result_ttl_s=60)
    outcomes = [single_error(rid, ErrorCode.EXPIRED, "late") for rid in ("o1", None, "o2")]
    publisher.publish([Publication(outcome, "q:o") for outcome in outcomes], [], [])
    assert [parse_result(x).id for x in redis.lrange("q:o", 0, -1)] == ["o1", None, "o2"]
    assert redis.get(RESULT_KEY + "o1") and redis.get(RESULT_KEY + "o2") and 0 < redis.ttl("q:o") <= 60


def test_the_batchers_pair_budget_counts_what_the_model_will_run(setup: Any) -> None:
    pipeline, _, _ = setup  # the fake is an embedding model: one text embedding whatever the label count
    assert pipeline.receive(v2({**GOOD, "labels": ["a", "b", "c"]})).pairs == 1
    assert pipeline.receive(v2({**GOOD, "model": "no/such-model"})).pairs == 2  # unknown: its labels
    assert pipeline.receive(delivery(b"not json")).pairs == 0


def test_a_message_delivered_too_often_is_dead_lettered(setup: Any) -> None:
    pipeline, redis, fake = setup
    message = v2(GOOD, "m-9")
    for _ in range(2):  # max_deliveries = 2: put back twice, this is its third delivery
        put_back(redis, message)
    pipeline.handle([pipeline.receive(message)])
    assert fake.calls == [] and redis.get(RESULT_KEY + "r1") is None
    assert [d["reason"] for d in dead_letters(redis)] == ["too_many_deliveries"]


def test_a_counter_is_cleared_once_the_message_is_done(setup: Any) -> None:
    pipeline, redis, fake = setup
    message = v2(GOOD, "m-7")
    put_back(redis, message)  # its second delivery: within max_deliveries = 2
    pipeline.handle([pipeline.receive(message)])
    assert fake.calls == [1] and redis.get(RESULT_KEY + "r1") and not redis.keys(RESTORES_KEY + "*")


def test_error_for_an_invalid_request_reaches_its_reply_queue_only_when_safe(setup: Any) -> None:
    pipeline, redis, _ = setup
    pipeline.handle(
        [
            pipeline.receive(v2({"text": "", "labels": ["a"], "reply_to": "labelq.realtime", "id": "z"})),
            pipeline.receive(v2({"text": "", "labels": ["a"], "reply_to": "ok:queue", "id": "y"})),
        ]
    )
    assert redis.llen("labelq.realtime") == 0  # never pushed onto a labelq queue
    assert [parse_result(x).id for x in redis.lrange("ok:queue", 0, -1)] == ["y"]
    assert redis.get(RESULT_KEY + "z") is not None


def test_a_redis_failure_raises_so_nothing_is_acked(setup: Any) -> None:
    pipeline, redis, _ = setup
    received = pipeline.receive(v2(GOOD))
    redis.connection_pool.connection_kwargs["server"].connected = False  # fakeredis: the server is down
    with pytest.raises(Exception, match="onnect"):
        pipeline.handle([received])


def test_worker_processes_split_the_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    from worker.process.launcher import child_environment

    monkeypatch.delenv("LABELQ_INTRA_OP_THREADS", raising=False)
    monkeypatch.setattr("os.cpu_count", lambda: 8)
    assert child_environment(2)["LABELQ_INTRA_OP_THREADS"] == "4"
    assert child_environment(16)["LABELQ_INTRA_OP_THREADS"] == "1"
    monkeypatch.setenv("LABELQ_INTRA_OP_THREADS", "3")
    assert child_environment(2)["LABELQ_INTRA_OP_THREADS"] == "3"  # an explicit setting wins


# --- logs ---


def _json_lines(capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]


@pytest.mark.parametrize("log_texts", [False, True])
def test_json_logs_carry_ids_and_timings_and_never_texts_unless_asked(
    setup: Any, capsys: pytest.CaptureFixture[str], log_texts: bool
) -> None:
    import logging

    from worker.logs import configure_logging

    pipeline, _, _ = setup
    pipeline.log_texts = log_texts
    configure_logging(load_settings(log_format="json"), "DEBUG")
    try:
        secret_text = "my card number is 4111 1111"
        pipeline.handle(
            [
                pipeline.receive(v2({**GOOD, "text": secret_text}, "m-1")),
                pipeline.receive(v2({**GOOD, "id": "bad", "labels": []}, "m-2")),
            ]
        )
    finally:
        logging.getLogger().handlers.clear()
    lines = _json_lines(capsys)
    (batch,) = [line for line in lines if "batch_id" in line and "messages" in line]
    assert (batch["messages"], batch["classified"], batch["errors"], batch["dead_letters"]) == (2, 1, 1, 1)
    assert batch["level"] == "INFO" and batch["batch_ms"] >= 0
    requests = {line["request_id"]: line for line in lines if "request_id" in line}
    assert requests["r1"]["status"] == "ok" and requests["r1"]["batch_id"] == batch["batch_id"]
    assert requests["r1"]["inference_ms"] >= 0 and requests["bad"]["code"] == "no_labels"
    logged_text = any(secret_text in json.dumps(line) for line in lines)
    assert logged_text == log_texts


def test_an_unreadable_or_missing_label_set_is_an_error_result_not_a_crash(setup: Any) -> None:
    from worker.stream.labelsets import LABELSET_KEY, LabelSetStore

    pipeline, redis, fake = setup
    pipeline.labelsets = LabelSetStore(redis)
    redis.set(LABELSET_KEY + "broken", b"{not json")
    batch = [
        pipeline.receive(
            v2({"id": f"ls-{name}", "text": "x", "label_set": name, "reply_to": "results:test"}, f"m-{name}")
        )
        for name in ("broken", "absent")
    ]
    pipeline.handle(batch)
    results = [parse_result(x) for x in redis.lrange("results:test", 0, -1)]
    assert [(r.id, r.code) for r in results] == [
        ("ls-broken", ErrorCode.INVALID_LABEL_SET),  # type: ignore[union-attr]
        ("ls-absent", ErrorCode.UNKNOWN_LABEL_SET),
    ]
    assert fake.calls == []


def test_label_sets_are_parsed_once_per_version(setup: Any) -> None:
    from worker.stream.labelsets import LABELSET_KEY, LabelSetStore

    _, redis, _ = setup
    store = LabelSetStore(redis)
    redis.set(LABELSET_KEY + "s", json.dumps({"version": 3, "set": {"name": "s", "labels": ["a", "b"]}}))
    first = store.latest(["s"])["s"]
    assert store.latest(["s"])["s"] is first and first.version == 3  # cached: the same parsed object
    redis.set(LABELSET_KEY + "s", json.dumps({"version": 4, "set": {"name": "s", "labels": ["c"]}}))
    assert [label.name for label in store.latest(["s"])["s"].labels] == ["c"]  # a new version is seen at once


def test_a_large_batch_is_written_in_chunks_with_realtime_work_let_through_between(setup: Any) -> None:
    """300 results go out in three script calls (Redis serves other clients between them) and the gate is passed
    between chunks; every result lands once, by id and on its queue, and every delivery counter is cleared."""
    from worker.stream.publishing import SERIALISE_CHUNK

    pipeline, redis, _ = setup
    count = 2 * SERIALISE_CHUNK + 44
    batch = [
        pipeline.receive(
            v2({"id": f"c-{i}", "text": "a refund", "labels": ["refund", "bug"], "reply_to": "r:c"}, f"c-{i}")
        )
        for i in range(count)
    ]
    put_back(redis, batch[0].delivery)
    put_back(redis, batch[-1].delivery)  # in the last chunk's write
    passes: list[int] = []
    with pipeline.engine.gate.open(lambda: passes.append(redis.llen("r:c"))):
        pipeline.handle(batch)
    ids = [parse_result(raw).id for raw in redis.lrange("r:c", 0, -1)]
    assert ids == [f"c-{i}" for i in range(count)]
    assert all(redis.get(RESULT_KEY + f"c-{i}") for i in range(count))
    assert not redis.keys(RESTORES_KEY + "*")
    assert len(passes) >= 3  # before the batch, and between its three chunks (and its model's runs, none here)


def test_a_batch_is_written_without_asking_redis_for_its_scripts_first(redis_url: str) -> None:
    """Found profiling realtime work between runs: redis-py's Script on a pipeline sends SCRIPT EXISTS before every
    execute, one more round trip for each batch (and for each chunk of a bulk batch). On a real Redis: none is
    sent, and a Redis whose script cache was flushed (a restart) is written to all the same."""
    import redis as redis_lib

    client = redis_lib.Redis.from_url(redis_url)
    publisher = Publisher(client, result_ttl_s=60)

    def script_exists_calls() -> int:
        return int(client.info("commandstats").get("cmdstat_script|exists", {}).get("calls", 0))

    def publish(rid: str) -> None:
        answer = single_error(rid, ErrorCode.EMPTY_TEXT, "empty")
        publisher.publish([Publication(answer, reply_queue="r:s")], [], [rid])

    before = script_exists_calls()
    publish("s-1")
    client.script_flush()
    publish("s-2")
    assert script_exists_calls() == before
    assert [parse_result(raw).id for raw in client.lrange("r:s", 0, -1)] == ["s-1", "s-2"]
    client.close()


@pytest.mark.parametrize("copies", [3, 6])
def test_copies_of_one_message_in_a_batch_are_counted_once_and_each_answered(setup: Any, copies: int) -> None:
    pipeline, redis, _ = setup  # max_deliveries = 2: copies sent together are not redeliveries
    put_back(redis, v2(GOOD, "dup"))  # each copy's second delivery, once
    pipeline.handle([pipeline.receive(v2(GOOD, "dup")) for _ in range(copies)])
    assert redis.llen("results:test") == copies and dead_letters(redis) == []
    assert not redis.keys(RESTORES_KEY + "*")  # cleared once the batch is done


def _iso(seconds_from_now: float) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds_from_now)).isoformat()


@pytest.mark.parametrize(
    ("deadline_s", "expires_s", "answered"),
    [(None, -5, False), (60, -5, False), (-5, 60, False), (None, 60, True), (60, 120, True)],
)
@pytest.mark.parametrize("protocol", [1, 2])
def test_celerys_expires_is_a_deadline_the_earlier_of_the_two_applies(
    setup: Any, protocol: int, deadline_s: float | None, expires_s: float, answered: bool
) -> None:
    pipeline, redis, fake = setup
    request = {**GOOD, **({"deadline": _iso(deadline_s)} if deadline_s is not None else {})}
    if protocol == 2:
        item = delivery(
            [[request], {}, {}], headers={"task": "labelq.classify", "id": "m-1", "expires": _iso(expires_s)}
        )
    else:
        body = {"task": "labelq.classify", "id": "m-1", "args": [request], "kwargs": {}, "expires": _iso(expires_s)}
        item = delivery(body, headers={})
    pipeline.handle([pipeline.receive(item)])
    result = parse_result(redis.get(RESULT_KEY + "r1"))
    if answered:
        assert isinstance(result, ClassificationResult) and fake.calls
    else:
        assert isinstance(result, ErrorResult) and result.code == ErrorCode.EXPIRED and fake.calls == []


@pytest.mark.parametrize("expires", ["tomorrow", "", 12, None, "2026-13-45T99:00:00"])
def test_an_unreadable_expires_is_ignored_and_the_task_answered(setup: Any, expires: Any) -> None:
    pipeline, redis, _ = setup
    headers = {"task": "labelq.classify", "id": "m-1", "expires": expires}
    pipeline.handle([pipeline.receive(delivery([[GOOD], {}, {}], headers=headers))])
    assert isinstance(parse_result(redis.get(RESULT_KEY + "r1")), ClassificationResult)


def test_an_expired_task_fails_in_celerys_result_backend(setup: Any) -> None:
    pipeline, redis, _ = setup
    pipeline.publisher.backend = ResultBackend()
    headers = {"task": "labelq.classify", "id": "m-1", "expires": "2020-01-01T00:00:00"}  # naive: UTC, as Celery
    pipeline.handle([pipeline.receive(delivery([[GOOD], {}, {}], headers=headers))])
    meta = json.loads(redis.get("celery-task-meta-m-1"))
    assert meta["status"] == "FAILURE" and meta["result"]["exc_type"] == "Expired"
