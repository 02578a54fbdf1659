"""Dead letters: messages and deliveries labelq gave up on, kept with their reason and raw content.

Stored as JSON objects on the Redis list `labelq:dead` (oldest first): `id`, `reason`, `queue`, `message_id`,
`detail`, `error`, `attempts` (webhooks), `headers`, `raw`, `at`. Reasons are stable words:
`undecodable`, `invalid_request`, `too_many_deliveries`, `webhook_refused`, `webhook_private_address`,
`webhook_host_not_allowed`, `webhook_url_invalid`, `webhook_secret_unknown`, `webhook_gone`,
`webhook_rejected`, `webhook_retries_exhausted`.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any


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
        return json.dumps(
            {
                "id": uuid.uuid4().hex,
                "reason": self.reason,
                "queue": self.queue,
                "message_id": self.message_id,
                "detail": self.detail,
                "error": self.error,
                "attempts": self.attempts,
                "headers": self.headers,
                "raw": self.raw.decode("utf-8", errors="backslashreplace"),
                "at": now_s,
            }
        )
