"""Cutting encoded sequences into model runs: sorted by length, bounded by a padded-token budget.

Arithmetic: a run of n sequences padded to length L costs n x L padded tokens; a run is closed before it
would exceed `token_budget` padded tokens or `max_items` sequences. Sorting by length first keeps the
padding of each run small (padded tokens / real tokens is reported as the padding ratio).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from worker.tokenization import Encoded


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
    `token_types`), right-padded to the longest member or to the graph's static `length`."""
    width = length or max(len(e) for e in encoded)
    ids = np.full((len(encoded), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(encoded), width), dtype=np.int64)
    types = np.zeros((len(encoded), width), dtype=np.int64)
    for row, item in enumerate(encoded):
        ids[row, : len(item)] = item.ids
        mask[row, : len(item)] = 1
        if token_types:
            types[row, : len(item)] = item.type_ids
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
