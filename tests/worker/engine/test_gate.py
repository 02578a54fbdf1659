"""The run gate (worker/engine/gate.py): what the worker does between a bulk batch's model runs."""

from __future__ import annotations

import logging

import pytest

from schemas import ClassifyRequest, ParsedRequest
from worker.engine.engine import Engine
from worker.engine.gate import RunGate
from worker.settings import load_settings


def test_the_gate_calls_back_before_each_run_without_nesting() -> None:
    gate = RunGate()
    calls: list[str] = []

    def between() -> None:
        calls.append("between")
        assert not gate.is_open  # inside the callback: its own work is not cut into steps
        gate.checkpoint()  # the callback's own model runs pass without calling it again

    gate.checkpoint()  # closed: nothing
    assert not gate.is_open
    with gate.open(between):
        assert gate.is_open
        gate.checkpoint()
        gate.checkpoint()
    gate.checkpoint()
    assert calls == ["between", "between"] and not gate.is_open


def test_a_failing_callback_is_logged_and_the_batch_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    gate = RunGate()

    def between() -> None:
        raise RuntimeError("realtime work broke")

    with caplog.at_level(logging.ERROR), gate.open(between):
        gate.checkpoint()
    assert "the batch continues" in caplog.text


def test_the_embedded_models_runs_pass_the_gate(minilm_engine: Engine) -> None:
    """A real model: a batch of many runs calls the gate before each, and work done there (another batch, as
    the worker serves realtime requests) does not disturb the interrupted one."""
    texts = [f"order {i} has not arrived, where is my parcel" + " really" * (i % 7) for i in range(40)]
    batch = [ParsedRequest(ClassifyRequest(text=t, labels=["delivery", "refund"])) for t in texts]
    alone = minilm_engine.answer(batch)
    served = []

    def between() -> None:
        served.extend(minilm_engine.answer([ParsedRequest(ClassifyRequest(text="refund me", labels=["refund", "x"]))]))

    minilm_engine.cache.size = 0  # every request runs the model
    try:
        with minilm_engine.gate.open(between):
            interrupted = minilm_engine.answer(batch)
    finally:
        minilm_engine.cache.size = minilm_engine.settings.result_cache_size
    runs = -(-len(texts) // minilm_engine.runs.max_pairs_per_run)
    assert len(served) >= runs  # once before each run of the batch (its own runs did not call it again)
    for one, other in zip(interrupted, alone, strict=True):
        assert one.scores == pytest.approx(other.scores)  # type: ignore[union-attr]


def test_paced_work_calls_the_gate_every_pace_items() -> None:
    gate = RunGate()
    calls: list[int] = []
    seen: list[int] = []
    with gate.open(lambda: calls.append(len(seen))):
        seen.extend(gate.paced(range(300), every=128))
    assert seen == list(range(300)) and calls == [128, 256]  # before the 129th and the 257th item


def test_building_a_bulk_batchs_results_passes_the_gate() -> None:
    """Found by the mixed-load bench: after the last run of a 1,024-request MiniLM batch, building its results
    (77 labels each) held the worker ~40 ms with no checkpoint. One run here, so any further checkpoint is the
    result loop's."""
    engine = Engine(load_settings(enable_fake_model=True, model="fake", fake_model_run_ms=1, max_pairs_per_run=1000))
    batch = [ParsedRequest(ClassifyRequest(text=f"order {i}", labels=["a", "b"])) for i in range(300)]
    calls = []
    with engine.gate.open(lambda: calls.append(1)):
        assert len(engine.answer(batch)) == 300
    assert len(calls) == 1 + 2  # before the one run, then every 128 results built


def test_a_stop_interrupts_an_open_gate_before_its_next_run_only() -> None:
    from worker.engine.gate import Interrupted

    gate = RunGate()
    gate.interrupt()
    gate.before_run()  # closed (a realtime batch): it runs on
    gate.checkpoint()
    served: list[int] = []
    with gate.open(lambda: served.append(1)):
        gate.checkpoint()  # inside the writing of results: never interrupted
        with pytest.raises(Interrupted):
            try:
                gate.before_run()
            except Exception:  # what isolates one request's failure must not catch a stop
                pytest.fail("a stop was caught as an Exception")
    assert served == [1]  # the checkpoint served realtime work; the interrupted runs did not
