"""The broker-cost bench (bench/broker_cost.py) in its quick mode: every phase measured from Redis's own counters,
every request answered, and the docs section rendered from its report."""

from __future__ import annotations

import json
import re
from pathlib import Path

from bench import broker_cost, render


def test_the_quick_run_measures_every_phase_and_renders_its_section(tmp_path: Path) -> None:
    report_path = tmp_path / "broker-cost.json"
    lines: list[str] = []

    report = broker_cost.main(["--quick", "--messages", "60", "--report", str(report_path)], progress=lines.append)

    assert json.loads(report_path.read_text()) == report
    phases = report["phases"]
    assert set(phases) == set(broker_cost.PHASES)
    for phase, figures in phases.items():
        assert figures["redis_cpu_us"] > 0, phase
        assert figures["by_command"], phase
    # the one-by-one producer sends one LPUSH a message; a consuming phase answers each one by id (SET), and
    # records and pops them per claim, not per message (one HSET and one RPOP a claim)
    assert phases["producing_one_by_one"]["by_command"]["lpush"] == 1.0
    for phase in ("bulk", "bulk_no_backend", "realtime"):
        by_command = phases[phase]["by_command"]
        assert by_command["set"] >= 1.0 and phases[phase]["idle_share_us"] >= 0
        assert 0 < by_command["hset"] < 1.0 and 0 < by_command["rpop"] < 1.0, by_command
    # the result backend writes Celery's meta: one SET a message more than with it off
    on, off = phases["bulk"]["by_command"]["set"], phases["bulk_no_backend"]["by_command"]["set"]
    assert 0.8 < on - off < 1.2  # (a worker's own periodic writes fall in the window too)
    assert "rename" not in phases["bulk"]["by_command"]  # the bench's own commands are taken off
    section = render.broker_section(report)
    rows = [line for line in section if line.startswith("| ") and "---" not in line]
    assert len(rows) == 1 + len(broker_cost.PHASES)
    assert all(len(re.findall(r"(?<!\\)\|", line)) == 6 for line in rows)  # `pubsub|numsub` is no column


def test_a_baseline_report_renders_its_before_rows_and_reading() -> None:
    """`--baseline` adds each consuming phase on the other checkout's worker: rows marked *before*, and the
    reading that compares them (figures from the report, not written by hand)."""
    report = json.loads((Path(__file__).resolve().parents[2] / "bench" / "reports" / "broker-cost.json").read_text())
    if not report.get("baseline"):
        report["baseline"] = "abc1234"
        for phase in broker_cost.CONSUMING:
            report["phases"][phase + broker_cost.BEFORE] = report["phases"][phase]
        report["messages_per_s_one_redis_core_before"] = report["messages_per_s_one_redis_core"]
    section = "\n".join(render.broker_section(report))
    assert section.count("*before* (baseline)") == len(broker_cost.CONSUMING)
    bulk, before = report["phases"]["bulk"], report["phases"]["bulk_before"]
    assert f"{before['redis_cpu_us']:.1f} to {bulk['redis_cpu_us']:.1f} us on `labelq.bulk`" in section
    assert f"commit {report['baseline']}" in section
