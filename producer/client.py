"""The producer's client of one Redis server: submit requests as Celery task messages, wait for results by id, read
result queues. `producer.Client` (producer/fleet.py) is the one to use: over one server it is this, over several
it spreads requests across them by id.

client = ServerClient("redis://127.0.0.1:6379/0")
request_id = client.submit(ClassifyRequest(text="...", labels=["billing", "bug"]), queue="realtime")
result = client.wait(request_id, timeout_s=5)
"""

from __future__ import annotations

import itertools
import json
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pydantic
import redis
import redis.sentinel
from celery import Celery
from kombu.exceptions import OperationalError
from kombu.utils.json import dumps as kombu_dumps

from producer import tracing
from schemas import ClassificationResult, ClassifyRequest, Correction, CorrectionReceipt, ErrorResult, parse_result
from schemas.limits import RequestLimits
from schemas.request import reply_queue_problem
from schemas.transport import (
    ACL_DOCS,
    CELERY_RESULT_KEY,
    KEY_PREFIX,
    NOTIFY_KEY,
    QUEUE_TASKS,
    QUEUES,
    RESULT_KEY,
    TASK_CLASSIFY,
    TASK_CORRECT,
    WORKER_KEY,
    RedisURLError,
    database_missing,
    parse_sentinel_url,
    password_refused,
    permission_denied,
    priority_lists,
    redis_url_problem,
    worker_record,
    wrong_type,
)

Result = ClassificationResult | ErrorResult


class UnreadableResult(ValueError):
    """An item on a result queue that is not a labelq result (it was put back where it was)."""

    def __init__(self, queue: str, cause: ValueError) -> None:
        errors = cause.errors() if isinstance(cause, pydantic.ValidationError) else []
        reason = f"{errors[0]['msg']} at {'.'.join(map(str, errors[0]['loc'])) or 'the top'}" if errors else str(cause)
        super().__init__(
            f"an item on result queue {queue!r} is not a labelq result ({reason[:200]}); it was left at the head "
            f"of the queue: look at it with `redis-cli LRANGE {queue} 0 0`"
        )
        self.queue = queue


def queue_name(queue: str) -> str:
    """labelq's queue by its short name (`realtime`, `bulk`) or its full one (`labelq.realtime`, `labelq.bulk`).
    Any other name is a `ValueError`: no worker consumes it, so a request sent there would never be answered."""
    if queue in QUEUES.values():
        return queue
    if queue in QUEUES:
        return QUEUES[queue]
    known = ", ".join(f"{short} ({full})" for short, full in QUEUES.items())
    raise ValueError(f"no labelq queue is named {queue!r}: the queues are {known}")


# What a producer retries on: the broker unreachable (a restart, a failover), not a request it refuses
BROKER_ERRORS = (OperationalError, redis.ConnectionError, redis.TimeoutError)  # the broker did not answer
CONNECTION_ERRORS = (*BROKER_ERRORS, OSError)
# a refusal Redis answers (WRONGTYPE, NOPERM: never retried; READONLY, OOM: retried as an outage); kombu wraps the
# ones it sends as an OperationalError, `submit_many`'s own LPUSH meets them as they are
SEND_ERRORS = (*CONNECTION_ERRORS, redis.ResponseError)

SEND_CHUNK_MESSAGES = 500  # `submit_many` sends at most this many messages in one round trip
SEND_CHUNK_BYTES = 4 * 1024 * 1024  # and at most this many bytes (plus one message)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Celery's `retry_policy` semantics for publishing: after the first failure, wait `interval_start` s, then
    `interval_step` s more each time up to `interval_max`, for at most `max_retries` retries. The default rides
    out a Redis restart or a Sentinel failover (about 17 s in all) where Celery's own (3 retries, 0.6 s) would
    give up."""

    max_retries: int = 10
    interval_start: float = 0.0
    interval_step: float = 0.5
    interval_max: float = 2.0

    def delay_s(self, retry: int) -> float:
        """The wait before retry number `retry` (from 0)."""
        return min(self.interval_max, self.interval_start + retry * self.interval_step)


class SubmitError(Exception):
    """Requests could not be sent: the broker stayed unreachable through every retry. `sent` holds the ids that
    did go (in order); the rest did not."""

    def __init__(self, message: str, sent: list[str]) -> None:
        super().__init__(message)
        self.sent = sent


class AccessDenied(SubmitError):
    """The broker refused a command for want of an ACL grant (`sent`: the ids that did go)."""


class PasswordRefused(SubmitError):
    """Redis refused the URL's password or user: retrying cannot help (`sent`: the ids that did go)."""


class WrongKeyType(Exception):
    """A key sending needs holds another Redis type (a stream where a queue's list belongs): sending cannot
    succeed, so it is not retried. `key` and `kind` name it (`kind` None when Redis said WRONGTYPE of a key this
    could not find again); `sent`: the ids that did go."""

    def __init__(self, key: str, kind: str | None, sent: list[str]) -> None:
        what = f"key {key!r} is a {kind}, not a list" if kind else f"a key of queue {key!r} holds the wrong type"
        super().__init__(
            f"{what}: requests cannot be sent there (WRONGTYPE); labelq keeps its queues there: move or delete that "
            "key, or give labelq a database of its own (the /N of the Redis URL)"
        )
        self.key, self.kind, self.sent = key, kind, sent


def _results_client(url: str, transport_options: Mapping[str, Any]) -> redis.Redis:
    """The Redis results are read from: the broker itself, through Sentinel when the URL says so."""
    problem = redis_url_problem(url)
    if problem:
        raise RedisURLError(f"invalid Redis URL: {problem}")
    sentinel = parse_sentinel_url(url)
    if sentinel is None:
        return redis.Redis.from_url(url)
    if not transport_options.get("master_name"):
        raise RedisURLError('a sentinel:// URL needs the master\'s name: transport_options={"master_name": ...}')
    sentinels = redis.sentinel.Sentinel(  # type: ignore[no-untyped-call, unused-ignore]
        list(sentinel.sentinels), sentinel_kwargs=transport_options.get("sentinel_kwargs") or {}
    )
    client: redis.Redis = sentinels.master_for(  # type: ignore[no-untyped-call, unused-ignore]
        transport_options["master_name"], password=sentinel.password, db=sentinel.db
    )
    return client


class ServerClient:
    """A producer's client of one Redis server (`producer.Client` holds one per server of a fleet)."""

    def __init__(
        self,
        redis_url: str,
        *,
        retry_policy: RetryPolicy | None = None,
        transport_options: Mapping[str, Any] | None = None,
        limits: RequestLimits | None = None,
    ) -> None:
        """`redis_url` as the workers have it (`redis://`, `rediss://`, or `sentinel://...;sentinel://...` with
        `transport_options={"master_name": ...}`, kombu's form). `limits`: what the workers accept (their
        LABELQ_MAX_LABELS and the rest, `Settings.limits()`); a request given as a mapping is checked against them
        (the defaults when None: 100 labels)."""
        self.limits = limits or RequestLimits()
        options = dict(transport_options or {})
        self.transport_options = options
        self.redis = _results_client(redis_url, options)
        self.retry_policy = retry_policy or RetryPolicy()
        self._lists_checked: set[str] = set()  # queues whose lists `submit_many` found to be lists (or absent)
        self._celery = Celery("labelq-producer", broker=redis_url, set_as_current=False)
        self._celery.conf.update(
            task_serializer="json",
            accept_content=["json"],
            broker_connection_retry=True,
            # a connection attempt fails at once (kombu would retry it for its 4 s connect timeout first): the
            # retries are `submit_many`'s, by `retry_policy`, so giving up takes what the policy says
            broker_transport_options={**options, "max_retries": 0},
        )

    def where(self) -> str:
        """The Redis this client talks to, for messages: host, port and database, never a password."""
        pool = self.redis.connection_pool
        service = getattr(pool, "service_name", None)  # through Sentinel
        kwargs = pool.connection_kwargs
        where = f"master {service} via Sentinel" if service else f"{kwargs.get('host', kwargs.get('path', '?'))}"
        return (
            f"{where}:{kwargs['port']}/{kwargs.get('db', 0)}" if "port" in kwargs else f"{where}/{kwargs.get('db', 0)}"
        )

    def _check_database(self, exc: BaseException) -> None:
        """A `RedisURLError` when `exc` is Redis saying the URL's /N does not exist: a setting, never retried."""
        missing = database_missing(exc, self.redis.connection_pool.connection_kwargs.get("db", 0))
        if missing:
            raise RedisURLError(missing) from None

    def close(self) -> None:
        self.redis.close()
        self._celery.close()

    def __enter__(self) -> ServerClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def prepare(self, request: ClassifyRequest | Mapping[str, Any]) -> ClassifyRequest:
        """Validate (a mapping is parsed like a wire message, under `limits`) and stamp `submitted_at`."""
        if not isinstance(request, ClassifyRequest):
            request = ClassifyRequest.model_validate(dict(request), context=self.limits)
        if request.submitted_at is None:
            request = request.model_copy(update={"submitted_at": datetime.now(UTC)})
        return request

    def submit(self, request: ClassifyRequest | Mapping[str, Any], *, queue: str = "realtime") -> str:
        """Send one request; returns its id (the Celery task id too)."""
        return self.submit_many([request], queue=queue)[0]

    def submit_many(
        self,
        requests: Iterable[ClassifyRequest | Mapping[str, Any]],
        *,
        queue: str = "realtime",
        retry_policy: RetryPolicy | None = None,
    ) -> list[str]:
        """Send requests in order; returns their ids. The messages are Celery's own (built by `send_task`, byte
        for byte what it sends) and go in chunks, up to SEND_CHUNK_MESSAGES (or SEND_CHUNK_BYTES) in one round
        trip, one LPUSH a chunk. A broker that goes away is retried by `retry_policy` (this client's unless given;
        a chunk whose send failed is sent again: at least once, duplicates by id at worst); `SubmitError` when it
        stays away. A queue that is not labelq's is a `ValueError`, before anything is sent; a request that does
        not validate is raised once the requests before it are sent."""
        policy = retry_policy or self.retry_policy
        queue = queue_name(queue)
        prepared = (self.prepare(item) for item in requests)
        sent: list[str] = []
        pending: list[_Envelope] = []  # built, not sent yet
        request, problem = _next(prepared)
        retry = 0
        while request is not None or pending:
            try:
                with self._celery.producer_or_acquire() as producer:
                    if queue not in self._lists_checked:
                        self._check_lists(producer, queue, sent)
                    with _Caught(producer.channel) as caught:
                        size = sum(len(envelope.payload) for envelope in pending)
                        while request is not None and len(pending) < SEND_CHUNK_MESSAGES and size < SEND_CHUNK_BYTES:
                            self._send(request, queue, producer)
                            for key, payload in caught.take():
                                pending.append(_Envelope(request.id, key, payload))
                                size += len(payload)
                            request, problem = _next(prepared)
                    done, pending, refusal = _push(producer, pending)
                    sent += dict.fromkeys(envelope.request_id for envelope in done)  # once each, in order
                    if refusal is not None:
                        raise refusal
                    retry = 0
            except SEND_ERRORS as exc:
                if wrong_type(exc):  # a key of another type where the queue's list belongs: it stays so
                    raise self._wrong_key(queue, sent) from None
                self._check_database(exc)
                if password_refused(exc):  # it answered, and said no to the URL's password or user
                    raise PasswordRefused(
                        f"Redis at {self.where()} refused the password or user in its URL; check them in "
                        f"LABELQ_REDIS_URL ({len(sent)} of the requests were sent, the rest were not)",
                        sent,
                    ) from None
                refused = permission_denied(exc)
                if refused:  # the broker answered, and said no: a grant is missing, retrying cannot help
                    raise AccessDenied(
                        f"the Redis user of {self.where()} may not do what sending needs ({refused}); "
                        f"grant it the ACL in {ACL_DOCS}",
                        sent,
                    ) from exc
                if retry >= policy.max_retries:
                    message = (
                        f"Redis at {self.where()} unreachable through {retry} retries ({exc}); "
                        f"{len(sent)} of the requests were sent, the rest were not"
                    )
                    raise SubmitError(message, sent) from exc
                time.sleep(policy.delay_s(retry))
                retry += 1
        if problem is not None:
            raise problem
        return sent

    def _check_lists(self, producer: Any, queue: str, sent: list[str]) -> None:
        """Once a client and queue: every list of the queue (the plain one, kombu's priority sub-lists) is a list
        or absent, else `WrongKeyType` before anything more is sent. (kombu's own declaration looks at them only
        the first time a process's connection to this Redis declares the queue; a chunk pushes the plain list.)"""
        keys = priority_lists(queue, self.transport_options)
        with producer.channel.conn_or_acquire() as client:
            pipe = client.pipeline(transaction=False)
            for key in keys:
                pipe.type(key)
            kinds = [kind.decode() if isinstance(kind, bytes) else str(kind) for kind in pipe.execute()]
        for key, kind in zip(keys, kinds, strict=True):
            if kind not in ("list", "none"):
                raise WrongKeyType(key, kind, sent)
        self._lists_checked.add(queue)

    def _wrong_key(self, queue: str, sent: list[str]) -> WrongKeyType:
        """Which of the queue's lists (the plain one, kombu's priority sub-lists) is of another type."""
        for key in priority_lists(queue, self.transport_options):
            kind = key_type(self.redis, key)
            if kind not in ("list", "none"):
                return WrongKeyType(key, kind, sent)
        return WrongKeyType(queue, None, sent)

    def _send(self, request: ClassifyRequest, queue: str, producer: Any) -> None:
        """One message onto `queue`, a list name as it is (`submit_many` checked it is labelq's), through Celery's
        `send_task`: sent at once, or caught for a chunk when `producer`'s channel is inside `_Caught`."""
        self._celery.send_task(
            TASK_CLASSIFY,
            args=[request.to_wire()],
            task_id=request.id,
            queue=queue,
            producer=producer,
            retry=False,  # retried by `submit_many`, with this client's policy
            # Celery's default is a repr of the whole request in the headers (up to 1 KB, costly to write and
            # carried, decoded and stored again with every message); monitors show this
            argsrepr=f"[<request {request.id}>]",
            kwargsrepr="{}",
            headers=tracing.send_headers(request.id, queue),  # W3C traceparent when tracing is on (producer/tracing.py)
        )

    def workers(self) -> dict[str, dict[str, Any]]:
        """Ready workers by node name (model loaded, consuming), as they announce themselves; a record that is
        not one (`read_workers`) is left out."""
        return self.read_workers()[0]

    def read_workers(self) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
        """(ready workers by node name, {key: why} for each `labelq:worker:*` key that holds no worker record:
        not JSON, not {model, revision, queues, pid}, or not a string at all)."""
        found: dict[str, dict[str, Any]] = {}
        unreadable: dict[str, str] = {}
        for key in self.redis.scan_iter(match=WORKER_KEY + "*"):
            name = key.decode(errors="backslashreplace") if isinstance(key, bytes) else str(key)
            try:
                raw = self.redis.get(key)
            except redis.ResponseError as exc:
                if not wrong_type(exc):
                    raise
                unreadable[name] = f"a Redis {key_type(self.redis, name)}, not a worker record"
                continue
            if raw is None:  # gone since the scan (its worker stopped)
                continue
            problem, record = worker_record(raw)
            if record is None:
                unreadable[name] = problem
            else:
                found[name.removeprefix(WORKER_KEY)] = record
        return found, unreadable

    def ping_workers(self, timeout_s: float = 1.0) -> list[dict[str, Any]]:
        """Celery's broadcast ping: one reply per live worker node (classification and webhook workers)."""
        replies: list[dict[str, Any]] = self._celery.control.ping(timeout=timeout_s) or []
        return replies

    def wait_for_workers(self, timeout_s: float, count: int = 1) -> bool:
        deadline = time.monotonic() + timeout_s
        while len(self.workers()) < count:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def get(self, request_id: str) -> Result | None:
        raw = self.redis.get(RESULT_KEY + request_id)
        return parse_result(raw) if raw is not None else None

    def correct(
        self,
        request_id: str,
        labels: Iterable[str],
        text: str,
        *,
        moderator: str | None = None,
        timeout_s: float = 30.0,
    ) -> CorrectionReceipt | ErrorResult | None:
        """A moderator's verdict on a result: which of its label set's labels apply to `text` (none: an empty list),
        kept by the workers for `labelq labelsets refit`. Sent as the Celery task `labelq.correct`; returns the
        worker's answer (a `CorrectionReceipt`, or an `ErrorResult` saying what is wrong with it), None when none
        came within `timeout_s` (read from Celery's result backend on this Redis, the workers' default). A
        correction that does not validate is a ValueError, before anything is sent."""
        correction = Correction(request_id=request_id, labels=tuple(labels), text=text, moderator=moderator)
        task_id = str(uuid.uuid4())
        policy = self.retry_policy
        try:
            self._celery.send_task(
                TASK_CORRECT,
                args=[correction.model_dump(mode="json")],
                task_id=task_id,
                queue=QUEUE_TASKS,
                retry=True,
                retry_policy={
                    "max_retries": policy.max_retries,
                    "interval_start": policy.interval_start,
                    "interval_step": policy.interval_step,
                    "interval_max": policy.interval_max,
                },
            )
        except CONNECTION_ERRORS as exc:
            if wrong_type(exc):
                raise self._wrong_key(QUEUE_TASKS, []) from None
            self._check_database(exc)
            refused = permission_denied(exc)
            if refused:
                raise AccessDenied(f"the Redis user of {self.where()} may not send ({refused})", []) from exc
            raise SubmitError(f"Redis at {self.where()} unreachable ({exc}); the correction was not sent", []) from exc
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            raw = self.redis.get(CELERY_RESULT_KEY + task_id)
            if raw is not None:
                meta = json.loads(raw)
                if meta.get("status") == "SUCCESS" and isinstance(meta.get("result"), dict):
                    outcome = meta["result"]
                    if outcome.get("status") == "ok":
                        return CorrectionReceipt.model_validate(outcome)
                    return ErrorResult.model_validate(outcome)
            time.sleep(0.05)
        return None

    def wait(self, request_id: str, timeout_s: float = 30.0) -> Result | None:
        """The result of a request, waiting up to `timeout_s` for it; None on timeout."""
        deadline = time.monotonic() + timeout_s
        while True:
            found = self.get(request_id)
            if found is not None:
                return found
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            self.redis.blpop([NOTIFY_KEY + request_id], timeout=max(0.01, min(remaining, 1.0)))

    def results(self, reply_queue: str, *, follow: bool = False, poll_s: float = 1.0) -> Iterator[Result]:
        """Take results off a result queue (a Redis list) in order; with `follow`, wait for more forever.

        Nothing is lost however the reader stops: each item is moved (LMOVE, atomic) from the queue onto this
        reader's holding list in Redis and taken off it for good only when the caller asks for the next one, so
        an item the caller did not finish with (an exception, a signal, a closed pipe, `break`, the generator
        closed) is put back at the head of the queue when the generator closes: at least once, never lost. A
        reader killed outright (SIGKILL) leaves its item held; the next reader of the queue puts it back once the
        dead reader's lease (READER_LEASE_S) has lapsed. Close the generator (`contextlib.closing`) rather than
        leave it to the garbage collector.

        A name no request may reply to (a Celery queue, kombu's keys: `reply_queue_problem`) or a key that is not
        a list is a ValueError before anything is taken; an item that is not a labelq result is put back at the
        head of the queue and raised as `UnreadableResult`."""
        problem = reply_queue_problem(reply_queue)
        if problem:
            raise ValueError(problem)
        kind = key_type(self.redis, reply_queue)
        if kind not in ("list", "none"):
            raise ValueError(f"{reply_queue!r} is a Redis {kind}, not a result queue (a list)")
        reader = _Reader(self.redis, reply_queue)
        reader.put_back_orphans()
        try:
            while True:
                raw = reader.take(poll_s if follow else None)
                if raw is None:
                    if follow:
                        continue
                    return
                try:
                    result = parse_result(raw)
                except ValueError as exc:  # pydantic's ValidationError is one; the finally puts it back
                    raise UnreadableResult(reply_queue, exc) from None
                yield result
                reader.done(raw)  # the caller came back for the next: it has finished with this one
        finally:
            reader.close()


@dataclass(frozen=True, slots=True)
class _Envelope:
    """One message as kombu would have pushed it: its request, the list it goes on and its bytes (JSON text)."""

    request_id: str
    key: str
    payload: str


class _Caught:
    """A kombu Redis channel whose last step is caught: inside, Celery's `send_task` runs all of Celery's and
    kombu's own code (headers, body, properties, priority, the delivery tag, the envelope's JSON) and, where
    kombu's `_put` would LPUSH the envelope at once, the list and the bytes are kept instead, exactly as `_put`
    makes them, for `_push` to send a chunk in one round trip."""

    def __init__(self, channel: Any) -> None:
        self.channel = channel
        self.caught: list[tuple[str, str]] = []

    def __enter__(self) -> _Caught:
        self.channel._put = self._put  # shadows the class's method on this channel only, until __exit__
        return self

    def __exit__(self, *exc: object) -> None:
        del self.channel._put

    def _put(self, queue: str, message: dict[str, Any], **kwargs: Any) -> None:
        """kombu's Redis `Channel._put`, less the LPUSH: the list of the message's priority, its JSON."""
        channel = self.channel
        key = channel._q_for_pri(queue, channel._get_message_priority(message, reverse=False))
        self.caught.append((str(key), kombu_dumps(message)))

    def take(self) -> list[tuple[str, str]]:
        """What the sends since the last `take` would have pushed: (list, envelope) each."""
        taken, self.caught = self.caught, []
        return taken


def _next(prepared: Iterator[ClassifyRequest]) -> tuple[ClassifyRequest | None, Exception | None]:
    """The next request, or None at the end or when it does not validate (then with the reason: the requests
    before it are sent first)."""
    try:
        return next(prepared, None), None
    except Exception as exc:  # raised as it is, by `submit_many`, once what came before it is sent
        return None, exc


def _push(
    producer: Any, pending: list[_Envelope]
) -> tuple[list[_Envelope], list[_Envelope], redis.ResponseError | None]:
    """Send `pending` in one round trip on `producer`'s own Redis connection: one LPUSH of the consecutive
    envelopes bound for the same list (in order: LPUSH key a b c is LPUSH a, b, then c), all of it or none of it
    each. Returns (sent, not sent, the first refusal Redis answered); a connection lost raises."""
    if not pending:
        return [], [], None
    groups = [list(group) for _, group in itertools.groupby(pending, key=lambda envelope: envelope.key)]
    with producer.channel.conn_or_acquire() as client:
        pipe = client.pipeline(transaction=False)
        for group in groups:
            pipe.lpush(group[0].key, *(envelope.payload for envelope in group))
        replies = pipe.execute(raise_on_error=False)
    sent: list[_Envelope] = []
    unsent: list[_Envelope] = []
    refusal: redis.ResponseError | None = None
    for group, reply in zip(groups, replies, strict=True):
        if isinstance(reply, redis.ResponseError):
            unsent += group
            refusal = refusal or reply
        else:
            sent += group
    return sent, unsent, refusal


READERS_KEY = KEY_PREFIX + "readers:"  # + queue -> set of the tokens of readers that may hold its items
READING_KEY = KEY_PREFIX + "reading:"  # + reader token -> list: the items that reader holds, oldest first
READER_KEY = KEY_PREFIX + "reader:"  # + reader token -> lease (the queue's name): the reader is alive
READER_LEASE_S = 60  # renewed each time a reader takes or waits: a reader silent for this long is gone


def key_type(client: redis.Redis, key: str) -> str:
    """Redis's TYPE of `key` as text: `none` (no such key), `list`, `string`, `stream`, ..."""
    kind = client.type(key)
    return kind.decode() if isinstance(kind, bytes) else str(kind)


class _Reader:
    """One reader of a result queue: its holding list, its lease, its entry in the queue's set of readers."""

    def __init__(self, client: redis.Redis, queue: str) -> None:
        self.redis = client
        self.queue = queue
        self.token = uuid.uuid4().hex
        self.held = READING_KEY + self.token
        self.lease = READER_KEY + self.token

    def take(self, wait_s: float | None) -> bytes | None:
        """The item at the head of the queue, moved onto the holding list (None: the queue is empty, or stayed
        empty for `wait_s`)."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.set(self.lease, self.queue, ex=READER_LEASE_S)
        pipe.sadd(READERS_KEY + self.queue, self.token)
        pipe.execute()
        if wait_s is None:
            raw = self.redis.lmove(self.queue, self.held, "LEFT", "RIGHT")
        else:
            raw = self.redis.blmove(self.queue, self.held, wait_s, "LEFT", "RIGHT")  # type: ignore[arg-type]
        return raw  # type: ignore[return-value]

    def done(self, raw: bytes) -> None:
        self.redis.lrem(self.held, 1, raw)  # type: ignore[arg-type]

    def close(self) -> None:
        """Everything still held back at the head of the queue, in its order; then the lease goes."""
        _put_back(self.redis, self.held, self.queue)
        pipe = self.redis.pipeline(transaction=True)
        pipe.srem(READERS_KEY + self.queue, self.token)
        pipe.delete(self.lease)
        pipe.execute()

    def put_back_orphans(self) -> None:
        """Items held by readers of this queue that are gone (their lease lapsed): back at the head of the queue."""
        for member in self.redis.smembers(READERS_KEY + self.queue):
            token = member.decode() if isinstance(member, bytes) else str(member)
            if not self.redis.exists(READER_KEY + token):
                _put_back(self.redis, READING_KEY + token, self.queue)
                self.redis.srem(READERS_KEY + self.queue, token)


def _put_back(client: redis.Redis, held: str, queue: str) -> None:
    """Move `held`'s items to the head of `queue`, last first, so they stand there in the order they were taken."""
    while client.lmove(held, queue, "RIGHT", "LEFT") is not None:
        pass
