"""Sweeps over a finished run: the same VFT model and samples, one alignment knob varied (E4).

Place in the data path: reuses a run's VFT checkpoint and samples → AFT → metrics → plots.

>>> from aftlab.config import preset
>>> preset("tiny").align_for("aft_dc").constraint
'detach'
"""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from .align import align_from_vft, batch_seed
from .config import from_dict
from .data import synthetic_from_config
from .evaluate import evaluate, own_sampling
from .sampling import read_samples
from .stats import question_outcomes


def variant_sweep(run_dir: Path, variants: dict[str, dict], progress: bool = True, batch_order: int = 1,
                  log=None, outcomes: bool = False) -> dict[str, dict]:
    """Train each variant (``{name: {"method": ..., AlignConfig field: value}}``) from the run's VFT
    model and samples, evaluate on the run's held-out set; returns ``{name: metrics + last train log}``.
    ``batch_order`` 1 is the run's own batch order (``align.batch_seed``); 2, 3, … are others.
    ``outcomes``: also return each variant's per-question outcomes (``stats.question_outcomes``), as the
    run's ``per_question.json`` holds them, for paired comparisons."""
    run_dir = Path(run_dir)
    cfg = from_dict(json.loads((run_dir / "config.json").read_text()))
    _, test = synthetic_from_config(cfg.data)
    eval_records = read_samples(run_dir / "eval_samples.jsonl")
    train_records = read_samples(run_dir / "samples_r1.jsonl")
    out = {}
    for name, over in variants.items():
        over = dict(over)
        n_questions = over.pop("n_questions", len(train_records))
        acfg = replace(cfg.align_for(over.pop("method", "aft_bc")), **over)
        lm, train_log = align_from_vft(run_dir / "vft", train_records[:n_questions], acfg,
                                       batch_seed(cfg.seed, batch_order), device=cfg.model.device,
                                       max_prompt_tokens=cfg.model.max_prompt_tokens, autocast=cfg.model.autocast,
                                       progress=progress)
        res = evaluate(lm, test, eval_records, cfg.sample.max_new_tokens, **own_sampling(cfg))
        m = res["metrics"]
        out[name] = {**m, "gap": m["mean_pos_score"] - m["mean_neg_score"], "train_gap": train_log[-1]["gap"],
                     "train_neg_score": train_log[-1]["neg_score"], "train_log": train_log}
        if outcomes:
            out[name]["outcomes"] = question_outcomes(res, eval_records)
        if log:
            log(name, out[name])
    return out


def beta_sweep(run_dir: Path, betas: list[float], method: str = "aft_bc", progress: bool = True) -> list[dict]:
    """Train ``method`` at each beta from the run's VFT model; write ``beta_sweep.json``/``.html``."""
    run_dir = Path(run_dir)
    res = variant_sweep(run_dir, {str(b): {"method": method, "beta": b} for b in betas}, progress)
    rows = [{"beta": b, **{k: v for k, v in res[str(b)].items() if k != "train_log"}} for b in betas]
    (run_dir / "beta_sweep.json").write_text(json.dumps(rows, indent=1))
    from .plots import beta_sweep as fig
    fig(rows).write_html(run_dir / "beta_sweep.html", include_plotlyjs="inline")
    return rows
