"""`Client`: the producer over one Redis server or a fleet of several independent ones.

Over one server it is that server's `ServerClient` (producer/client.py), unchanged. Over several (a list of URLs,
LABELQ_REDIS_SHARDS), each request goes to its home server, chosen by a hash of its id (schemas/servers.py
`home_server`), so anyone holding the id knows where its result is written (`labelq:result:<id>` on that server)
without asking every server:

- `submit_many` splits a batch by home server, sending each server's share a round trip a chunk as one server's
  client does; the requests are read a round at a time (SEND_CHUNK_MESSAGES a server), so memory stays bounded.
- A server that does not answer holds its own share (in order, up to HOLD_MAX_MESSAGES requests) and is tried
  again on the client's `RetryPolicy` schedule (about 17 s by default: a Redis restart or a Sentinel failover)
  while the other servers' shares keep going; its requests are never sent elsewhere, so a request is on exactly
  one server and is answered there when its workers take it. When its retries run out, `SubmitError` names the
  server; `sent` lists every id that went (on every server), in the order given.
- `get` and `wait` look at the home server first, then at the others (a result written before the list of servers
  changed); `wait` rides out its home server's restart (it keeps asking until `timeout_s`).
- `results(Q)` reads the result queue Q on every server (each server's workers push onto their own Redis).
- `correct` sends a moderator's verdict to the home server of the request it corrects.
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import redis

from producer.client import (
    BROKER_ERRORS,
    SEND_CHUNK_MESSAGES,
    AccessDenied,
    PasswordRefused,
    Result,
    RetryPolicy,
    ServerClient,
    SubmitError,
    UnreadableResult,
    WrongKeyType,
    _Reader,
    key_type,
    queue_name,
)
from schemas import ClassifyRequest, CorrectionReceipt, ErrorResult, parse_result
from schemas.limits import RequestLimits
from schemas.request import reply_queue_problem
from schemas.servers import home_server, repeated_server, server_name
from schemas.transport import NOTIFY_KEY, RedisURLError

WAIT_RETRY_S = 0.5  # `wait`: the pause before asking a server that did not answer again


class Client:
    def __init__(
        self,
        redis_url: str | Sequence[str],
        *,
        retry_policy: RetryPolicy | None = None,
        transport_options: Mapping[str, Any] | None = None,
        limits: RequestLimits | None = None,
    ) -> None:
        """`redis_url`: one URL as the workers have it (`redis://`, `rediss://`, or `sentinel://...;sentinel://...`
        with `transport_options={"master_name": ...}`, kombu's form), or a fleet's URLs in their fixed order (as
        LABELQ_REDIS_SHARDS lists them: the order decides each request's server). `limits`: what the workers accept
        (their LABELQ_MAX_LABELS and the rest, `Settings.limits()`); a request given as a mapping is checked
        against them (the defaults when None: 100 labels)."""
        urls = (redis_url,) if isinstance(redis_url, str) else tuple(redis_url)
        if not urls:
            raise RedisURLError("no Redis URL: give one, or a fleet's list")
        repeated = repeated_server(urls)
        if repeated:
            raise RedisURLError(f"the Redis servers: {repeated}")
        self.names = tuple(server_name(url) for url in urls)  # for messages and labels: never a password
        servers: list[ServerClient] = []
        try:
            for url in urls:
                servers.append(
                    ServerClient(url, retry_policy=retry_policy, transport_options=transport_options, limits=limits)
                )
        except BaseException:
            for server in servers:
                server.close()
            raise
        self.servers: tuple[ServerClient, ...] = tuple(servers)
        first = self.servers[0]
        self.limits = first.limits
        self.retry_policy = first.retry_policy
        self.transport_options = first.transport_options

    # --- one server, as it was -------------------------------------------------------------------------------

    @property
    def redis(self) -> redis.Redis:
        """The first server's Redis (the only one, unless this is a fleet's client: then see `servers`)."""
        return self.servers[0].redis

    @property
    def _celery(self) -> Any:  # the first server's Celery app (benches send through it one message at a time)
        return self.servers[0]._celery

    def _send(self, request: ClassifyRequest, queue: str, producer: Any) -> None:
        self.servers[0]._send(request, queue, producer)

    @property
    def sharded(self) -> bool:
        return len(self.servers) > 1

    def where(self) -> str:
        """The Redis servers this client talks to, for messages: host, port and database, never a password."""
        return ", ".join(server.where() for server in self.servers)

    def close(self) -> None:
        for server in self.servers:
            server.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def prepare(self, request: ClassifyRequest | Mapping[str, Any]) -> ClassifyRequest:
        """Validate (a mapping is parsed like a wire message, under `limits`) and stamp `submitted_at`."""
        return self.servers[0].prepare(request)

    # --- where a request lives ---------------------------------------------------------------------------------

    def home(self, request_id: str) -> int:
        """The index of the server request `request_id` is sent to (schemas/servers.py `home_server`)."""
        return home_server(request_id, len(self.servers))

    def _looking_order(self, request_id: str) -> list[ServerClient]:
        """The home server first, then the others in the fleet's order."""
        home = self.home(request_id)
        return [self.servers[home]] + [server for index, server in enumerate(self.servers) if index != home]

    # --- sending -------------------------------------------------------------------------------------------------

    def submit(self, request: ClassifyRequest | Mapping[str, Any], *, queue: str = "realtime") -> str:
        """Send one request (to its home server); returns its id (the Celery task id too)."""
        return self.submit_many([request], queue=queue)[0]

    def submit_many(
        self, requests: Iterable[ClassifyRequest | Mapping[str, Any]], *, queue: str = "realtime"
    ) -> list[str]:
        """Send requests; returns their ids, in the order given. Over one server: `ServerClient.submit_many`. Over
        several: a round of up to SEND_CHUNK_MESSAGES requests a server is read and each server's share sent as
        `ServerClient.submit_many` sends it (a chunk a round trip). A server that does not answer holds its share
        (in order, up to HOLD_MAX_MESSAGES) and is tried again on `retry_policy`'s schedule while the other servers'
        shares keep going; past that bound the producer waits for it. When its retries run out, `SubmitError`
        names it (`sent`: every id that went, on every server). A queue that is not labelq's is a `ValueError`
        before anything is sent; a request that does not validate is raised once the requests before it are sent."""
        if not self.sharded:
            return self.servers[0].submit_many(requests, queue=queue)
        queue = queue_name(queue)
        items = iter(requests)
        round_size = SEND_CHUNK_MESSAGES * len(self.servers)
        sending = _Sending(len(self.servers))
        problem: Exception | None = None
        exhausted = False
        while True:
            if not exhausted and not sending.holding_too_much():
                batch, problem = self._round(items, round_size)
                for request in batch:
                    sending.add(self.home(request.id), request)
                exhausted = problem is not None or len(batch) < round_size
            for index, server in enumerate(self.servers):
                self._flush(index, server, sending, queue)
            if exhausted and not sending.waiting():
                break
            if exhausted or sending.holding_too_much():  # nothing else to do: wait for a held server's next try
                time.sleep(max(0.0, sending.next_try() - time.monotonic()))
        if problem is not None:
            raise problem
        return sending.sent_ids()

    def _flush(self, index: int, server: ServerClient, sending: _Sending, queue: str) -> None:
        """Send server `index`'s waiting share once (its retries are `_Sending`'s schedule), unless it is held and
        its next try is not due; a server that stays down past `retry_policy` is a `SubmitError` naming it."""
        share = sending.pending[index]
        if not share or not sending.due(index):
            return
        try:
            went = server.submit_many([request for _, request in share], queue=queue, retry_policy=NO_RETRY)
        except (WrongKeyType, AccessDenied, PasswordRefused) as exc:  # a refusal: retrying cannot help
            sending.went(index, exc.sent)
            exc.sent = sending.sent_ids()
            raise
        except SubmitError as exc:  # unreachable: hold its share, try again on the policy's schedule
            sending.went(index, exc.sent)
            tries = sending.failed(index, self.retry_policy)
            if tries > self.retry_policy.max_retries:
                cause = exc.__cause__ or exc  # the broker's own error, not the one-try client's sentence around it
                raise SubmitError(
                    f"Redis at {self.names[index]} unreachable through {tries - 1} retries ({cause}); the other "
                    f"servers' requests were sent ({len(sending.sent)} in all), {len(sending.pending[index])} of "
                    "this server's were not",
                    sending.sent_ids(),
                ) from exc
            return
        sending.went(index, went)
        sending.answered(index)

    def _round(
        self, items: Iterator[ClassifyRequest | Mapping[str, Any]], size: int
    ) -> tuple[list[ClassifyRequest], Exception | None]:
        """Up to `size` prepared requests, and the reason the next one does not validate (it ends the round)."""
        batch: list[ClassifyRequest] = []
        for item in items:
            try:
                batch.append(self.prepare(item))
            except Exception as exc:  # raised as it is once the round's requests are sent
                return batch, exc
            if len(batch) >= size:
                break
        return batch, None

    def correct(
        self,
        request_id: str,
        labels: Iterable[str],
        text: str,
        *,
        moderator: str | None = None,
        timeout_s: float = 30.0,
    ) -> CorrectionReceipt | ErrorResult | None:
        """A moderator's verdict on a result (`ServerClient.correct`), sent to the home server of the request."""
        server = self.servers[self.home(request_id)]
        return server.correct(request_id, labels, text, moderator=moderator, timeout_s=timeout_s)

    # --- results ---------------------------------------------------------------------------------------------------

    def get(self, request_id: str) -> Result | None:
        """The result of a request, None when there is none yet. Over several servers: its home first, then the
        others (a result written before the list of servers changed); another server that does not answer is passed
        over, and the home server's error is raised when it did not answer and no other had the result."""
        if not self.sharded:
            return self.servers[0].get(request_id)
        unreachable: BaseException | None = None
        for position, server in enumerate(self._looking_order(request_id)):
            try:
                found = server.get(request_id)
            except BROKER_ERRORS as exc:
                unreachable = exc if position == 0 else unreachable
                continue
            if found is not None:
                return found
        if unreachable is not None:
            raise unreachable
        return None

    def wait(self, request_id: str, timeout_s: float = 30.0) -> Result | None:
        """The result of a request, waiting up to `timeout_s` for it; None on timeout. Over several servers it
        waits on the home server's notification and looks at the others each time it wakes; a server that does not
        answer is asked again until the time is up (its error raised then, when it never answered)."""
        if not self.sharded:
            return self.servers[0].wait(request_id, timeout_s)
        deadline = time.monotonic() + timeout_s
        home = self.servers[self.home(request_id)]
        while True:
            try:
                found = self.get(request_id)
                unreachable: BaseException | None = None
            except BROKER_ERRORS as exc:
                found, unreachable = None, exc
            if found is not None:
                return found
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                if unreachable is not None:
                    raise unreachable
                return None
            try:
                home.redis.blpop([NOTIFY_KEY + request_id], timeout=max(0.01, min(remaining, 1.0)))
            except BROKER_ERRORS:
                time.sleep(min(max(remaining, 0.0), WAIT_RETRY_S))

    def results(self, reply_queue: str, *, follow: bool = False, poll_s: float = 1.0) -> Iterator[Result]:
        """Take results off a result queue in order (`ServerClient.results`: at least once, never lost). Over
        several servers the queue is read on each in turn (each server's workers push onto their own Redis): in
        order per server. A server that does not answer is passed over and asked again at its next turn; without
        `follow`, its error is raised once the others are read empty."""
        if not self.sharded:
            yield from self.servers[0].results(reply_queue, follow=follow, poll_s=poll_s)
            return
        problem = reply_queue_problem(reply_queue)
        if problem:
            raise ValueError(problem)
        readers: list[_Reader | None] = [None] * len(self.servers)
        unreachable: dict[int, BaseException] = {}
        wait_s = max(0.01, poll_s / len(self.servers))
        try:
            while True:
                taken_any = False
                for index, server in enumerate(self.servers):
                    try:
                        reader = readers[index] or self._reader(server, reply_queue)
                        readers[index] = reader
                        raw = reader.take(wait_s if follow else None)
                    except BROKER_ERRORS as exc:
                        unreachable[index] = exc
                        continue
                    unreachable.pop(index, None)
                    if raw is None:
                        continue
                    taken_any = True
                    try:
                        result = parse_result(raw)
                    except ValueError as exc:  # the finally puts it back
                        raise UnreadableResult(reply_queue, exc) from None
                    yield result
                    reader.done(raw)
                if taken_any:
                    continue
                if not follow:
                    if unreachable:
                        raise next(iter(unreachable.values()))
                    return
                if len(unreachable) == len(self.servers):
                    time.sleep(poll_s)
        finally:
            for held in readers:
                if held is not None:  # a server down: its item goes back when its lease lapses (the next reader)
                    with contextlib.suppress(*BROKER_ERRORS):
                        held.close()

    @staticmethod
    def _reader(server: ServerClient, reply_queue: str) -> _Reader:
        kind = key_type(server.redis, reply_queue)
        if kind not in ("list", "none"):
            raise ValueError(f"{reply_queue!r} is a Redis {kind} on {server.where()}, not a result queue (a list)")
        reader = _Reader(server.redis, reply_queue)
        reader.put_back_orphans()
        return reader

    # --- workers -----------------------------------------------------------------------------------------------

    def workers(self) -> dict[str, dict[str, Any]]:
        """Ready workers by node name (model loaded, consuming), on every server (a fleet's: each record with the
        server it serves, `redis`)."""
        return self.read_workers()[0]

    def read_workers(self) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
        """(ready workers by node name, {key: why} for each `labelq:worker:*` key that holds no worker record), over
        every server. A fleet's records carry `redis` (the server's name); a node name met on two servers is
        suffixed with its server's."""
        if not self.sharded:
            return self.servers[0].read_workers()
        found: dict[str, dict[str, Any]] = {}
        unreadable: dict[str, str] = {}
        for name, server in zip(self.names, self.servers, strict=True):
            ready, bad = server.read_workers()
            for node, record in ready.items():
                found[node if node not in found else f"{node} ({name})"] = {**record, "redis": name}
            unreadable |= {f"{key} ({name})": why for key, why in bad.items()}
        return found, unreadable

    def ping_workers(self, timeout_s: float = 1.0) -> list[dict[str, Any]]:
        """Celery's broadcast ping on every server: one reply per live worker node."""
        return [reply for server in self.servers for reply in server.ping_workers(timeout_s)]

    def wait_for_workers(self, timeout_s: float, count: int = 1) -> bool:
        deadline = time.monotonic() + timeout_s
        while len(self.workers()) < count:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True


NO_RETRY = RetryPolicy(max_retries=0)  # a fleet's server is tried once a turn; `_Sending` keeps its retry schedule
HOLD_MAX_MESSAGES = 10 * SEND_CHUNK_MESSAGES  # the most requests held for a server that does not answer before
# `submit_many` stops reading and waits for it


class _Sending:
    """A fleet's `submit_many` in progress: each server's requests not sent yet (with their place in the input),
    what went, and each held server's failed tries (its retries, on the client's `RetryPolicy`)."""

    def __init__(self, servers: int) -> None:
        self.pending: list[list[tuple[int, ClassifyRequest]]] = [[] for _ in range(servers)]
        self.sent: list[tuple[int, str]] = []
        self.tries: dict[int, int] = {}  # server -> failed tries in a row
        self.next_at: dict[int, float] = {}  # server -> when to try it again (time.monotonic)
        self._position = 0

    def add(self, index: int, request: ClassifyRequest) -> None:
        self.pending[index].append((self._position, request))
        self._position += 1

    def went(self, index: int, ids: Iterable[str]) -> None:
        """`ids` were sent to server `index`: the first of its pending requests with those ids, in order."""
        left = Counter(ids)
        keep = []
        for position, request in self.pending[index]:
            if left[request.id] > 0:
                left[request.id] -= 1
                self.sent.append((position, request.id))
            else:
                keep.append((position, request))
        self.pending[index] = keep

    def answered(self, index: int) -> None:
        self.tries.pop(index, None)
        self.next_at.pop(index, None)

    def failed(self, index: int, policy: RetryPolicy) -> int:
        """One more failed try of server `index`; how many in a row (the next is due after the policy's delay)."""
        tries = self.tries[index] = self.tries.get(index, 0) + 1
        self.next_at[index] = time.monotonic() + policy.delay_s(tries - 1)
        return tries

    def due(self, index: int) -> bool:
        return time.monotonic() >= self.next_at.get(index, 0.0)

    def waiting(self) -> bool:
        return any(self.pending)

    def holding_too_much(self) -> bool:
        return any(len(self.pending[index]) >= HOLD_MAX_MESSAGES for index in self.tries)

    def next_try(self) -> float:
        """When the earliest held server with requests waiting is due (now when none is held)."""
        return min((at for index, at in self.next_at.items() if self.pending[index]), default=time.monotonic())

    def sent_ids(self) -> list[str]:
        """Every id sent, in the order the requests were given."""
        return [request_id for _, request_id in sorted(self.sent)]
