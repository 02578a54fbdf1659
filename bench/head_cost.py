"""What a taught label set costs to serve against zero-shot with the same labels, in process, on the embedded model.

    python bench/head_cost.py [--rounds 7] [--requests 1024]

The built-in `moderation` set (3 labels, a head) and the same labels zero-shot, over the same unique banking77 and
TweetEval texts in the batches a worker cuts (the engine's `answer`, as a worker runs it; result cache off), the two
ways alternating round by round so a slow spell of the machine lands on both. Reported: each way's median
seconds and the ratio head / zero-shot per round. Writes bench/reports/head-cost.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.workload import texts  # noqa: E402
from schemas import ClassifyRequest, ParsedRequest  # noqa: E402
from worker.engine.engine import Engine  # noqa: E402
from worker.settings import load_settings  # noqa: E402
from worker.stream.labelsets import builtin_labelsets  # noqa: E402

REPORT = ROOT / "bench" / "reports" / "head-cost.json"
BATCH = 256


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--requests", type=int, default=1024)
    args = parser.parse_args()
    engine = Engine(load_settings(result_cache_size=0))
    moderation = builtin_labelsets()["moderation"]
    requests = [
        ParsedRequest(moderation.apply_to(ClassifyRequest(text=text, label_set="moderation")))
        for text in texts(args.requests)
    ]
    batches = [requests[i : i + BATCH] for i in range(0, len(requests), BATCH)]
    engine.answer(batches[0][:8], [moderation.head] * 8)  # warm both paths
    engine.answer(batches[0][:8])
    timings: dict[str, list[float]] = {"head": [], "zero_shot": []}
    for round_ in range(args.rounds):
        order = ("head", "zero_shot") if round_ % 2 == 0 else ("zero_shot", "head")
        for way in order:
            started = time.perf_counter()
            for batch in batches:
                engine.answer(batch, [moderation.head] * len(batch) if way == "head" else None)
            timings[way].append(time.perf_counter() - started)
    ratios = [h / z for h, z in zip(timings["head"], timings["zero_shot"], strict=True)]
    report = {
        "requests": args.requests,
        "labels": len(moderation.labels),
        "rounds": args.rounds,
        "median_s": {way: round(statistics.median(values), 4) for way, values in timings.items()},
        "head_over_zero_shot": {
            "median": round(statistics.median(ratios), 3),
            "min": round(min(ratios), 3),
            "max": round(max(ratios), 3),
        },
    }
    REPORT.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
