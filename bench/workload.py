"""The requests every way of running is measured on: banking77 test texts and label sets of 2, 5, 20, 77.

Texts are real customer messages (8-40 words, most 10-20), unique, in a fixed order; a label set of n is the
first n banking77 intent names (underscores as spaces), so hypotheses look like what users send. The same
texts and labels go to the raw session, the HF pipeline, the engine and the worker.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from schemas import ClassifyRequest, ParsedRequest

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
LABEL_COUNTS = (2, 5, 20, 77)


@functools.cache
def _unique_texts(data: Path) -> tuple[str, ...]:
    with (data / "banking77.jsonl").open() as lines:
        return tuple(dict.fromkeys(json.loads(line)["text"] for line in lines))


def texts(count: int, offset: int = 0, data: Path = DATA) -> list[str]:
    """`count` unique banking77 test texts starting at `offset` (different offsets never overlap)."""
    unique = _unique_texts(data)
    if offset + count > len(unique):
        raise ValueError(f"only {len(unique)} unique texts; asked for {offset}+{count}")
    return list(unique[offset : offset + count])


def label_names(count: int, data: Path = DATA) -> list[str]:
    names = json.loads((data / "banking77.labels.json").read_text())
    return [name.replace("_", " ") for name in names[:count]]


def requests(
    batch_texts: Sequence[str], labels: Sequence[str], prefix: str, reply_to: str | None = None
) -> list[ClassifyRequest]:
    return [
        ClassifyRequest(id=f"{prefix}-{i}", text=text, labels=list(labels), reply_to=reply_to)
        for i, text in enumerate(batch_texts)
    ]


def worker_batches(
    items: Sequence[ParsedRequest], max_items: int, max_pairs: int, cost: Callable[[ClassifyRequest], int]
) -> Iterator[list[ParsedRequest]]:
    """Cut requests as a worker's bulk batcher does: at `max_items` requests or `max_pairs` pairs (`cost`)."""
    batch: list[ParsedRequest] = []
    pairs = 0
    for item in items:
        batch.append(item)
        pairs += cost(item.request)
        if len(batch) >= max_items or pairs >= max_pairs:
            yield batch
            batch, pairs = [], 0
    if batch:
        yield batch
