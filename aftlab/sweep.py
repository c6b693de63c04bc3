"""Sweeps over a finished run: the same VFT model and samples, one alignment knob varied (E4).

Place in the data path: reuses a run's VFT checkpoint and samples → AFT → metrics → plots.

>>> sorted(sweep_row(0.1, {"mean_pos_score": -0.1, "mean_neg_score": -0.4, "task_accuracy": 0.9}))
['beta', 'gap', 'mean_neg_score', 'mean_pos_score', 'task_accuracy']
"""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from . import checkpoint
from .align import train_align
from .config import from_dict
from .data import synthetic_from_config
from .evaluate import evaluate
from .model import load_lm
from .sampling import groups, read_samples


def sweep_row(beta: float, metrics: dict) -> dict:
    return {"beta": beta, **metrics, "gap": metrics["mean_pos_score"] - metrics["mean_neg_score"]}


def beta_sweep(run_dir: Path, betas: list[float], method: str = "aft_bc", progress: bool = True) -> list[dict]:
    """Train ``method`` at each beta from the run's VFT model; write ``beta_sweep.json``/``.html``."""
    run_dir = Path(run_dir)
    cfg = from_dict(json.loads((run_dir / "config.json").read_text()))
    _, test = synthetic_from_config(cfg.data)
    eval_records = read_samples(run_dir / "eval_samples.jsonl")
    train_records = read_samples(run_dir / "samples_r1.jsonl")
    state = checkpoint.load_state(checkpoint.find(run_dir / "vft"))
    rows = []
    for beta in betas:
        acfg = replace(cfg.align_for(method), beta=beta)
        lm = load_lm(run_dir / "vft", cfg.model.device, max_prompt_tokens=cfg.model.max_prompt_tokens)
        log = train_align(lm, groups(train_records, acfg.strict_positives, acfg.include_reference), acfg,
                          init_state=state, seed=cfg.seed + 1, progress=progress)
        m = evaluate(lm, test, eval_records, cfg.sample.max_new_tokens)["metrics"]
        rows.append(sweep_row(beta, m) | {"train_gap": log[-1]["gap"], "train_neg_score": log[-1]["neg_score"]})
    (run_dir / "beta_sweep.json").write_text(json.dumps(rows, indent=1))
    from .plots import beta_sweep as fig
    fig(rows).write_html(run_dir / "beta_sweep.html", include_plotlyjs="inline")
    return rows
