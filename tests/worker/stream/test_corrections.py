"""Moderators' corrections (`Client.correct`, `labelq feedback`, the `labelq.correct` task) and refits that can
never make a label set worse (`labelq labelsets refit`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis as redis_lib
from celery import Celery

from producer import Client
from schemas import ClassificationResult, ClassifyRequest, CorrectionReceipt, ErrorCode, ErrorResult
from schemas.transport import CELERY_RESULT_KEY, QUEUE_TASKS, TASK_CORRECT
from tests.conftest import WorkerFactory
from tests.worker.stream.test_labelsets import TEACHING, labelq
from worker.constants import CORRECTIONS_KEY
from worker.engine.engine import Engine
from worker.ops.refit import held_out
from worker.stream.labelsets import LabelSetStore

SPAM = "WINNER!! You have won a 1000 pound prize. Call 09061701461 now to claim"


def _classified(client: Client, request: ClassifyRequest) -> ClassificationResult:
    result = client.wait(client.submit(request), timeout_s=30)
    assert isinstance(result, ClassificationResult), result
    return result


def test_a_correction_is_kept_with_its_text_and_bad_ones_are_answered_with_why(
    start_worker: WorkerFactory, client: Client, redis_url: str, tmp_path: Path, celery_app: Celery
) -> None:
    start_worker()
    _classified(client, ClassifyRequest(id="m1", text=SPAM, label_set="moderation"))
    receipt = client.correct("m1", ["spam", "offensive"], SPAM, moderator="ana")
    assert isinstance(receipt, CorrectionReceipt)
    assert (receipt.label_set, receipt.label_set_version, receipt.corrections) == ("moderation", 0, 1)
    kept = json.loads(client.redis.lrange(CORRECTIONS_KEY + "moderation", 0, -1)[0])
    assert (kept["text"], kept["labels"], kept["moderator"], kept["accepted"]) == (
        SPAM,
        ["spam", "offensive"],
        "ana",
        ["spam"],
    )

    _classified(client, ClassifyRequest(id="inline", text="hello", labels=["a", "b"]))  # type: ignore[arg-type]
    plain = tmp_path / "plain.yaml"
    plain.write_text("labels: [complaint, thanks]\n")
    assert labelq(redis_url, "put", "plain", str(plain)).returncode == 0
    _classified(client, ClassifyRequest(id="untaught", text="it broke", label_set="plain"))
    for request_id, labels, code in [
        ("never-sent", ["spam"], ErrorCode.UNKNOWN_REQUEST),
        ("m1", ["threat"], ErrorCode.UNKNOWN_LABEL),
        ("inline", ["a"], ErrorCode.NOT_TAUGHT),
        ("untaught", ["thanks"], ErrorCode.NOT_TAUGHT),
    ]:
        refused = client.correct(request_id, labels, "some text")
        assert isinstance(refused, ErrorResult) and refused.code == code, refused
    assert client.redis.llen(CORRECTIONS_KEY + "moderation") == 1  # none of them kept

    # any Celery client may send the task; a malformed argument is an error result, never a failed task
    sent = celery_app.send_task(TASK_CORRECT, args=[{"request_id": 5, "labels": "x"}], queue=QUEUE_TASKS)
    deadline = time.monotonic() + 30
    while (raw := client.redis.get(CELERY_RESULT_KEY + sent.id)) is None:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    meta = json.loads(raw)
    assert meta["status"] == "SUCCESS" and meta["result"]["code"] == "invalid_message"
    good = {"request_id": "m1", "labels": ["spam"], "text": SPAM}
    for args, kwargs, code in [([good, 5], {}, "invalid_message"), ([], good, None)]:
        sent = celery_app.send_task(TASK_CORRECT, args=args, kwargs=kwargs, queue=QUEUE_TASKS)
        deadline = time.monotonic() + 30
        while (raw := client.redis.get(CELERY_RESULT_KEY + sent.id)) is None:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        outcome = json.loads(raw)
        assert outcome["status"] == "SUCCESS" and outcome["result"].get("code") == code, outcome  # never a failure

    cli = labelq_feedback(redis_url, "m1", "--labels", "spam", "--text", SPAM)
    assert cli.returncode == 0 and "kept: moderation (version 0 answered m1) now keeps 3 correction(s)" in cli.stdout
    bad = labelq_feedback(redis_url, "nope", "--labels", "spam", "--text", "x")
    assert bad.returncode == 1 and bad.stderr.startswith("error unknown_request (request_id): no result under id")


def labelq_feedback(redis_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "labelq.cli", "feedback", *args],
        env={**os.environ, "LABELQ_REDIS_URL": redis_url},
        capture_output=True,
        text=True,
        timeout=60,
    )


COMPLAINTS = [f"my order {i} arrived broken and support ignored me, awful" for i in range(75)]
THANKS = [f"thank you so much, order {i} came early and works great" for i in range(75)]


def _teach_feedback(redis_url: str, tmp_path: Path) -> LabelSetStore:
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps({"text": t, "label": n}) + "\n" for n, ts in TEACHING.items() for t in ts))
    assert labelq(redis_url, "fit", "feedback", "--data", str(data)).returncode == 0
    return LabelSetStore(redis_lib.Redis.from_url(redis_url))


def _correct(store: LabelSetStore, items: list[tuple[str, str, str]]) -> None:
    """Corrections as the worker keeps them (worker/stream/corrections.py): (request id, text, label)."""
    store.client.rpush(
        CORRECTIONS_KEY + "feedback",
        *[
            json.dumps({"request_id": rid, "text": text, "labels": [label], "label_set_version": 1})
            for rid, text, label in items
        ],
    )


def _items(inverted_when: Callable[[str], bool]) -> list[tuple[str, str, str]]:
    """Each text with a request id; its label inverted (a community where praise is sarcasm) where
    `inverted_when(request_id)` says so."""
    items = []
    for i, (complaint, thanks) in enumerate(zip(COMPLAINTS, THANKS, strict=True)):
        for rid, text, label, other in (
            (f"c{i}", complaint, "complaint", "thanks"),
            (f"t{i}", thanks, "thanks", "complaint"),
        ):
            items.append((rid, text, other if inverted_when(rid) else label))
    return items


def test_a_refit_that_does_better_on_held_out_corrections_becomes_the_next_version(
    redis_url: str, tmp_path: Path
) -> None:
    store = _teach_feedback(redis_url, tmp_path)
    _correct(store, _items(lambda rid: True))  # this community means the opposite, consistently
    done = labelq(redis_url, "refit", "feedback")
    assert done.returncode == 0, done.stderr
    assert "feedback version 2 promoted: held-out corrections" in done.stdout
    latest = store.get("feedback")
    assert latest is not None and latest.version == 2 and latest.head is not None


def test_a_refit_that_would_do_worse_is_kept_as_a_candidate_and_says_why(redis_url: str, tmp_path: Path) -> None:
    store = _teach_feedback(redis_url, tmp_path)
    _correct(store, _items(lambda rid: not held_out(rid)))  # mislabelled corrections, except the held-out ones
    done = labelq(redis_url, "refit", "feedback")
    assert done.returncode == 1 and "kept as a candidate, not promoted" in done.stderr, done.stdout + done.stderr
    latest = store.get("feedback")
    assert latest is not None and latest.version == 1  # the live version stays
    assert store.candidate("feedback") is not None

    # an operator may still choose it, and go back
    promoted = labelq(redis_url, "promote", "feedback")
    assert promoted.returncode == 0 and "feedback version 2: the candidate, promoted" in promoted.stdout
    assert store.candidate("feedback") is None
    back = labelq(redis_url, "rollback", "feedback")
    assert back.returncode == 0 and "feedback version 3: version 1 again (was version 2)" in back.stdout
    again = store.get("feedback")
    first = store.get("feedback", 1)
    assert again is not None and again.head and first and first.head and again.head.digest == first.head.digest
    assert labelq(redis_url, "promote", "feedback").returncode == 1  # nothing left to promote
    assert labelq(redis_url, "rollback", "feedback", "--to", "9").returncode == 1


@pytest.mark.parametrize("count", [0, 60])
def test_a_refit_with_too_few_corrections_is_one_line(redis_url: str, tmp_path: Path, count: int) -> None:
    store = _teach_feedback(redis_url, tmp_path)
    if count:
        _correct(store, _items(lambda rid: False)[:count])
    done = labelq(redis_url, "refit", "feedback")
    assert done.returncode == 2 and "a refit needs 40 to fit and 20 held out" in done.stderr
    assert done.stderr.count("\n") == 1


def test_a_refit_that_would_learn_a_label_away_is_refused(redis_url: str, tmp_path: Path) -> None:
    """Corrections that never carry a label (moderators only ever flag `complaint`): refitting on them would
    teach the head that `thanks` never applies, since the live head's own training rows are not kept."""
    store = _teach_feedback(redis_url, tmp_path)
    _correct(store, [(rid, text, "complaint") for rid, text, _ in _items(lambda rid: False)])
    done = labelq(redis_url, "refit", "feedback")
    assert done.returncode == 2 and "['thanks'] have fewer than 3 positive rows" in done.stderr
    latest = store.get("feedback")
    assert latest is not None and latest.version == 1


def test_validation_rows_must_carry_the_sets_labels(redis_url: str, tmp_path: Path) -> None:
    store = _teach_feedback(redis_url, tmp_path)
    _correct(store, _items(lambda rid: False))
    val = tmp_path / "val.jsonl"
    val.write_text(json.dumps({"text": "x", "label": "nope"}) + "\n")
    done = labelq(redis_url, "refit", "feedback", "--val", str(val))
    assert done.returncode == 2 and "--val: labels not in label set feedback: ['nope']" in done.stderr


def test_a_correction_is_a_list_of_labels_and_a_text_that_is_not_blank() -> None:
    from pydantic import ValidationError

    from schemas import Correction

    with pytest.raises(ValidationError, match="a list of label names"):
        Correction(request_id="r1", labels="offensive", text="x")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="whitespace only"):
        Correction(request_id="r1", labels=(), text="   ")


def test_a_candidate_in_shadow_is_scored_beside_the_live_version_and_judged_by_corrections(
    start_worker: WorkerFactory, client: Client, redis_url: str, tmp_path: Path
) -> None:
    from labelq.local_redis import free_port
    from tests.worker.test_metrics import scrape

    store = _teach_feedback(redis_url, tmp_path)
    _correct(store, _items(lambda rid: not held_out(rid)))  # a refit that learns the opposite: kept as candidate
    assert labelq(redis_url, "refit", "feedback").returncode == 1
    shadow = labelq(redis_url, "shadow", "feedback")
    assert shadow.returncode == 0 and "runs in shadow" in shadow.stdout
    port = free_port()
    start_worker(metrics_port=port)
    texts = {"s-c": "my parcel came smashed and nobody answers my emails", "s-t": "thanks, it arrived early and works"}
    for rid, text in texts.items():
        result = _classified(client, ClassifyRequest(id=rid, text=text, label_set="feedback"))
        assert (result.label_set_version, result.scorer) == (1, "head")  # published: the live version's
    shadows = {dict(k)["agreement"]: v for k, v in scrape(port)["labelq_labelset_shadow_total"].items()}
    assert sum(shadows.values()) == 2 and shadows.get("disagree", 0) >= 1  # the candidate decides the opposite
    assert client.redis.exists("labelq:shadow:feedback:s-c")

    receipt = client.correct("s-c", ["complaint"], texts["s-c"])
    assert isinstance(receipt, CorrectionReceipt)
    judged = {
        (dict(k)["scorer"], dict(k)["outcome"]): v for k, v in scrape(port)["labelq_labelset_corrected_total"].items()
    }
    assert judged == {("live", "right"): 1.0, ("shadow", "wrong"): 1.0}

    assert labelq(redis_url, "shadow", "feedback", "--off").returncode == 0
    _classified(client, ClassifyRequest(id="s-after", text=texts["s-t"], label_set="feedback"))
    assert sum(scrape(port)["labelq_labelset_shadow_total"].values()) == 2  # off: no longer scored


def test_beside_the_sets_own_rows_each_correction_weighs_more(
    redis_url: str, tmp_path: Path, minilm_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    from worker.ops import refit as refitting
    from worker.ops import training
    from worker.stream.corrections import CorrectionStore

    store = _teach_feedback(redis_url, tmp_path)
    items = _items(lambda rid: False)
    _correct(store, items)
    fitted_on: list[int] = []
    real = training.fit_head

    def counting(*args: object, **kwargs: object) -> training.Fitted:
        fitted_on.append(len(args[2]))  # type: ignore[arg-type]
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(training, "fit_head", counting)
    extra = [training.Row(text, (label,)) for label, texts in TEACHING.items() for text in texts]
    classifier = minilm_engine.classifier()
    corrections = CorrectionStore(store.client, store, 1000)
    outcome = refitting.refit(store, corrections, classifier, "feedback", extra)  # type: ignore[arg-type]
    fitting = outcome.fitted_rows - len(extra)
    assert fitted_on == [fitting * refitting.CORRECTION_WEIGHT + len(extra)]
    refitting.refit(store, corrections, classifier, "feedback")  # type: ignore[arg-type]
    assert fitted_on[-1] == fitting  # alone, a correction is one row


def test_refit_on_a_model_that_is_not_installed_is_one_line(redis_url: str, tmp_path: Path) -> None:
    _teach_feedback(redis_url, tmp_path)
    done = labelq(redis_url, "refit", "feedback", "--model", "no-such-model")
    assert done.returncode == 4 and "--model / LABELQ_MODEL" in done.stderr and "Traceback" not in done.stderr
