"""Markdown tables of finished runs: per seed, and mean ± std over seeds.

    python experiments/archive/summarize.py runs/tiny-0 runs/tiny-1 runs/tiny-2
"""
import json
import sys
from pathlib import Path

from aftlab.eval.metrics import aggregate

KEYS = ("task_accuracy", "assessment_accuracy", "assessment_per_question", "assessment_accuracy_strict",
        "rerank_accuracy", "mean_pos_score", "mean_neg_score", "repetition_rate")

if __name__ == "__main__":
    runs = [json.loads((Path(p) / "metrics.json").read_text()) for p in sys.argv[1:]]
    print("| seed | method | " + " | ".join(KEYS) + " |")
    print("|---|---|" + "---|" * len(KEYS))
    for r in runs:
        for m, v in r["methods"].items():
            print(f"| {r['seed']} | {m} | " + " | ".join(f"{v[k]:.4f}" for k in KEYS) + " |")
    agg = aggregate(runs)
    print(f"\nmean ± std over {len(runs)} seeds\n")
    print("| method | " + " | ".join(KEYS) + " |")
    print("|---|" + "---|" * len(KEYS))
    for m, v in agg.items():
        print(f"| {m} | " + " | ".join(f"{v[k]['mean']:.4f} ± {v[k]['std']:.4f}" for k in KEYS) + " |")
