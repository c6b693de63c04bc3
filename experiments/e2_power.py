"""E2 with power: the pre-registered analysis (experiments/archive/e2_power.md; superseded, but
``e2_tune.py`` imports this module's table and verdict).

    python experiments/e2_power.py runs/e2-0 runs/e2-1 runs/e2-2 [--json experiments/archive/e2_power.json]
    python experiments/e2_power.py experiments/archive/e2_power_runs/seed-{0,1,2}   # from the committed outcomes

Per seed (run), each method's per-question outcomes are averaged over the batch orders that every
method of that seed has finished (order 1 from ``per_question.json``, others from ``orders/``), then
compared with RFT and VFT by the hierarchical paired bootstrap (``stats.pooled_comparisons``). Prints
a markdown table in points and the decision rule's verdict for each variant; says how much of the
3 seeds x 3 orders design the figures rest on.
"""
import argparse
import json
from pathlib import Path

from aftlab.eval.stats import merge_orders, pooled_comparisons

PRIMARY = ("assessment_accuracy_strict", "rerank_accuracy")
SHOWN = ("task_accuracy", "assessment_accuracy_strict", "rerank_accuracy", "assessment_accuracy")


def load(run: Path) -> tuple[dict, list[int], dict]:
    """(per-method outcomes merged over the orders every method finished, those orders, metrics.json)."""
    own = json.loads((run / "per_question.json").read_text())
    metrics = json.loads((run / "metrics.json").read_text())
    methods = [m for m in own if m != "vft"]
    extra = {}
    for p in sorted((run / "orders").glob("*@*.json")) if (run / "orders").exists() else []:
        m, o = p.stem.split("@")
        extra.setdefault(int(o), {})[m] = json.loads(p.read_text())["outcomes"]
    orders = [1] + sorted(o for o, got in extra.items() if all(m in got for m in methods))
    merged = {"vft": own["vft"]}
    for m in methods:
        merged[m] = merge_orders([own[m]] + [extra[o][m] for o in orders[1:]])
    return merged, orders, metrics


def table(comparisons: dict) -> str:
    """The markdown table of ``{method: {vs: {metric: {diff, lo, hi}}}}`` in points."""
    lines = ["| method | vs | " + " | ".join(SHOWN) + " |", "|---|---|" + "---|" * len(SHOWN)]
    for method, by in comparisons.items():
        for vs, c in by.items():
            cells = [f"{100 * c[k]['diff']:+.2f} [{100 * c[k]['lo']:+.2f}, {100 * c[k]['hi']:+.2f}]" if k in c else "–"
                     for k in SHOWN]
            lines.append(f"| {method} | {vs} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def verdict(c: dict) -> str:
    primary_up = [k for k in PRIMARY if k in c and c[k]["lo"] > 0]
    task_ok = c["task_accuracy"]["lo"] > -0.01
    if primary_up and task_ok:
        return f"beats RFT (on {', '.join(primary_up)}; task CI lower end {100 * c['task_accuracy']['lo']:+.1f})"
    why = "no primary CI above 0" if not primary_up else "task CI lower end below -1 point"
    return f"not shown ({why})"


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    loaded = [load(Path(r)) for r in a.runs]
    runs = [x[0] for x in loaded]
    pooled = pooled_comparisons(runs)
    design = {r: o for r, (_, o, _) in zip(a.runs, loaded)}
    vft = {r: m["methods"]["vft"]["task_accuracy"] for r, (_, _, m) in zip(a.runs, loaded)}
    print(f"design: {len(runs)} seed(s); batch orders per seed {design} (pre-registered: 3 seeds x orders 1, 2, 3)")
    print(f"VFT greedy task accuracy per seed: {vft}; spread {max(vft.values()) - min(vft.values()):.3f}")
    print(f"held-out questions: task {len(runs[0]['vft']['task'])}, rerank {len(runs[0]['vft']['rerank'])} per seed")
    print()
    print(table(pooled))
    print()
    verdicts = {m: verdict(by["rft"]) for m, by in pooled.items() if m not in ("rft", "vft") and "rft" in by}
    for m, v in verdicts.items():
        print(f"{m}: {v}")
    if a.json:
        Path(a.json).write_text(json.dumps({"design": design, "vft_task_accuracy": vft, "comparisons": pooled,
                                            "verdicts": verdicts}, indent=1))
