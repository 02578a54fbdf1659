"""Celery task messages as labelq receives them, decoded without Celery: the request inside the envelope.

A request is an ordinary Celery task message: task name `labelq.classify`, one positional argument, the
request as a JSON object (a JSON string holding it is accepted too), JSON content type. Protocol 2 (headers
carry `task` and `id`, the body is `[args, kwargs, embed]`) and protocol 1 (the body is a dict with `task`,
`id`, `args`, `kwargs`) are both read, so any maintained Celery client (Python, Node.js, Go) can produce.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from schemas import ErrorResult, ParsedRequest, RequestLimits, parse_request, validate_request
from schemas.transport import TASK_CLASSIFY


@dataclass(frozen=True, slots=True)
class Delivery:
    """One message taken off a queue, not yet parsed."""

    queue: str
    body: bytes
    headers: Mapping[str, Any]
    content_type: str | None
    received_at: float  # epoch seconds


@dataclass(frozen=True, slots=True)
class TaskEnvelope:
    message_id: str | None  # Celery's task id (the producer sets it to the request id)
    request: bytes | Any  # the request's JSON (bytes), or the request as decoded from the body

    def request_json(self) -> str:
        """The request as JSON text (what a replay submits again)."""
        if isinstance(self.request, bytes):
            return self.request.decode("utf-8", errors="surrogatepass")
        return json.dumps(self.request, ensure_ascii=False)

    def parse(self, limits: RequestLimits) -> ParsedRequest | ErrorResult:
        if isinstance(self.request, bytes):
            return parse_request(self.request, limits)
        return validate_request(self.request, limits)


# A \uD800-\uDFFF escape in a body: it may decode to a lone surrogate, which is not text. Such a request is
# written back out and parsed as bytes, where a lone surrogate is invalid UTF-8 (an `invalid_utf8` error
# result); every other request is validated as decoded (tests/worker/stream/test_stream_units.py).
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


class UndecodableMessage(ValueError):
    """The bytes are not a labelq task message at all; it goes to the dead-letter list."""


def decode(delivery: Delivery) -> TaskEnvelope:
    if delivery.content_type not in (None, "application/json"):
        raise UndecodableMessage(f"content type {delivery.content_type!r}; labelq accepts application/json only")
    try:
        body = json.loads(delivery.body)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise UndecodableMessage(f"body is not JSON: {exc}") from None
    headers = delivery.headers or {}
    if "task" in headers:  # protocol 2
        task, message_id = headers.get("task"), headers.get("id")
        if not (isinstance(body, list) and len(body) == 3 and isinstance(body[0], list) and isinstance(body[1], dict)):
            raise UndecodableMessage("protocol 2 body must be [args, kwargs, embed]")
        args, kwargs = body[0], body[1]
    elif isinstance(body, dict) and "task" in body:  # protocol 1
        task, message_id = body.get("task"), body.get("id")
        args, kwargs = body.get("args") or [], body.get("kwargs") or {}
        if not isinstance(args, list) or not isinstance(kwargs, dict):
            raise UndecodableMessage("protocol 1 args must be a list and kwargs an object")
    else:
        raise UndecodableMessage("not a Celery task message (no task name in headers or body)")
    if task != TASK_CLASSIFY:
        raise UndecodableMessage(f"task {task!r} is not {TASK_CLASSIFY!r}")
    if len(args) == 1 and not kwargs:
        request = args[0]
    elif not args and set(kwargs) == {"request"}:
        request = kwargs["request"]
    else:
        raise UndecodableMessage("expected exactly one argument: the request")
    message_id = str(message_id) if message_id is not None else None
    if isinstance(request, str):
        return TaskEnvelope(message_id, request.encode("utf-8", errors="surrogatepass"))
    if _SURROGATE_ESCAPE.search(delivery.body):
        return TaskEnvelope(message_id, json.dumps(request, ensure_ascii=False).encode("utf-8", errors="surrogatepass"))
    return TaskEnvelope(message_id, request)
