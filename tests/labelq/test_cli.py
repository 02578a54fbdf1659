"""The `labelq` command, run in-process with click's runner (real engine, real models)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from labelq.cli import main
from schemas import ClassificationResult, ErrorCode, ErrorResult, parse_result
from tests.conftest import MODELS
from worker.constants import MANIFEST_FILE, ONNX_INT8_FILE


@pytest.fixture
def runner(models_dir: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("LABELQ_MODELS_DIR", str(models_dir))
    return CliRunner()


def test_classify_json_puts_billing_on_top(runner: CliRunner) -> None:
    result = runner.invoke(
        main, ["classify", "I was charged twice for my subscription", "--labels", "billing,bug,praise", "--json"]
    )
    assert result.exit_code == 0, result.output
    outcome = parse_result(result.output)
    assert isinstance(outcome, ClassificationResult)
    assert outcome.top == "billing" and outcome.model == "minilm-l6-int8"


def test_classify_human_output_and_options(runner: CliRunner) -> None:
    result = runner.invoke(
        main,
        [
            "classify",
            "the app crashed and I was billed twice",
            "--labels",
            "billing, bug ,praise",
            "--multi-label",
            "--template",
            "This is about {}.",
            "--threshold",
            "0.1",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "top:" in result.output and "minilm-l6-int8" in result.output
    assert result.output.count("*") >= 1  # accepted labels are marked


def test_classify_with_a_model_directory_and_by_name(runner: CliRunner) -> None:
    by_path = runner.invoke(
        main, ["classify", "hello", "--labels", "a,b", "--model", str(MODELS / "nli-3class"), "--json"]
    )
    by_name = runner.invoke(main, ["classify", "hello", "--labels", "a,b", "--model", "test/nli-3class", "--json"])
    assert by_path.exit_code == 0 and by_name.exit_code == 0, by_path.output + by_name.output
    a, b = parse_result(by_path.output), parse_result(by_name.output)
    assert isinstance(a, ClassificationResult) and isinstance(b, ClassificationResult)
    assert [i.score for i in a.labels] == pytest.approx([i.score for i in b.labels])


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["--labels", "a,a"], ErrorCode.DUPLICATE_LABELS),
        (["--labels", "a", "--template", "no placeholder"], ErrorCode.INVALID_TEMPLATE),
        (["--labels", "a", "--threshold", "3"], ErrorCode.THRESHOLD_OUT_OF_RANGE),
        (["--labels", ","], ErrorCode.EMPTY_LABEL),
    ],
)
def test_classify_errors_exit_nonzero_without_traceback(runner: CliRunner, args: list[str], code: ErrorCode) -> None:
    result = runner.invoke(main, ["classify", "some text", *args, "--json"])
    assert result.exit_code == 1
    outcome = parse_result(result.stdout)
    assert isinstance(outcome, ErrorResult) and outcome.code == code
    assert "Traceback" not in result.output


def test_classify_file_mixes_results_and_errors(runner: CliRunner, tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    lines = [
        json.dumps({"id": "ok1", "text": "I was charged twice", "labels": ["billing", "bug"]}).encode(),
        b'{"id": "bad1", "text": "", "labels": ["a"]}',
        b"not json at all",
        b'{"text": "caf\xe9", "labels": ["a"]}',
        json.dumps(
            {"id": "ok2", "text": "the app crashes", "labels": ["billing", "software bug"], "metadata": {"n": 2}}
        ).encode(),
        b"",
    ]
    source.write_bytes(b"\n".join(lines) + b"\n")
    target = tmp_path / "out.jsonl"
    result = runner.invoke(main, ["classify-file", str(source), "--out", str(target), "--batch-size", "2"])
    assert result.exit_code == 0, result.output
    assert "2 classified, 3 errors" in result.output
    outcomes = [parse_result(line) for line in target.read_text().splitlines()]
    assert [o.status for o in outcomes] == ["ok", "error", "error", "error", "ok"]
    assert [o.id for o in outcomes] == ["ok1", "bad1", None, None, "ok2"]
    codes = [o.code for o in outcomes if isinstance(o, ErrorResult)]
    assert codes == [ErrorCode.EMPTY_TEXT, ErrorCode.INVALID_JSON, ErrorCode.INVALID_UTF8]
    assert outcomes[4].metadata == {"n": 2}


def test_eval_reports_and_fits_thresholds(runner: CliRunner, tmp_path: Path) -> None:
    data = tmp_path / "data.jsonl"
    rows = [
        ("I was charged twice", "billing"),
        ("refund my payment", "billing"),
        ("the app crashes", "bug"),
        ("login button broken", "bug"),
        ("you are great", "praise"),
        ("love this app", "praise"),
    ]
    data.write_text("".join(json.dumps({"text": t, "label": lab}) + "\n" for t, lab in rows))
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps(["billing", "bug", "praise"]))
    fitted = tmp_path / "thresholds.json"
    result = runner.invoke(
        main, ["eval", str(data), "--labels-file", str(labels), "--fit-thresholds", str(fitted), "--json"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout[result.stdout.index("{") :])
    assert report["n"] == 6 and 0.5 <= report["accuracy"] <= 1.0
    assert set(report["per_label_f1"]) == {"billing", "bug", "praise"}
    thresholds = json.loads(fitted.read_text())
    assert set(thresholds) == {"billing", "bug", "praise"} and all(0 <= v <= 1 for v in thresholds.values())


def test_eval_with_shots_and_draws(runner: CliRunner, tmp_path: Path) -> None:
    pool = tmp_path / "pool.jsonl"
    pool.write_text(
        "".join(json.dumps({"text": f"{w} text {i}", "label": w}) + "\n" for w in ("happy", "sad") for i in range(5))
    )
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps(["happy", "sad"]))
    result = runner.invoke(
        main,
        ["eval", str(pool), "--labels-file", str(labels), "--examples-from", str(pool), "--shots", "2", "--draws", "3"],
    )
    assert result.exit_code == 0, result.output
    assert "over 3 draws of 2 examples per label" in result.output


def test_eval_refuses_labels_missing_from_the_labels_file(runner: CliRunner, tmp_path: Path) -> None:
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"text": "x", "label": "other"}) + "\n")
    labels = tmp_path / "l.json"
    labels.write_text(json.dumps(["a"]))
    result = runner.invoke(main, ["eval", str(data), "--labels-file", str(labels)])
    assert result.exit_code == 2 and "other" in result.output


def test_models_list(runner: CliRunner) -> None:
    result = runner.invoke(main, ["models", "list", "--json"])
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in json.loads(result.output)}
    assert rows["minilm-l6-int8"]["default"] and rows["minilm-l6-int8"]["kind"] == "embedding"
    assert rows["test/nli-3class"]["kind"] == "nli"


def test_models_verify_write_then_detect_tampering(runner: CliRunner, tmp_path: Path) -> None:
    model = tmp_path / "m"
    shutil.copytree(MODELS / "nli-2class", model)
    missing = runner.invoke(main, ["models", "verify", str(model)])
    assert missing.exit_code == 1 and "no labelq-manifest.json" in missing.output
    assert runner.invoke(main, ["models", "verify", str(model), "--write"]).exit_code == 0
    assert runner.invoke(main, ["models", "verify", str(model)]).exit_code == 0
    with (model / "tokenizer.json").open("a") as handle:
        handle.write(" ")
    tampered = runner.invoke(main, ["models", "verify", str(model)])
    assert tampered.exit_code == 1 and "sha256 mismatch: tokenizer.json" in tampered.output


def test_models_quantize_reports_agreement(runner: CliRunner, tmp_path: Path) -> None:
    model = tmp_path / "m"
    shutil.copytree(MODELS / "nli-3class", model)
    assert not (model / ONNX_INT8_FILE).exists()
    result = runner.invoke(main, ["models", "quantize", str(model)])
    assert result.exit_code == 0, result.output
    assert (model / ONNX_INT8_FILE).is_file()
    assert "same top label" in result.output and "max |diff|" in result.output


def test_pull_installs_from_a_fake_transport(tmp_path: Path) -> None:
    from worker.engine.models import ModelRegistry
    from worker.ops.management import pull

    fetched: list[tuple[str, str | None]] = []

    def from_local_mirror(repo: str, destination: Path, revision: str | None) -> str:
        fetched.append((repo, revision))
        shutil.copytree(MODELS / "nli-2class", destination, dirs_exist_ok=True)
        return "0123456789abcdef"

    card = pull("MoritzLaurer/deberta-v3-xsmall-zeroshot-v1.1-all-33", tmp_path, from_local_mirror)
    assert fetched == [("MoritzLaurer/deberta-v3-xsmall-zeroshot-v1.1-all-33", None)]
    assert card.kind == "nli" and card.revision == "0123456789abcdef"
    target = tmp_path / "MoritzLaurer--deberta-v3-xsmall-zeroshot-v1.1-all-33"
    manifest = json.loads((target / MANIFEST_FILE).read_text())
    assert set(manifest["files"]) >= {"config.json", "tokenizer.json", "onnx/model.onnx"}
    registry = ModelRegistry(tmp_path)
    assert "MoritzLaurer/deberta-v3-xsmall-zeroshot-v1.1-all-33" in registry.names()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".pull-")]


def test_pull_refuses_an_incomplete_repo(tmp_path: Path) -> None:
    from worker.errors import ModelLayoutError
    from worker.ops.management import pull

    def config_only(repo: str, destination: Path, revision: str | None) -> str:
        shutil.copy(MODELS / "nli-2class" / "config.json", destination / "config.json")
        return "abc"

    with pytest.raises(ModelLayoutError, match=r"tokenizer\.json"):
        pull("someone/broken", tmp_path, config_only)
    assert not (tmp_path / "someone--broken").exists()


def test_classify_and_eval_with_a_shortlist(runner: CliRunner, tmp_path: Path) -> None:
    text = "I was charged twice for my subscription"
    args = ["classify", text, "--labels", "billing,bug,praise,delivery", "--model", "test/nli-2class"]
    result = runner.invoke(main, [*args, "--shortlist", "2", "--json"])
    assert result.exit_code == 0, result.output
    outcome = parse_result(result.output)
    assert isinstance(outcome, ClassificationResult) and outcome.shortlist is not None
    assert (outcome.shortlist.k, outcome.shortlist.candidates, len(outcome.labels)) == (2, 4, 2)
    assert "billing" in {item.label for item in outcome.labels}  # MiniLM keeps the obvious label
    refused = runner.invoke(main, [*args, "--shortlist", "-1"])
    assert refused.exit_code == 2 and "-1" in refused.output  # click refuses it before any model loads

    data = tmp_path / "data.jsonl"
    rows = [("refund my payment", "billing"), ("the app crashes on start", "bug"), ("you are great", "praise")]
    data.write_text("".join(json.dumps({"text": t, "label": lab}) + "\n" for t, lab in rows))
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps(["billing", "bug", "praise", "delivery"]))
    fitted = tmp_path / "thresholds.json"
    nli_eval = ["eval", str(data), "--labels-file", str(labels), "--model", "test/nli-2class", "--shortlist", "2"]
    evaluated = runner.invoke(main, [*nli_eval, "--fit-thresholds", str(fitted), "--json"])
    assert evaluated.exit_code == 0, evaluated.output
    report = json.loads(evaluated.stdout[evaluated.stdout.index("{") :])
    assert report["shortlist_recall"] == 1.0  # every gold label survived MiniLM's top 2
    # no row of `delivery`: no threshold for it (its lowest score would accept it on every text)
    assert set(json.loads(fitted.read_text())) == {"billing", "bug", "praise"}
    plain = runner.invoke(main, ["eval", str(data), "--labels-file", str(labels), "--json"])
    assert "shortlist_recall" not in json.loads(plain.stdout[plain.stdout.index("{") :])


def test_worker_refuses_batches_that_outlive_the_visibility_timeout(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LABELQ_PROVIDERS", '["CPUExecutionProvider"]')
    monkeypatch.setenv("LABELQ_VISIBILITY_TIMEOUT_S", "30")
    monkeypatch.setenv("LABELQ_REDIS_URL", "redis://127.0.0.1:1/0")  # never reached: it stops before
    result = runner.invoke(main, ["worker"])
    assert result.exit_code == 2  # click's usage error, before any model loads or Redis is dialled
    assert "bulk: max wait 0.2 s + 1024 pairs at 20 pairs/s" in result.output
    assert "lower LABELQ_BULK_MAX_PAIRS or raise the timeout" in result.output


def test_submit_flags_name_a_label_set_and_leave_its_defaults_alone() -> None:
    from labelq.commands.options import request_from_flags

    assert request_from_flags("x", None, False, None, label_set="moderation") == {
        "text": "x",
        "label_set": "moderation",
    }
    assert request_from_flags("x", "a, b", True, None)["multi_label"] is True
    assert "multi_label" not in request_from_flags("x", "a,b", False, None)


def test_worker_on_a_cuda_host_says_how_many_processes_it_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    from dataclasses import replace

    from worker.engine import onnx
    from worker.process import launcher
    from worker.process import main as in_process

    real = onnx.run_defaults
    monkeypatch.setattr(onnx, "run_defaults", lambda settings: replace(real(settings, cuda=True), worker_processes=4))
    started: list[int | None] = []
    monkeypatch.setattr(launcher, "run_processes", lambda settings, **_: started.append(settings.worker_processes) or 0)
    monkeypatch.setattr(in_process, "run_in_process", lambda settings, **_: started.append(1) or 0)
    done = CliRunner().invoke(main, ["worker"])
    assert done.exit_code == 0, done.output
    assert started == [4] and "CUDA: 4 worker processes" in done.output
    monkeypatch.setattr(onnx, "run_defaults", lambda settings: real(settings, cuda=False))
    quiet = CliRunner().invoke(main, ["worker"])
    assert started == [4, 1] and "CUDA" not in quiet.output  # a CPU host: one process, as before
