"""E1, E3 and the collapse case study on the `tiny` default, 3 seeds, with paired CIs
(pre-registration: experiments/tiny_e1e3.md).

    python experiments/tiny_e1e3.py run --seeds 0,1,2     # aftlab run per seed (runs/tiny-S), then the collapse pair
    python experiments/tiny_e1e3.py report --seeds 0,1,2  # -> experiments/tiny_e1e3.json and the table

Per seed S: ``aftlab run --preset tiny --seed S --out runs/tiny-S`` (VFT, RFT, AFT-BC, AFT-DC and alignment without
a constraint, each evaluated on the held-out questions), then the collapse setting of notebook 04 (``COLLAPSE``) for
alignment without a constraint and for AFT-BC from the same VFT model and samples -> ``runs/tiny-S/collapse.json``
(metrics, per-question outcomes, and per greedy COT whether it finished and its repetition rate). The report pools the
seeds (hierarchical paired bootstrap, ``aftlab.eval.stats.pooled_bootstrap``) and writes every figure it prints.
"""
import argparse
import dataclasses
import json
from pathlib import Path

from aftlab.align.aft import align_from_vft, batch_seed
from aftlab.config import preset
from aftlab.eval.evaluate import evaluate, own_sampling
from aftlab.eval.metrics import repetition_rate
from aftlab.eval.stats import interval, pooled_bootstrap, question_outcomes
from aftlab.model.runtime import set_threads
from aftlab.pipeline import run
from aftlab.sweep import sweep_inputs
from aftlab.train.checkpoint import write_atomic

HERE = Path(__file__).parent
COLLAPSE = {"gamma": 30.0, "nll_weight": 0.0, "lr": 5e-4, "epochs": 4.0}  # notebook 04 trains this for one epoch since 2026-12-08
PAIRS = {"align_only": "align_only", "aft_bc": "aft_bc"}


def folder(seed: int) -> Path:
    return Path("runs") / f"tiny-{seed}"


def degeneracy(greedy_rows: list[dict]) -> dict[str, list[float]]:
    """Per held-out question: whether its greedy COT never finished, and the COT's repeated-3-gram share.

    >>> degeneracy([{"cot": "a b c a b c a b c", "finished": False}, {"cot": "1 + 2 = 3. #### 3", "finished": True}])
    {'unfinished': [1.0, 0.0], 'repetition': [0.5714285714285714, 0.0]}
    """
    return {"unfinished": [float(not g["finished"]) for g in greedy_rows],
            "repetition": [repetition_rate([g["cot"]]) for g in greedy_rows]}


def collapse(seed: int) -> dict:
    """The collapse pair of one seed (cached in the run folder)."""
    out = folder(seed) / "collapse.json"
    if out.is_file():
        return json.loads(out.read_text())
    cfg, train_records, test, eval_records = sweep_inputs(folder(seed))
    res = {}
    for name, method in PAIRS.items():
        acfg = dataclasses.replace(cfg.align_for(method), **COLLAPSE)
        lm, log = align_from_vft(folder(seed) / "vft", train_records, acfg, batch_seed(cfg.seed), cfg.model,
                                 progress=False)
        r = evaluate(lm, test, eval_records, cfg.sample.max_new_tokens, **own_sampling(cfg))
        res[name] = {"metrics": r["metrics"], "outcomes": question_outcomes(r, eval_records),
                     "degeneracy": degeneracy(r["greedy"]), "train_log": log,
                     "greedy_examples": r["greedy"][:20]}
    write_atomic(out, json.dumps(res))
    return res


def run_seed(seed: int) -> None:
    if not (folder(seed) / "metrics.json").is_file():
        run(preset("tiny", seed=seed), folder(seed), progress=False)
    collapse(seed)


def _pct(d: dict) -> str:
    return f"{100 * d['diff']:+.1f} [{100 * d['lo']:+.1f}, {100 * d['hi']:+.1f}]"


def report(seeds: list[int]) -> dict:
    per_q = [json.loads((folder(s) / "per_question.json").read_text()) for s in seeds]
    metrics = [json.loads((folder(s) / "metrics.json").read_text()) for s in seeds]
    coll = [collapse(s) for s in seeds]
    out = {"seeds": seeds, "per_seed": {}}
    for s, m, q, c in zip(seeds, metrics, per_q, coll):
        vm = m["methods"]["vft"]
        out["per_seed"][s] = {
            "vft_task": vm["task_accuracy"], "vft_assessment": vm["assessment_accuracy"],
            "vft_assessment_ci": interval(q["vft"]["assess"]), "vft_assessment_strict": vm["assessment_accuracy_strict"],
            "n_assess_questions": m.get("n_assess_questions"), "n_misranked_examples": len(m["misranked_examples"]),
            "vft_repetition": vm["repetition_rate"], "vft_unfinished": vm["unfinished_rate"],
            "default": {k: m["methods"][k]["task_accuracy"] for k in m["methods"]},
            "collapse": {k: {x: c[k]["metrics"][x] for x in ("task_accuracy", "repetition_rate", "unfinished_rate",
                                                               "mean_neg_score", "assessment_accuracy")} for k in PAIRS}}
    # E1: VFT assessment accuracy, pooled over seeds (a difference from 0 is the accuracy itself)
    def zero(x):
        return [[0.0, p] for _, p in x]
    out["e1_assessment"] = pooled_bootstrap([(q["vft"]["assess"], zero(q["vft"]["assess"])) for q in per_q])
    out["e1_assessment_strict"] = pooled_bootstrap([(q["vft"]["assess_strict"], zero(q["vft"]["assess_strict"]))
                                                    for q in per_q])
    # E3 at the default setting: alignment without a constraint against VFT and against AFT-BC, task accuracy
    out["e3_align_only_vs_vft_task"] = pooled_bootstrap([(q["align_only"]["task"], q["vft"]["task"]) for q in per_q])
    out["e3_align_only_vs_aft_bc_task"] = pooled_bootstrap([(q["align_only"]["task"], q["aft_bc"]["task"])
                                                            for q in per_q])
    # the collapse case study: the same two losses at the collapse setting
    out["collapse_align_only_vs_vft_task"] = pooled_bootstrap([(c["align_only"]["outcomes"]["task"], q["vft"]["task"])
                                                               for c, q in zip(coll, per_q)])
    out["collapse_bc_vs_vft_task"] = pooled_bootstrap([(c["aft_bc"]["outcomes"]["task"], q["vft"]["task"])
                                                       for c, q in zip(coll, per_q)])
    for key in ("unfinished", "repetition"):
        out[f"collapse_{key}_align_only_vs_bc"] = pooled_bootstrap(
            [(c["align_only"]["degeneracy"][key], c["aft_bc"]["degeneracy"][key]) for c in coll])
    out["collapse_final_neg_score"] = {k: [c[k]["train_log"][-1]["neg_score"] for c in coll] for k in PAIRS}
    out["collapse_first_neg_score"] = {k: [c[k]["train_log"][0]["neg_score"] for c in coll] for k in PAIRS}
    out["collapse_examples"] = {k: coll[0][k]["greedy_examples"][:5] for k in PAIRS}
    write_atomic(HERE / "tiny_e1e3.json", json.dumps(out, indent=1))
    print(f"E1  VFT assessment accuracy (pairs): {_pct(out['e1_assessment'])} points "
          f"(strict {_pct(out['e1_assessment_strict'])})")
    print(f"E3  alignment without constraint − VFT, task accuracy: {_pct(out['e3_align_only_vs_vft_task'])}")
    print(f"    alignment without constraint − AFT-BC, task accuracy: {_pct(out['e3_align_only_vs_aft_bc_task'])}")
    print(f"collapse setting {COLLAPSE}: unconstrained − VFT task {_pct(out['collapse_align_only_vs_vft_task'])}, "
          f"BC − VFT task {_pct(out['collapse_bc_vs_vft_task'])}")
    for key in ("unfinished", "repetition"):
        print(f"    {key} (greedy, per question) unconstrained − BC: {_pct(out[f'collapse_{key}_align_only_vs_bc'])}")
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("stage", choices=["run", "report"])
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--threads", default="auto")
    a = ap.parse_args(argv)
    seeds = [int(x) for x in a.seeds.split(",")]
    set_threads(a.threads)
    if a.stage == "run":
        for s in seeds:
            run_seed(s)
    return report(seeds)


if __name__ == "__main__":
    main()
