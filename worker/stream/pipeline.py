"""A batch's story, without Celery: receive -> (dead-letter | error | expired | classify) -> publish.

`receive` runs as each message arrives (decoding and validation are cheap, and the batcher needs the pair
count); `handle` runs when the batch flushes. `handle` never raises for a message's sake: every message ends
as a published result, an error result, or a dead letter, all written in one Redis round trip before the
caller acks. Only a Redis failure raises, and then nothing is acked, so the batch is delivered again.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from schemas import ClassifyRequest, ErrorCode, ErrorResult, ParsedRequest, RequestLimits
from schemas.parsing import peek_field
from schemas.request import ID_PATTERN, QUEUE_NAME_PATTERN, reply_queue_problem
from schemas.result import single_error
from worker import metrics, tracing
from worker.deadletters import DeadLetter
from worker.engine.engine import Engine, error_for
from worker.engine.heads import LinearHead
from worker.engine.results import Answer, Answered
from worker.stream.labelsets import LabelSet, LabelSetStore, Unusable
from worker.stream.messages import NO_CANVAS, Canvas, Delivery, UndecodableMessage, decode
from worker.stream.publishing import Publication, Publisher
from worker.stream.shadow import score_shadows

log = logging.getLogger(__name__)
_ID = re.compile(ID_PATTERN)

# A request's webhook, checked before any inference is spent: the refusal message, or None when it may go.
WebhookGuard = Callable[[ClassifyRequest], str | None]


@dataclass(frozen=True, slots=True)
class Received:
    delivery: Delivery
    message_id: str | None = None
    parsed: ParsedRequest | None = None
    error: ErrorResult | None = None  # rejected request: published by id (and to its reply queue), dead-lettered
    error_reason: str = "invalid_request"  # the dead letter's reason for `error`
    undecodable: str | None = None  # not a labelq task message: dead-lettered (and answered, if it has an id)
    reply_queue: str | None = None
    enqueued_at_s: float = 0.0
    label_set: tuple[str, int] | None = None  # (name, version) the labels came from
    head: LinearHead | None = None  # the label set's learned head, when it has one
    pairs: int = 0  # model sequences it will cost (Engine.cost): what the batcher's pair budget counts
    canvas: Canvas = NO_CANVAS  # callbacks, chain, chord: what Celery asks to happen after it
    expires: datetime | None = None  # Celery's `expires`, when earlier than the request's deadline
    shadow: LabelSet | None = None  # its label set's candidate, scored in shadow (worker/stream/shadow.py)

    @property
    def counter_id(self) -> str:
        """What its deliveries are counted under: the sha1 of its bytes as the ledger held them (the sweep counts
        each time it puts those bytes back); a delivery that did not come through the ledger, a digest of its
        body."""
        return self.delivery.digest or hashlib.sha1(self.delivery.body).hexdigest()

    def publication(self, outcome: Answered) -> Publication:
        request = self.parsed.request if self.parsed else None
        webhook = request.webhook_url if request and outcome is not self.error else None
        secret = request.webhook_secret if request else None
        return Publication(outcome, self.reply_queue, webhook, secret, self.message_id, self.canvas)


def _peek_reply_queue(request: bytes | Any, limits: RequestLimits) -> str | None:
    """The reply queue of an invalid request, when it can still be read and may be a result queue."""
    value = peek_field(request, "reply_to", QUEUE_NAME_PATTERN)
    return value if value and reply_queue_problem(value, limits.reply_queue_prefixes) is None else None


def _refuse_unwritable(item: Received, unwritable: frozenset[str]) -> Received:
    """A request whose result queue is a Redis key of another type: its own error result (by id), never a failed
    write for the whole batch."""
    if item.reply_queue not in unwritable:
        return item
    if item.error is not None or item.parsed is None:
        return replace(item, reply_queue=None)
    message = f"reply_to {item.reply_queue!r} is a Redis key that is not a list; results go only to lists"
    error = error_for(item.parsed.request, ErrorCode.INVALID_REPLY_TO, message, "reply_to")
    return replace(item, reply_queue=None, error=error, error_reason="reply_queue_refused")


def _earlier(expires: datetime | None, deadline: datetime | None) -> bool:
    """Whether Celery's `expires` comes before the request's own deadline (the earlier of the two applies)."""
    return expires is not None and (deadline is None or expires < deadline)


def allow_all_webhooks(request: ClassifyRequest) -> str | None:
    return None


class Pipeline:
    def __init__(
        self,
        engine: Engine,
        publisher: Publisher,
        *,
        limits: RequestLimits,
        max_deliveries: int,
        webhook_guard: WebhookGuard = allow_all_webhooks,
        labelsets: LabelSetStore | None = None,
        budgets: Mapping[str, int] | None = None,
        log_texts: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.engine = engine
        self.publisher = publisher
        self.limits = limits
        self.max_deliveries = max_deliveries
        self.webhook_guard = webhook_guard
        self.labelsets = labelsets
        self.budgets = dict(budgets or {})  # queue -> most model sequences a batch of it runs (its max pairs)
        self.log_texts = log_texts
        self.clock = clock

    def receive(self, delivery: Delivery) -> Received:
        """What a message is, as it arrives (`receive_many` of one)."""
        return self.receive_many([delivery])[0]

    def receive_many(self, deliveries: Sequence[Delivery]) -> list[Received]:
        """What each message is, as a claim brings them in. Never raises for a message's sake: whatever the
        bytes, the outcome is a request to classify, an error result, or a dead letter. The label sets they name
        are read in one round trip (a Redis failure raises: the claim comes back after the visibility timeout),
        so each request is costed with the labels it will really run, before any model work."""
        read = [self._guarded(self._read, delivery, delivery) for delivery in deliveries]
        resolved = self._resolve_label_sets(read)
        return [self._guarded(self._admit, item, item.delivery) for item in resolved]

    def _guarded(self, step: Callable[[Any], Received], value: Any, delivery: Delivery) -> Received:
        try:
            return step(value)
        except Exception as exc:  # a message no rule foresaw: dead-lettered and logged, the worker goes on
            log.exception("a message could not be read (dead-lettered): %s", type(exc).__name__)
            detail = f"unreadable message: {type(exc).__name__}"
            return Received(delivery, undecodable=detail, enqueued_at_s=delivery.received_at)

    def _read(self, delivery: Delivery) -> Received:
        try:
            envelope = decode(delivery)
        except UndecodableMessage as exc:
            if exc.message_id is None:  # no task id to answer under: the log and the dead letter say why
                log.warning("a message was dead-lettered (queue %s): %s", delivery.queue, exc)
            if exc.request_id is not None:  # answered under the request's own id instead
                error = single_error(exc.request_id, ErrorCode.INVALID_MESSAGE, str(exc))
                return Received(delivery, error=error, error_reason="undecodable", enqueued_at_s=delivery.received_at)
            return Received(delivery, exc.message_id, undecodable=str(exc), enqueued_at_s=delivery.received_at)
        parsed = envelope.parse(self.limits)
        if isinstance(parsed, ErrorResult):
            if parsed.id is None and envelope.message_id is not None:  # answered under the task id instead
                parsed = parsed.model_copy(update={"id": envelope.message_id})
            return Received(
                delivery,
                envelope.message_id,
                error=parsed,
                reply_queue=_peek_reply_queue(envelope.request, self.limits),
                enqueued_at_s=delivery.received_at,
                canvas=envelope.canvas,
            )
        request = parsed.request
        if envelope.message_id and "id" not in request.model_fields_set and _ID.fullmatch(envelope.message_id):
            request = request.model_copy(update={"id": envelope.message_id})  # plain Celery: the task's id
            parsed = ParsedRequest(request, parsed.truncated)
        submitted = request.submitted_at.timestamp() if request.submitted_at else delivery.received_at
        return Received(
            delivery,
            envelope.message_id,
            parsed=parsed,
            reply_queue=request.reply_queue,
            enqueued_at_s=min(submitted, delivery.received_at),
            canvas=envelope.canvas,
            expires=envelope.expires if _earlier(envelope.expires, request.deadline) else None,
        )

    def _admit(self, received: Received) -> Received:
        """A readable request (its label set applied): what it costs, and whether a batch may run it."""
        if received.parsed is None or received.error is not None or received.undecodable is not None:
            return received
        request = received.parsed.request
        received = replace(received, pairs=self.engine.cost(request))
        queue = received.delivery.queue
        budget = self.budgets.get(queue)
        if budget is not None and received.pairs > budget:
            named = (
                f" (label set {received.label_set[0]!r} has that many labels and examples)"
                if received.label_set
                else ""
            )
            message = (
                f"the request would run {received.pairs} model sequences{named}; a batch of {queue} runs at most "
                f"{budget}: send fewer labels or examples"
            )
            error = error_for(request, ErrorCode.REQUEST_TOO_COSTLY, message, "label_set" if named else "labels")
            return replace(received, error=error, error_reason="request_too_costly")
        refusal = self.webhook_guard(request) if request.webhook_url else None
        if refusal is not None:
            error = error_for(request, ErrorCode.WEBHOOK_REFUSED, refusal, "reply_to")
            return replace(received, error=error, error_reason="webhook_refused")
        return received

    def handle(self, batch: Sequence[Received], *, count: bool = True, ack: Sequence[str] = ()) -> list[Publication]:
        """Settle a batch: every outcome written in one round trip (raises only when that write fails); returns
        what was published, for what the process layer does next (Celery callbacks, events).
        `count=False` when the batch's deliveries were read already (a failed batch retried one by one); `ack`:
        the batch's ledger tags, acked in the same atomic step as its last write (when the process layer has
        nothing to do between the write and the ack)."""
        self.engine.gate.checkpoint()  # what arrived while a bulk batch was claimed goes first (a no-op otherwise)
        started_s = self.clock()
        now = datetime.fromtimestamp(started_s, UTC)
        publications: list[Publication] = []
        dead: list[DeadLetter] = []
        to_classify: list[Received] = []
        outcomes: list[str] = []  # one per message not classified: an error code or dead_lettered (metrics)
        # a message's deliveries: 1 + the times the sweep put its bytes back (identical copies count once)
        ids = list(dict.fromkeys(r.counter_id for r in batch))
        queues = sorted({r.reply_queue for r in batch if r.reply_queue})
        preflight = self.publisher.preflight(ids if count else [], queues)
        counts = dict(zip(ids, preflight.counts, strict=True)) if count else {}
        # the counters of messages put back before go once they are settled (unread: any may have one)
        put_back = [digest for digest, times in counts.items() if times > 1] if count else ids
        batch = [_refuse_unwritable(r, preflight.unwritable) for r in batch]
        for item in batch:
            queue, raw, headers = item.delivery.queue, item.delivery.body, dict(item.delivery.headers)
            if item.undecodable is not None:
                dead.append(
                    DeadLetter("undecodable", queue, raw, item.message_id, detail=item.undecodable, headers=headers)
                )
                outcomes.append("dead_lettered")
                if item.message_id:  # its producer hears back under the task id it gave
                    error = single_error(item.message_id, ErrorCode.INVALID_MESSAGE, item.undecodable)
                    publications.append(Publication(error, task_id=item.message_id))
            elif counts.get(item.counter_id, 0) > self.max_deliveries:
                detail = f"received {counts[item.counter_id]} times"
                dead.append(
                    DeadLetter("too_many_deliveries", queue, raw, item.message_id, detail=detail, headers=headers)
                )
                outcomes.append("dead_lettered")
            elif item.error is not None:
                publications.append(item.publication(item.error))
                dead.append(
                    DeadLetter(
                        item.error_reason,
                        queue,
                        raw,
                        item.message_id,
                        detail=item.error.message,
                        error=item.error.model_dump(mode="json"),
                        headers=headers,
                    )
                )
                outcomes.append(item.error.code.value)
            elif item.parsed and item.expires is not None and item.expires <= now:
                message = f"the task expired ({item.expires.isoformat()}) before classification"
                publications.append(item.publication(error_for(item.parsed.request, ErrorCode.EXPIRED, message)))
                outcomes.append(ErrorCode.EXPIRED.value)
            elif item.parsed and item.parsed.request.expired(now):
                request = item.parsed.request
                message = f"deadline {request.deadline} passed before classification"
                publications.append(item.publication(error_for(request, ErrorCode.EXPIRED, message, "deadline")))
                outcomes.append(ErrorCode.EXPIRED.value)
            else:
                to_classify.append(item)
        classified = self._classify(to_classify, started_s)
        publications += classified
        shadowed = [
            (p.outcome, item.shadow)
            for item, p in zip(to_classify, classified, strict=True)
            if item.shadow is not None and isinstance(p.outcome, Answer) and p.outcome.scorer == "head"
        ]
        score_shadows(self.engine, self.publisher.client, self.publisher.result_ttl_s, shadowed)
        # a bulk batch lets realtime work through while its results are written too; any other: one round trip
        gate = self.engine.gate
        with tracing.result_write(len(publications) + len(dead)):
            between = gate.checkpoint if gate.is_open else None
            self.publisher.publish(publications, dead, put_back, between=between, ack=ack)
        self._observe(batch, outcomes, list(zip(to_classify, classified, strict=True)), started_s)
        self._log(batch, publications, dead, started_s)
        return publications

    def _resolve_label_sets(self, batch: Sequence[Received]) -> list[Received]:
        """Requests naming a label set get its latest version's labels (one Redis round trip for them all)."""
        named = {r.parsed.request.label_set for r in batch if r.parsed and r.parsed.request.label_set}
        if not named:
            return list(batch)
        found, shadows = self.labelsets.latest_with_shadows(n for n in named if n) if self.labelsets else ({}, {})
        resolved = []
        for item in batch:
            request = item.parsed.request if item.parsed else None
            if item.error is not None or request is None or not request.label_set:
                resolved.append(item)
                continue
            labelset = found.get(request.label_set)
            if labelset is None:
                message = f"no label set named {request.label_set!r} is stored"
                error = error_for(request, ErrorCode.UNKNOWN_LABEL_SET, message, "label_set")
                resolved.append(replace(item, error=error, error_reason="unknown_label_set"))
                continue
            if isinstance(labelset, Unusable):
                message = f"label set {request.label_set!r} is stored but cannot be used: {labelset}"
                error = error_for(request, ErrorCode.INVALID_LABEL_SET, message, "label_set")
                resolved.append(replace(item, error=error, error_reason="invalid_label_set"))
                continue
            applied = labelset.apply_to(request)
            names = {label.name for label in applied.labels}
            stray = sorted(set(applied.thresholds) - names) if isinstance(applied.thresholds, dict) else []
            if stray:
                message = f"threshold for {stray[0]!r}, which is not in label set {labelset.name!r}"
                error = error_for(request, ErrorCode.UNKNOWN_THRESHOLD_LABEL, message, "thresholds")
                resolved.append(replace(item, error=error))
                continue
            parsed = ParsedRequest(applied, item.parsed.truncated if item.parsed else False)
            shadow = shadows.get(labelset.name)
            if shadow is not None and (
                labelset.head is None or shadow.head is None or shadow.head.labels != labelset.head.labels
            ):
                shadow = None  # only a candidate of the same labels shadows a taught set
            resolved.append(
                replace(
                    item, parsed=parsed, label_set=(labelset.name, labelset.version), head=labelset.head, shadow=shadow
                )
            )
        return resolved

    def _observe(
        self,
        batch: Sequence[Received],
        outcomes: list[str],
        classified: list[tuple[Received, Publication]],
        started_s: float,
    ) -> None:
        """Metrics: exactly one outcome per message, and the batch's sizes and timings."""
        if not batch:
            return
        written_s = self.clock()
        queue = batch[0].delivery.queue
        metrics.RECEIVED.labels(queue).inc(len(batch))
        for label in outcomes:
            metrics.RESULTS.labels(label).inc()
        model_ms = 0.0
        for _, publication in classified:
            result = publication.outcome
            metrics.RESULTS.labels("ok" if isinstance(result, Answer) else result.code.value).inc()
            if isinstance(result, Answer):
                model_ms = max(model_ms, result.batch_ms)
                if result.label_set is not None:
                    _observe_drift(result)
        metrics.observe_batch(
            queue,
            len(batch),
            sum(r.pairs for r in batch),
            [max(0.0, started_s - r.enqueued_at_s) for r, _ in classified],
            model_ms / 1000,
            [max(0.0, written_s - r.enqueued_at_s) for r, _ in classified],
        )

    def _log(
        self, batch: Sequence[Received], publications: list[Publication], dead: list[DeadLetter], started_s: float
    ) -> None:
        batch_id = uuid.uuid4().hex[:12]
        outcomes = [p.outcome for p in publications]
        waits = [o.queue_ms or 0.0 for o in outcomes if isinstance(o, Answer)]
        log.info(
            "batch %s: %d messages, %d classified, %d errors, %d dead letters",
            batch_id,
            len(batch),
            len(waits),
            len(outcomes) - len(waits),
            len(dead),
            extra={
                "batch_id": batch_id,
                "queue": batch[0].delivery.queue if batch else None,
                "messages": len(batch),
                "classified": len(waits),
                "errors": len(outcomes) - len(waits),
                "dead_letters": len(dead),
                "batch_ms": round((self.clock() - started_s) * 1000, 3),
                "queue_ms_max": round(max(waits, default=0.0), 3),
            },
        )
        if log.isEnabledFor(logging.DEBUG):
            texts = {r.parsed.request.id: r.parsed.request.text for r in batch if r.parsed} if self.log_texts else {}
            for outcome in outcomes:
                fields: dict[str, object] = {"batch_id": batch_id, "request_id": outcome.id, "status": outcome.status}
                if isinstance(outcome, Answer):
                    fields |= {"top": outcome.top, **outcome.timings()}
                else:
                    fields |= {"code": outcome.code.value, "field": outcome.field}
                if outcome.id in texts:
                    fields["text"] = texts[outcome.id]
                log.debug("request %s: %s", outcome.id, outcome.status, extra=fields)

    def _classify(self, items: list[Received], started_s: float) -> list[Publication]:
        if not items:
            return []
        outcomes: list[Answered] = self.engine.answer(
            [item.parsed for item in items if item.parsed], [item.head for item in items if item.parsed]
        )
        publications = []
        for item, outcome in self.engine.gate.paced(zip(items, outcomes, strict=True)):
            if isinstance(outcome, Answer):
                outcome = replace(
                    outcome, queue_ms=max(0.0, (started_s - item.enqueued_at_s) * 1000), label_set=item.label_set
                )
            publications.append(item.publication(outcome))
        return publications


def _observe_drift(answer: Answer) -> None:
    """A label set's result in its drift metrics: accepted labels by set and version; each label's score for sets
    of at most DRIFT_MAX_LABELS labels."""
    assert answer.label_set is not None
    name, version = answer.label_set[0], str(answer.label_set[1])
    metrics.LABELSET_RESULTS.labels(name, version, answer.scorer).inc()
    for label in answer.accepted:
        metrics.LABELSET_ACCEPTED.labels(name, version, label).inc()
    if len(answer.names) <= metrics.DRIFT_MAX_LABELS:
        for label, score in zip(answer.names, answer.scores, strict=True):
            metrics.LABELSET_SCORE.labels(name, label).observe(score)
