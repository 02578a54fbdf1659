"""A fleet over several independent Redis servers: how a server is named, and which one a request belongs to.

Every producer of one fleet must agree on where a request id lives, so the rule is part of the contract (a
producer in another language computes it the same way): the request's home is server number

    jump_hash(int.from_bytes(sha256(id as UTF-8).digest()[:8], "big"), number of servers)

counted from 0 in the order the servers are listed (LABELQ_REDIS_SHARDS), where jump_hash is Lamping and Veach's
jump consistent hash ("A Fast, Minimal Memory, Consistent Hash Algorithm", 2014; implementations exist in most
languages). The order is what counts: keep it, and add a server at the end: then only about 1/(N+1) of the ids
move, all of them to the new server (a plain modulo would move most of them), and readers look at the other
servers after the home one, so results written before still are found.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from urllib.parse import urlsplit

from schemas.transport import parse_sentinel_url


def home_server(request_id: str, servers: int) -> int:
    """The index (from 0) of the server that request `request_id` is sent to, among `servers` servers."""
    if servers < 1:
        raise ValueError("a fleet has at least one server")
    digest = hashlib.sha256(request_id.encode("utf-8", "surrogatepass")).digest()
    return jump_hash(int.from_bytes(digest[:8], "big"), servers)


def jump_hash(key: int, buckets: int) -> int:
    """Lamping and Veach's jump consistent hash of a 64-bit `key` into `buckets` (the paper's code, its 64-bit
    arithmetic and its double-precision division)."""
    bucket, jump = -1, 0
    while jump < buckets:
        bucket = jump
        key = (key * 2862933555777941757 + 1) & 0xFFFFFFFFFFFFFFFF
        jump = int((bucket + 1) * (float(1 << 31) / float((key >> 33) + 1)))
    return bucket


def server_name(url: str) -> str:
    """A Redis URL as it may be shown (logs, metrics labels, health): host:port/db, never the user or password.
    Sentinel: `sentinel h1:p1,h2:p2/db` (the master's name is a transport option, the same for every server);
    a Unix socket: `unix:/path/db`."""
    sentinel = parse_sentinel_url(url)
    if sentinel is not None:
        hosts = ",".join(f"{host}:{port}" for host, port in sentinel.sentinels)
        return f"sentinel {hosts}/{sentinel.db}"
    part = urlsplit(url.strip())
    if part.scheme == "unix":
        db = dict(pair.split("=", 1) for pair in part.query.split("&") if "=" in pair).get("db", "0")
        return f"unix:{part.path}/{db}"
    try:
        port = part.port or 6379
    except ValueError:
        port = 0
    db = part.path.strip("/") or "0"
    host = part.hostname or "127.0.0.1"
    return f"{'[' + host + ']' if ':' in host else host}:{port}/{db}"


def repeated_server(urls: Sequence[str]) -> str | None:
    """Why `urls` cannot name a fleet's servers because one server is named twice (the same host, port and
    database, whatever the password or parameters), or None. Item numbers count from 1; no URL is repeated in the
    message beyond its server name."""
    first: dict[str, int] = {}
    for number, url in enumerate(urls, 1):
        name = server_name(url)
        # localhost is 127.0.0.1 (other aliases of one host need DNS, which settings never ask)
        same = "127.0.0.1" + name[len("localhost") :] if name.startswith("localhost:") else name
        if same in first:
            return f"item {number} names the same server as item {first[same]} ({name}); name each server once"
        first[same] = number
    return None
