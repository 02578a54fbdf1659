"""Moderators' corrections, kept per label set for `labelq labelsets refit` (worker/ops/refit.py).

    labelq:corrections:<set>   list of JSON, newest last: {request_id, text, labels, label_set_version, accepted,
                               shadow_accepted, moderator, at}; the newest LABELQ_CORRECTIONS_MAX are kept

A correction is checked against what labelq answered: the result stored under its request id (so an id older than
LABELQ_RESULT_TTL_S is unknown), the label set that result came from (it must have a learned head: what a refit
improves), and that set's labels (a single-label set takes exactly one). What is kept outlives the result: the
text (which the correction carries) and the labels, as long as Redis keeps its data (no TTL: persistence is
Redis's). A second correction of one request is kept too; a refit uses the newest.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import redis
from pydantic import ValidationError

from schemas import Correction, CorrectionReceipt, ErrorCode, ErrorResult
from schemas.result import parse_result, single_error
from schemas.transport import RESULT_KEY
from worker import metrics
from worker.constants import CORRECTIONS_KEY
from worker.stream.labelsets import LabelSetStore, Unusable
from worker.stream.shadow import SHADOW_DECISION_KEY


@dataclass(frozen=True, slots=True)
class Corrected:
    """One correction as a refit reads it."""

    request_id: str
    text: str
    labels: tuple[str, ...]
    label_set_version: int


class CorrectionStore:
    def __init__(self, client: redis.Redis, labelsets: LabelSetStore, max_kept: int) -> None:
        self.client = client
        self.labelsets = labelsets
        self.max_kept = max_kept

    def record(self, correction: Correction) -> CorrectionReceipt | ErrorResult:
        """Check a correction against the result and label set it corrects, and keep it; an `ErrorResult` says
        what is wrong with it."""
        rid = correction.request_id
        raw = self.client.get(RESULT_KEY + rid)
        if raw is None:
            return single_error(
                rid,
                ErrorCode.UNKNOWN_REQUEST,
                f"no result under id {rid!r}: never answered, or older than the results' TTL (LABELQ_RESULT_TTL_S)",
                "request_id",
            )
        result = parse_result(raw)
        if isinstance(result, ErrorResult) or not result.label_set:
            why = "was answered with an error" if isinstance(result, ErrorResult) else "named no label set"
            return single_error(rid, ErrorCode.NOT_TAUGHT, f"request {rid} {why}: nothing to correct", "request_id")
        name = result.label_set
        found = self.labelsets.latest([name]).get(name)
        if found is None or isinstance(found, Unusable):
            return single_error(
                rid, ErrorCode.UNKNOWN_LABEL_SET, f"label set {name} is gone or unusable: {found or 'not stored'}"
            )
        if found.head is None:
            return single_error(
                rid,
                ErrorCode.NOT_TAUGHT,
                f"label set {name} has no learned head: teach it first (labelq labelsets fit {name} --data ...)",
                "label_set",
            )
        names = [label.name for label in found.labels]
        unknown = [label for label in correction.labels if label not in names]
        if unknown:
            return single_error(
                rid, ErrorCode.UNKNOWN_LABEL, f"not labels of {name}: {unknown}; its labels: {names}", "labels"
            )
        if not found.head.multi_label and len(correction.labels) != 1:
            return single_error(
                rid, ErrorCode.WRONG_TYPE, f"{name} is single-label: give exactly one of {names}", "labels"
            )
        corrected = set(correction.labels)
        outcome = "right" if set(result.accepted) == corrected else "wrong"
        metrics.LABELSET_CORRECTED.labels(name, "live", outcome).inc()
        shadow_raw = self.client.get(f"{SHADOW_DECISION_KEY}{name}:{rid}")
        shadow_accepted = _accepted(shadow_raw)
        if shadow_accepted is not None:
            outcome = "right" if set(shadow_accepted) == corrected else "wrong"
            metrics.LABELSET_CORRECTED.labels(name, "shadow", outcome).inc()
        kept: dict[str, Any] = {
            "request_id": rid,
            "text": correction.text,
            "labels": list(dict.fromkeys(correction.labels)),
            "label_set_version": result.label_set_version,
            "accepted": list(result.accepted),
            "shadow_accepted": shadow_accepted,  # the candidate's decision, when one ran in shadow
            "moderator": correction.moderator,
            "at": round(time.time(), 3),
        }
        pipe = self.client.pipeline(transaction=True)
        pipe.rpush(CORRECTIONS_KEY + name, json.dumps(kept, ensure_ascii=False))
        pipe.ltrim(CORRECTIONS_KEY + name, -self.max_kept, -1)
        pipe.llen(CORRECTIONS_KEY + name)
        count = int(pipe.execute()[-1])
        return CorrectionReceipt(
            request_id=rid, label_set=name, label_set_version=result.label_set_version or 0, corrections=count
        )

    def read(self, name: str) -> list[Corrected]:
        """The set's corrections, one a request (its newest), oldest first; entries that do not parse are skipped."""
        newest: dict[str, Corrected] = {}
        for raw in self.client.lrange(CORRECTIONS_KEY + name, 0, -1):
            try:
                item = json.loads(raw)
                corrected = Corrected(
                    str(item["request_id"]),
                    str(item["text"]),
                    tuple(str(label) for label in item["labels"]),
                    int(item.get("label_set_version") or 0),
                )
            except (ValueError, KeyError, TypeError):
                continue
            newest.pop(corrected.request_id, None)
            newest[corrected.request_id] = corrected
        return list(newest.values())


def record_correction(store: CorrectionStore, message: Any) -> CorrectionReceipt | ErrorResult:
    """A correction as any Celery client sends it (the task's one argument): parsed at the boundary, a malformed
    one answered with the error, never raised."""
    try:
        correction = Correction.model_validate(message)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or None
        rid = message.get("request_id") if isinstance(message, dict) else None
        return single_error(
            rid if isinstance(rid, str) and len(rid) <= 128 else None,
            ErrorCode.INVALID_MESSAGE,
            f"not a correction: {where or 'the argument'}: {first['msg']}",
            where,
        )
    return store.record(correction)


def _accepted(raw: bytes | str | None) -> list[str] | None:
    """A shadow's kept decision (worker/stream/shadow.py), None when there is none (or it does not parse)."""
    if raw is None:
        return None
    try:
        accepted = json.loads(raw)["accepted"]
    except (ValueError, KeyError, TypeError):
        return None
    return [str(label) for label in accepted] if isinstance(accepted, list) else None
