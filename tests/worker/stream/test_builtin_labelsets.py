"""Built-in label sets: `moderation` ships in the wheel with a head fitted on the embedded model, is served with
nothing stored, shows as built in, and a stored set of its name overrides it."""

from __future__ import annotations

import json
from pathlib import Path

from producer import Client
from schemas import ClassificationResult, ClassifyRequest
from tests.conftest import WorkerFactory
from tests.worker.stream.test_labelsets import labelq
from worker.engine.engine import Engine
from worker.stream.labelsets import LabelSetStore, builtin_labelsets

BUILTIN_FILE = Path(__file__).resolve().parents[3] / "worker" / "stream" / "builtin" / "moderation.json"


def test_moderation_ships_with_a_head_on_the_embedded_model_and_its_provenance(minilm_engine: Engine) -> None:
    moderation = builtin_labelsets()["moderation"]
    assert moderation.builtin and moderation.multi_label and moderation.head is not None
    assert [label.name for label in moderation.labels] == ["hateful", "offensive", "spam"]
    assert moderation.head.mismatch(minilm_engine.classifier().card) is None  # fitted on what workers serve
    assert all(0.0 < label.threshold < 1.0 for label in moderation.labels if label.threshold is not None)
    for licence in ("MIT", "CC BY 4.0", "SMS Spam Collection"):
        assert licence in (moderation.provenance or "")
    assert BUILTIN_FILE.stat().st_size < 50_000  # weights only: no text of the data it was fitted on


def test_the_builtin_is_served_with_nothing_stored(start_worker: WorkerFactory, client: Client) -> None:
    start_worker()
    texts = {
        "spam": "WINNER!! You have won a 1000 pound prize. Call 09061701461 now to claim, T&C apply",
        "benign": "Thanks for the help with my order yesterday, see you next week",
    }
    results = {
        name: client.wait(client.submit(ClassifyRequest(id=name, text=text, label_set="moderation")), timeout_s=30)
        for name, text in texts.items()
    }
    assert all(isinstance(r, ClassificationResult) for r in results.values())
    spam, benign = results["spam"], results["benign"]
    assert isinstance(spam, ClassificationResult) and isinstance(benign, ClassificationResult)
    assert (spam.scorer, spam.label_set, spam.label_set_version) == ("head", "moderation", 0)  # 0: built in
    assert tuple(spam.accepted) == ("spam",) and not benign.accepted


def test_a_stored_set_overrides_the_builtin_until_it_is_deleted(redis_url: str, tmp_path: Path) -> None:
    import redis as redis_lib

    listed = labelq(redis_url, "list")
    assert listed.returncode == 0 and "moderation  v0  3 labels  head on minilm-l6-int8@" in listed.stdout
    assert "built-in" in listed.stdout
    shown = labelq(redis_url, "get", "moderation")
    assert "builtin: true" in shown.stdout and "provenance:" in shown.stdout
    assert "builtin: true" in labelq(redis_url, "get", "moderation", "--version", "0").stdout
    refused = labelq(redis_url, "delete", "moderation")
    assert refused.returncode == 1 and "is built in: it cannot be deleted" in refused.stderr

    own = tmp_path / "own.yaml"
    own.write_text("multi_label: true\nlabels: [insult, threat]\n")
    put = labelq(redis_url, "put", "moderation", str(own))
    assert put.returncode == 0 and "overrides the built-in" in put.stdout
    assert "the built-in set had a learned head; version 1 has none" in put.stderr
    store = LabelSetStore(redis_lib.Redis.from_url(redis_url))
    served = store.latest(["moderation"])["moderation"]
    assert not isinstance(served, str) and [label.name for label in served.labels] == ["insult", "threat"]
    assert "(overrides the built-in)" in labelq(redis_url, "list").stdout

    back = labelq(redis_url, "rollback", "moderation", "--to", "0")  # the built-in's head, as version 2
    assert back.returncode == 0 and "moderation version 2: version 0 again (was version 1)" in back.stdout
    restored = store.get("moderation")
    assert restored is not None and restored.version == 2 and restored.head is not None and not restored.builtin

    deleted = labelq(redis_url, "delete", "moderation")
    assert deleted.returncode == 0 and "built-in set of that name is served again" in deleted.stdout
    again = store.latest(["moderation"])["moderation"]
    assert not isinstance(again, str) and again.builtin


def test_a_file_made_from_get_is_stored_as_a_set_of_ones_own(redis_url: str, tmp_path: Path) -> None:
    """`get moderation > file; put moderation file`: a stored copy (no head, not marked built in)."""
    import redis as redis_lib

    copy = tmp_path / "copy.yaml"
    copy.write_text(labelq(redis_url, "get", "moderation").stdout)
    assert labelq(redis_url, "put", "moderation", str(copy)).returncode == 0
    latest = LabelSetStore(redis_lib.Redis.from_url(redis_url)).get("moderation")
    assert latest is not None and not latest.builtin and latest.head is None and latest.version == 1
    assert latest.provenance is None  # the built-in's says how its head was fitted: not this copy's story


def test_teaching_moderation_on_ones_own_messages_stores_a_set_that_overrides_it(
    redis_url: str, tmp_path: Path
) -> None:
    import redis as redis_lib

    rows = [
        ("you people are vermin and should be deported", ["hateful", "offensive"]),
        ("shut up you absolute clown", ["offensive"]),
        ("free ringtones, text WIN to 80088 now", ["spam"]),
        ("see you at practice tomorrow", []),
    ] * 3
    data = tmp_path / "ours.jsonl"
    data.write_text(
        "".join(json.dumps({"text": f"{text} {i}", "label": labels}) + "\n" for i, (text, labels) in enumerate(rows))
    )
    taught = labelq(redis_url, "fit", "moderation", "--data", str(data))
    assert taught.returncode == 0, taught.stderr
    latest = LabelSetStore(redis_lib.Redis.from_url(redis_url)).get("moderation")
    assert latest is not None and latest.version == 1 and not latest.builtin and latest.provenance is None
    assert latest.head is not None and latest.head.fitted["rows"] == 12
    assert [label.description for label in latest.labels] == [
        label.description for label in builtin_labelsets()["moderation"].labels
    ]  # it started from the built-in's label texts
