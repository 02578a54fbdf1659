"""Dead letters: messages and deliveries labelq gave up on, kept with their reason and raw content.

Stored as JSON objects on the Redis list `labelq:dead` (oldest first): `id`, `reason`, `queue`, `message_id`,
`detail`, `error`, `attempts` (webhooks), `headers`, `raw`, `at`. Reasons are stable words:
`undecodable`, `invalid_request`, `too_many_deliveries`, `unrestorable` (an in-flight record labelq did not
write), `webhook_refused`, `webhook_private_address`,
`webhook_host_not_allowed`, `webhook_url_invalid`, `webhook_secret_unknown`, `webhook_secret_invalid`, `webhook_gone`,
`webhook_rejected`, `webhook_retries_exhausted`.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

from worker.constants import DEAD_LETTER_RAW_MAX_BYTES


@dataclass(frozen=True, slots=True)
class DeadLetter:
    reason: str  # undecodable | invalid_request | too_many_deliveries | webhook_... (stable words)
    queue: str
    raw: bytes
    message_id: str | None = None
    detail: str | None = None
    error: dict[str, Any] | None = None
    attempts: list[dict[str, Any]] | None = None  # webhook deliveries: every attempt's outcome
    headers: dict[str, Any] | None = None  # the message's transport headers, for replay

    def to_json(self, now_s: float) -> str:
        """The stored record, bounded: at most DEAD_LETTER_RAW_MAX_BYTES of the message and of its headers (a
        longer one says how long it was and cannot be replayed as it was)."""
        headers: Any = self.headers
        if headers and len(json.dumps(headers)) > DEAD_LETTER_RAW_MAX_BYTES:
            headers = {"truncated": True, "bytes": len(json.dumps(headers))}
        record = {
            "id": uuid.uuid4().hex,
            "reason": self.reason,
            "queue": self.queue,
            "message_id": self.message_id,
            "detail": (self.detail or "")[:1000] or None,
            "error": self.error,
            "attempts": self.attempts,
            "headers": headers,
            "raw": self.raw[:DEAD_LETTER_RAW_MAX_BYTES].decode("utf-8", errors="backslashreplace"),
            "at": now_s,
        }
        if len(self.raw) > DEAD_LETTER_RAW_MAX_BYTES:
            record |= {"raw_truncated": True, "raw_bytes": len(self.raw)}
        return json.dumps(record)


def parse_stored(raw: bytes | str) -> tuple[str, dict[str, Any]]:
    """(text, record) of an item of the dead-letter list; a ValueError saying why when the item is no dead letter
    (not UTF-8, not JSON, not an object with a string `id` and `reason`), as something else may have pushed it."""
    try:
        text = raw.decode() if isinstance(raw, bytes) else str(raw)
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8 text: {exc.reason} at byte {exc.start}") from None
    try:
        record = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(record, dict):
        raise ValueError(f"JSON {type(record).__name__}, not an object")
    missing = [name for name in ("id", "reason") if not isinstance(record.get(name), str)]
    if missing:
        raise ValueError(f"no {' or '.join(missing)}")
    return text, record
