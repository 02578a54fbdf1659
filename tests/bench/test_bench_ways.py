"""The benchmark's side-by-side timing (bench/ways.py): what it runs, not how fast."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest

from bench import ways
from producer import Client
from schemas import ClassifyRequest, ParsedRequest
from worker.engine.engine import Engine
from worker.settings import load_settings


def feed(tag: int, rows: int) -> dict[str, Any]:
    return {"input_ids": np.full((rows, 4), tag, dtype=np.int64)}


class RecordingSession:
    def __init__(self) -> None:
        self.calls: list[int] = []

    def run(self, names: list[str], inputs: dict[str, Any], *args: Any) -> list[np.ndarray]:
        tag = int(inputs["input_ids"][0, 0])
        self.calls.append(tag)
        return [np.full((len(inputs["input_ids"]), 2), tag, dtype=np.float32)]


def test_each_engine_run_is_repeated_alone_and_the_ceiling_keeps_pace_in_alternating_order() -> None:
    session = RecordingSession()
    ceiling = [feed(100 + i, 32) for i in range(2)]  # 64 rows in runs of 32
    slots = ways._Interleaved(session, ceiling)
    outputs = [slots.run(["out"], feed(tag, 16)) for tag in (1, 2, 3, 4)]  # the engine: 64 rows in runs of 16

    assert [int(out[0][0, 0]) for out in outputs] == [1, 2, 3, 4]  # the engine gets its own run's output
    # odd calls: own run, its repeat, then the ceiling until it has run as many rows; even calls: the reverse
    assert session.calls == [1, 1, 100, 2, 2, 3, 3, 101, 4, 4]
    assert slots.ceiling_rows == slots.engine_rows == 64
    assert slots.next == len(ceiling)
    assert slots.raw > 0 and slots.raw_batches > 0 and slots.inserted >= slots.raw + slots.raw_batches


def test_a_round_answers_as_the_engine_does_and_gives_the_session_back(monkeypatch: Any) -> None:
    engine = Engine(load_settings(result_cache_size=0))
    labels = ["billing", "shipping", "a technical problem"]
    texts = ["I was charged twice", "Where is my parcel?", "The app crashes on start", "Refund please"] * 3
    requests = [ClassifyRequest(id=f"r{i}", text=text, labels=labels) for i, text in enumerate(texts)]
    expected = [a.data()["labels"] for a in engine.answer([ParsedRequest(r) for r in requests])]  # type: ignore[union-attr]
    classifier = engine.classifier()
    session = classifier.model.session  # type: ignore[attr-defined]
    answered: list[list[Any]] = []
    answer = engine.answer
    monkeypatch.setattr(engine, "answer", lambda batch: answered.append(answer(batch)) or answered[-1])

    measured = ways.in_process_round(engine, requests, engine.settings, best_run=8)

    assert [a.data()["labels"] for a in answered[-1]] == expected  # one batch: the timed answers, wrapped
    assert classifier.model.session is session  # type: ignore[attr-defined]
    assert measured.raw > 0 and measured.raw_batches > 0 and measured.engine > 0


def test_an_open_loop_in_stretches_pauses_between_them_with_every_result_read(
    start_worker: Any, redis_url: str, client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    start_worker()
    requests = [
        ClassifyRequest(id=f"s{i}", text=f"message number {i}", labels=["billing", "praise"], reply_to="bench:s")
        for i in range(7)
    ]
    calls: list[tuple[int, int]] = []  # (stretch, results read so far)
    answered_before: list[int] = [0]

    def between(stretch: int) -> None:
        calls.append((stretch, answered_before[-1]))
        time.sleep(0.5)

    original = ways.open_loop

    def counting(url: str, part: Any, rate: float, seed: int) -> tuple[list[float], float]:
        out = original(url, part, rate, seed)
        answered_before.append(answered_before[-1] + len(out[0]))
        return out

    monkeypatch.setattr(ways, "open_loop", counting)
    started = time.perf_counter()
    phase = ways.open_loop_in_stretches(redis_url, requests, rate_per_s=20, seed=1, stretches=3, between=between)
    wall = time.perf_counter() - started

    assert calls == [(0, 0), (1, 2), (2, 4)]  # parts of 2, 2 and 3 requests, each pause after the last's results
    assert len(phase.latencies_ms) == 7 and phase.latencies_ms == sorted(phase.latencies_ms)
    assert all(ms > 0 for ms in phase.latencies_ms)
    assert phase.load_s <= wall - 1.5  # the three pauses are not load time
    assert client.redis.llen("bench:s") == 0
