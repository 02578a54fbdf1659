"""The transport half of the contract: queue names, the Celery task name, and the Redis keys results land on.

A request is a Celery task message: task `labelq.classify`, `args=[request object]`, JSON, sent to one of
the queues below (its latency class). Results: `labelq:result:<id>` (the result JSON, with a TTL), one element
pushed onto `labelq:notify:<id>` when it is written, and the result JSON RPUSHed onto the request's
`reply_to` list when it names one.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

TASK_CLASSIFY = "labelq.classify"
QUEUE_REALTIME = "labelq.realtime"  # moderation and chat routing: small batches, a few ms of waiting at most
QUEUE_BULK = "labelq.bulk"  # backfills: large batches, throughput first
QUEUES = {"realtime": QUEUE_REALTIME, "bulk": QUEUE_BULK}

KEY_PREFIX = "labelq:"
# a worker's in-flight ledger (worker/stream/redis_queue.py): what it claimed and has not settled
INFLIGHT_KEY = KEY_PREFIX + "inflight"  # hash: tag -> list + "\n" + the message's bytes
INFLIGHT_INDEX_KEY = KEY_PREFIX + "inflight:index"  # sorted set: tag -> claimed at (epoch seconds)
INFLIGHT_SEQ_KEY = KEY_PREFIX + "inflight:seq"  # claims are numbered from this counter (tags: claim.n)

# kombu's Redis transport: a message of priority >= 3 goes to the queue's name + sep + step (its defaults here;
# LABELQ_REDIS_TRANSPORT_OPTIONS / a Client's transport_options may change both)
PRIORITY_SEP = "\x06\x16"
PRIORITY_STEPS = (0, 3, 6, 9)  # step 0 is the plain list


def priority_lists(queue: str, transport_options: Mapping[str, Any] | None = None) -> list[str]:
    """Every Redis list a queue's messages may be on: the plain list, then kombu's priority sub-lists."""
    options = transport_options or {}
    sep = str(options.get("sep", PRIORITY_SEP))
    steps = sorted({0, *(int(step) for step in options.get("priority_steps", PRIORITY_STEPS))})
    return [f"{queue}{sep}{step}" if step else queue for step in steps]


RESULT_KEY = KEY_PREFIX + "result:"  # + request id -> the result JSON (SET with TTL)
NOTIFY_KEY = KEY_PREFIX + "notify:"  # + request id -> a list that gets one element once the result exists
DEAD_LETTER_KEY = KEY_PREFIX + "dead"  # list of dead letters (JSON), oldest first
WEBHOOK_SCHEDULE_KEY = KEY_PREFIX + "webhooks:scheduled"  # sorted set: webhook jobs (JSON) by due time
WEBHOOK_CLAIMED_KEY = KEY_PREFIX + "webhooks:claimed"  # sorted set: jobs handed to a delivery task, by claim expiry
QUEUE_WEBHOOKS = "labelq.webhooks"  # Celery queue of webhook delivery tasks
TASK_DELIVER_WEBHOOK = "labelq.deliver_webhook"
TASK_CORRECT = "labelq.correct"  # a moderator's verdict on a result (schemas/corrections.py), sent to QUEUE_TASKS
QUEUE_TASKS = "labelq.tasks"  # the classification workers' own Celery queue: corrections go there
CELERY_RESULT_KEY = "celery-task-meta-"  # + task id: Celery's Redis result backend (Celery's own name)
WORKER_KEY = KEY_PREFIX + "worker:"  # + node name -> JSON {model, revision, queues, pid}; exists while it is ready
WORKER_KEY_TTL_S = 30  # refreshed every third of this; a worker that dies disappears within it


@dataclass(frozen=True, slots=True)
class SentinelUrl:
    """A Redis reached through Sentinel, as kombu writes it: `sentinel://[:password@]host:port[/db]`, several
    joined by `;` (one per sentinel). The master's name is not in the URL: it is the transport option
    `master_name` (Celery's `broker_transport_options`, labelq's LABELQ_REDIS_TRANSPORT_OPTIONS)."""

    sentinels: tuple[tuple[str, int], ...]
    password: str | None  # the master's, as kombu reads it from the first URL
    db: int


SENTINEL_SCHEME = "sentinel://"
SENTINEL_DEFAULT_PORT = 26379


def parse_sentinel_url(url: str) -> SentinelUrl | None:
    """The sentinels of a `sentinel://` URL, or None for any other URL (redis://, rediss://, unix://)."""
    if not url.startswith(SENTINEL_SCHEME):
        return None
    parts = [urlsplit(part.strip()) for part in url.split(";") if part.strip()]
    sentinels = tuple((part.hostname or "127.0.0.1", part.port or SENTINEL_DEFAULT_PORT) for part in parts)
    path = parts[0].path.strip("/")
    return SentinelUrl(sentinels, parts[0].password, int(path) if path.isdigit() else 0)


REDIS_SCHEMES = ("redis", "rediss", "unix", "sentinel")
SSL_CERT_REQS = ("none", "optional", "required")  # ssl_cert_reqs= in a rediss:// URL, as redis-py reads it
_TRUE_FALSE = ("1", "0", "true", "false", "yes", "no", "y", "n", "t", "f")  # redis-py's booleans, any case
# The query parameters a Redis URL may carry: only those every reader of the one URL takes. redis-py's from_url
# reads many more, but the same URL is Celery's broker URL, and kombu's Connection takes a query parameter as its
# own keyword (socket_timeout=5 was a TypeError in `labelq health`, `submit` and the worker): only the `ssl_*`
# ones, which kombu gathers into its TLS options, reach all of kombu, Celery's result backend and redis-py.
# They configure TLS: only rediss:// (kombu's sentinel:// too) has it.
URL_PARAMETERS: dict[str, str] = {
    **dict.fromkeys(("ssl_check_hostname", "ssl_validate_ocsp", "ssl_validate_ocsp_stapled"), "boolean"),
    "ssl_cert_reqs": "choice",
    **dict.fromkeys(
        (
            "ssl_keyfile", "ssl_certfile", "ssl_ca_certs", "ssl_ca_path", "ssl_ca_data", "ssl_password",
            "ssl_ciphers",
        ),
        "text",
    ),
}  # fmt: skip
# redis-py's connection settings kombu reads from its transport options (not from the URL): where to put them
TRANSPORT_OPTION_PARAMETERS = (
    "socket_timeout", "socket_connect_timeout", "socket_keepalive", "max_connections", "health_check_interval",
    "retry_on_timeout", "client_name",
)  # fmt: skip
_ELSEWHERE = {
    "db": "give the database as the URL's path instead: redis://host:port/N",
    "username": "give it before the host instead: redis://user:password@host:port/N",
    "password": "give it before the host instead: redis://user:password@host:port/N",
}


class RedisURLError(ValueError):
    """A Redis URL that cannot work. The message says why without repeating the URL (it may hold a password)."""


def redis_url_problem(url: str, *, tls_needs_cert_reqs: bool = False) -> str | None:
    """Why `url` cannot reach a Redis, or None: a scheme Redis clients know, ports that are numbers, a database
    that is a number (redis-py would quietly use 0 for `/abc`), and query parameters that redis-py, kombu and
    Celery take, each with a value of its kind (`ssl_cert_reqs=bogus` ended in a KeyError inside kombu).
    `tls_needs_cert_reqs`: a rediss:// URL must say `ssl_cert_reqs` (Celery's Redis result backend refuses one
    that does not). The message never repeats the URL's password."""
    parts = [urlsplit(part.strip()) for part in url.split(";") if part.strip()] or [urlsplit(url)]
    if len(parts) > 1 and any(part.scheme != "sentinel" for part in parts):
        if all(part.scheme in REDIS_SCHEMES for part in parts):  # `redis://a;redis://b`: one URL, silently
            return (
                "';' joins the sentinels of one sentinel:// server (sentinel://h1:26379;sentinel://h2:26379); name "
                "several Redis servers in LABELQ_REDIS_SHARDS, separated by ','"
            )
        return "each sentinel after ';' needs its own sentinel:// (sentinel://h1:26379;sentinel://h2:26379)"
    for part in parts:
        if part.scheme not in REDIS_SCHEMES:
            return "the scheme must be one of " + ", ".join(f"{scheme}://" for scheme in REDIS_SCHEMES)
        try:
            part.port  # noqa: B018 -- urlsplit checks the port when asked: a ValueError when it is no port
        except ValueError:
            return "the port must be a number from 0 to 65535"
        database = part.path[1:] if part.path.startswith("/") else part.path  # one '/' before it: `/0/` is no number
        if part.scheme != "unix" and database and not database.isdigit():
            return f"the database (after the host) must be a number, not {database[:40]!r}"
        problem = _query_problem(part.scheme, part.query)
        if problem:
            return problem
        if tls_needs_cert_reqs and part.scheme == "rediss" and "ssl_cert_reqs" not in dict(parse_qsl(part.query)):
            return (
                "a rediss:// URL needs the URL parameter ssl_cert_reqs: add ?ssl_cert_reqs=required (or optional, "
                "none) to say whether the server's certificate is checked"
            )
    return None


def _query_problem(scheme: str, query: str) -> str | None:
    """Why a URL's query (`a=1&b=2`) cannot work, naming the parameter; values are echoed only where they cannot
    be secret (numbers, booleans, choices)."""
    for name, value in parse_qsl(query, keep_blank_values=True):
        kind = URL_PARAMETERS.get(name)
        if kind is None:
            accepted = f"accepted in the URL: {', '.join(sorted(URL_PARAMETERS))}"
            if name in _ELSEWHERE:
                return f"the URL parameter {name} is not accepted: {_ELSEWHERE[name]} ({accepted})"
            if name in TRANSPORT_OPTION_PARAMETERS:
                return (
                    f"the URL parameter {name} is not accepted (Celery's broker connection does not read it from the "
                    f"URL): set it in LABELQ_REDIS_TRANSPORT_OPTIONS instead ({accepted})"
                )
            return f"the URL parameter {name[:40]} is not accepted, an unknown one here ({accepted})"
        if name.startswith("ssl_") and scheme in ("redis", "unix"):
            return f"the URL parameter {name} applies to TLS: use a rediss:// URL, or drop it"
        shown = repr(value[:40])
        if kind == "choice" and value not in SSL_CERT_REQS:
            return f"the URL parameter {name} must be one of {', '.join(SSL_CERT_REQS)}, not {shown}"
        if kind == "boolean" and value.lower() not in _TRUE_FALSE:
            return f"the URL parameter {name} must be true or false, not {shown}"
    return None


ACL_DOCS = "docs/worker.md#a-redis-acl-user"  # what a labelq user must be granted
_PERMISSION_WORDS = ("NOPERM", "no permissions to")  # Redis's ACL refusals (NoPermissionError), however wrapped


def permission_denied(exc: BaseException) -> str | None:
    """Redis's ACL refusal in `exc` or its causes (kombu and Celery wrap it), as Redis worded it; None when the
    failure is something else. An ACL refusal is a configuration problem: never retried as an outage."""
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return None
        names = {cls.__name__ for cls in type(seen).__mro__}
        text = str(seen)
        if "NoPermissionError" in names or any(word in text for word in _PERMISSION_WORDS):
            return text
        seen = seen.__cause__ or seen.__context__
    return None


def _in_chain(exc: BaseException, words: tuple[str, ...]) -> str | None:
    """The text of the first of `exc` and its causes that holds one of `words` (kombu and Celery wrap Redis's)."""
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return None
        if any(word in str(seen) for word in words):
            return str(seen)
        seen = seen.__cause__ or seen.__context__
    return None


def url_database(url: str) -> str | None:
    """The /N of a Redis URL (its first, for sentinel://), None when it names none."""
    path = urlsplit(url.split(";")[0].strip()).path.strip("/")
    return path if path.isdigit() else None


def database_missing(exc: BaseException, database: object = None) -> str | None:
    """Redis's "DB index is out of range" in `exc` or its causes, as one line naming the URL's /`database` (past
    the server's `databases`); None for any other failure. A setting: never retried."""
    if _in_chain(exc, ("DB index is out of range", "invalid DB index")) is None:
        return None
    where = f" /{database}" if database is not None else ""
    return (
        f"the Redis URL's database{where} does not exist on that Redis (DB index is out of range): use a smaller /N "
        "(the server has `databases` of them, 16 by default)"
    )


_AUTH_WORDS = (
    "invalid username-password pair",
    "invalid password",
    "WRONGPASS",
    "NOAUTH",
    "without any password configured",
)


def wrong_type(exc: BaseException) -> bool:
    """Redis said WRONGTYPE somewhere in `exc` or its causes (kombu wraps it as an OperationalError)."""
    return _in_chain(exc, ("WRONGTYPE",)) is not None


def worker_record(raw: bytes | str) -> tuple[str, dict[str, Any] | None]:
    """A worker's ready record (WORKER_KEY: {model, revision, queues, pid}), or why what is there is not one."""
    try:
        record = json.loads(raw)
    except ValueError as exc:  # not JSON (or not UTF-8)
        return f"not JSON ({exc})"[:120], None
    if not isinstance(record, dict):
        return f"JSON {type(record).__name__}, not an object", None
    fields = {"model": str, "revision": str, "queues": list, "pid": int}
    wrong = [name for name, kind in fields.items() if not isinstance(record.get(name), kind)]
    if wrong:
        return f"no {', '.join(wrong)} of the right type in {{model, revision, queues, pid}}", None
    return "", record


def password_refused(exc: BaseException) -> bool:
    """Whether `exc` (or a cause) is Redis refusing the URL's user or password (or asking for one it lacks)."""
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return False
        if "AuthenticationError" in {cls.__name__ for cls in type(seen).__mro__}:
            return True
        seen = seen.__cause__ or seen.__context__
    return _in_chain(exc, _AUTH_WORDS) is not None
