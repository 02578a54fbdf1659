"""Cutting encoded sequences into model runs: sorted by length, bounded by a padded-token budget.

Arithmetic: a run of n sequences padded to length L costs n x L padded tokens; a run is closed before it
would exceed `token_budget` padded tokens or `max_items` sequences. Sorting by length first keeps the
padding of each run small (padded tokens / real tokens is reported as the padding ratio).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain

import numpy as np

from worker.engine.tokenization import Encoded


@dataclass(frozen=True, slots=True)
class RunPlan:
    runs: tuple[tuple[int, ...], ...]  # indices into the encoded list, one tuple per model run
    real_tokens: int
    padded_tokens: int

    @property
    def padding_ratio(self) -> float:
        return self.padded_tokens / self.real_tokens if self.real_tokens else 1.0


def plan_runs(lengths: Sequence[int], token_budget: int, max_items: int, static_length: int | None = None) -> RunPlan:
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    runs: list[tuple[int, ...]] = []
    current: list[int] = []
    padded_total = 0
    for index in order:
        width = static_length or lengths[index]  # ascending: the newest member is the longest
        if current and (len(current) >= max_items or (len(current) + 1) * width > token_budget):
            padded_total += len(current) * (static_length or lengths[current[-1]])
            runs.append(tuple(current))
            current = []
        current.append(index)
    if current:
        padded_total += len(current) * (static_length or lengths[current[-1]])
        runs.append(tuple(current))
    return RunPlan(tuple(runs), real_tokens=sum(lengths), padded_tokens=padded_total)


def pad_run(
    encoded: Sequence[Encoded], pad_id: int, length: int | None = None, *, token_types: bool = True
) -> dict[str, np.ndarray]:
    """The model's feeds for one run: input_ids, attention_mask and token_type_ids (zeros unless
    `token_types`), right-padded to the longest member or to the graph's static `length`. Filled in three
    numpy writes, not three per row (a GPU run holds 256 rows)."""
    lengths = np.fromiter((len(e.ids) for e in encoded), dtype=np.int64, count=len(encoded))
    width = length or int(lengths.max())
    real = np.arange(width) < lengths[:, None]  # row-major: the real tokens of row 0, then row 1, ...
    ids = np.full((len(encoded), width), pad_id, dtype=np.int64)
    ids[real] = np.fromiter(chain.from_iterable(e.ids for e in encoded), dtype=np.int64, count=int(lengths.sum()))
    types = np.zeros((len(encoded), width), dtype=np.int64)
    if token_types:
        types[real] = np.fromiter(
            chain.from_iterable(e.type_ids for e in encoded), dtype=np.int64, count=int(lengths.sum())
        )
    return {"input_ids": ids, "attention_mask": real.astype(np.int64), "token_type_ids": types}
