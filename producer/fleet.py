"""`Client`: the producer over one Redis server or a fleet of several independent ones.

Over one server it is that server's `ServerClient` (producer/client.py), unchanged. Over several (a list of URLs,
LABELQ_REDIS_SHARDS), each request goes to its home server, chosen by a hash of its id (schemas/servers.py
`home_server`), so anyone holding the id knows where its result is written (`labelq:result:<id>` on that server)
without asking every server:

- `submit_many` splits a batch by home server, sending each server's share a round trip a chunk as one server's
  client does; the requests are read a round at a time (SEND_CHUNK_MESSAGES a server), so memory stays bounded.
- A server that is down is retried by the client's `RetryPolicy`, like one server is (about 17 s by default:
  a Redis restart or a Sentinel failover); its requests are never sent elsewhere, so a request is on exactly one
  server, and is answered there when its workers take it. When it stays down, the round's requests for the other
  servers are sent and then `SubmitError` names the server; `sent` lists every id that went, in order.
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
        """Send requests; returns their ids, in order. Over one server: `ServerClient.submit_many`. Over several:
        a round of up to SEND_CHUNK_MESSAGES requests a server is read, split by home server, and each server's
        share sent as `ServerClient.submit_many` sends (a chunk a round trip, retried by `retry_policy`). A server
        that stays down: the round's other shares are sent, then `SubmitError` names it (`sent`: every id that
        went, in order). A queue that is not labelq's is a `ValueError` before anything is sent; a request that
        does not validate is raised once the requests before it are sent."""
        if not self.sharded:
            return self.servers[0].submit_many(requests, queue=queue)
        queue = queue_name(queue)
        items = iter(requests)
        round_size = SEND_CHUNK_MESSAGES * len(self.servers)
        sent: list[str] = []
        while True:
            batch, problem = self._round(items, round_size)
            shares: dict[int, list[ClassifyRequest]] = {}
            for request in batch:
                shares.setdefault(self.home(request.id), []).append(request)
            went: Counter[str] = Counter()
            failures: list[tuple[int, Exception]] = []
            for index, share in sorted(shares.items()):
                try:
                    went.update(self.servers[index].submit_many(share, queue=queue))
                except (SubmitError, WrongKeyType) as exc:  # the others' shares still go
                    went.update(exc.sent)
                    failures.append((index, exc))
            for request in batch:  # in the order given
                if went[request.id] > 0:
                    went[request.id] -= 1
                    sent.append(request.id)
            if failures:
                raise self._failed(failures, sent)
            if problem is not None:
                raise problem
            if len(batch) < round_size:
                return sent

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

    def _failed(self, failures: list[tuple[int, Exception]], sent: list[str]) -> Exception:
        """What `submit_many` raises when servers failed: a refusal (wrong key type, ACL, password) as it is, else a
        `SubmitError` naming every server that stayed unreachable. `sent` is what went, on every server."""
        for _, exc in failures:
            if isinstance(exc, WrongKeyType | AccessDenied | PasswordRefused):
                exc.sent = sent
                return exc
        down = ", ".join(self.names[index] for index, _ in failures)
        first = failures[0][1]
        return SubmitError(
            f"{len(failures)} of {len(self.servers)} Redis servers unreachable through their retries ({down}): "
            f"{first}; the requests of the other servers were sent ({len(sent)} in all)",
            sent,
        )

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
