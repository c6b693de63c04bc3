"""E4 (the β sweep) and E5 (DPO, RRHF and PRO with and without the boundary constraint) on the `tiny` default, one
seed: the figures notebook 05 shows, written to a file the README and docs read.

    aftlab run --preset tiny --seed 0 --out runs/demo && aftlab notebooks runs/demo   # what make demo runs
    python experiments/tiny_e4e5.py runs/demo                                         # -> experiments/tiny_e4e5.json

It reads the variants ``aftlab notebooks`` trained into the run folder (``notebook.VARIANTS_05``: each from the
run's VFT model and samples, evaluated on its held-out questions) and states the two claims as notebook 05 checks
them. One seed and no interval: these are the walk-through's figures, not a pre-registered comparison.
"""
import argparse
import json
from pathlib import Path

from aftlab.config import from_dict
from aftlab.notebook import BETAS, VARIANTS_05, ensure_variants
from aftlab.train.checkpoint import write_atomic

HERE = Path(__file__).parent
KEYS = ("task_accuracy", "assessment_accuracy", "gap", "train_gap", "mean_neg_score", "train_neg_score",
        "repetition_rate", "unfinished_rate")


def summary(results: dict[str, dict]) -> dict:
    """The claims over ``{variant: metrics}`` (notebook 05's checks).

    >>> r = {f"{l}{s}": {"mean_neg_score": -0.5 if s else -1.0} for l in ("dpo", "rrhf", "pro") for s in ("", "+BC")}
    >>> r |= {f"beta={b}": {"train_gap": b, "task_accuracy": 0.5 - abs(b - 0.1)} for b in BETAS}
    >>> s = summary(r); s["e5_bc_keeps_negatives_higher"], s["e4_gap_grows"], s["e4_best_beta"]
    ({'dpo': True, 'rrhf': True, 'pro': True}, True, 0.1)
    """
    gaps = [results[f"beta={b}"]["train_gap"] for b in BETAS]
    best = max(BETAS, key=lambda b: results[f"beta={b}"]["task_accuracy"])
    return {"e5_bc_keeps_negatives_higher": {loss: results[f"{loss}+BC"]["mean_neg_score"] > results[loss]["mean_neg_score"]
                                             for loss in ("dpo", "rrhf", "pro")},
            "e4_gap_grows": gaps[-1] > gaps[0], "e4_best_beta": best, "e4_best_below_largest": best < max(BETAS)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", help="a run folder after `aftlab notebooks RUN`")
    a = ap.parse_args(argv)
    run = Path(a.run)
    cfg = from_dict(json.loads((run / "config.json").read_text()))
    results = ensure_variants(cfg, run, VARIANTS_05, progress=False)  # read back (trained now if missing)
    out = {"run": str(run), "preset": cfg.preset, "seed": cfg.seed,
           "variants": {n: {k: r[k] for k in KEYS if k in r} for n, r in results.items()}, **summary(results)}
    write_atomic(HERE / "tiny_e4e5.json", json.dumps(out, indent=1))
    print(json.dumps({k: v for k, v in out.items() if k != "variants"}, indent=1))


if __name__ == "__main__":
    main()
