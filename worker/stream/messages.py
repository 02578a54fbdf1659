"""Celery task messages as labelq receives them, decoded without Celery: the request inside the envelope.

A request is an ordinary Celery task message: task name `labelq.classify`, one positional argument, the
request as a JSON object (a JSON string holding it is accepted too), JSON content type. Protocol 2 (headers
carry `task` and `id`, the body is `[args, kwargs, embed]`) and protocol 1 (the body is a dict with `task`,
`id`, `args`, `kwargs`) are both read, so any maintained Celery client (Python, Node.js, Go) can produce.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from schemas import ErrorResult, ParsedRequest, RequestLimits, parse_request, validate_request
from schemas.parsing import peek_field
from schemas.request import ID_PATTERN, reply_queue_problem
from schemas.transport import TASK_CLASSIFY
from worker.constants import CELERY_DEFAULT_QUEUE


@dataclass(frozen=True, slots=True)
class Delivery:
    """One message taken off a queue, not yet parsed."""

    queue: str
    body: bytes
    headers: Mapping[str, Any]
    content_type: str | None
    received_at: float  # epoch seconds
    problem: str | None = None  # why the envelope's body could not be read: refused under the header task id
    digest: str = ""  # sha1 of the message's bytes as labelq's ledger held them (its redeliveries' counter)


@dataclass(frozen=True, slots=True)
class Canvas:
    """What a Celery message asks for around it: callbacks (`link`), errbacks (`link_error`), the rest of its
    chain, the chord it is a part of, and the ids that tie a workflow together. Signatures stay the dicts the
    message carried: the process layer hands them back to Celery, the stream never interprets them."""

    callbacks: tuple[dict[str, Any], ...] = ()
    errbacks: tuple[dict[str, Any], ...] = ()
    chain: tuple[dict[str, Any], ...] = ()  # the next task last, as Celery keeps it
    chord: dict[str, Any] | None = None
    group: str | None = None
    group_index: int | None = None
    root_id: str | None = None
    parent_id: str | None = None

    @property
    def followups(self) -> bool:
        """Whether anything must happen after this task: a callback, errback, chain or chord."""
        return bool(self.callbacks or self.errbacks or self.chain or self.chord)


NO_CANVAS = Canvas()


def _signatures(value: Any) -> tuple[dict[str, Any], ...]:
    return tuple(item for item in value if isinstance(item, dict)) if isinstance(value, list) else ()


def _name(value: Any) -> Any:
    return value.get("name") if isinstance(value, dict) else value


def routing_problem(signature: dict[str, Any]) -> str | None:
    """Why a signature a message carries may not be sent by labelq, or None: what follows a classification may go
    to Celery's default queue or to a plain queue name, never to a key Redis, kombu, Celery or labelq use for
    something else (a callback routed to `unacked_mutex` would stop every redelivery), nor through an exchange
    (which could fan one message out to any queue)."""
    options = signature.get("options")
    options = options if isinstance(options, dict) else {}
    exchange = _name(options.get("exchange"))
    if exchange not in (None, "", CELERY_DEFAULT_QUEUE):
        return f"a callback is routed through exchange {str(exchange)[:100]!r}; labelq sends to plain queues only"
    for key in ("queue", "routing_key"):
        name = _name(options.get(key))
        if name is None or name == CELERY_DEFAULT_QUEUE:
            continue
        if not isinstance(name, str) or reply_queue_problem(name) is not None:
            return f"a callback is routed to {str(name)[:100]!r}, a key labelq may not write to"
    return None


# A canvas a message may carry, nested signatures included: Celery's own workflows nest a few levels (a group of
# chains in a link); a hostile message may not make the check below cost more than this.
CANVAS_MAX_SIGNATURES = 200
CANVAS_MAX_DEPTH = 10
# Where a signature holds others: group and chain `tasks`, chord `header` and `body`, the `task` of chunks and
# map; its own `link`, `link_error`, `chain` and `chord` options. Celery sends each of them on in its turn.
_NESTED_KWARGS = ("tasks", "header", "body", "task")
_NESTED_OPTIONS = ("link", "link_error", "chain", "chord")


def _nested(signature: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[Any] = []
    for holder, keys in ((signature.get("kwargs"), _NESTED_KWARGS), (signature.get("options"), _NESTED_OPTIONS)):
        if isinstance(holder, dict):
            for key in keys:
                value = holder.get(key)
                found += value if isinstance(value, list) else [value]
    return [item for item in found if isinstance(item, dict)]


def canvas_problem(signatures: Sequence[dict[str, Any]]) -> str | None:
    """`routing_problem` of every signature the message carries, nested ones included (a group in a `link`, a
    chord's body, a callback's own `link_error`), or why the canvas is too large to check."""
    pending = [(signature, 1) for signature in signatures]
    seen = 0
    while pending:
        signature, depth = pending.pop()
        seen += 1
        if seen > CANVAS_MAX_SIGNATURES or depth > CANVAS_MAX_DEPTH:
            limits = f"{CANVAS_MAX_SIGNATURES} signatures, {CANVAS_MAX_DEPTH} levels deep"
            return f"the callbacks nest more signatures than labelq checks ({limits})"
        problem = routing_problem(signature)
        if problem is not None:
            return problem
        pending += ((inner, depth + 1) for inner in _nested(signature))
    return None


def _canvas(embed: Any, headers: Mapping[str, Any]) -> Canvas:
    """Protocol 2 carries signatures in the body's third element and ids in the headers; protocol 1 carries
    both in the body (`embed` is then the body itself). A signature routed where labelq may not write, at any
    depth, refuses the whole message."""
    embed = embed if isinstance(embed, dict) else {}
    callbacks, errbacks, chain = (_signatures(embed.get(key)) for key in ("callbacks", "errbacks", "chain"))
    chord = embed.get("chord") if isinstance(embed.get("chord"), dict) else None
    group = headers.get("group") or embed.get("taskset")
    if not (callbacks or errbacks or chain or chord or group or headers.get("parent_id")):
        return NO_CANVAS  # a plain task message: the common case, without building anything
    problem = canvas_problem((*callbacks, *errbacks, *chain, *([chord] if chord else [])))
    if problem is not None:
        raise UndecodableMessage(problem, readable_id(headers.get("id") or embed.get("id")))
    index = headers.get("group_index")
    return Canvas(
        callbacks=callbacks,
        errbacks=errbacks,
        chain=chain,
        chord=chord,
        group=readable_id(group),
        group_index=index if isinstance(index, int) and not isinstance(index, bool) else None,
        root_id=readable_id(headers.get("root_id")),
        parent_id=readable_id(headers.get("parent_id")),
    )


def celery_expires(value: Any) -> datetime | None:
    """Celery's `expires` (an ISO 8601 string: protocol 2 in the headers, protocol 1 in the body; naive means
    UTC, as Celery reads it), or None. One that cannot be read is ignored, and the task answered: every Celery
    client writes it from a datetime or seconds, so only a hand-made message has another."""
    if not isinstance(value, str) or len(value) > 64:
        return None
    try:
        found = datetime.fromisoformat(value)
    except ValueError:
        return None
    return found if found.tzinfo is not None else found.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class TaskEnvelope:
    message_id: str | None  # Celery's task id (the producer sets it to the request id)
    request: bytes | Any  # the request's JSON (bytes), or the request as decoded from the body
    canvas: Canvas = NO_CANVAS
    expires: datetime | None = None  # Celery's `expires`: not worth answering after it, like a deadline

    def request_json(self) -> str:
        """The request as JSON text (what a replay submits again)."""
        if isinstance(self.request, bytes):
            return self.request.decode("utf-8", errors="surrogatepass")
        return json.dumps(self.request, ensure_ascii=False)

    def parse(self, limits: RequestLimits) -> ParsedRequest | ErrorResult:
        if isinstance(self.request, bytes):
            return parse_request(self.request, limits)
        return validate_request(self.request, limits)


# A \uD800-\uDFFF escape in a body: it may decode to a lone surrogate, which is not text. Such a request, and
# any request of a body that is not strict UTF-8 (a plain body's lone surrogate arrives encoded, its invalid
# bytes surrogate-escaped), is written back out and parsed as bytes, where a lone surrogate is invalid UTF-8 (an
# `invalid_utf8` error result); every other request is validated as decoded (tests/worker/stream/).
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _strict_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


# A task id labelq answers under and counts deliveries by: any id a Celery client sends (Celery accepts any
# string; its clients send a uuid, users `order 42` or `tâche-1`): printable text, no control characters, spaces
# allowed, valid UTF-8, at most this long. Keys carry it after a fixed prefix, the result backend and logs quote
# it, so no character of it can reach another key or forge a line.
TASK_ID_MAX_CHARS = 1_024


def readable_id(value: Any) -> str | None:
    """A header or body task id as labelq may use it in Redis keys and results, else None."""
    text = str(value) if isinstance(value, str | int) and not isinstance(value, bool) else None
    if text is None or not 0 < len(text) <= TASK_ID_MAX_CHARS or not text.isprintable():
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return None
    return text


class _UnreadableId:
    """A task id labelq cannot answer under (its producer would wait forever): the message is dead-lettered once
    its request's own id is known, an error result goes there, and the worker logs why."""

    def __init__(self, value: Any) -> None:
        limit = f"printable text of 1 to {TASK_ID_MAX_CHARS} characters"
        self.reason = f"task id {ascii(value)[:100]} is not {limit}; the message is in the dead-letter list"


def _task_id(value: Any) -> str | _UnreadableId | None:
    """The message's task id: None when it has none."""
    found = readable_id(value)
    return _UnreadableId(value) if found is None and value is not None else found


class UndecodableMessage(ValueError):
    """The bytes are not a labelq task message; it goes to the dead-letter list, and when the message still
    names a readable task id, an error result is published under it so its producer hears back."""

    def __init__(self, reason: str, message_id: str | None = None, request_id: str | None = None) -> None:
        super().__init__(reason)
        self.message_id = message_id
        self.request_id = request_id  # no task id to answer under: the request's own id, when readable


def _is_json(content_type: str | None) -> bool:
    """No content type, or application/json with any parameters (`; charset=utf-8`)."""
    return content_type is None or content_type.partition(";")[0].strip().lower() == "application/json"


def decode(delivery: Delivery) -> TaskEnvelope:
    headers = delivery.headers if isinstance(delivery.headers, Mapping) else {}
    task_id = _task_id(headers.get("id")) if "task" in headers else None
    header_id = task_id if isinstance(task_id, str) else None
    if delivery.problem is not None:
        raise UndecodableMessage(delivery.problem, header_id)
    if not _is_json(delivery.content_type):
        reason = f"content type {str(delivery.content_type)[:100]!r}; labelq accepts application/json only"
        raise UndecodableMessage(reason, header_id)
    text_ok = _strict_utf8(delivery.body)
    try:  # bytes that are not UTF-8 are read as lone surrogates: the request they are in is refused, not the rest
        body = json.loads(delivery.body if text_ok else delivery.body.decode("utf-8", errors="surrogateescape"))
    except (ValueError, RecursionError) as exc:
        raise UndecodableMessage(f"body is not JSON: {exc}", header_id) from None
    if "task" in headers:  # protocol 2: [args, kwargs, embed]; kwargs null, or embed absent, as some clients send
        task, message_id = headers.get("task"), header_id
        if not (isinstance(body, list) and len(body) in (1, 2, 3) and isinstance(body[0], list)):
            raise UndecodableMessage("protocol 2 body must be [args, kwargs, embed]", message_id)
        args, kwargs = body[0], body[1] if len(body) > 1 and body[1] is not None else {}
        canvas = _canvas(body[2] if len(body) > 2 else None, headers)
        expires = celery_expires(headers.get("expires"))
    elif isinstance(body, dict) and "task" in body:  # protocol 1
        task, task_id = body.get("task"), _task_id(body.get("id"))
        message_id = task_id if isinstance(task_id, str) else None
        args, kwargs = body.get("args") or [], body.get("kwargs") or {}
        canvas = _canvas(body, body)
        expires = celery_expires(body.get("expires"))
    else:
        raise UndecodableMessage("not a Celery task message (no task name in headers or body)")
    if not isinstance(args, list) or not isinstance(kwargs, dict):
        raise UndecodableMessage("args must be a list and kwargs an object (or null)", message_id)
    if task != TASK_CLASSIFY:
        raise UndecodableMessage(f"task {str(task)[:100]!r} is not {TASK_CLASSIFY!r}", message_id)
    if len(args) == 1 and not kwargs:
        request = args[0]
    elif not args and set(kwargs) == {"request"}:
        request = kwargs["request"]
    else:
        raise UndecodableMessage("expected exactly one argument: the request", message_id)
    if isinstance(task_id, _UnreadableId):
        raise UndecodableMessage(task_id.reason, None, peek_field(request, "id", ID_PATTERN))
    if isinstance(request, str):
        return TaskEnvelope(message_id, request.encode("utf-8", errors="surrogatepass"), canvas, expires)
    if not text_ok or _SURROGATE_ESCAPE.search(delivery.body):
        written = json.dumps(request, ensure_ascii=False).encode("utf-8", errors="surrogatepass")
        return TaskEnvelope(message_id, written, canvas, expires)
    return TaskEnvelope(message_id, request, canvas, expires)
