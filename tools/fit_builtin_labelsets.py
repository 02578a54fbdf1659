"""Fit labelq's built-in `moderation` label set and measure it: writes worker/stream/builtin/moderation.json and
bench/reports/moderation-builtin.json.

    pip install -e '.[fit]' && python tools/fit_builtin_labelsets.py [--data ../shared/data]

A multi-label set over the categories the public moderation data supports, with a head fitted on the embedded
MiniLM (the model a worker serves by default), by the same code as `labelq labelsets fit`:
- hateful:   HateXplain `hatespeech`, Latent Hatred `explicit_hate` and `implicit_hate`, MLMA `hateful`;
- offensive: HateXplain `hatespeech` and `offensive`, Latent Hatred `explicit_hate`, MLMA `offensive`,
             `abusive` and `disrespectful`;
- spam:      SMS Spam Collection `spam`.
A row is a positive of the categories its label maps to and a negative of the others (an SMS that is not spam is
neither hateful nor offensive; a tweet is not spam). Fitted on the train splits; the choices and thresholds on the
val splits; measured on the test splits, against zero-shot with the same label texts (its thresholds fitted on
the same val rows) and against a head fitted on that dataset alone, and on TweetEval offensive's test split,
which the fit never sees. TweetEval states no licence
for its data, so it is not fitted on; each set used is named with its licence in the set's `provenance`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from schemas import Label  # noqa: E402
from worker.engine.embedding import EmbeddingClassifier  # noqa: E402
from worker.engine.engine import Engine  # noqa: E402
from worker.ops import training  # noqa: E402
from worker.ops.evaluation import best_thresholds  # noqa: E402
from worker.settings import load_settings  # noqa: E402
from worker.stream.labelsets import LabelSet  # noqa: E402

NAME = "moderation"
LABELS = (
    Label(
        name="hateful",
        description="hateful: attacks or demeans people for their race, religion, ethnicity, nationality, gender, "
        "sexuality or disability",
    ),
    Label(name="offensive", description="offensive or abusive: insults, slurs, profanity or contempt aimed at someone"),
    Label(
        name="spam", description="spam: unsolicited advertising, prizes, scams, or a request to call or text a number"
    ),
)
CATEGORIES = tuple(label.name for label in LABELS)
# dataset -> its label -> the categories it is a positive of (the others: negative)
MAPPINGS: dict[str, dict[str, tuple[str, ...]]] = {
    "hatexplain": {"hatespeech": ("hateful", "offensive"), "offensive": ("offensive",), "normal": ()},
    "implicit_hate": {"explicit_hate": ("hateful", "offensive"), "implicit_hate": ("hateful",), "not_hate": ()},
    "mlma_en": {
        "hateful": ("hateful",),
        "offensive": ("offensive",),
        "abusive": ("offensive",),
        "disrespectful": ("offensive",),
        "fearful": (),
        "normal": (),
    },
    "sms_spam": {"spam": ("spam",), "ham": ()},
}
COVERS = {  # the categories each dataset has gold for
    "hatexplain": ("hateful", "offensive"),
    "implicit_hate": ("hateful",),
    "mlma_en": ("hateful", "offensive"),
    "sms_spam": ("spam",),
}
PROVENANCE = (
    "Built in: a head fitted by tools/fit_builtin_labelsets.py on the embedded minilm-l6-int8, from the train "
    "splits (choices and thresholds on the val splits) of: HateXplain (Mathew et al., AAAI 2021; MIT licence, "
    "hate-alert/HateXplain), the Latent Hatred implicit hate corpus (ElSherief et al., EMNLP 2021; CC BY 4.0), MLMA "
    "English (Ousidhoum et al., EMNLP 2019; MIT licence, HKUST-KnowComp/MLMA_hate_speech) and the SMS Spam "
    "Collection v.1 (Almeida and Gomez Hidalgo, DocEng 2011; free, copyright of its authors). No text of them is "
    "shipped: the head's weights only. Categories: hateful, offensive, spam."
)
OUT = ROOT / "worker" / "stream" / "builtin" / f"{NAME}.json"
REPORT = ROOT / "bench" / "reports" / "moderation-builtin.json"


def rows_of(data: Path, dataset: str, split: str) -> list[training.Row]:
    mapping = MAPPINGS[dataset]
    rows = []
    for line in (data / "moderation" / dataset / f"{split}.jsonl").read_text().splitlines():
        item = json.loads(line)
        gold = item["label"] if isinstance(item["label"], list) else [item["label"]]
        categories = dict.fromkeys(category for label in gold for category in mapping[label])
        if item["text"].strip():
            rows.append(training.Row(item["text"], tuple(categories)))
    return rows


def f1(predicted: np.ndarray, gold: np.ndarray) -> float:
    tp = int(np.sum(predicted & gold))
    denominator = int(np.sum(predicted)) + int(np.sum(gold))
    return 2 * tp / denominator if denominator else 0.0


def gold_matrix(rows: Sequence[training.Row]) -> np.ndarray:
    return np.array([[name in row.labels for name in CATEGORIES] for row in rows], dtype=bool)


def prepare(description: str) -> tuple[Path, EmbeddingClassifier]:
    """The data directory (`--data`) and the embedded model, for this script and bench/feedback_loop.py."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    args = parser.parse_args()
    training.require_fitting()
    classifier = Engine(load_settings()).classifier()
    assert isinstance(classifier, EmbeddingClassifier), "the embedded model is an embedding model"
    return args.data, classifier


def main() -> None:
    started = time.monotonic()
    data, classifier = prepare(__doc__.splitlines()[0])
    train = [row for dataset in MAPPINGS for row in rows_of(data, dataset, "train")]
    val = [row for dataset in MAPPINGS for row in rows_of(data, dataset, "val")]
    tests = {dataset: rows_of(data, dataset, "test") for dataset in MAPPINGS}
    tweeteval = [
        training.Row(item["text"], ("offensive",) if item["label"] == "offensive" else ())
        for item in map(json.loads, (data / "tweeteval_offensive.jsonl").read_text().splitlines())
    ]
    digest = hashlib.sha256()
    for dataset in MAPPINGS:
        for split in ("train", "val"):
            digest.update((data / "moderation" / dataset / f"{split}.jsonl").read_bytes())
    texts = list(dict.fromkeys(row.text for rows in (train, val, tweeteval, *tests.values()) for row in rows))
    print(f"embedding {len(texts)} texts", file=sys.stderr)
    vectors = dict(zip(texts, training.embed_texts(classifier, texts), strict=True))
    fitted = training.fit_head(
        classifier, LABELS, train, multi_label=True, val_rows=val, data_sha256=digest.hexdigest(), vectors=vectors
    )
    labels = tuple(label.model_copy(update={"threshold": fitted.thresholds[label.name]}) for label in LABELS)
    labelset = LabelSet(
        name=NAME, labels=labels, multi_label=True, head=fitted.head, builtin=True, provenance=PROVENANCE
    )
    # version 0: a built-in set's; a stored set of its name is numbered from 1
    OUT.write_text(json.dumps({"version": 0, "set": json.loads(labelset.model_dump_json(exclude={"version"}))}) + "\n")

    # zero-shot with the same label texts, its thresholds fitted on the same val rows
    prototypes = classifier.embed([label.hypothesis_for("{}") for label in LABELS])[0].astype(np.float64)
    zero = training.zero_shot(classifier, prototypes, True)

    def scores(rows: Sequence[training.Row], head: bool) -> np.ndarray:
        matrix = np.stack([vectors[row.text] for row in rows])
        if head:
            return np.asarray(fitted.head.scores(matrix))
        return training._scores(zero.logits(matrix.astype(np.float64)), True)

    zero_thresholds = np.array(best_thresholds(scores(val, head=False), gold_matrix(val)))
    head_thresholds = np.array([fitted.thresholds[name] for name in CATEGORIES])
    report: dict[str, Any] = {"head": fitted.head.fitted, "test": {}}
    for dataset, rows in [*tests.items(), ("tweeteval_offensive", tweeteval)]:
        gold = gold_matrix(rows)
        covered = COVERS.get(dataset, ("offensive",))
        found: dict[str, Any] = {"rows": len(rows)}
        for way, head, thresholds in (("zero_shot", False, zero_thresholds), ("builtin", True, head_thresholds)):
            accepted = scores(rows, head) >= thresholds
            found[way] = {
                name: round(f1(accepted[:, i], gold[:, i]), 4) for i, name in enumerate(CATEGORIES) if name in covered
            }
            if dataset == "tweeteval_offensive":  # TweetEval's own measure: macro-F1 over OFF and NOT
                i = CATEGORIES.index("offensive")
                found[way]["macro_f1"] = round(
                    (f1(accepted[:, i], gold[:, i]) + f1(~accepted[:, i], ~gold[:, i])) / 2, 4
                )
        report["test"][dataset] = found
        print(dataset, json.dumps(found), file=sys.stderr)
    # against a head fitted on each dataset alone (its train and val splits), on that dataset's test split: what
    # one set for every category costs each category
    for dataset, rows in tests.items():
        own = training.fit_head(
            classifier,
            LABELS,
            rows_of(data, dataset, "train"),
            multi_label=True,
            val_rows=rows_of(data, dataset, "val"),
            vectors=vectors,
        )
        thresholds = np.array([own.thresholds[name] for name in CATEGORIES])
        accepted = np.asarray(own.head.scores(np.stack([vectors[row.text] for row in rows]))) >= thresholds
        gold = gold_matrix(rows)
        report["test"][dataset]["own_dataset_head"] = {
            name: round(f1(accepted[:, i], gold[:, i]), 4)
            for i, name in enumerate(CATEGORIES)
            if name in COVERS[dataset]
        }
        print(dataset, "own head", json.dumps(report["test"][dataset]["own_dataset_head"]), file=sys.stderr)
    report["seconds"] = round(time.monotonic() - started, 1)
    REPORT.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {OUT.relative_to(ROOT)} and {REPORT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
