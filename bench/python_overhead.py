"""The Python around the model, alone: the engine on the worker's bulk batches with `session.run` replaced by a
stub that returns zeros of the right shape at once. What is left is tokenising, padding, scoring and building
results: on a CPU it hides behind milliseconds of model time a pair, on a GPU it is the cost (the GPU run in
docs/benchmarks.md: 40-62 us a pair against 40 us of model). A GPU is not needed to measure it.

    python bench/python_overhead.py        # writes bench/reports/python-overhead.json and prints a table
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from bench import ways  # noqa: E402
from bench.harness import DEBERTA, MODELS_DIR, machine, settings_for  # noqa: E402
from bench.workload import LABEL_COUNTS, label_names, requests, texts  # noqa: E402
from worker.embedding import EmbeddingClassifier  # noqa: E402
from worker.engine import Engine  # noqa: E402
from worker.nli import NliClassifier  # noqa: E402
from worker.runtime import freeze_heap  # noqa: E402

OUT = ROOT / "bench" / "reports" / "python-overhead.json"
ROUNDS = 5


def stub_model(engine: Engine) -> None:
    """Replace the default model's run with zeros shaped like its output: logits or hidden states."""
    classifier = engine.classifier()
    assert isinstance(classifier, NliClassifier | EmbeddingClassifier), "an ONNX classifier"
    model = classifier.model
    shape = model.run(_probe_feeds(classifier)).shape  # the real output's shape, once
    trailing = shape[2:] if isinstance(classifier, EmbeddingClassifier) else shape[1:]

    def run(feeds: dict[str, np.ndarray]) -> np.ndarray:
        ids = feeds["input_ids"]
        lead = ids.shape if isinstance(classifier, EmbeddingClassifier) else ids.shape[:1]
        return np.zeros((*lead, *trailing), dtype=np.float32)

    model.run = run  # type: ignore[method-assign]


def _probe_feeds(classifier: NliClassifier | EmbeddingClassifier) -> dict[str, np.ndarray]:
    from worker.batching import pad_run

    if isinstance(classifier, NliClassifier):
        encoded = classifier.encoder.encode_pairs([("a probe", "This example is b.")])
    else:
        encoded = classifier.encoder.encode_texts(["a probe"])
    return pad_run(encoded, classifier.encoder.pad_id, classifier.model.static_sequence_length)


def measure(model: str) -> dict[int, float]:
    """Microseconds of Python per model sequence (pair or text) by label count."""
    settings = settings_for(model, 2)
    engine = Engine(settings)
    stub_model(engine)
    freeze_heap()
    per_sequence = {}
    for count in LABEL_COUNTS:
        batch = requests(texts(1024 // count if model.startswith("deberta") else 600), label_names(count), "p", "q")
        units = ways.units(engine.classifier(), batch)
        rounds = [ways.engine_seconds(engine, batch, settings) for _ in range(ROUNDS)]
        per_sequence[count] = statistics.median(rounds) / units * 1e6
    return per_sequence


def main() -> None:
    if not (MODELS_DIR / DEBERTA).is_dir():
        sys.exit(f"run first: python tools/make_test_models.py --full-size {MODELS_DIR / DEBERTA}")
    measured = {model: measure(model) for model in ("deberta-int8", "minilm-l6-int8")}
    OUT.write_text(json.dumps({"machine": machine(), "us_per_sequence": measured}, indent=1) + "\n")
    print("| model | " + " | ".join(f"{count} labels" for count in LABEL_COUNTS) + " |")
    print("|---|" + "---|" * len(LABEL_COUNTS))
    for model, values in measured.items():
        print(f"| {model} | " + " | ".join(f"{values[count]:.1f} us" for count in LABEL_COUNTS) + " |")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
