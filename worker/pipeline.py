"""A batch's story, without Celery: receive -> (dead-letter | error | expired | classify) -> publish.

`receive` runs as each message arrives (decoding and validation are cheap, and the batcher needs the pair
count); `handle` runs when the batch flushes. `handle` never raises for a message's sake: every message ends
as a published result, an error result, or a dead letter, all written in one Redis round trip before the
caller acks. Only a Redis failure raises, and then nothing is acked, so the batch is delivered again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from schemas import ClassificationResult, ErrorCode, ErrorResult, ParsedRequest, RequestLimits
from schemas.parsing import parse_request, peek_field
from schemas.request import QUEUE_NAME_PATTERN, RESERVED_QUEUE_PREFIX
from worker.engine import Engine, error_for
from worker.messages import Delivery, UndecodableMessage, decode
from worker.publishing import DeadLetter, Publication, Publisher

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Received:
    delivery: Delivery
    message_id: str | None = None
    parsed: ParsedRequest | None = None
    error: ErrorResult | None = None  # invalid request: published to its reply queue and dead-lettered
    undecodable: str | None = None  # not a task message at all: dead-lettered only
    reply_to: str | None = None
    enqueued_at_s: float = 0.0

    @property
    def pairs(self) -> int:
        return len(self.parsed.request.labels) if self.parsed else 0


def _peek_reply_to(raw: bytes) -> str | None:
    """The reply queue of an invalid request, when it can still be read and is a plain queue name."""
    value = peek_field(raw, "reply_to", QUEUE_NAME_PATTERN)
    return value if value and not value.startswith(RESERVED_QUEUE_PREFIX) else None


class Pipeline:
    def __init__(
        self,
        engine: Engine,
        publisher: Publisher,
        *,
        limits: RequestLimits,
        max_deliveries: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.engine = engine
        self.publisher = publisher
        self.limits = limits
        self.max_deliveries = max_deliveries
        self.clock = clock

    def receive(self, delivery: Delivery) -> Received:
        try:
            envelope = decode(delivery)
        except UndecodableMessage as exc:
            return Received(delivery, undecodable=str(exc), enqueued_at_s=delivery.received_at)
        parsed = parse_request(envelope.request, self.limits)
        if isinstance(parsed, ErrorResult):
            return Received(
                delivery,
                envelope.message_id,
                error=parsed,
                reply_to=_peek_reply_to(envelope.request),
                enqueued_at_s=delivery.received_at,
            )
        submitted = parsed.request.submitted_at
        enqueued = submitted.timestamp() if submitted else delivery.received_at
        return Received(
            delivery,
            envelope.message_id,
            parsed=parsed,
            reply_to=self._queue_reply(parsed),
            enqueued_at_s=min(enqueued, delivery.received_at),
        )

    @staticmethod
    def _queue_reply(parsed: ParsedRequest) -> str | None:
        target = parsed.request.reply_to
        return target if target and not target.startswith(("http://", "https://")) else None

    def handle(self, batch: Sequence[Received]) -> None:
        started_s = self.clock()
        publications: list[Publication] = []
        dead: list[DeadLetter] = []
        to_classify: list[Received] = []
        counted = [r for r in batch if r.message_id]
        counts = dict(
            zip(
                (r.message_id for r in counted),
                self.publisher.count_deliveries([r.message_id for r in counted if r.message_id]),
                strict=True,
            )
        )
        for item in batch:
            queue, raw = item.delivery.queue, item.delivery.body
            if item.undecodable is not None:
                dead.append(DeadLetter("undecodable", queue, raw, detail=item.undecodable))
            elif item.message_id and counts.get(item.message_id, 0) > self.max_deliveries:
                dead.append(
                    DeadLetter(
                        "too_many_deliveries",
                        queue,
                        raw,
                        item.message_id,
                        detail=f"received {counts[item.message_id]} times",
                    )
                )
            elif item.error is not None:
                publications.append(Publication(item.error, item.reply_to))
                dead.append(
                    DeadLetter(
                        "invalid_request",
                        queue,
                        raw,
                        item.message_id,
                        detail=item.error.message,
                        error=item.error.model_dump(mode="json"),
                    )
                )
            elif item.parsed and item.parsed.request.expired(datetime.fromtimestamp(started_s, UTC)):
                request = item.parsed.request
                expired = error_for(
                    request, ErrorCode.EXPIRED, f"deadline {request.deadline} passed before classification", "deadline"
                )
                publications.append(Publication(expired, item.reply_to))
            else:
                to_classify.append(item)
        publications += self._classify(to_classify, started_s)
        dead += [self._webhook_pending(item) for item in batch if self._wants_webhook(item)]
        self.publisher.publish(publications, dead, [r.message_id for r in batch if r.message_id])

    def _classify(self, items: list[Received], started_s: float) -> list[Publication]:
        if not items:
            return []
        outcomes = self.engine.classify([item.parsed for item in items if item.parsed])
        publications = []
        for item, outcome in zip(items, outcomes, strict=True):
            if isinstance(outcome, ClassificationResult):
                queue_ms = max(0.0, (started_s - item.enqueued_at_s) * 1000)
                timings = outcome.timings.model_copy(update={"queue_ms": round(queue_ms, 3)})
                outcome = outcome.model_copy(update={"timings": timings})
            publications.append(Publication(outcome, item.reply_to))
        return publications

    @staticmethod
    def _wants_webhook(item: Received) -> bool:
        return bool(item.parsed and item.parsed.request.reply_to and not item.reply_to)

    @staticmethod
    def _webhook_pending(item: Received) -> DeadLetter:
        """Webhook delivery is not built yet (issue 4): the result is stored by id and the miss is recorded."""
        return DeadLetter(
            "webhook_not_supported",
            item.delivery.queue,
            item.delivery.body,
            item.message_id,
            detail="webhook delivery is not available yet; the result is stored by id",
        )
