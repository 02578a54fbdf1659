"""labelq's in-flight ledger on a real Redis: claims under labelq's own tags, byte budgets, oversize messages,
the sweep that puts expired claims back (counting, dead-lettering poison), and adopting what an earlier labelq
left in kombu's shared unacked hash."""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

import pytest
import redis as redis_lib

from schemas.transport import DEAD_LETTER_KEY, PRIORITY_SEP, QUEUE_BULK, QUEUE_REALTIME, QUEUE_WEBHOOKS
from tests.worker.test_streaming import raw_celery_message
from worker.stream import adoption
from worker.stream.adoption import KOMBU_UNACKED_INDEX_KEY, KOMBU_UNACKED_KEY, adopt
from worker.stream.envelopes import unwrap
from worker.stream.messages import Delivery, UndecodableMessage, decode
from worker.stream.redis_queue import INFLIGHT_INDEX_KEY, INFLIGHT_KEY, INFLIGHT_SEQ_KEY, ReliableQueue

HOSTILE = {
    "hex number in a header": b'{"body": "e30=", "headers": {"id": "h1", "n": 0x10}, "properties": {}}',
    "leading-zero number": b'{"body": "e30=", "headers": {"id": "h2", "n": 01}, "properties": {}}',
    "kombu type tag": b'{"body": "e30=", "headers": {"id": "h3", "x": {"__type__": "nope", "__value__": 0}}}',
    "delivery_info a string": b'{"body": "e30=", "headers": {"id": "h4"}, "properties": {"delivery_info": "x"}}',
    "priority 1e999": b'{"body": "e30=", "headers": {"id": "h5"}, "properties": {"priority": 1e999}}',
    "not json": b"\xff\xfe not json at all",
}


@pytest.fixture
def client(redis_url: str) -> redis_lib.Redis:
    return redis_lib.Redis.from_url(redis_url)


def request(i: int, tag: str = "1", size: int = 0) -> bytes:
    raw = raw_celery_message({"id": f"r{i}", "text": "hi" + "x" * size, "labels": ["a", "b"]}, QUEUE_BULK)
    envelope = json.loads(raw)
    envelope["properties"]["delivery_tag"] = tag
    return json.dumps(envelope).encode()


def dead_letters(client: redis_lib.Redis) -> list[dict[str, Any]]:
    return [json.loads(x) for x in client.lrange(DEAD_LETTER_KEY, 0, -1)]


def test_requests_sharing_a_delivery_tag_are_held_and_put_back_one_by_one(client: redis_lib.Redis) -> None:
    """30 requests with `delivery_tag: "1"` shared one kombu unacked entry: after a kill, 1 of 30 came back."""
    sent = [request(i) for i in range(30)]
    client.lpush(QUEUE_BULK, *sent)
    queue = ReliableQueue(client)
    claimed = queue.claim(QUEUE_BULK, 100)
    assert len({c.tag for c in claimed}) == 30 and client.hlen(INFLIGHT_KEY) == 30
    assert queue.sweep(60, 5, [QUEUE_BULK]).restored == 0  # not expired: held
    swept = queue.sweep(0, 5, [QUEUE_BULK])  # the worker died: every claim expires
    assert swept.restored == 30 and swept.poison == []
    assert sorted(client.lrange(QUEUE_BULK, 0, -1)) == sorted(sent)
    assert client.hlen(INFLIGHT_KEY) == 0 and client.zcard(INFLIGHT_INDEX_KEY) == 0


@pytest.mark.parametrize("name", list(HOSTILE))
def test_an_envelope_kombu_could_not_restore_is_put_back_byte_for_byte_beside_its_batch_mates(
    client: redis_lib.Redis, name: str
) -> None:
    mates = [request(i, tag=f"t{i}") for i in range(5)]
    client.lpush(QUEUE_BULK, mates[0], mates[1], HOSTILE[name], *mates[2:])
    queue = ReliableQueue(client)
    assert len(queue.claim(QUEUE_BULK, 10)) == 6
    assert queue.sweep(0, 5, [QUEUE_BULK]).restored == 6
    assert sorted(client.lrange(QUEUE_BULK, 0, -1)) == sorted([*mates, HOSTILE[name]])


def test_a_prioritised_message_goes_back_on_the_sub_list_it_came_from(client: redis_lib.Redis) -> None:
    sub_list = QUEUE_REALTIME + PRIORITY_SEP + "6"
    client.lpush(sub_list, b"urgent")
    queue = ReliableQueue(client)
    queue.claim(QUEUE_REALTIME, 5)
    queue.sweep(0, 5, [QUEUE_REALTIME])
    assert client.lrange(sub_list, 0, -1) == [b"urgent"] and client.llen(QUEUE_REALTIME) == 0


def test_an_entry_labelq_did_not_write_is_dead_lettered_and_the_rest_still_go_back(client: redis_lib.Redis) -> None:
    client.lpush(QUEUE_BULK, request(1, tag="a"), request(2, tag="b"))
    queue = ReliableQueue(client)
    queue.claim(QUEUE_BULK, 10)
    client.hset(INFLIGHT_KEY, "forged", b"no list named here")
    client.hset(INFLIGHT_KEY, "elsewhere", b"someones-key\nbytes")  # a list labelq never claims from
    client.zadd(INFLIGHT_INDEX_KEY, dict.fromkeys(client.hkeys(INFLIGHT_KEY), 0))  # claimed long ago
    swept = queue.sweep(60, 5, [QUEUE_BULK])
    assert swept.restored == 2 and sorted(p.tag for p in swept.poison) == [b"elsewhere", b"forged"]
    assert not client.exists("someones-key")
    assert queue.sweep(60, 5, [QUEUE_BULK]).poison == []  # hidden from other sweeps while it is dead-lettered
    queue.bury(swept.poison)
    letters = dead_letters(client)
    assert sorted(letter["raw"] for letter in letters) == ["no list named here", "someones-key\nbytes"]
    assert {letter["reason"] for letter in letters} == {"unrestorable"}
    assert client.hlen(INFLIGHT_KEY) == 0 and client.zcard(INFLIGHT_INDEX_KEY) == 0


def test_a_message_put_back_more_than_max_deliveries_times_is_dead_lettered(client: redis_lib.Redis) -> None:
    """Every hand-back counts, even when the worker never saw the message (a read that timed out, a crash while
    parsing): a message that keeps coming back cannot loop past the limit."""
    raw = request(1, tag="x")
    client.lpush(QUEUE_BULK, raw)
    queue = ReliableQueue(client)
    for _ in range(3):
        queue.claim(QUEUE_BULK, 1)
        assert queue.sweep(0, 3, [QUEUE_BULK]).restored == 1
    queue.claim(QUEUE_BULK, 1)
    swept = queue.sweep(0, 3, [QUEUE_BULK])
    assert swept.restored == 0 and [p.reason for p in swept.poison] == ["too_many_deliveries"]
    queue.bury(swept.poison)
    [letter] = dead_letters(client)
    assert letter["raw"].encode() == raw and letter["queue"] == QUEUE_BULK and client.llen(QUEUE_BULK) == 0


def test_a_claim_is_bounded_in_bytes(client: redis_lib.Redis) -> None:
    big = [request(i, tag=f"b{i}", size=300_000) for i in range(20)]
    client.lpush(QUEUE_BULK, *big)
    queue = ReliableQueue(client, claim_max_bytes=1_000_000)
    fit = 1_000_000 // len(big[0])
    assert fit >= 2
    ids = [json.loads(raw)["headers"]["id"] for raw in big]
    first = queue.claim(QUEUE_BULK, 128)
    assert len(first) == fit and client.llen(QUEUE_BULK) == 20 - fit
    assert [c.envelope.headers["id"] for c in first] == ids[:fit]  # oldest first, none skipped
    assert [c.envelope.headers["id"] for c in queue.claim(QUEUE_BULK, 128)] == ids[fit : 2 * fit]


def test_a_message_too_large_to_serve_is_held_as_a_stub_that_answers_it(client: redis_lib.Redis) -> None:
    huge = request(7, tag="h", size=3_000_000)
    client.lpush(QUEUE_BULK, huge, request(8, tag="ok"))
    used = client.info("memory")["used_memory"]
    queue = ReliableQueue(client, max_message_bytes=1_000_000)
    oversize, normal = queue.claim(QUEUE_BULK, 10)
    assert client.info("memory")["used_memory"] < used - 2_000_000  # its bytes are gone from Redis at once
    task_id = json.loads(huge)["headers"]["id"]
    assert oversize.envelope.headers == {"id": task_id, "task": "labelq.classify"}
    assert len(client.hget(INFLIGHT_KEY, oversize.tag)) < 1_000
    delivery = Delivery(
        QUEUE_BULK, oversize.envelope.body, oversize.envelope.headers, None, 0.0, oversize.envelope.problem
    )
    with pytest.raises(UndecodableMessage) as raised:
        decode(delivery)
    assert raised.value.message_id == task_id and "LABELQ_MAX_MESSAGE_BYTES" in str(raised.value)
    assert normal.envelope.problem is None
    queue.sweep(0, 5, [QUEUE_BULK])  # a stub put back is still refused, never served half-read
    back = [unwrap(raw) for raw in client.lrange(QUEUE_BULK, 0, -1)]
    assert sorted(envelope.problem is not None for envelope in back) == [False, True]


# --- adopting what an earlier labelq left in kombu's unacked hash ---


def kombu_entry(client: redis_lib.Redis, tag: str, record: bytes, at: float) -> None:
    client.hset(KOMBU_UNACKED_KEY, tag, record)
    client.zadd(KOMBU_UNACKED_INDEX_KEY, {tag: at})


def test_an_earlier_labelqs_claims_are_adopted_and_another_apps_are_left_alone(client: redis_lib.Redis) -> None:
    old = time.time() - 1000
    claim = request(1, tag="old1")
    kombu_entry(client, "old1", b"[" + claim + b',"","labelq.bulk"]', old)  # as an earlier labelq's claim wrote
    poison = HOSTILE["hex number in a header"]
    kombu_entry(client, "old2", b"[" + poison + b',"","labelq.realtime"]', old)  # neither json nor kombu reads it
    task = {"body": "e30=", "headers": {"id": "w1"}, "properties": {"priority": 3}}
    kombu_entry(client, "old3", json.dumps([task, "labelq.webhooks", QUEUE_WEBHOOKS]).encode(), old)  # kombu's own
    neighbour = json.dumps([{"body": "e30=", "headers": {"id": "n1"}}, "", "celery"]).encode()
    kombu_entry(client, "theirs", neighbour, old)
    kombu_entry(client, "young", b"[" + request(2) + b',"","labelq.bulk"]', time.time())  # an old worker holds it
    queue = ReliableQueue(client)
    assert adopt(client, queue, [QUEUE_REALTIME, QUEUE_BULK, QUEUE_WEBHOOKS], 120) == 3
    assert client.lrange(QUEUE_BULK, 0, -1) == [claim] and client.lrange(QUEUE_REALTIME, 0, -1) == [poison]
    assert [json.loads(x) for x in client.lrange(QUEUE_WEBHOOKS + PRIORITY_SEP + "3", 0, -1)] == [task]
    assert sorted(client.hkeys(KOMBU_UNACKED_KEY)) == [b"theirs", b"young"] and not client.exists("celery")
    assert sorted(client.zrange(KOMBU_UNACKED_INDEX_KEY, 0, -1)) == [b"theirs", b"young"]


def test_adoption_reaches_past_a_page_of_another_apps_long_tasks(
    client: redis_lib.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(adoption, "ADOPT_SCAN", 3)
    old = time.time() - 1000
    for i in range(7):  # another app's tasks running past labelq's timeout, older than labelq's entries
        kombu_entry(client, f"theirs-{i}", json.dumps([{"headers": {"id": f"n{i}"}}, "", "celery"]).encode(), old - 10)
    ours = [request(i, tag=f"o{i}") for i in range(2)]
    for i, claim in enumerate(ours):
        kombu_entry(client, f"ours-{i}", b"[" + claim + b',"","labelq.bulk"]', old)
    assert adopt(client, ReliableQueue(client), [QUEUE_BULK], 120) == 2
    assert sorted(client.lrange(QUEUE_BULK, 0, -1)) == sorted(ours) and client.hlen(KOMBU_UNACKED_KEY) == 7


@pytest.mark.parametrize("seq", [99_999_999_999_990, 10**15, 123_456_789_012_345_678])
def test_tags_stay_distinct_however_far_the_counter_has_run(client: redis_lib.Redis, seq: int) -> None:
    """Before: a tag was the counter formatted as a Lua number (`%.14g`): past 1e14 tags collided (`1e+15`), so
    claims overwrote each other in the ledger and a kill lost all but one of them (found by an outside check)."""
    client.set(INFLIGHT_SEQ_KEY, seq)
    sent = [request(i, tag=f"t{i}") for i in range(40)]
    client.lpush(QUEUE_BULK, *sent)
    queue = ReliableQueue(client)
    claimed = queue.claim(QUEUE_BULK, 20) + queue.claim(QUEUE_BULK, 20)
    assert len({c.tag for c in claimed}) == 40 and client.hlen(INFLIGHT_KEY) == 40
    assert queue.sweep(0, 5, [QUEUE_BULK]).restored == 40
    assert sorted(client.lrange(QUEUE_BULK, 0, -1)) == sorted(sent)


@pytest.mark.parametrize("tag", [b"f-\xc3\xa9", b"\xff\xfe", b"tag with spaces"])
def test_a_forged_entry_under_any_tag_is_dead_lettered(client: redis_lib.Redis, tag: bytes) -> None:
    """Before: a tag that was not ASCII came back from the sweep mangled, was never found again, and stayed in
    the ledger forever, re-poisoned every visibility timeout (found by an outside check)."""
    client.hset(INFLIGHT_KEY, tag, b"mylist\nzzz")
    client.zadd(INFLIGHT_INDEX_KEY, {tag: 0})
    queue = ReliableQueue(client)
    swept = queue.sweep(60, 5, [QUEUE_BULK])
    assert [p.reason for p in swept.poison] == ["unrestorable"]
    queue.bury(swept.poison)
    assert client.hlen(INFLIGHT_KEY) == 0 and client.zcard(INFLIGHT_INDEX_KEY) == 0 and not client.exists("mylist")
    assert [letter["raw"] for letter in dead_letters(client)] == ["mylist\nzzz"]


def test_a_stopping_worker_hands_back_what_it_holds_in_order_uncounted(client: redis_lib.Redis) -> None:
    from worker.constants import RESTORES_KEY

    sent = [request(i) for i in range(5)]
    client.lpush(QUEUE_BULK, *sent)  # kombu's order: the first sent is taken first
    client.lpush(QUEUE_BULK + PRIORITY_SEP + "9", request(9))
    queue = ReliableQueue(client)
    held = queue.claim(QUEUE_BULK, 10)
    assert len(held) == 6 and client.llen(QUEUE_BULK) == 0
    queue.ack([held[1].tag])  # answered before the stop
    released = queue.release([m.tag for m in held])
    assert released == 5 and client.hlen(INFLIGHT_KEY) == 0 and client.zcard(INFLIGHT_INDEX_KEY) == 0
    again = queue.claim(QUEUE_BULK, 10)
    ids = [m.envelope.headers.get("id") for m in held]
    assert [m.envelope.headers.get("id") for m in again] == [ids[0], *ids[2:]]  # in the order first taken
    assert [m.digest for m in again] == [held[0].digest, *(m.digest for m in held[2:])]  # the same bytes
    assert not client.keys(RESTORES_KEY + "*")  # a hand-back is not a delivery: only the sweep counts
    assert queue.release([]) == 0


# --- deliveries: counted by the sweep, read by the pipeline ---


def _pipeline(client: redis_lib.Redis) -> Any:
    from worker.engine.engine import Engine
    from worker.engine.fake import FAKE_MODEL, FakeClassifier
    from worker.settings import load_settings
    from worker.stream.pipeline import Pipeline
    from worker.stream.publishing import Publisher

    settings = load_settings(model=FAKE_MODEL)
    engine = Engine(settings, classifiers={FAKE_MODEL: FakeClassifier()})
    return Pipeline(engine, Publisher(client, result_ttl_s=60), limits=settings.limits(), max_deliveries=2)


def _received(pipeline: Any, queue: ReliableQueue) -> tuple[list[Any], list[str]]:
    claimed = queue.claim(QUEUE_BULK, 10)
    deliveries = [
        Delivery(QUEUE_BULK, c.envelope.body, c.envelope.headers, c.envelope.content_type, time.time(), None, c.digest)
        for c in claimed
    ]
    return pipeline.receive_many(deliveries), [c.tag for c in claimed]


def test_a_batch_whose_write_keeps_failing_is_dead_lettered_on_its_delivery_past_the_limit(
    client: redis_lib.Redis,
) -> None:
    """A message whose batch cannot be written stays unacked; each time the sweep puts it back it counts, under
    the sha1 of the bytes the claim returned; past max_deliveries (2) it is dead-lettered before any work, and
    its counter goes with it."""
    from worker.constants import RESTORES_KEY

    raw = request(1, tag="w")
    client.lpush(QUEUE_BULK, raw)
    client.hset("labelq:notify:r1", "not", "a list")  # the write of r1's result fails
    queue, pipeline = ReliableQueue(client), _pipeline(client)
    for times in (1, 2):
        received, tags = _received(pipeline, queue)
        assert received[0].counter_id == hashlib.sha1(raw).hexdigest()
        with pytest.raises(redis_lib.ResponseError):
            pipeline.handle(received, ack=tags)
        assert client.hlen(INFLIGHT_KEY) == 1  # not acked: the ack is in the failed write's own step
        assert queue.sweep(0, 5, [QUEUE_BULK]).restored == 1
        assert int(client.get(RESTORES_KEY + hashlib.sha1(raw).hexdigest())) == times
    received, tags = _received(pipeline, queue)
    pipeline.handle(received, ack=tags)
    [letter] = dead_letters(client)
    assert letter["reason"] == "too_many_deliveries" and letter["detail"] == "received 3 times"
    assert client.hlen(INFLIGHT_KEY) == 0 and client.llen(QUEUE_BULK) == 0 and not client.keys(RESTORES_KEY + "*")


def test_a_message_without_an_id_that_keeps_failing_is_counted_too(
    client: redis_lib.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    from worker.stream.pipeline import Pipeline

    envelope = json.loads(request(2, tag="anon"))
    envelope["headers"].pop("id")
    raw = json.dumps(envelope).encode()
    client.lpush(QUEUE_BULK, raw)
    queue, pipeline = ReliableQueue(client), _pipeline(client)

    def explode(*_: object) -> None:
        raise RuntimeError("a bug in classification")

    monkeypatch.setattr(Pipeline, "_classify", explode)
    for _ in range(2):
        received, tags = _received(pipeline, queue)
        with pytest.raises(RuntimeError):
            pipeline.handle(received, ack=tags)
        assert queue.sweep(0, 5, [QUEUE_BULK]).restored == 1
    monkeypatch.undo()
    received, tags = _received(pipeline, queue)
    pipeline.handle(received, ack=tags)
    assert [d["reason"] for d in dead_letters(client)] == ["too_many_deliveries"] and client.hlen(INFLIGHT_KEY) == 0
