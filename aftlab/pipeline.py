"""The whole experiment: VFT → sample k COTs → label → align with each method → evaluate → report.

Place in the data path: the top; it calls every stage in order and writes ``metrics.json`` and
``report.html``. Every stage caches its output in the run folder under a fingerprint of the settings
and data it depends on (``aftlab.stages``), so a re-run with the same settings skips finished work and
resumes an interrupted stage (VFT and each method's alignment from their last checkpoints, sampling
from the questions already in its JSONL cache, evaluations from ``evals/``), while a re-run with other
settings computes the stages they change, and everything downstream, again, and logs which and why
(``reuse="strict"`` refuses instead). Data and model are checked before the run folder is touched,
and result files are written atomically, so a bad input or a kill never leaves a half-written
``metrics.json``.

Under a launcher (``torchrun``/``accelerate launch``, ``WORLD_SIZE`` > 1) every process runs this
same function: VFT and alignment split each step's batch, sampling and evaluation take whole
batches of questions each (``aftlab.train.shards``), only the main process writes the run folder's files,
and all wait for each other at every stage boundary. Each stage after training reloads the model
from its checkpoint, so sampling and evaluation never run through a sharded (FSDP) model.

>>> stage_dirs("runs/x")["vft"].as_posix()
'runs/x/vft'
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from .align.aft import align_from_vft, batch_seed, train_align
from .config import RunConfig, to_dict
from .data.questions import synthetic_from_config
from .errors import ConfigError
from .eval.evaluate import assessment_set, evaluate, n_mixed, own_sampling
from .eval.metrics import misranked_examples
from .eval.stats import comparisons_for_run
from .model.lm import build_lm, load_lm_from_config
from .model.runtime import resolve_autocast
from .records import EvalResult
from .report.provenance import provenance
from .report.trackers import Trackers, open_trackers
from .sampling.samples import groups, open_sampler, sample_cots
from .stages import REUSE, Stage, plan, questions_fingerprint, reconcile
from .train import checkpoint, distributed
from .train.vft import train_vft

VFT_SNAPSHOTS = 4  # the VFT model after each quarter of its schedule (vft_steps/): the notebooks' curves read them


def stage_dirs(out: str | Path) -> dict[str, Path]:
    out = Path(out)
    return {"vft": out / "vft", "align": out / "align", "eval_samples": out / "eval_samples.jsonl",
            "metrics": out / "metrics.json",
            "report": out / "report.html"}


def run(cfg: RunConfig, out: str | Path, progress: bool = True, log=print, sampler: str = "hf",
        trackers: str | list[str] | Trackers | None = None, reuse: str = "auto") -> dict:
    """Run the experiment of ``cfg`` into folder ``out``; returns the metrics dict (also written).

    ``sampler``: ``"hf"`` or ``"vllm"`` draws every round's COTs (``aftlab.sampling.samples.sample_cots``).
    ``trackers``: backend names (``"tensorboard"``, ``["mlflow", "wandb"]``, see ``aftlab.report.trackers``)
    or open ``Trackers`` that receive every VFT and AFT log entry (stage ``vft``, then each method, its
    later rounds as ``<method>_r2`` …); the JSON logs in ``out`` are written either way.
    ``reuse``: ``"auto"`` computes again what ``out`` holds from other settings (logged); ``"strict"``
    raises ``aftlab.stages.StaleStage`` instead, before anything runs."""
    if reuse not in REUSE:
        raise ConfigError(f"reuse {reuse!r}: choose from {', '.join(REUSE)}")
    if isinstance(trackers, Trackers):
        return _run(cfg, out, progress, log, sampler, trackers, reuse)
    main = distributed.main_process()  # only the main process of a launch reports
    with open_trackers(trackers if main else None, out, to_dict(cfg)) as opened:  # a missing package fails now
        return _run(cfg, out, progress, log, sampler, opened, reuse)


def _run(cfg: RunConfig, out: str | Path, progress: bool, log, sampler: str, trackers: Trackers, reuse: str) -> dict:
    t0 = time.time()
    dist = distributed.runner()  # Plain in one process
    log = log if dist.is_main else (lambda *_: None)
    out = Path(out)
    paths = stage_dirs(out)
    seconds: dict[str, float] = {}
    tick = time.time()
    train, test = synthetic_from_config(cfg.data)
    drawer = sampler if isinstance(sampler, str) else getattr(sampler, "__qualname__", type(sampler).__qualname__)
    stages = plan(cfg, questions_fingerprint(train, test), drawer)
    reconcile(out, stages, reuse, write=False)  # --reuse strict refuses here, before anything runs or changes
    vft_sampler, close_sampler = open_sampler(sampler)  # one engine for both VFT-model calls; a missing
    # vllm fails here, before any training
    torch.manual_seed(cfg.seed)
    lm = build_lm(cfg.model, train + test, cfg.seed)
    if dist.is_main:
        reconcile(out, stages, reuse, log)  # what other settings left in `out` goes; stages.json records these
        checkpoint.write_atomic(out / "config.json", json.dumps(to_dict(cfg), indent=1))
    dist.wait()
    vft_hist = train_vft(lm, train, cfg.vft, out=paths["vft"], seed=cfg.seed, progress=progress,
                         on_log=trackers.on_log("vft"), snapshots=VFT_SNAPSHOTS)
    seconds["vft"] = time.time() - tick
    log(f"VFT done: loss {vft_hist[-1]['loss']:.3f}")
    if dist.world > 1:
        lm = _reload(paths["vft"], cfg, lm)
    s = cfg.sample
    tick = time.time()
    try:
        eval_records = assessment_set(lm, test, cfg.assess_questions, cfg.eval_k, cfg.assess_mixed,
                                      temperature=s.temperature, top_p=s.top_p, max_new_tokens=s.max_new_tokens,
                                      seed=cfg.seed + 1, batch_questions=s.batch_questions,
                                      cache=paths["eval_samples"], progress=progress, sampler=vft_sampler, dist=dist)
        if (mixed := n_mixed(eval_records)) < cfg.assess_mixed:
            log(f"assessment set: {mixed} of its {len(eval_records)} questions have a right and a "
                f"wrong COT, fewer than assess_mixed={cfg.assess_mixed}: data.n_test={len(test)} ran out")
        train_records = sample_cots(lm, train[:s.n_questions], k=s.k, temperature=s.temperature, top_p=s.top_p,
                                    max_new_tokens=s.max_new_tokens, seed=cfg.seed, batch_questions=s.batch_questions,
                                    cache=out / "samples_r1.jsonl", progress=progress, sampler=vft_sampler,
                                    dist=dist)
    finally:
        close_sampler()
    seconds["sampling"] = time.time() - tick
    tick = time.time()
    own = own_sampling(cfg) | {"dist": dist}  # the VFT model's own samples are the fixed set itself
    results = {"vft": _evaluated(out, stages["eval/vft"], dist, lambda: evaluate(
        lm, test, eval_records, s.max_new_tokens, **own, own_records=eval_records))}
    seconds["eval_vft"] = time.time() - tick
    log(f"VFT: {json.dumps({k: round(v, 4) for k, v in results['vft']['metrics'].items()})}")
    logs = {}
    for method in cfg.methods:
        tick = time.time()
        acfg = cfg.align_for(method)
        mlm, step_log = align_from_vft(paths["vft"], train_records, acfg, batch_seed(cfg.seed), cfg.model,
                                       device=str(lm.device), progress=progress, on_log=trackers.on_log(method),
                                       out=paths["align"] / f"{method}_r1")
        method_log = [dict(x, round=1) for x in step_log]
        if dist.world > 1:
            mlm = _reload(paths["align"] / f"{method}_r1", cfg, mlm)
        for rnd in range(2, cfg.rounds + 1):  # later rounds: the method's own samples, fresh optimizer moments
            records = sample_cots(mlm, train[:s.n_questions], k=s.k, temperature=s.temperature, top_p=s.top_p,
                                  max_new_tokens=s.max_new_tokens, seed=cfg.seed + 100 * rnd,
                                  batch_questions=s.batch_questions, cache=out / f"samples_{method}_r{rnd}.jsonl",
                                  progress=progress, sampler=sampler, dist=dist)
            g = groups(records, acfg.strict_positives, acfg.include_reference, acfg.sample_positives)
            step_log = train_align(mlm, g, acfg, seed=batch_seed(cfg.seed, rnd), progress=progress,
                                   out=paths["align"] / f"{method}_r{rnd}", on_log=trackers.on_log(f"{method}_r{rnd}"))
            method_log += [dict(x, round=rnd) for x in step_log]
            if dist.world > 1:
                mlm = _reload(paths["align"] / f"{method}_r{rnd}", cfg, mlm)
        if dist.is_main:
            checkpoint.save(out / method, mlm, step=len(method_log), history=method_log,
                            extra={"kind": "align", "method": method})
        dist.wait()
        seconds[f"align_{method}"] = time.time() - tick
        tick = time.time()
        results[method] = _evaluated(out, stages[f"eval/{method}"], dist,
                                     lambda: evaluate(mlm, test, eval_records, s.max_new_tokens, **own))
        seconds[f"eval_{method}"] = time.time() - tick
        logs[method] = method_log
        log(f"{method}: {json.dumps({k: round(v, 4) for k, v in results[method]['metrics'].items()})}")
    metrics = {
        "preset": cfg.preset, "seed": cfg.seed,
        "methods": {m: r["metrics"] for m, r in results.items()},
        "misranked_examples": misranked_examples(eval_records, results["vft"]["scores"]),
        "n_train_questions_sampled": len(train_records), "n_eval_questions": len(eval_records),
        "seconds": time.time() - t0, "stage_seconds": seconds, "sampler": sampler,
        "autocast": resolve_autocast(cfg.model.autocast, lm.device.type),  # what "auto" meant on this machine
        "provenance": provenance(),  # commit, date and machine: the report names them
        "fingerprint": stages["results"].fingerprint,  # of every setting and question these results depend on
    }
    paired = comparisons_for_run(results, eval_records)  # method vs rft / vft, question by question
    metrics.update({k: v for k, v in paired.items() if k != "per_question"})  # comparisons and question counts
    if dist.is_main:
        for name, obj in [("align_logs.json", logs), ("vft_history.json", vft_hist),
                          ("eval_scores.json", {m: r["scores"] for m, r in results.items()}),
                          ("greedy.json", {m: r["greedy"][:50] for m, r in results.items()}),
                          ("per_question.json", paired["per_question"]),
                          ("metrics.json", metrics)]:  # metrics last: its presence means the others are complete
            checkpoint.write_atomic(out / name, json.dumps(obj, indent=1 if name == "metrics.json" else None))
        from .report.writer import write_report
        write_report(out)
    dist.wait()
    return metrics


def _evaluated(out: Path, stage: Stage, dist, compute) -> EvalResult:
    """The evaluation of ``stage`` (``eval/<model>``): cached in ``out/evals/<model>.json`` under its
    fingerprint, else ``compute()``d now and written there by the main process."""
    path = out / stage.outputs[0]
    if path.is_file() and (cached := json.loads(path.read_text())).get("fingerprint") == stage.fingerprint:
        return cached["result"]
    result = compute()
    if dist.is_main:
        path.parent.mkdir(parents=True, exist_ok=True)
        checkpoint.write_atomic(path, json.dumps({"fingerprint": stage.fingerprint, "result": result}))
    dist.wait()
    return result


def _reload(folder: Path, cfg: RunConfig, lm):
    """The model a training stage checkpointed at ``folder``, unwrapped and whole on every process
    (a sharded FSDP model cannot decode different questions on different processes), as the config
    says, on ``lm``'s device."""
    return load_lm_from_config(cfg.model, checkpoint.find(folder), device=str(lm.device))

