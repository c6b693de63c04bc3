"""E4 (the β sweep) and E5 (DPO, RRHF and PRO with and without the boundary constraint) on the `tiny` default, one
seed: the figures notebook 05 shows, written to a file the README and docs read.

    aftlab run --preset tiny --seed 0 --out runs/demo && aftlab notebooks runs/demo   # what make demo runs
    python experiments/tiny_e4e5.py runs/demo                                         # -> experiments/tiny_e4e5.json

It reads the variants ``aftlab notebooks`` trained into the run folder (``notebook.VARIANTS_05``: each from the
run's VFT model and samples, evaluated on its held-out questions) and states the two claims as notebook 05 checks
them. One seed and no interval: these are the walk-through's figures, not a pre-registered comparison.

The score gap of E4 is the held-out one (mean score of the right minus the wrong COTs of the whole assessment set);
the last training batch's gap (16 questions, ``train_gap``) is recorded beside it but is too noisy to judge by: at
the preset's alignment settings it moved by 0.001 across the sweep, and since 2026-12-08 (the sweep at
``notebook.BETA_SWEEP``) it falls while the held-out gap grows.
"""
import argparse
import json
from pathlib import Path

from aftlab.config import from_dict
from aftlab.notebook import BETA_SWEEP, BETAS, STRONG, VARIANTS_05, ensure_variants
from aftlab.train.checkpoint import write_atomic

HERE = Path(__file__).parent
KEYS = ("task_accuracy", "assessment_accuracy", "gap", "train_gap", "mean_neg_score", "train_neg_score",
        "repetition_rate", "unfinished_rate")


def summary(results: dict[str, dict]) -> dict:
    """The claims over ``{variant: metrics}`` (notebook 05's checks).

    >>> r = {f"{l}{s}": {"mean_neg_score": -0.5 if s else -1.0} for l in ("dpo", "rrhf", "pro") for s in ("", "+BC")}
    >>> r |= {f"beta={b}": {"gap": b, "train_gap": -b, "mean_neg_score": -b, "task_accuracy": 0.5 - abs(b - 0.1)}
    ...       for b in BETAS}
    >>> s = summary(r); s["e5_bc_keeps_negatives_higher"], s["e4_gap_grows"], s["e4_train_gap_grows"], s["e4_best_beta"]
    ({'dpo': True, 'rrhf': True, 'pro': True}, True, False, 0.1)
    """
    ends = [results[f"beta={b}"] for b in (min(BETAS), max(BETAS))]
    best = max(BETAS, key=lambda b: results[f"beta={b}"]["task_accuracy"])
    return {"e5_bc_keeps_negatives_higher": {loss: results[f"{loss}+BC"]["mean_neg_score"] > results[loss]["mean_neg_score"]
                                             for loss in ("dpo", "rrhf", "pro")},
            "e4_gap_grows": ends[1]["gap"] > ends[0]["gap"], "e4_train_gap_grows": ends[1]["train_gap"] > ends[0]["train_gap"],
            "e4_negatives_fall": ends[1]["mean_neg_score"] < ends[0]["mean_neg_score"],
            "e4_best_beta": best, "e4_best_below_largest": best < max(BETAS)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", help="a run folder after `aftlab notebooks RUN`")
    a = ap.parse_args(argv)
    run = Path(a.run)
    cfg = from_dict(json.loads((run / "config.json").read_text()))
    results = ensure_variants(cfg, run, VARIANTS_05, progress=False)  # read back (trained now if missing)
    out = {"run": str(run), "preset": cfg.preset, "seed": cfg.seed, "strong": STRONG, "beta_sweep": BETA_SWEEP,
           "variants": {n: {k: r[k] for k in KEYS if k in r} for n, r in results.items()}, **summary(results)}
    write_atomic(HERE / "tiny_e4e5.json", json.dumps(out, indent=1))
    print(json.dumps({k: v for k, v in out.items() if k != "variants"}, indent=1))


if __name__ == "__main__":
    main()
