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

from .align.aft import align_from_vft, batch_seed
from .config import from_dict
from .data.questions import synthetic_from_config
from .eval.evaluate import evaluate, own_sampling
from .eval.stats import question_outcomes
from .records import Record
from .sampling.samples import read_samples


def split_validation(records: list[Record], n_val: int) -> tuple[list[Record], list[Record]]:
    """(alignment part, validation part) of a run's sampled training questions: the last ``n_val``
    questions (with the VFT model's samples of them) are held back from alignment, so settings are
    chosen on training questions, never on the held-out set.

    >>> split_validation([{"id": "a"}, {"id": "b"}, {"id": "c"}], 1)
    ([{'id': 'a'}, {'id': 'b'}], [{'id': 'c'}])
    """
    if not 0 < n_val < len(records):
        raise ValueError(f"validation: {n_val} questions of {len(records)} sampled; need 0 < n < {len(records)}")
    return records[:-n_val], records[-n_val:]


def sweep_inputs(run_dir: Path, validation: int = 0):
    """What a sweep trains on and evaluates with: ``(run config, training records, evaluation
    questions, evaluation records)`` -- the run's held-out set, or with ``validation`` > 0 the last
    ``validation`` sampled training questions (:func:`split_validation`), held back from training."""
    run_dir = Path(run_dir)
    cfg = from_dict(json.loads((run_dir / "config.json").read_text()))
    train, test = synthetic_from_config(cfg.data)
    train_records = read_samples(run_dir / "samples_r1.jsonl")
    if not validation:
        return cfg, train_records, test, read_samples(run_dir / "eval_samples.jsonl")
    train_records, val_records = split_validation(train_records, validation)
    by_id = {e.id: e for e in train}
    return cfg, train_records, [by_id[r["id"]] for r in val_records], val_records


def variant_sweep(run_dir: Path, variants: dict[str, dict], progress: bool = True, batch_order: int = 1,
                  log=None, outcomes: bool = False, validation: int = 0, self_consistency: bool = True) -> dict[str, dict]:
    """Train each variant (``{name: {"method": ..., AlignConfig field: value}}``) from the run's VFT
    model and samples, evaluate on the run's held-out set; returns ``{name: metrics + last train log}``.
    ``batch_order`` 1 is the run's own batch order (``align.batch_seed``); 2, 3, … are others.
    ``outcomes``: also return each variant's per-question outcomes (``stats.question_outcomes``), as the
    run's ``per_question.json`` holds them, for paired comparisons. ``validation`` > 0: train on the
    sampled questions but the last ``validation`` and evaluate on those (greedy and the VFT model's
    samples of them; no self-consistency) -- for choosing settings (:func:`sweep_inputs`). ``self_consistency``
    False: no extra samples for the self-consistency figures either (the notebooks' sweeps do without them)."""
    run_dir = Path(run_dir)
    cfg, train_records, test, eval_records = sweep_inputs(run_dir, validation)
    out = {}
    for name, over in variants.items():
        over = dict(over)
        n_questions = over.pop("n_questions", len(train_records))
        acfg = replace(cfg.align_for(over.pop("method", "aft_bc")), **over)
        lm, train_log = align_from_vft(run_dir / "vft", train_records[:n_questions], acfg,
                                       batch_seed(cfg.seed, batch_order), cfg.model, progress=progress)
        own = own_sampling(cfg) if self_consistency and not validation else {}
        res = evaluate(lm, test, eval_records, cfg.sample.max_new_tokens, **own)
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
    from .report.plots import beta_sweep as fig
    fig(rows).write_html(run_dir / "beta_sweep.html", include_plotlyjs="inline")
    return rows
