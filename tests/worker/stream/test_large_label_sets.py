"""Label sets follow LABELQ_MAX_LABELS, as requests do: a chatbot's 150 intents are put, served and fitted, and a
set over the limit is one line where it is put and a clear error result where it is served."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis as redis_lib
import yaml
from pydantic import ValidationError

from producer import Client
from schemas import ClassificationResult, ClassifyRequest, ErrorCode, ErrorResult, RequestLimits
from tests.conftest import WorkerFactory
from worker.stream.labelsets import LabelSet, LabelSetStore

INTENTS = [f"intent_{i:03d}" for i in range(150)]  # CLINC150's size


def labelq(redis_url: str, *args: str, **settings: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LABELQ_REDIS_URL": redis_url, **{f"LABELQ_{k.upper()}": v for k, v in settings.items()}}
    return subprocess.run(
        [sys.executable, "-m", "labelq.cli", "labelsets", *args], env=env, capture_output=True, text=True, timeout=120
    )


def set_file(tmp_path: Path, names: list[str]) -> Path:
    path = tmp_path / "intents.yaml"
    path.write_text(yaml.safe_dump({"labels": names}))
    return path


def test_a_label_set_is_held_to_the_limits_it_is_read_under() -> None:
    text = yaml.safe_dump({"labels": INTENTS})
    assert len(LabelSet.from_yaml("clinc", text, limits=RequestLimits(max_labels=150)).labels) == 150
    with pytest.raises(ValidationError, match="150 labels; the limit is 100 \\(LABELQ_MAX_LABELS"):
        LabelSet.from_yaml("clinc", text)  # the defaults: a request's 100
    with pytest.raises(ValidationError, match="150 labels; the limit is 149"):
        LabelSet.model_validate({"name": "clinc", "labels": INTENTS}, context=RequestLimits(max_labels=149))
    # the other limits a request's labels are held to follow the settings too
    long_template = {"name": "t", "labels": ["a"], "hypothesis_template": "{} " + "x" * 1500}
    assert LabelSet.model_validate(long_template, context=RequestLimits(max_label_text_chars=2000))
    with pytest.raises(ValidationError, match="template is longer than 1000"):
        LabelSet.model_validate(long_template)


def test_a_150_label_set_is_put_and_served_by_a_worker_configured_for_it(
    start_worker: WorkerFactory, client: Client, redis_url: str, tmp_path: Path
) -> None:
    put = labelq(redis_url, "put", "clinc", str(set_file(tmp_path, INTENTS)), max_labels="200")
    assert put.returncode == 0, put.stderr
    assert "clinc version 1: 150 labels" in put.stdout
    listed = labelq(redis_url, "list", max_labels="200")
    assert "clinc  v1  150 labels" in listed.stdout
    start_worker(enable_fake_model=True, model="fake", max_labels=200)
    served = client.wait(client.submit(ClassifyRequest(text="intent_042 please", label_set="clinc")), timeout_s=30)
    assert isinstance(served, ClassificationResult), served
    assert len(served.labels) == 150 and served.top == "intent_042" and served.label_set_version == 1
    # inline, the same 150 labels: a request may carry up to LABELQ_MAX_LABELS
    inline = ClassifyRequest.model_validate(
        {"id": "inline", "text": "intent_007", "labels": INTENTS}, context=RequestLimits(max_labels=200)
    )
    answered = client.wait(client.submit(inline), timeout_s=30)
    assert isinstance(answered, ClassificationResult) and answered.top == "intent_007"
    # and sent as a sender writes it, a mapping or `labelq submit`: checked under the limits it is given, not 100
    with Client(redis_url, limits=RequestLimits(max_labels=200)) as sender:
        mapped = sender.submit({"id": "mapped", "text": "intent_011", "labels": INTENTS})
        assert isinstance(client.wait(mapped, timeout_s=30), ClassificationResult)
    env = {**os.environ, "LABELQ_REDIS_URL": redis_url, "LABELQ_MAX_LABELS": "200"}
    submitted = subprocess.run(
        [sys.executable, "-m", "labelq.cli", "submit", "intent_099", "--labels", ",".join(INTENTS), "--wait"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert submitted.returncode == 0, submitted.stderr
    assert json.loads(submitted.stdout)["top"] == "intent_099"


def test_a_set_over_the_limit_is_one_line_where_it_is_put_and_an_error_result_where_it_is_served(
    start_worker: WorkerFactory, client: Client, redis_url: str, tmp_path: Path
) -> None:
    source = set_file(tmp_path, INTENTS)
    refused = labelq(redis_url, "put", "clinc", str(source))  # the default limit: 100
    assert refused.returncode == 2, refused.stderr
    assert refused.stderr.count("\n") == 1 and "Traceback" not in refused.stderr
    assert f"{source}: labels: 150 labels; the limit is 100 (LABELQ_MAX_LABELS" in refused.stderr
    assert labelq(redis_url, "get", "clinc").returncode == 1  # nothing was stored

    # stored where the limit is higher, served by a worker whose limit is lower: the requests naming it say why
    assert labelq(redis_url, "put", "clinc", str(source), max_labels="150").returncode == 0
    # read where the limit is lower: the set is fine, this command's limit is not; no advice to store it again
    read = labelq(redis_url, "get", "clinc")
    assert read.returncode == 2 and "clinc (latest version) is over this command's limits" in read.stderr
    assert "store a new version" not in read.stderr
    worker = start_worker(enable_fake_model=True, model="fake", max_labels=120)
    for number in range(2):
        request = ClassifyRequest(id=f"over-{number}", text="intent_042", label_set="clinc")
        result = client.wait(client.submit(request), timeout_s=30)
        assert isinstance(result, ErrorResult) and result.code == ErrorCode.INVALID_LABEL_SET, result
        assert "labels: 150 labels; the limit is 120 (LABELQ_MAX_LABELS" in result.message
        assert result.field == "label_set" and worker.poll() is None
    log = next(tmp_path.glob("worker-*.log")).read_text()
    assert log.count("label set clinc is unusable (labels: 150 labels; the limit is 120") == 1  # once, not a claim

    shown = labelq(redis_url, "get", "clinc", max_labels="120")
    assert shown.returncode == 2 and "the limit is 120" in shown.stderr and shown.stderr.count("\n") == 1


def test_the_store_reads_candidates_and_versions_under_its_own_limits(redis_url: str) -> None:
    limits = RequestLimits(max_labels=150)
    store = LabelSetStore(redis_lib.Redis.from_url(redis_url), limits)
    labelset = LabelSet.model_validate({"name": "clinc", "labels": INTENTS}, context=limits)
    store.put(labelset)
    store.put_candidate(labelset)
    assert len(store.get("clinc", 1).labels) == 150  # type: ignore[union-attr]
    assert len(store.candidate("clinc").labels) == 150  # type: ignore[union-attr]
    found = store.latest(["clinc"])["clinc"]
    assert isinstance(found, LabelSet) and len(found.labels) == 150


def test_a_150_label_set_is_fitted_where_the_limit_allows_it(redis_url: str, tmp_path: Path) -> None:
    pytest.importorskip("sklearn")
    names = INTENTS
    data = tmp_path / "train.jsonl"
    data.write_text(
        "".join(
            json.dumps({"text": f"please help with {name.replace('_', ' ')} number {i}", "label": name}) + "\n"
            for name in names
            for i in range(1)
        )
    )
    refused = labelq(redis_url, "fit", "clinc", "--data", str(data))
    assert refused.returncode == 2 and "150 labels; the limit is 100" in refused.stderr, refused.stderr
    assert refused.stderr.count("\n") == 1
    done = labelq(redis_url, "fit", "clinc", "--data", str(data), max_labels="150")
    assert done.returncode == 0, done.stderr
    assert "clinc version 1:" in done.stdout
    stored = yaml.safe_load(labelq(redis_url, "get", "clinc", max_labels="150").stdout)
    assert len(stored["labels"]) == 150 and len(stored["head"]["labels"]) == 150
