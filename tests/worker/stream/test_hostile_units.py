"""Hostile messages against the stream's pieces: envelope bytes, task ids, reply queues and delivery counts that
a producer anywhere on the network could send (fakeredis, except the claim, which runs on a real Redis)."""

from __future__ import annotations

import base64
import bz2
import json
import lzma
import re
import zlib
from typing import Any

import fakeredis
import pytest
import redis as redis_lib

from schemas import ClassificationResult, ErrorCode, ErrorResult, Label, RequestLimits, parse_request, parse_result
from schemas.result import single_error
from schemas.transport import DEAD_LETTER_KEY, RESULT_KEY
from tests.worker.stream.test_stream_units import GOOD, delivery, v2
from tests.worker.test_streaming import raw_celery_message
from worker.constants import MESSAGE_MAX_BYTES, RESTORES_KEY
from worker.engine.engine import Engine
from worker.engine.fake import FAKE_MODEL, FakeClassifier
from worker.settings import Settings, load_settings
from worker.stream import pipeline as pipeline_module
from worker.stream import publishing
from worker.stream.envelopes import unwrap
from worker.stream.labelsets import LABELSET_KEY, LabelSet, LabelSetStore
from worker.stream.messages import Delivery, UndecodableMessage, decode
from worker.stream.pipeline import Pipeline
from worker.stream.publishing import Publisher, ResultBackend
from worker.stream.redis_queue import INFLIGHT_INDEX_KEY, INFLIGHT_KEY, ReliableQueue


def dead_letters(redis: fakeredis.FakeRedis) -> list[dict[str, Any]]:
    return [json.loads(x) for x in redis.lrange(DEAD_LETTER_KEY, 0, -1)]


# --- claiming ---


@pytest.mark.parametrize("tag", [b"\xff\xfe", b"tag with spaces", b"x" * 300, b"\xed\xa0\x80", b"", b"plain-uuid-tag"])
def test_a_claim_is_recorded_under_labelqs_own_tag_whatever_the_producer_sent(redis_url: str, tag: bytes) -> None:
    client = redis_lib.Redis.from_url(redis_url)
    envelope = raw_celery_message({"id": "t1", "text": "hi", "labels": ["a", "b"]}, "q").encode()
    marker = b'"delivery_tag": "'
    start = envelope.index(marker) + len(marker)
    end = envelope.index(b'"', start)
    client.lpush("q", envelope[:start] + tag + envelope[end:])
    queue = ReliableQueue(client)
    [claimed] = queue.claim("q", 10)
    assert re.fullmatch(r"\d+\.\d+", claimed.tag) and claimed.tag.encode() != tag  # <claim>.<n>, labelq's own
    assert client.hexists(INFLIGHT_KEY, claimed.tag) and client.zscore(INFLIGHT_INDEX_KEY, claimed.tag)
    assert not client.exists("unacked", "unacked_index")  # kombu's shared structures are other apps'
    queue.ack([claimed.tag])
    assert client.hlen(INFLIGHT_KEY) == 0 and client.zcard(INFLIGHT_INDEX_KEY) == 0


# --- task ids ---


CELERY_IDS = ["order 42", "tâche-1", "x" * 250, "注文 ✓ 7", "y" * 1_024]
UNREADABLE_IDS = ["\ud800", "a\x00b", "tab\there", "z" * 1_025, "", True, 1.5, ["m"], {"a": 1}]


@pytest.mark.parametrize("task_id", CELERY_IDS)
def test_any_task_id_a_celery_client_sends_is_answered_under_it(task_id: str) -> None:
    redis = fakeredis.FakeRedis(server=fakeredis.FakeServer())
    settings = load_settings(model=FAKE_MODEL)
    engine = Engine(settings, classifiers={FAKE_MODEL: FakeClassifier()})
    publisher = Publisher(redis, result_ttl_s=60, backend=ResultBackend())
    pipeline = Pipeline(engine, publisher, limits=settings.limits(), max_deliveries=2)
    request = {"text": "refund please", "labels": ["refund", "bug"]}  # no id: Celery's task id is the handle
    pipeline.handle(
        [pipeline.receive(delivery([[request], {}, {}], headers={"task": "labelq.classify", "id": task_id}))]
    )
    meta = json.loads(redis.get("celery-task-meta-" + task_id))
    assert meta["status"] == "SUCCESS" and meta["task_id"] == task_id and meta["result"]["top"] == "refund"
    assert dead_letters(redis) == [] and redis.keys(RESTORES_KEY + "*") == []


@pytest.mark.parametrize("task_id", UNREADABLE_IDS)
def test_a_task_id_no_celery_client_sends_is_dead_lettered_and_logged(
    setup: Any, task_id: Any, caplog: pytest.LogCaptureFixture
) -> None:
    pipeline, redis, _ = setup
    headers = {"task": "labelq.classify", "id": task_id}
    with pytest.raises(UndecodableMessage, match="task id"):
        decode(delivery([[GOOD], {}, {}], headers=headers))
    batch = [delivery([[GOOD], {}, {}], headers=headers), v2({**GOOD, "id": "mate"}, "m-2")]
    pipeline.handle([pipeline.receive(item) for item in batch])  # a lone surrogate does not fail the batch
    refused = parse_result(redis.get(RESULT_KEY + "r1"))  # its request's own id hears why
    assert (
        isinstance(refused, ErrorResult) and refused.code == ErrorCode.INVALID_MESSAGE and "task id" in refused.message
    )
    assert isinstance(parse_result(redis.get(RESULT_KEY + "mate")), ClassificationResult)
    [letter] = dead_letters(redis)
    assert letter["reason"] == "undecodable" and "task id" in letter["detail"]
    assert any("task id" in r.getMessage() and r.levelname == "WARNING" for r in caplog.records)


def test_a_protocol_1_task_id_is_held_to_the_same_rule() -> None:
    body = {"task": "labelq.classify", "id": "order 42", "args": [GOOD], "kwargs": {}}
    assert decode(delivery(body, headers={})).message_id == "order 42"
    with pytest.raises(UndecodableMessage, match="task id"):
        decode(delivery({**body, "id": "bad\nid"}, headers={}))


@pytest.mark.parametrize(
    ("request_id", "code"),
    [("not an id!", ErrorCode.INVALID_ID), ("\ud800", ErrorCode.INVALID_UTF8), ("abc\n", ErrorCode.INVALID_ID)],
)
def test_an_unreadable_request_id_is_answered_under_the_task_id(setup: Any, request_id: str, code: ErrorCode) -> None:
    pipeline, redis, _ = setup
    pipeline.handle([pipeline.receive(v2({**GOOD, "id": request_id}, "task-7"))])
    result = parse_result(redis.get(RESULT_KEY + "task-7"))
    assert isinstance(result, ErrorResult) and result.code == code and result.id == "task-7"


@pytest.mark.parametrize("body", [[[GOOD], None, None], [[GOOD], None], [[GOOD]], [[GOOD], {}]])
def test_kwargs_null_or_absent_is_read_as_no_kwargs(body: list[Any]) -> None:
    envelope = decode(delivery(body))
    assert envelope.message_id == "m-1" and envelope.parse(RequestLimits()).request.id == "r1"  # type: ignore[union-attr]


def test_a_message_that_is_no_labelq_task_is_answered_under_its_task_id(setup: Any) -> None:
    pipeline, redis, _ = setup
    other = delivery([[GOOD], {}, {}], headers={"task": "someone.else", "id": "t-9"})
    pipeline.handle([pipeline.receive(other)])
    result = parse_result(redis.get(RESULT_KEY + "t-9"))
    assert isinstance(result, ErrorResult) and result.code == ErrorCode.INVALID_MESSAGE
    assert [d["reason"] for d in dead_letters(redis)] == ["undecodable"]


def test_receive_never_raises(setup: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    pipeline, redis, _ = setup

    def broken(_: object) -> None:
        raise KeyError("a fault no rule foresaw")

    monkeypatch.setattr(pipeline_module, "decode", broken)
    received = pipeline.receive(v2(GOOD))
    assert received.undecodable == "unreadable message: KeyError"
    pipeline.handle([received])
    assert [d["reason"] for d in dead_letters(redis)] == ["undecodable"]


# --- reply queues ---

RESERVED = [
    "unacked",
    "unacked_mutex",
    "UNACKED_INDEX",
    "celery",
    "celery-task-meta-abc",
    "celeryev.x",
    "node1.reply.celery.pidbox",
    "labelq.bulk",
    "LabelQ:result:x",
    "_kombu.binding.celery",
]


@pytest.mark.parametrize("name", RESERVED)
def test_a_reply_queue_may_not_name_a_key_the_broker_uses(name: str) -> None:
    request = {**GOOD, "reply_to": name}
    outcome = parse_request(json.dumps(request))
    assert isinstance(outcome, ErrorResult) and outcome.code == ErrorCode.INVALID_REPLY_TO


def test_a_reply_queue_with_a_trailing_newline_is_refused_and_nothing_is_written(setup: Any) -> None:
    assert parse_request(json.dumps({**GOOD, "reply_to": "fuzzq:nl\n"})).code == ErrorCode.INVALID_REPLY_TO  # type: ignore[union-attr]
    pipeline, redis, _ = setup
    for request in ({**GOOD, "reply_to": "fuzzq:nl\n"}, {**GOOD, "text": "", "reply_to": "fuzzq:nl\n"}):
        pipeline.handle([pipeline.receive(v2(request))])
    assert isinstance(parse_result(redis.get(RESULT_KEY + "r1")), ErrorResult)
    assert not any(b"\n" in key for key in redis.keys("*"))


def test_reply_queues_can_be_held_to_prefixes() -> None:
    limits = RequestLimits(reply_queue_prefixes=("tenant-a:", "tenant-b:"))
    assert not isinstance(parse_request(json.dumps({**GOOD, "reply_to": "tenant-a:out"}), limits), ErrorResult)
    refused = parse_request(json.dumps({**GOOD, "reply_to": "tenant-c:out"}), limits)
    assert isinstance(refused, ErrorResult) and "allowed prefixes" in refused.message


def test_an_invalid_request_is_not_answered_on_a_reserved_queue(setup: Any) -> None:
    pipeline, redis, _ = setup
    pipeline.handle([pipeline.receive(v2({"id": "z", "text": "", "labels": ["a"], "reply_to": "unacked_mutex"}))])
    assert not redis.exists("unacked_mutex")
    assert isinstance(parse_result(redis.get(RESULT_KEY + "z")), ErrorResult)


def test_a_reply_queue_of_another_type_fails_its_request_alone(setup: Any) -> None:
    pipeline, redis, fake = setup
    redis.hset("someones:hash", "field", "value")
    batch = [
        v2({**GOOD, "id": "bad", "reply_to": "someones:hash"}, "m-1"),
        v2({**GOOD, "id": "good"}, "m-2"),
    ]
    pipeline.handle([pipeline.receive(item) for item in batch])
    assert redis.hgetall("someones:hash") == {b"field": b"value"}
    refused = parse_result(redis.get(RESULT_KEY + "bad"))
    assert isinstance(refused, ErrorResult) and refused.code == ErrorCode.INVALID_REPLY_TO
    assert [parse_result(x).id for x in redis.lrange("results:test", 0, -1)] == ["good"]
    assert isinstance(parse_result(redis.get(RESULT_KEY + "good")), ClassificationResult)
    assert [d["reason"] for d in dead_letters(redis)] == ["reply_queue_refused"]
    assert fake.calls == [1]  # the refused request cost no inference


# --- what a request may cost ---


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"hypothesis_template": "{:>100000000}"}, ErrorCode.INVALID_TEMPLATE),
        ({"hypothesis_template": "It is {:d}."}, ErrorCode.INVALID_TEMPLATE),
        ({"hypothesis_template": "{0} and {}"}, ErrorCode.INVALID_TEMPLATE),
        ({"hypothesis_template": "x" * 1001 + "{}"}, ErrorCode.INVALID_TEMPLATE),
        ({"labels": [{"name": "a", "description": "d" * 1001}]}, ErrorCode.LABEL_TOO_LONG),
        ({"labels": [{"name": "a", "hypothesis": "h" * 1001}]}, ErrorCode.LABEL_TOO_LONG),
        ({"labels": [{"name": "a", "examples": ["e" * 1001]}]}, ErrorCode.LABEL_TOO_LONG),
    ],
)
def test_every_part_of_a_request_has_a_size_limit(change: dict[str, Any], code: ErrorCode) -> None:
    outcome = parse_request(json.dumps({**GOOD, **change}))
    assert isinstance(outcome, ErrorResult) and outcome.code == code


def test_a_template_is_plain_substitution() -> None:
    parsed = parse_request(json.dumps({**GOOD, "hypothesis_template": "This is about {}."}))
    assert not isinstance(parsed, ErrorResult)
    label = parsed.request.labels[0]
    assert label.hypothesis_for("Text {} here") == "Text refund here"
    assert label.hypothesis_for(parsed.request.hypothesis_template or "") == "This is about refund."


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity"])
def test_results_are_strict_json_so_metadata_may_not_be_nan(setup: Any, number: str) -> None:
    pipeline, redis, _ = setup
    body = b'[[{"id": "n1", "text": "x", "labels": ["a"], "metadata": {"v": %s}}], {}, {}]' % number.encode()
    pipeline.handle([pipeline.receive(delivery(body))])
    published = redis.get(RESULT_KEY + "n1")
    assert number.encode() not in published
    result = json.loads(published, parse_constant=lambda token: pytest.fail(f"{token} in a result"))
    assert result["code"] == "wrong_type" and result["field"] == "metadata"


def test_a_request_costlier_than_a_batch_is_refused_before_any_work(settings: Settings) -> None:
    """An NLI model runs one pair per label: 4 labels cost 4, over a batch budget of 3 on realtime."""
    engine = Engine(settings.model_copy(update={"model": "test--nli-2class"}))
    redis = fakeredis.FakeRedis(server=fakeredis.FakeServer())
    pipeline = Pipeline(
        engine,
        Publisher(redis, result_ttl_s=60),
        limits=settings.limits(),
        max_deliveries=2,
        budgets={"labelq.realtime": 3, "labelq.bulk": 10},
    )
    labels = ["a", "b", "c", "d"]
    received = pipeline.receive(v2({**GOOD, "labels": labels}))
    assert received.error is not None and received.error.code == ErrorCode.REQUEST_TOO_COSTLY
    assert "at most 3" in received.error.message and received.pairs == 4
    assert pipeline.receive(v2({**GOOD, "labels": labels[:3]})).error is None
    assert pipeline.receive(delivery([[{**GOOD, "labels": labels}], {}, {}], queue="labelq.bulk")).error is None
    pipeline.handle([received])
    refused = parse_result(redis.get(RESULT_KEY + "r1"))
    assert isinstance(refused, ErrorResult) and refused.code == ErrorCode.REQUEST_TOO_COSTLY
    assert [d["reason"] for d in dead_letters(redis)] == ["request_too_costly"]


def test_a_request_naming_a_label_set_is_costed_with_its_labels_before_any_work(settings: Settings) -> None:
    """Before: a request naming a stored set of 100 labels x 64 examples counted one sequence at receive and ran
    558 s of model work; the same labels inline were refused at once."""
    engine = Engine(settings.model_copy(update={"model": "test--nli-2class"}))
    redis = fakeredis.FakeRedis(server=fakeredis.FakeServer())
    store = LabelSetStore(redis)
    store.put(LabelSet(name="wide", labels=tuple(Label(name=f"l{i}") for i in range(4))))
    store.put(LabelSet(name="narrow", labels=(Label(name="a"), Label(name="b"))))
    pipeline = Pipeline(
        engine,
        Publisher(redis, result_ttl_s=60),
        limits=settings.limits(),
        max_deliveries=2,
        labelsets=store,
        budgets={"labelq.realtime": 3},
    )
    named = {key: value for key, value in GOOD.items() if key != "labels"}
    wide, narrow = pipeline.receive_many([v2({**named, "label_set": "wide"}), v2({**named, "label_set": "narrow"})])
    inline = pipeline.receive(v2({**GOOD, "labels": [f"l{i}" for i in range(4)]}))
    assert wide.pairs == inline.pairs == 4 and narrow.pairs == 2
    assert wide.error is not None and wide.error.code == inline.error.code == ErrorCode.REQUEST_TOO_COSTLY  # type: ignore[union-attr]
    assert "label set 'wide'" in wide.error.message and narrow.error is None


@pytest.mark.parametrize(
    "stored",
    [b"[" * 100_000 + b"]" * 100_000, b'{"version": 1, "set": ' + b"[" * 50_000 + b"]" * 50_000 + b"}", b"\xff"],
)
def test_a_corrupt_stored_label_set_is_an_error_result_at_once(settings: Settings, stored: bytes) -> None:
    """Before: deeply nested JSON under a label set's key raised before the delivery count was checked, so the
    message came back forever (10 deliveries, limit 5, never answered)."""
    redis = fakeredis.FakeRedis(server=fakeredis.FakeServer())
    redis.set(LABELSET_KEY + "deep", stored)
    pipeline = Pipeline(
        Engine(settings.model_copy(update={"model": FAKE_MODEL})),
        Publisher(redis, result_ttl_s=60),
        limits=settings.limits(),
        max_deliveries=2,
        labelsets=LabelSetStore(redis),
    )
    named = {key: value for key, value in GOOD.items() if key != "labels"}
    received = pipeline.receive(v2({**named, "label_set": "deep"}))
    assert received.error is not None and received.error.code == ErrorCode.INVALID_LABEL_SET
    pipeline.handle([received])
    refused = parse_result(redis.get(RESULT_KEY + "r1"))
    assert isinstance(refused, ErrorResult) and refused.code == ErrorCode.INVALID_LABEL_SET


def callback(**options: Any) -> dict[str, Any]:
    return {"task": "router.next", "args": [], "kwargs": {}, "options": options, "subtask_type": None}


@pytest.mark.parametrize(
    "embed",
    [
        {"callbacks": [callback(queue="unacked_mutex")]},
        {"errbacks": [callback(routing_key="labelq:dead")]},
        {"chain": [callback(queue={"name": "unacked"})]},
        {"chord": callback(queue="celery-task-meta-x")},
        {"callbacks": [callback(exchange="fanout-everything")]},
        {"callbacks": [callback(queue=["not", "a", "name"])]},
    ],
)
def test_a_callback_routed_to_a_key_labelq_may_not_write_refuses_the_message(setup: Any, embed: dict[str, Any]) -> None:
    pipeline, redis, fake = setup
    pipeline.handle([pipeline.receive(delivery([[GOOD], {}, embed], headers={"task": "labelq.classify", "id": "t-5"}))])
    result = parse_result(redis.get(RESULT_KEY + "t-5"))
    assert isinstance(result, ErrorResult) and result.code == ErrorCode.INVALID_MESSAGE and "callback" in result.message
    assert fake.calls == [] and [d["reason"] for d in dead_letters(redis)] == ["undecodable"]


@pytest.mark.parametrize("options", [{}, {"queue": "router"}, {"queue": "celery"}, {"routing_key": "tenant-a:tasks"}])
def test_a_callback_to_a_plain_queue_is_kept(options: dict[str, Any]) -> None:
    envelope = decode(delivery([[GOOD], {}, {"callbacks": [callback(**options)]}]))
    assert envelope.canvas.callbacks and envelope.canvas.followups


def test_dead_letters_are_bounded_in_size_and_number(setup: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    pipeline, redis, _ = setup
    monkeypatch.setattr(publishing, "DEAD_LETTERS_MAX", 3)
    huge = {**GOOD, "text": "y" * 1_000_000}  # rejected (text_too_long) and dead-lettered
    for i in range(5):
        pipeline.handle([pipeline.receive(v2({**huge, "id": f"h{i}"}, f"m-{i}"))])
    letters = dead_letters(redis)
    assert [d["message_id"] for d in letters] == ["m-2", "m-3", "m-4"]  # the newest three
    assert all(d["raw_truncated"] and d["raw_bytes"] > 1_000_000 and len(d["raw"]) <= 32_768 for d in letters)
    assert sum(len(x) for x in redis.lrange(DEAD_LETTER_KEY, 0, -1)) < 200_000


# --- bodies that are not UTF-8 ---


def plain_envelope(body: str, task_id: str = "surr-1", **extra: Any) -> bytes:
    """A kombu envelope whose body is not base64: JSON text inside the envelope's JSON."""
    envelope = {
        "body": body,
        "content-type": "application/json",
        "content-encoding": "utf-8",
        "headers": {"task": "labelq.classify", "id": task_id},
        "properties": {"delivery_tag": "tag-" + task_id},
        **extra,
    }
    return json.dumps(envelope).encode()


def claimed_delivery(raw: bytes, queue: str = "labelq.realtime") -> Delivery:
    envelope = unwrap(raw)
    return Delivery(queue, envelope.body, envelope.headers, envelope.content_type, 0.0, envelope.problem)


SURROGATE_REQUESTS = [
    {"text": "hello", "labels": ["x", "y"], "id": "surr-1", "metadata": {"k": "\ud800"}},
    {"text": "hel\udfffo", "labels": ["x", "y"]},
    {"text": "hello", "labels": ["x", "\udc80"]},
]


@pytest.mark.parametrize("request_", SURROGATE_REQUESTS)
def test_a_lone_surrogate_in_a_plain_body_fails_its_request_alone(setup: Any, request_: dict[str, Any]) -> None:
    pipeline, redis, _ = setup
    body = json.dumps([[request_], {}, {}], ensure_ascii=False)  # the envelope's JSON escapes the surrogate
    batch = [claimed_delivery(plain_envelope(body)), v2({**GOOD, "id": "mate"}, "m-2")]
    pipeline.handle([pipeline.receive(item) for item in batch])
    culprit = parse_result(redis.get(RESULT_KEY + "surr-1"))
    assert isinstance(culprit, ErrorResult) and culprit.code == ErrorCode.INVALID_UTF8
    assert isinstance(parse_result(redis.get(RESULT_KEY + "mate")), ClassificationResult)
    assert [d["reason"] for d in dead_letters(redis)] == ["invalid_request"]


def test_invalid_utf8_bytes_in_a_plain_body_fail_their_request_alone(setup: Any) -> None:
    pipeline, redis, _ = setup
    raw = plain_envelope(json.dumps([[{"text": "caf@", "labels": ["x", "y"]}], {}, {}])).replace(b"caf@", b"caf\xe9")
    batch = [claimed_delivery(raw), v2({**GOOD, "id": "mate"}, "m-2")]
    pipeline.handle([pipeline.receive(item) for item in batch])
    culprit = parse_result(redis.get(RESULT_KEY + "surr-1"))
    assert isinstance(culprit, ErrorResult) and culprit.code == ErrorCode.INVALID_UTF8
    assert isinstance(parse_result(redis.get(RESULT_KEY + "mate")), ClassificationResult)


def test_a_result_that_cannot_be_serialised_writes_none_of_its_batch(setup: Any) -> None:
    """A bulk batch is written a chunk at a time; a result that fails to serialise past the first chunk must not
    leave earlier chunks written, or the batch-mates are answered twice when the batch is retried one by one."""
    _, redis, _ = setup
    publications = [
        publishing.Publication(single_error(f"p{i}", ErrorCode.INTERNAL_ERROR, "x" if i != 200 else "\ud800"))
        for i in range(300)
    ]
    with pytest.raises(ValueError):
        Publisher(redis, result_ttl_s=60).publish(publications, [], [], between=lambda: None)
    assert redis.keys(RESULT_KEY + "*") == []


@pytest.mark.parametrize("value", ["\ud800", "a\udfff", "\\ud800", "\ud83d\ude00", "\udc80\\"])
def test_an_envelope_python_reads_is_held_and_put_back_verbatim(redis_url: str, value: str) -> None:
    """Lua's cjson refuses lone surrogate escapes, which Python's json accepts: such an envelope is still read
    (answered under its task id) and put back byte for byte when its claim expires."""
    client = redis_lib.Redis.from_url(redis_url)
    body = json.dumps([[{"text": "hello", "labels": ["x", "y"], "metadata": {"k": value}}], {}, {}], ensure_ascii=False)
    raw = plain_envelope(body)  # the envelope's JSON holds the lone surrogate as an escape, e.g. \ud800
    client.lpush("q", raw)
    queue = ReliableQueue(client)
    [claimed] = queue.claim("q", 1)
    assert claimed.envelope.headers["id"] == "surr-1"
    assert queue.sweep(0, 5, ["q"]).restored == 1
    assert client.lrange("q", 0, -1) == [raw]


def test_an_envelope_that_is_not_json_is_held_and_put_back_verbatim(redis_url: str) -> None:
    client = redis_lib.Redis.from_url(redis_url)
    client.lpush("q", b'{"body": "\\ud800", not json')
    queue = ReliableQueue(client)
    queue.claim("q", 1)
    assert queue.sweep(0, 5, ["q"]).restored == 1
    assert client.lrange("q", 0, -1) == [b'{"body": "\\ud800", not json']


# --- envelopes: what a part that cannot be read leaves readable ---


@pytest.mark.parametrize(
    "change",
    [
        {"body": None},
        {"body": 5, "properties": {"body_encoding": "base64"}},
        {"body": "not base64!", "properties": {"body_encoding": "base64"}},
        {"properties": [1]},
        {"headers": {"task": "labelq.classify", "id": "surr-1", "compression": "application/x-snappy"}},
    ],
)
def test_a_malformed_envelope_is_answered_under_its_readable_task_id(setup: Any, change: dict[str, Any]) -> None:
    pipeline, redis, fake = setup
    raw = json.dumps({**json.loads(plain_envelope(json.dumps([[GOOD], {}, {}]))), **change}).encode()
    received = pipeline.receive(claimed_delivery(raw))
    assert received.message_id == "surr-1" and received.undecodable
    pipeline.handle([received])
    result = parse_result(redis.get(RESULT_KEY + "surr-1"))
    assert isinstance(result, ErrorResult) and result.code == ErrorCode.INVALID_MESSAGE
    assert [d["reason"] for d in dead_letters(redis)] == ["undecodable"] and fake.calls == []


def test_an_unknown_compression_is_named() -> None:
    headers = {"task": "labelq.classify", "id": "surr-1", "compression": "application/x-snappy"}
    received = claimed_delivery(plain_envelope("[]", headers=headers))
    with pytest.raises(UndecodableMessage, match="application/x-snappy"):
        decode(received)


@pytest.mark.parametrize(
    ("compression", "compress"),
    [
        ("application/x-gzip", zlib.compress),
        ("zlib", zlib.compress),
        ("application/x-bz2", bz2.compress),
        ("application/x-lzma", lzma.compress),
    ],
)
def test_a_compressed_body_is_classified(setup: Any, compression: str, compress: Any) -> None:
    pipeline, redis, _ = setup
    body = compress(json.dumps([[{**GOOD, "id": "zipped"}], {}, {}]).encode())
    headers = {"task": "labelq.classify", "id": "surr-1", "compression": compression}
    raw = plain_envelope(base64.b64encode(body).decode(), headers=headers, properties={"body_encoding": "base64"})
    pipeline.handle([pipeline.receive(claimed_delivery(raw))])
    assert isinstance(parse_result(redis.get(RESULT_KEY + "zipped")), ClassificationResult)


@pytest.mark.parametrize(("compression", "compress"), [("application/x-gzip", zlib.compress), ("bzip2", bz2.compress)])
def test_a_decompression_bomb_is_refused_not_expanded(compression: str, compress: Any) -> None:
    bomb = compress(b"[" + b" " * (MESSAGE_MAX_BYTES + 10))
    headers = {"task": "labelq.classify", "id": "surr-1", "compression": compression}
    raw = plain_envelope(base64.b64encode(bomb).decode(), headers=headers, properties={"body_encoding": "base64"})
    envelope = unwrap(raw)
    assert envelope.problem is not None and "larger than" in envelope.problem and len(envelope.body) <= len(raw)
    with pytest.raises(UndecodableMessage, match="larger than") as refused:
        decode(claimed_delivery(raw))
    assert refused.value.message_id == "surr-1"


@pytest.mark.parametrize("content_type", ["application/json; charset=utf-8", "Application/JSON;charset=UTF-8"])
def test_a_json_content_type_with_parameters_is_accepted(content_type: str) -> None:
    envelope = decode(delivery([[GOOD], {}, {}], content_type=content_type))
    assert envelope.parse(RequestLimits()).request.id == "r1"  # type: ignore[union-attr]


def _celery_canvas() -> dict[str, Any]:
    """Signatures as a Celery client serialises them (group, chain, chord, a callback's own link)."""
    from celery import Celery, chain, chord, group

    app = Celery(set_as_current=False)
    bad, ok = app.signature("x.a", queue="unacked_mutex"), app.signature("x.b", queue="router")
    linked = app.signature("x.c")
    linked.link_error(bad)
    return {
        "group": dict(group(ok, bad)),
        "chain": dict(chain(ok, bad)),
        "chord header": dict(chord([bad, ok], ok)),
        "chord body": dict(chord([ok], bad)),
        "group of a chain": dict(group(ok, chain(ok, bad))),
        "a callback's link_error": dict(linked),
        "plain": dict(group(ok, chain(ok, chord([ok], ok)))),
    }


@pytest.mark.parametrize("slot", ["callbacks", "errbacks", "chain"])
@pytest.mark.parametrize(
    "shape", ["group", "chain", "chord header", "chord body", "group of a chain", "a callback's link_error"]
)
def test_a_signature_nested_anywhere_is_checked_before_any_work(setup: Any, slot: str, shape: str) -> None:
    pipeline, redis, fake = setup
    embed = {slot: [_celery_canvas()[shape]]}
    pipeline.handle([pipeline.receive(delivery([[GOOD], {}, embed], headers={"task": "labelq.classify", "id": "t-6"}))])
    result = parse_result(redis.get(RESULT_KEY + "t-6"))
    assert isinstance(result, ErrorResult) and result.code == ErrorCode.INVALID_MESSAGE
    assert "unacked_mutex" in result.message
    assert fake.calls == [] and [d["reason"] for d in dead_letters(redis)] == ["undecodable"]


def test_a_nested_canvas_to_plain_queues_is_kept() -> None:
    envelope = decode(delivery([[GOOD], {}, {"callbacks": [_celery_canvas()["plain"]]}]))
    assert envelope.canvas.callbacks and envelope.canvas.followups


def test_a_canvas_nested_too_deep_or_too_wide_is_refused_cheaply(setup: Any) -> None:
    deep: dict[str, Any] = callback(queue="router")
    for _ in range(50):
        deep = {"task": "celery.group", "kwargs": {"tasks": [deep]}, "options": {}, "subtask_type": "group"}
    wide = {"task": "celery.group", "kwargs": {"tasks": [callback()] * 5_000}, "options": {}}
    for embed in ({"callbacks": [deep]}, {"errbacks": [wide]}):
        with pytest.raises(UndecodableMessage, match="callback"):
            decode(delivery([[GOOD], {}, embed]))
