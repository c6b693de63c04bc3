"""Per-seed and mean tables of E2 variants against RFT, from e2_results.jsonl and each run's metrics.json.

    python experiments/archive/vs_rft.py runs/tiny-{0,1,2} -- trunc_fe_lam01 bc_lam003 ...

RFT appears once per batch order it was trained with: ``rft@1`` is the run's own RFT model
(``aftlab run`` aligns with seed + 1), ``rft@N`` a sweep row with ``--seed-offset N``. The spread
between them is the training noise a variant's difference has to clear. For a variant with
several rows on one run (re-runs), the last row counts.
"""
import json
import statistics
import sys
from pathlib import Path

KEYS = ("task_accuracy", "assessment_accuracy", "assessment_accuracy_strict", "rerank_accuracy")
HEAD = ("task", "assess", "strict", "rerank")


def collect(runs: list[str], variants: list[str]) -> dict[str, dict[str, dict]]:
    """``{name: {run: metrics}}`` for the runs' own methods (RFT as rft@1), every rft@N sweep row and
    each named variant (offset 1 only)."""
    table: dict[str, dict[str, dict]] = {"rft@1": {}}
    for run in runs:
        for method, m in json.loads((Path(run) / "metrics.json").read_text())["methods"].items():
            table.setdefault("rft@1" if method == "rft" else f"{method} (run)", {})[run] = m
    for line in (Path(__file__).parent / "e2_results.jsonl").read_text().splitlines():
        row = json.loads(line)
        if row["run"] not in runs:
            continue
        off = row.get("seed_offset", 1)
        if row["variant"] == "rft" and off != 1:
            table.setdefault(f"rft@{off}", {})[row["run"]] = row
        elif row["variant"] in variants and off == 1:
            table.setdefault(row["variant"], {})[row["run"]] = row
    first = sorted(n for n in table if n.startswith("rft@")) + [n for n in table if n.endswith("(run)")]
    return {n: table[n] for n in first + [v for v in variants if v in table]}


def markdown(table: dict[str, dict[str, dict]], runs: list[str]) -> str:
    lines = ["| variant | run | " + " | ".join(HEAD) + " |", "|---|---|" + "---|" * len(HEAD)]
    for name, by_run in table.items():
        for run in runs:
            if run in by_run:
                lines.append(f"| {name} | {run} | " + " | ".join(f"{by_run[run][k]:.4f}" for k in KEYS) + " |")
    lines += ["", "| variant | seeds | " + " | ".join(HEAD) + " |", "|---|---|" + "---|" * len(HEAD)]
    for name, by_run in table.items():
        got = [by_run[r] for r in runs if r in by_run]
        cells = []
        for k in KEYS:
            xs = [g[k] for g in got]
            sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
            cells.append(f"{statistics.mean(xs):.4f} ± {sd:.4f}")
        lines.append(f"| {name} | {len(got)} | " + " | ".join(cells) + " |")
    rft = {r: [by_run[r] for n, by_run in table.items() if n.startswith("rft@") and r in by_run] for r in runs}
    lines += ["", "Paired, seed by seed: variant minus the mean of that seed's RFT models, in points "
              "(mean over seeds, and the smallest and largest seed).", "",
              "| variant | " + " | ".join(HEAD) + " |", "|---|" + "---|" * len(HEAD)]
    for name, by_run in table.items():
        got = [r for r in runs if r in by_run]
        cells = []
        for k in KEYS:
            d = [100 * (by_run[r][k] - statistics.mean(x[k] for x in rft[r])) for r in got]
            cells.append(f"{statistics.mean(d):+.1f} [{min(d):+.1f}, {max(d):+.1f}]")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    args = sys.argv[1:]
    cut = args.index("--") if "--" in args else len(args)
    runs, variants = args[:cut], args[cut + 1:]
    print(markdown(collect(runs, variants), runs))
