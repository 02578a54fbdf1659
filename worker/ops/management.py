"""Installing and checking model directories: pull from the Hub, sha256 manifests, int8 quantisation."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from schemas import ClassifyRequest
from worker.constants import MANIFEST_FILE, MODEL_FILES, ONNX_FP32_FILE, ONNX_INT8_FILE
from worker.engine.models import ModelCard, ModelRegistry, describe_directory, directory_name, file_sha256
from worker.engine.onnx import quantize_int8, run_defaults
from worker.errors import ModelFetchError, ModelLayoutError
from worker.settings import Settings

# (repo, destination directory, revision or None) -> the revision actually fetched (a commit sha)
Downloader = Callable[[str, Path, str | None], str]


def installed_models(settings: Settings) -> list[dict[str, Any]]:
    """A row per model this machine has (the embedded default and those under `settings.models_dir`): name, kind,
    revision, ONNX file and whether it is the default; a broken directory is listed with its problem, not hidden."""
    registry = ModelRegistry(settings.models_dir, prefer_quantized=run_defaults(settings).prefer_quantized)
    rows: list[dict[str, Any]] = []
    for name in registry.names():
        try:
            card = registry.card(name)
            rows.append(
                {
                    "name": name,
                    "kind": card.kind,
                    "revision": card.revision,
                    "file": str(card.onnx_path),
                    "default": name == settings.model,
                }
            )
        except Exception as exc:
            rows.append({"name": name, "error": str(exc), "default": name == settings.model})
    return rows


def hub_downloader(repo: str, destination: Path, revision: str | None) -> str:
    """Fetch a model repo's files from the Hugging Face Hub (needs the `hub` extra and network access)."""
    try:
        from huggingface_hub import model_info, snapshot_download
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ModelFetchError("`labelq models pull` needs the hub extra: pip install 'labelq[hub]'") from exc
    try:
        sha = model_info(repo, revision=revision).sha or revision or "unknown"
        snapshot_download(repo_id=repo, revision=sha, local_dir=destination, allow_patterns=list(MODEL_FILES))
    except Exception as exc:  # network, DNS, HTTP, unknown repo: the hub's own types, all said the same way
        raise ModelFetchError(
            f"could not fetch {repo} from the Hugging Face Hub ({type(exc).__name__}: {str(exc)[:200]}); check the "
            "network and the repo name, or copy a model directory under LABELQ_MODELS_DIR"
        ) from exc
    return str(sha)


def write_manifest(directory: Path, *, repo: str, revision: str) -> dict[str, object]:
    files = {
        path.relative_to(directory).as_posix(): file_sha256(path)
        for path in sorted(directory.rglob("*"))
        if path.is_file() and path.name != MANIFEST_FILE and ".cache" not in path.parts
    }
    manifest: dict[str, object] = {"repo": repo, "revision": revision, "files": files}
    (directory / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def verify_manifest(directory: Path) -> list[str]:
    """Problems found (empty when every file in the manifest is present with its sha256)."""
    path = directory / MANIFEST_FILE
    if not path.is_file():
        return [f"no {MANIFEST_FILE} in {directory} (write one with --write)"]
    manifest = json.loads(path.read_text())
    problems = []
    for name, digest in manifest.get("files", {}).items():
        file = directory / name
        if not file.is_file():
            problems.append(f"missing: {name}")
        elif file_sha256(file) != digest:
            problems.append(f"sha256 mismatch: {name}")
    return problems


def pull(repo: str, models_dir: Path, downloader: Downloader, revision: str | None = None) -> ModelCard:
    """Download a Hub repo into `models_dir/owner--name`, check its layout, write its manifest."""
    target = models_dir / directory_name(repo)
    models_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=models_dir, prefix=".pull-") as staging:
        staged = Path(staging) / "model"
        staged.mkdir()
        fetched = downloader(repo, staged, revision)
        shutil.rmtree(staged / ".cache", ignore_errors=True)
        describe_directory(staged, name=repo)  # refuses an incomplete or non-NLI layout before install
        write_manifest(staged, repo=repo, revision=fetched)
        if target.exists():
            shutil.rmtree(target)
        staged.rename(target)
    return describe_directory(target, name=repo)


@dataclass(frozen=True, slots=True)
class Agreement:
    pairs: int
    max_abs_diff: float
    mean_abs_diff: float
    top1_agreement: float


AGREEMENT_SAMPLE = [
    ("I was charged twice for my subscription", ["billing", "bug", "praise", "account access", "shipping"]),
    ("The app crashes whenever I upload a photo.", ["billing", "bug", "praise", "account access", "shipping"]),
    ("Thanks, your support team was fantastic!", ["billing", "bug", "praise", "account access", "shipping"]),
    ("I can't log in since yesterday", ["billing", "bug", "praise", "account access", "shipping"]),
    ("My parcel never arrived.", ["billing", "bug", "praise", "account access", "shipping"]),
    ("You are a complete idiot", ["offensive", "not offensive"]),
    ("What a wonderful morning", ["joy", "anger", "optimism", "sadness"]),
    ("I hate waiting in line for hours", ["joy", "anger", "optimism", "sadness"]),
]


def quantize(directory: Path) -> Agreement:
    """Write onnx/model_quantized.onnx from onnx/model.onnx and measure how far its scores move."""
    source = directory / ONNX_FP32_FILE
    if not source.is_file():
        raise ModelLayoutError(f"{directory} has no {ONNX_FP32_FILE} to quantise")
    quantize_int8(source, directory / ONNX_INT8_FILE)
    return agreement(directory)


def agreement(directory: Path) -> Agreement:
    from worker.engine.engine import load_classifier
    from worker.engine.onnx import run_defaults
    from worker.settings import load_settings

    requests = [ClassifyRequest(text=t, labels=labels) for t, labels in AGREEMENT_SAMPLE]
    outputs = []
    for prefer_quantized in (False, True):
        settings = load_settings(prefer_quantized=prefer_quantized)
        card = describe_directory(directory, prefer_quantized=prefer_quantized)
        classifier = load_classifier(card, settings, run_defaults(settings))
        outputs.append(classifier.score(requests))
    diffs = np.concatenate(
        [np.abs(np.subtract(a.scores, b.scores)) for a, b in zip(outputs[0], outputs[1], strict=True)]
    )
    same_top = [int(np.argmax(a.scores)) == int(np.argmax(b.scores)) for a, b in zip(*outputs, strict=True)]
    return Agreement(len(diffs), float(diffs.max()), float(diffs.mean()), sum(same_top) / len(same_top))
