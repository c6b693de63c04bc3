"""Why does pushing negatives cost greedy accuracy? Compare two models' greedy COTs on a run's held-out set.

    python experiments/archive/greedy_errors.py runs/tiny-2 [variant]

Trains ``variant`` (an e2_sweep.py name, default ``trunc_fs``) from the run's VFT model, takes the
run's RFT model, and for each model counts greedy COTs that are right, wrong with an arithmetic slip
(some step's claimed result is wrong) and wrong with every step valid (a wrong choice). Then, for the
questions RFT gets right and the variant gets wrong, prints where they part and a few examples.
Writes experiments/archive/greedy_errors_<run>_<variant>.json.
"""
import json
import sys
from dataclasses import replace
from pathlib import Path

from aftlab.align.aft import align_from_vft, batch_seed
from aftlab.config import from_dict
from aftlab.data.answers import step_quality
from aftlab.data.questions import synthetic_from_config
from aftlab.eval.evaluate import greedy
from aftlab.model.lm import load_lm_from_config
from aftlab.sampling.samples import read_samples

sys.path.insert(0, str(Path(__file__).parent))
from e2_sweep import VARIANTS  # noqa: E402


def kind(g: dict) -> str:
    if g["correct"]:
        return "right"
    return "slip" if step_quality(g["cot"]) < 1.0 else "choice"


def main(run: str, variant: str = "trunc_fs") -> None:
    run_dir = Path(run)
    cfg = from_dict(json.loads((run_dir / "config.json").read_text()))
    _, test = synthetic_from_config(cfg.data)
    over = dict(VARIANTS[variant])
    acfg = replace(cfg.align_for(over.pop("method")), **over)
    lm, _ = align_from_vft(run_dir / "vft", read_samples(run_dir / "samples_r1.jsonl"), acfg,
                           batch_seed(cfg.seed), cfg.model, progress=False)
    rft = load_lm_from_config(cfg.model, run_dir / "rft")
    out = {}
    for name, model in (("rft", rft), (variant, lm)):
        gs = greedy(model, test, cfg.sample.max_new_tokens)
        out[name] = gs
        counts = {k: sum(kind(x) == k for x in gs) for k in ("right", "slip", "choice")}
        print(name, counts)
    lost = [(a, b) for a, b in zip(out["rft"], out[variant]) if a["correct"] and not b["correct"]]
    won = [(a, b) for a, b in zip(out["rft"], out[variant]) if b["correct"] and not a["correct"]]
    print(f"{variant} loses {len(lost)} questions RFT gets right and wins {len(won)}; kinds of the lost:",
          {k: sum(kind(b) == k for _, b in lost) for k in ("slip", "choice")})
    for a, b in lost[:6]:
        print("  RFT:", a["cot"], "\n  ", variant + ":", b["cot"])
    path = Path(__file__).parent / f"greedy_errors_{run_dir.name}_{variant}.json"
    path.write_text(json.dumps({"lost": [[a["cot"], b["cot"]] for a, b in lost],
                                "won": [[a["cot"], b["cot"]] for a, b in won]}, indent=1))


if __name__ == "__main__":
    main(*sys.argv[1:])
