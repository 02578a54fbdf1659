"""Label sets over a fleet of Redis servers (LABELQ_REDIS_SHARDS): a request is served by its id's home server, so a
set a request names must be on every server. Writes (`put`, `fit`, `refit`, `promote`, `rollback`, `shadow`,
`delete`) go to each server in the fleet's order; reads come from the first server that answers; a refit reads the
moderators' corrections of every server (each is kept on its request's home server). A server that cannot be
reached is skipped and named (`missed`): the command then exits 1; the same command run again once it is back
writes the next version on every server, one number on each again. With one server this is that server's store,
as before."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import redis

from schemas import RequestLimits
from schemas.servers import server_name
from worker.stream.corrections import Corrected, CorrectionStore
from worker.stream.labelsets import LabelSet, LabelSetStore

T = TypeVar("T")
UNREACHABLE = (redis.ConnectionError, redis.TimeoutError)


class LabelSetFleet:
    """The subset of `LabelSetStore` the commands and `refit` use, over every server of a fleet."""

    def __init__(self, clients: Sequence[tuple[str, redis.Redis]], limits: RequestLimits) -> None:
        """`clients`: each server's name (`host:port/db`, no password) and client, in the fleet's order."""
        self.stores = [(name, LabelSetStore(client, limits)) for name, client in clients]
        self.limits = limits
        self.missed: list[str] = []  # servers a write or read could not reach, in order, each once
        self.versions: dict[str, int] = {}  # the last `put`'s version on each server written

    # --- reads: the first server that answers ---

    def get(self, name: str, version: int | None = None) -> LabelSet | None:
        return self._read(lambda store: store.get(name, version))

    def candidate(self, name: str) -> LabelSet | None:
        return self._read(lambda store: store.candidate(name))

    def names(self) -> list[str]:
        found: set[str] = set()
        for names in self._each(lambda store: store.names()).values():
            found.update(names)
        return sorted(found)

    def latest_each(self, name: str) -> dict[str, LabelSet | None]:
        """Each reachable server's latest version of `name` (the built-in set where none is stored; None: neither)."""
        return self._each(lambda store: store.get(name))

    # --- writes: every server ---

    def put(self, labelset: LabelSet) -> int:
        """Store on every server under one version number, the next above any server's (`versions` has each);
        returns it."""
        floor = max(self._each(lambda store: store.last_version(labelset.name)).values()) + 1
        self.versions = self._each(lambda store: store.put(labelset, at_least=floor))
        return max(self.versions.values())

    def put_candidate(self, labelset: LabelSet) -> None:
        self._each(lambda store: store.put_candidate(labelset))

    def drop_candidate(self, name: str) -> None:
        self._each(lambda store: store.drop_candidate(name))

    def shadow_on(self, name: str) -> LabelSet | None:
        found = [c for c in self._each(lambda store: store.shadow_on(name)).values() if c is not None]
        return found[0] if found else None

    def shadow_off(self, name: str) -> bool:
        return any(self._each(lambda store: store.shadow_off(name)).values())

    def delete(self, name: str) -> bool:
        return any(self._each(lambda store: store.delete(name)).values())

    def corrections(self, max_kept: int) -> FleetCorrections:
        return FleetCorrections(self, max_kept)

    # --- the fleet's part ---

    def _each(self, step: Callable[[LabelSetStore], T]) -> dict[str, T]:
        """`step` on every server; one that cannot be reached is named in `missed`. Raises the first server's error
        when none answers (the CLI's one line: Redis unreachable)."""
        done: dict[str, T] = {}
        failure: Exception | None = None
        for name, store in self.stores:
            try:
                done[name] = step(store)
            except UNREACHABLE as exc:
                failure = failure or exc
                if name not in self.missed:
                    self.missed.append(name)
        if not done and failure is not None:
            raise failure
        return done

    def _read(self, step: Callable[[LabelSetStore], T]) -> T:
        failure: Exception | None = None
        for name, store in self.stores:
            try:
                return step(store)
            except UNREACHABLE as exc:
                failure = failure or exc
                if name not in self.missed:
                    self.missed.append(name)
        assert failure is not None  # a fleet has at least one server
        raise failure


class FleetCorrections:
    """`CorrectionStore.read` over every server: a correction is kept on its request's home server."""

    def __init__(self, fleet: LabelSetFleet, max_kept: int) -> None:
        self.fleet = fleet
        self.max_kept = max_kept

    def read(self, name: str) -> list[Corrected]:
        read = self.fleet._each(lambda store: CorrectionStore(store.client, store, self.max_kept).read(name))
        return [corrected for batch in read.values() for corrected in batch]


def fleet_of(urls: Sequence[str], limits: RequestLimits, connect: Callable[[str], Any]) -> LabelSetFleet:
    """A fleet store of `urls` (each connected by `connect`, the CLI's `broker`)."""
    return LabelSetFleet([(server_name(url), connect(url)) for url in urls], limits)
