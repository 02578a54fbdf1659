"""Build the NLI test models and their golden scores (needs the `dev` extra: torch, transformers).

Committed output (small, random weights, DeBERTa-v2 architecture, Hugging Face repo layout):

    tests/fixtures/models/nli-2class/          id2label {0: entailment, 1: not_entailment}, dynamic shapes,
                                               no token_type_ids (like the seed model)
    tests/fixtures/models/nli-2class-static/   same weights, exported with a static sequence length
    tests/fixtures/models/nli-3class/          id2label {0: contradiction, 1: neutral, 2: entailment},
                                               with token_type_ids (like bart-large-mnli's head)
    tests/fixtures/nli_golden.json             scores from transformers' zero-shot-classification pipeline

On demand, uncommitted (`--full-size DIR`): a DeBERTa-v3-xsmall with the seed model's exact configuration
(12 layers, hidden 384, 6 heads, FFN 1536, vocab 128,100), fp32 and int8, for benchmarks: same shapes and
cost as `MoritzLaurer/deberta-v3-xsmall-zeroshot-v1.1-all-33`, random weights.

    pip install -e '.[dev]' && python tools/make_test_models.py            # fixtures + golden
    python tools/make_test_models.py --full-size models/deberta-v3-xsmall-random
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import (
    DebertaV2Config,
    DebertaV2ForSequenceClassification,
    PreTrainedTokenizerFast,
    pipeline,
)

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
SHARED_DATA = ROOT.parent / "shared" / "data"
SEED = 1234
TEST_MAX_LENGTH = 48  # small on purpose: long texts in the golden cases get truncated
STATIC_SEQUENCE_LENGTH = 48
SPECIAL_TOKENS = ["[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]"]  # DeBERTa-v3 order: pad 0, cls 1, sep 2, unk 3

# Seed model: MoritzLaurer/deberta-v3-xsmall-zeroshot-v1.1-all-33 (config.json of the Hub repo).
SEED_CONFIG: dict[str, Any] = {
    "vocab_size": 128100,
    "hidden_size": 384,
    "num_hidden_layers": 12,
    "num_attention_heads": 6,
    "intermediate_size": 1536,
    "hidden_act": "gelu",
    "max_position_embeddings": 512,
    "type_vocab_size": 0,
    "relative_attention": True,
    "max_relative_positions": -1,
    "position_buckets": 256,
    "norm_rel_ebd": "layer_norm",
    "share_att_key": True,
    "pos_att_type": ["p2c", "c2p"],
    "position_biased_input": False,
    "layer_norm_eps": 1e-7,
    "pad_token_id": 0,
}
FULL_SIZE_VOCAB = 8000
LABELS_2 = {0: "entailment", 1: "not_entailment"}
LABELS_3 = {0: "contradiction", 1: "neutral", 2: "entailment"}

GOLDEN_CASES: list[dict[str, Any]] = [
    {"text": "I was charged twice for my subscription", "labels": ["billing", "bug", "praise"]},
    {"text": "I was charged twice for my subscription", "labels": ["billing", "bug", "praise"], "multi_label": True},
    {"text": "The app crashes every time I open settings.", "labels": ["bug"]},
    {
        "text": "You are an idiot and everyone hates you",
        "labels": ["offensive", "hate speech", "friendly", "spam", "question"],
        "template": "This text is {}.",
    },
    {
        "text": "Where is my card? I ordered it two weeks ago and it still has not arrived, "
        "which is really annoying because I need it for my trip next week and the support "
        "team keeps telling me to wait a few more days even though it has been ages.",
        "labels": ["card arrival", "card linking", "exchange rate", "top up"],
        "template": "The customer asks about {}",
    },
    {"text": "Ça marche très bien, merci ! 👍", "labels": ["praise", "complaint"], "multi_label": True},
    {"text": "ok", "labels": ["greeting", "farewell", "agreement"], "multi_label": False},
    {"text": "What a lovely day", "labels": ["joy", "anger", "optimism", "sadness"], "multi_label": True},
]


def corpus() -> list[str]:
    texts = [case["text"] for case in GOLDEN_CASES]
    texts += [label for case in GOLDEN_CASES for label in case["labels"]]
    for name in ("banking77.jsonl", "tweeteval_emotion.jsonl", "tweeteval_offensive.jsonl"):
        path = SHARED_DATA / name
        if path.exists():
            texts += [json.loads(line)["text"] for line in path.read_text().splitlines()[:1500]]
    return texts


def build_tokenizer(vocab_size: int = 1000, max_length: int = TEST_MAX_LENGTH) -> PreTrainedTokenizerFast:
    """A SentencePiece-style Unigram tokenizer (as DeBERTa-v3 uses), trained on a small corpus."""
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, unk_token="[UNK]")
    tok.train_from_iterator(corpus(), trainer=trainer)
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        unk_token="[UNK]",
        mask_token="[MASK]",
        model_max_length=max_length,
        model_input_names=["input_ids", "token_type_ids", "attention_mask"],
    )


def build_model(id2label: dict[int, str], *, token_types: bool, full_size: bool) -> DebertaV2ForSequenceClassification:
    torch.manual_seed(SEED)
    if full_size:
        params = dict(SEED_CONFIG)
    else:
        params = dict(SEED_CONFIG)
        params.update(
            vocab_size=1000,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=128,
            position_buckets=32,
            initializer_range=0.3,  # larger than the default so random logits spread and scores differ
        )
    if token_types:
        params["type_vocab_size"] = 2
    config = DebertaV2Config(
        **params,
        id2label=id2label,
        label2id={v: k for k, v in id2label.items()},
        architectures=["DebertaV2ForSequenceClassification"],
    )
    model = DebertaV2ForSequenceClassification(config)
    model.eval()
    return model


def export_onnx(
    model: DebertaV2ForSequenceClassification, path: Path, *, token_types: bool, static_length: int | None
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    length = static_length or 16
    ids = torch.ones((2, length), dtype=torch.long)
    mask = torch.ones((2, length), dtype=torch.long)
    inputs: tuple[torch.Tensor, ...] = (ids, mask)
    names = ["input_ids", "attention_mask"]
    if token_types:
        inputs = (ids, mask, torch.zeros((2, length), dtype=torch.long))
        names.append("token_type_ids")
    axes = {0: "batch"} if static_length else {0: "batch", 1: "sequence"}
    torch.onnx.export(
        model,
        inputs,
        str(path),
        input_names=names,
        output_names=["logits"],
        dynamic_axes={**{n: axes for n in names}, "logits": {0: "batch"}},
        opset_version=17,
        dynamo=False,
    )


def quantize(src: Path, dst: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8)


def save_model_dir(
    out: Path,
    model: DebertaV2ForSequenceClassification,
    tokenizer: PreTrainedTokenizerFast,
    *,
    token_types: bool,
    static_length: int | None = None,
    with_int8: bool = False,
) -> None:
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    model.config.save_pretrained(out)
    tokenizer.save_pretrained(out)
    export_onnx(model, out / "onnx" / "model.onnx", token_types=token_types, static_length=static_length)
    if with_int8:
        quantize(out / "onnx" / "model.onnx", out / "onnx" / "model_quantized.onnx")


def golden_scores(
    model: DebertaV2ForSequenceClassification, tokenizer: PreTrainedTokenizerFast
) -> list[dict[str, Any]]:
    classifier = pipeline("zero-shot-classification", model=model, tokenizer=tokenizer, device="cpu")
    rows = []
    for case in GOLDEN_CASES:
        template = case.get("template", "This example is {}.")
        multi = case.get("multi_label", False)
        out = classifier(case["text"], candidate_labels=case["labels"], hypothesis_template=template, multi_label=multi)
        rows.append(
            {
                "text": case["text"],
                "labels": case["labels"],
                "hypothesis_template": template,
                "multi_label": multi,
                "scores": dict(zip(out["labels"], [float(s) for s in out["scores"]], strict=True)),
            }
        )
    return rows


def make_fixtures() -> None:
    tokenizer = build_tokenizer()
    golden: dict[str, Any] = {"generated_by": "tools/make_test_models.py", "models": {}}
    variants = [
        ("nli-2class", LABELS_2, False, True),
        ("nli-3class", LABELS_3, True, False),
    ]
    models_dir = FIXTURES / "models"
    for name, labels, token_types, int8 in variants:
        model = build_model(labels, token_types=token_types, full_size=False)
        save_model_dir(models_dir / name, model, tokenizer, token_types=token_types, with_int8=int8)
        golden["models"][name] = golden_scores(model, tokenizer)
        if name == "nli-2class":
            save_model_dir(
                models_dir / "nli-2class-static",
                model,
                tokenizer,
                token_types=False,
                static_length=STATIC_SEQUENCE_LENGTH,
            )
            golden["models"]["nli-2class-static"] = golden["models"][name]
    (FIXTURES / "nli_golden.json").write_text(json.dumps(golden, indent=1, ensure_ascii=False) + "\n")


def make_full_size(out: Path) -> None:
    # a larger vocabulary than the fixtures' so English splits into about as many tokens per word as the
    # seed's 128k SentencePiece vocabulary (sequence length is what the cost depends on)
    tokenizer = build_tokenizer(FULL_SIZE_VOCAB, max_length=SEED_CONFIG["max_position_embeddings"])  # 512
    model = build_model(LABELS_2, token_types=False, full_size=True)
    n_backbone = sum(p.numel() for n, p in model.named_parameters() if n.startswith("deberta."))
    print(f"backbone parameters: {n_backbone:,}")
    save_model_dir(out, model, tokenizer, token_types=False, with_int8=True)
    model.save_pretrained(out)  # PyTorch weights too: the HF-pipeline baseline of bench/harness.py loads them
    print(f"wrote {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full-size", type=Path, help="also build the seed-sized model into this directory")
    args = parser.parse_args()
    if args.full_size:
        make_full_size(args.full_size)
    else:
        make_fixtures()


if __name__ == "__main__":
    main()
