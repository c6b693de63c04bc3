"""What the experiments found, read from their result files: the one place the README, the docs and the
notebooks take a figure from, so no figure is copied by hand and none goes stale.

Place in the data path: the top of ``report``; it reads ``experiments/*.json`` (written by the experiment
scripts, committed) and formats tables. ``python -m aftlab.report.findings`` rewrites the generated blocks of
README.md and docs/results.md (between ``<!-- findings:NAME -->`` and ``<!-- /findings:NAME -->``);
``--check`` fails when a block differs from what the files say (``make test`` runs it).

>>> points({"diff": 0.0123, "lo": -0.0046, "hi": 0.0291})
'+1.2 [−0.5, +2.9]'
>>> shown({"diff": 0.0123, "lo": -0.0045, "hi": 0.0291}), shown({"diff": 0.02, "lo": 0.001, "hi": 0.04})
(False, True)
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EXPERIMENTS = ROOT / "experiments"
NAMES = {"rft": "RFT", "aft_bc": "AFT-BC", "aft_dc": "AFT-DC", "aft_rbc": "AFT-RBC", "vft_cont": "VFT continued",
         "vft": "VFT", "align_only": "no constraint"}
METRICS = {"assessment_accuracy_strict": "strict assessment", "rerank_accuracy": "rerank", "task_accuracy": "task"}


def points(d: dict, digits: int = 1) -> str:
    """A difference (fractions) with its interval, in points, minus signs typeset."""
    def f(x):
        return f"{100 * x:+.{digits}f}".replace("-", "−")
    return f"{f(d['diff'])} [{f(d['lo'])}, {f(d['hi'])}]"


def shown(d: dict) -> bool:
    """Whether an interval lies above zero (the pre-registered rules' "shown")."""
    return d["lo"] > 0


def load(name: str, root: Path = EXPERIMENTS) -> dict | list | None:
    """A result file of ``experiments/`` (None when it has not been written yet)."""
    path = root / name
    return json.loads(path.read_text()) if path.is_file() else None


def e2_table(result: dict, methods=None, vs: str = "rft", verdicts: bool = True) -> str:
    """Markdown rows ``method − RFT`` on the primary metrics and task accuracy of an E2 result file
    (``experiments/e2_tune.py --json``), in points to two decimals, with the file's own verdict for each AFT arm
    (``verdicts``; the rule compares AFT with RFT, so other rows and other baselines get none).

    >>> r = {"comparisons": {"aft_bc": {"rft": {m: {"diff": 0.01, "lo": -0.01, "hi": 0.03} for m in METRICS}}},
    ...      "verdicts": {"aft_bc": "not shown (no primary CI above 0)"}}
    >>> print(e2_table(r))
    | method − RFT | strict assessment | rerank | task | verdict |
    |---|---|---|---|---|
    | AFT-BC | +1.00 [−1.00, +3.00] | +1.00 [−1.00, +3.00] | +1.00 [−1.00, +3.00] | not shown (no primary CI above 0) |
    """
    comps = result["comparisons"]
    methods = methods or [m for m in comps if vs in comps[m] and m != vs]
    head = f"| method − {NAMES.get(vs, vs)} | " + " | ".join(METRICS.values()) + " | verdict |"
    rows = [head, "|" + "---|" * (len(METRICS) + 2)]
    for m in methods:
        cells = [points(comps[m][vs][k], 2) if k in comps[m][vs] else "—" for k in METRICS]
        verdict = result.get("verdicts", {}).get(m, "") if verdicts and m.startswith("aft_") else ""
        rows.append(f"| {NAMES.get(m, m)} | " + " | ".join(cells) + f" | {verdict} |")
    return "\n".join(rows)


def e1e3_lines(r: dict) -> list[str]:
    """The headline lines of ``experiments/tiny_e1e3.json`` (E1, E3 and the collapse case study)."""
    seeds, e1 = r["seeds"], r["e1_assessment"]
    return [f"VFT assessment accuracy (pairs) {100 * e1['diff']:.1f}% [{100 * e1['lo']:.1f}, {100 * e1['hi']:.1f}] "
            f"over seeds {', '.join(map(str, seeds))}",
            f"no constraint − VFT, task accuracy {points(r['e3_align_only_vs_vft_task'])}; no constraint − AFT-BC "
            f"{points(r['e3_align_only_vs_aft_bc_task'])}",
            f"collapse setting: no constraint − VFT, task {points(r['collapse_align_only_vs_vft_task'])}; "
            f"BC − VFT {points(r['collapse_bc_vs_vft_task'])}; repetition (per greedy COT) no constraint − BC "
            f"{points(r['collapse_repetition_align_only_vs_bc'])}"]


def _verdicts(result: dict, arms=("aft_bc", "aft_dc", "aft_rbc")) -> str:
    v = result.get("verdicts", {})
    return "; ".join(f"{NAMES.get(a, a)}: {v[a].split(' (')[0]}" for a in arms if a in v)


def findings_table(root: Path = EXPERIMENTS) -> str:
    """The README's findings table: one row per claim, its verdict and headline figure with its 95% CI (points
    unless said), the preset, and the file and command it comes from. Claims whose result file is missing say so."""
    rows = ["| claim | verdict | figure (95% CI) | preset | from |", "|---|---|---|---|---|"]
    e1e3 = load("tiny_e1e3.json", root)
    if e1e3:
        e1 = e1e3["e1_assessment"]
        rows.append(f"| **E1** VFT mis-ranks its own right and wrong COTs | {'shown' if e1['hi'] < 0.90 else 'not shown'} "
                    f"| VFT assessment accuracy {100 * e1['diff']:.1f}% [{100 * e1['lo']:.1f}, {100 * e1['hi']:.1f}] "
                    f"({len(e1e3['seeds'])} seeds) | `tiny` | [tiny_e1e3.md](experiments/tiny_e1e3.md) |")
    else:
        rows.append("| **E1** VFT mis-ranks its own right and wrong COTs | not run yet | | `tiny` | tiny_e1e3.md |")
    tiny = load("e2_tune_tiny.json", root)
    for result, preset, page in ((tiny, "tiny", "e2_tiny.md"), (load("e2_tune_powered.json", root), "e2", "e2_powered.md")):
        if result is None:
            rows.append(f"| **E2** AFT beats RFT | not run yet | | `{preset}` | {page} |")
            continue
        c = result["comparisons"]["aft_bc"]["rft"]
        rows.append(f"| **E2** AFT beats RFT (tuned, 3 seeds × 3 orders) | {_verdicts(result)} | AFT-BC − RFT: strict "
                    f"assessment {points(c['assessment_accuracy_strict'], 2)}, task {points(c['task_accuracy'], 2)} | "
                    f"`{preset}` | [{page}](experiments/{page}) |")
    if e1e3:
        e3, col = e1e3["e3_align_only_vs_vft_task"], e1e3["collapse_align_only_vs_vft_task"]
        shown = e3["hi"] < 0 and e1e3["e3_align_only_vs_aft_bc_task"]["hi"] < 0
        falls = all(last < first for last, first in zip(e1e3["collapse_final_neg_score"]["align_only"],
                                                       e1e3["collapse_first_neg_score"]["align_only"]))
        collapse = col["hi"] < -0.10 and falls and any(
            e1e3[f"collapse_{k}_align_only_vs_bc"]["lo"] > 0 for k in ("unfinished", "repetition"))
        rows.append(f"| **E3** no constraint degrades, BC does not | {'shown' if shown else 'not shown'} at the default "
                    f"setting; collapse {'shown' if collapse else 'not shown'} | no constraint − VFT task "
                    f"{points(e3)}; at the collapse setting {points(col)} | `tiny` | "
                    f"[tiny_e1e3.md](experiments/tiny_e1e3.md) |")
    e45 = load("tiny_e4e5.json", root)
    if e45:
        b = e45["variants"]
        betas = sorted((float(k.split("=", 1)[1]), k) for k in b if k.startswith("beta="))
        best = e45["e4_best_beta"]
        where = ("a moderate β" if betas[0][0] < best < betas[-1][0] else
                 "the smallest β" if best == betas[0][0] else "the largest β")
        verdict = (f"gap {'grows' if e45['e4_gap_grows'] else 'does not grow'}; accuracy best at {where}"
                   if not (e45["e4_gap_grows"] and where == "a moderate β") else "in shape")
        rows.append(f"| **E4** the score gap grows with β; accuracy best at a moderate β | {verdict} "
                    f"(one seed, no CI) | held-out gap {b[betas[0][1]]['gap']:.3f} → {b[betas[-1][1]]['gap']:.3f} "
                    f"nats/token from β = {betas[0][0]:g} to {betas[-1][0]:g}; best task at β = {best:g} "
                    f"({100 * b[betas[0][1]]['task_accuracy']:.1f}% → {100 * b[betas[-1][1]]['task_accuracy']:.1f}%) "
                    f"| `tiny` | [tiny_e4e5.py](experiments/tiny_e4e5.py) |")
        kept = [loss.upper() for loss, ok in e45["e5_bc_keeps_negatives_higher"].items() if ok]
        rows.append(f"| **E5** the constraint in DPO, RRHF, PRO | BC keeps negatives higher for {', '.join(kept) or 'none'} "
                    f"(one seed) | held-out negative score, e.g. DPO {b['dpo']['mean_neg_score']:.2f} → "
                    f"{b['dpo+BC']['mean_neg_score']:.2f} with BC | `tiny` | [tiny_e4e5.py](experiments/tiny_e4e5.py) |")
    judge = load("e6_smol_assess_run.json", root)
    if judge:
        rows.append(f"| **E6** a real LM judges real GSM8K COTs | near chance, untrained | base smol assessment "
                    f"{100 * judge['assessment_pairs']:.1f}% of {judge['n_pairs']} pairs ({judge['n_questions']} questions, "
                    f"no CI) | `smol` | [e6_smol_assess.md](experiments/e6_smol_assess.md) |")
    trained = load("e6_smol_gsm8k_results.json", root)
    rows.append("| **E6** smol trained with AFT on GSM8K solutions | "
                + ("see the file" if trained else "pre-registered, not run yet") + " | | `smol-gsm8k` | "
                "[e6_smol_gsm8k.md](experiments/e6_smol_gsm8k.md) |")
    return "\n".join(rows)


def blocks() -> dict[str, str]:
    """Each generated block's text, by name, from the result files present."""
    out = {"findings": findings_table()}
    if (e2 := load("e2_tune_powered.json")) is not None:
        out["e2-powered"] = e2_table(e2)
    if (new := load("e2_tune_tiny.json")) is not None:
        out["e2-tiny"] = e2_table(new, vs="rft")
        if any("vft_cont" in by for by in new["comparisons"].values()):
            out["e2-tiny-control"] = e2_table(new, [m for m in new["comparisons"] if m not in ("vft", "vft_cont")],
                                              vs="vft_cont", verdicts=False)
    if (e1e3 := load("tiny_e1e3.json")) is not None:
        out["e1e3"] = "\n".join(f"- {line}" for line in e1e3_lines(e1e3))
    return out


BLOCK = re.compile(r"(<!-- findings:(?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /findings:(?P=name) -->)", re.S)


def rewrite(text: str, found: dict[str, str]) -> str:
    """``text`` with each generated block replaced by ``found[name]`` (blocks not in ``found`` kept).

    >>> rewrite("a\\n<!-- findings:x -->\\nold\\n<!-- /findings:x -->\\nb", {"x": "new"})
    'a\\n<!-- findings:x -->\\nnew\\n<!-- /findings:x -->\\nb'
    """
    return BLOCK.sub(lambda m: m.group(1) + found.get(m.group("name"), m.group("body").rstrip("\n")) + "\n" + m.group(4),
                     text)


def main(argv=None) -> int:
    check = "--check" in (argv if argv is not None else sys.argv[1:])
    found, stale = blocks(), []
    for path in (ROOT / "README.md", ROOT / "docs" / "results.md"):
        if not path.is_file():
            continue
        text = path.read_text()
        new = rewrite(text, found)
        if new != text:
            stale.append(path.name)
            if not check:
                path.write_text(new)
    if check and stale:
        print(f"generated findings out of date in {', '.join(stale)}: run python -m aftlab.report.findings")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
