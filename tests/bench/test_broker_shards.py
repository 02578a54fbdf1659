"""The fleet bench (bench/broker_shards.py) in its quick mode: N = 1, 2, 3 servers each measured from the servers'
own CPU counters, every request answered by id on its home server, the load spread over the servers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import broker_shards

pytestmark = pytest.mark.slow  # three worker starts and an idle window each: about half a minute


def test_the_quick_run_measures_each_fleet_size(tmp_path: Path) -> None:
    report_path = tmp_path / "broker-shards.json"
    lines: list[str] = []

    report = broker_shards.main(["--quick", "--messages", "90", "--report", str(report_path)], progress=lines.append)

    assert json.loads(report_path.read_text()) == report
    assert set(report["by_servers"]) == {"1", "2", "3"}
    for raw in report["rounds_raw"]:  # each round checked every request's result by id before it was reported
        n = raw["servers"]
        assert raw["redis_cpu_us"] > 0 and len(raw["by_server_us"]) == n
        assert sum(raw["messages_by_server"]) == 90 and all(share > 0 for share in raw["messages_by_server"])
    assert report["by_servers"]["1"]["over_one_server"] == 1.0
    assert any("servers" in line for line in lines)
