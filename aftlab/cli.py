"""The ``aftlab`` command line: the whole experiment, or one stage at a time.

Place in the data path: the outside; it builds a ``RunConfig`` from a preset plus ``--set``
overrides and calls the library.

    aftlab run --preset tiny --seed 0 --out runs/tiny-0        # everything, report.html + metrics.json
    aftlab run --preset tiny --seeds 0,1,2 --out runs/tiny      # several seeds + aggregate.json
    aftlab vft --preset tiny --out runs/a                       # stages, on your own model or data:
    aftlab sample --model runs/a/vft --data train.jsonl --out runs/a/samples.jsonl
    aftlab align --model runs/a/vft --samples runs/a/samples.jsonl --method aft_bc --out runs/a/aft_bc
    aftlab eval --model runs/a/aft_bc --data test.jsonl --eval-samples runs/a/eval_samples.jsonl
    aftlab report runs/tiny-0                                   # rewrite report.html from a run's files
    aftlab sweep-beta --run runs/tiny-0 --betas 0.01,0.1,1,10   # E4 on a finished run
    aftlab app --runs runs                                      # the COT ranker on http://127.0.0.1:7860
    aftlab assess --model smol --solutions model_solutions.jsonl --limit 100   # E6: judge real GSM8K COTs, with CIs
    aftlab export --samples runs/a/samples.jsonl --format pairs --out pairs.jsonl  # TRL-style preference pairs
    aftlab config --preset tiny --section align                 # every config field: value and meaning
    aftlab config --methods                                     # the method registry
    aftlab run --preset tiny --out runs/a --report-to tensorboard  # curves also in runs/a/tensorboard

>>> build_parser().parse_args(["run", "--out", "x", "--set", "align.beta=0.2"]).set
['align.beta=0.2']
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

from .align.methods import REGISTRY
from .config import METHODS, PRESETS, SECTIONS, ConfigError, RunConfig, describe, preset, replace_path, to_dict
from .data.questions import DataError
from .model.lm import ModelLoadError
from .train.loop import NonFiniteError

USER_ERRORS = (ConfigError, DataError, ModelLoadError, NonFiniteError, FileNotFoundError)


def _numbers(text: str, kind, option: str) -> list:
    """A comma-separated option (``--seeds 0,1``) parsed, or a ConfigError naming the option."""
    try:
        values = [kind(v) for v in text.split(",")]
    except ValueError:
        raise ConfigError(f"{option} {text!r}: expected comma-separated {kind.__name__} values") from None
    if kind is float and not all(map(math.isfinite, values)):
        raise ConfigError(f"{option} {text!r}: values must be finite")
    return values


def _config(args) -> RunConfig:
    cfg = preset(args.preset, seed=args.seed)
    for item in args.set or []:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. align.beta=0.2")
        key, value = item.split("=", 1)
        cfg = replace_path(cfg, key.strip(), value.strip())
    if getattr(args, "data", None):
        cfg = replace_path(cfg, "data.source", args.data)
    if getattr(args, "test_data", None):
        cfg = replace_path(cfg, "data.test_source", args.test_data)
    if getattr(args, "hf_dataset", None):
        cfg = _hf_data(cfg, args)
    elif getattr(args, "hf_split", None):
        raise ConfigError("--hf-split: needs --hf-dataset NAME[:CONFIG]")
    if getattr(args, "model", None) and args.cmd in ("run", "vft"):
        cfg = replace_path(cfg, "model.name", args.model)
    if getattr(args, "methods", None):
        cfg.methods = tuple(m.strip() for m in args.methods.split(","))
        cfg.__post_init__()
    if getattr(args, "rounds", None) is not None:  # --rounds 0 must be refused, not ignored
        cfg = replace_path(cfg, "rounds", str(args.rounds))
    return cfg


def _hf_data(cfg: RunConfig, args) -> RunConfig:
    """``--hf-dataset NAME[:CONFIG] --hf-split TRAIN[,TEST]`` as ``data.source`` / ``data.test_source``."""
    from .data.questions import hf_source
    if getattr(args, "data", None):
        raise ConfigError("--hf-dataset and --data both name the training questions; pass one of them")
    splits = [x.strip() for x in (args.hf_split or "train").split(",")]
    if len(splits) > 2 or not all(splits):
        raise ConfigError(f"--hf-split {args.hf_split!r}: expected TRAIN or TRAIN,TEST, e.g. train,test")
    cfg = replace_path(cfg, "data.source", hf_source(args.hf_dataset, splits[0]))
    if len(splits) == 2:
        if getattr(args, "test_data", None):
            raise ConfigError("--hf-split TRAIN,TEST and --test-data both name the held-out questions; pass one")
        cfg = replace_path(cfg, "data.test_source", hf_source(args.hf_dataset, splits[1]))
    return cfg


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default="tiny", help=f"named config preset: {', '.join(sorted(PRESETS))} (default tiny; "
                   "`aftlab config --preset NAME` lists its settings)")
    p.add_argument("--seed", type=int, default=0, help="seed for data, init, batches and sampling")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a config field, e.g. --set align.beta=0.3, or one method's: --set "
                        "method_overrides.aft_bc.beta=0.3 (repeatable)")
    p.add_argument("--data", help="GSM8K/AQuA/ECQA-format JSONL of training questions (default: synthetic)")
    p.add_argument("--test-data", help="JSONL of held-out questions")
    p.add_argument("--hf-dataset", metavar="NAME[:CONFIG]",
                   help="training questions from a Hugging Face hub dataset in GSM8K/AQuA/ECQA layout, e.g. "
                        "openai/gsm8k:main (needs `datasets` and network or its cache; instead of --data)")
    p.add_argument("--hf-split", metavar="TRAIN[,TEST]",
                   help="split(s) of --hf-dataset: training questions, and optionally the held-out ones "
                        "(default train; without TEST the last data.n_test rows are held out)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def _report_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--report-to", metavar="NAME[,NAME]", default="none",
                   help="also log each VFT/AFT step (loss, positive/negative scores, gap, grad norm, lr) to "
                        "tensorboard, trackio, mlflow or wandb (each its own pip package; local/offline by "
                        "default, see aftlab.report.trackers); the run folder's JSON logs are written either way")


def _trackers(args, cfg: RunConfig, out):
    """The ``--report-to`` trackers of a training command (none on a launch's other processes)."""
    from .report.trackers import open_trackers
    return open_trackers(args.report_to if _main_process() else None, out, to_dict(cfg))


def _sampler_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sampler", choices=("hf", "vllm"), default="hf",
                   help="who draws the k COTs: hf (transformers generate, default) or vllm (needs "
                        "`pip install vllm` and a CUDA GPU; same records and cache format)")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="aftlab", description="Alignment Fine-Tuning (AFT) research workbench")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("run", help="VFT → sample → align (each method) → eval → report")
    _common(p)
    p.add_argument("--out", required=True, help="run folder (re-running continues cached stages)")
    p.add_argument("--seeds", help="comma-separated seeds: one run each in OUT/seed-S, plus OUT/aggregate.json")
    p.add_argument("--methods", help="comma-separated continuations (default from the preset); "
                                      "`aftlab config --methods` lists them")
    p.add_argument("--rounds", type=int, help="sample → align rounds (iterative AFT)")
    p.add_argument("--model", help="HF id or local model folder instead of the preset's model")
    p.add_argument("--reuse", choices=("auto", "strict"), default="auto",
                   help="stages OUT holds from other settings: auto (default) computes them and what follows "
                        "them again, saying which and why; strict stops with an error instead")
    _sampler_arg(p)
    _report_arg(p)
    p = sub.add_parser("vft", help="vanilla fine-tuning only")
    _common(p)
    _report_arg(p)
    p.add_argument("--accelerate", action="store_true",
                   help="train through accelerate (automatic under `accelerate launch` with WORLD_SIZE > 1)")
    p.add_argument("--out", required=True)
    p.add_argument("--model", help="HF id or local model folder instead of the preset's model")
    p = sub.add_parser("sample", help="sample k COTs per question with a model, label, cache as JSONL")
    _common(p)
    p.add_argument("--model", required=True, help="model folder (e.g. RUN/vft)")
    p.add_argument("--split", choices=("train", "test"), default="train")
    _sampler_arg(p)
    p.add_argument("--out", required=True, help="samples JSONL (appended to; finished questions are skipped)")
    p = sub.add_parser("align", help="AFT (or RFT, DPO, ...) from a model and a samples file")
    _common(p)
    p.add_argument("--accelerate", action="store_true",
                   help="train through accelerate (automatic under `accelerate launch` with WORLD_SIZE > 1)")
    p.add_argument("--model", required=True)
    p.add_argument("--samples", required=True)
    p.add_argument("--method", default="aft_bc", choices=METHODS, help="an entry of the method registry")
    p.add_argument("--out", required=True)
    _report_arg(p)
    p = sub.add_parser("eval", help="metrics of a model on held-out questions and a fixed sample set")
    _common(p)
    p.add_argument("--model", required=True)
    p.add_argument("--eval-samples", required=True, help="samples JSONL of held-out questions to rescore")
    p.add_argument("--out", help="write metrics JSON here (default: print)")
    p = sub.add_parser("report", help="rewrite report.html of finished run folders from their files (no training)")
    p.add_argument("runs", nargs="+", help="folders written by `aftlab run` (a --seeds folder: each seed's)")
    p = sub.add_parser("notebooks", help="compute into a finished run folder everything the guided notebooks show "
                       "(make demo runs it), so they open in seconds")
    p.add_argument("run", help="a folder written by `aftlab run` (its config.json is the notebooks' config)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p = sub.add_parser("sweep-beta", help="E4: train aft_bc at several beta on a finished run's VFT and samples")
    _common(p)
    p.add_argument("--run", required=True, help="a folder written by `aftlab run`")
    p.add_argument("--betas", default="0.01,0.03,0.1,0.3,1,3")
    p = sub.add_parser("app", help="the Gradio COT ranker (binds 127.0.0.1 unless --host says otherwise)")
    p.add_argument("--runs", default="runs", help="folder of `aftlab run` outputs to find checkpoints in")
    p.add_argument("--solutions", help="GSM8K model_solutions.jsonl (default: $AFTLAB_GSM8K/model_solutions.jsonl)")
    p.add_argument("--adapters", default="adapters", help="folder of released LoRA adapters (adapters/smol-gsm8k/<arm>) "
                                                          "the app lists beside the runs")
    p.add_argument("--host", default="127.0.0.1", help="interface to bind; 0.0.0.0 exposes the app to the network")
    p.add_argument("--port", type=int, default=7860)
    p = sub.add_parser("assess", help="E6: assessment accuracy of a model on GSM8K model_solutions (real COTs)")
    p.add_argument("--model", default="smol", help="smol, a LoRA adapter folder (e.g. adapters/smol-gsm8k/aft_bc: base "
                                                   "smol + adapter, offline), a run's checkpoint folder, or a HF id/folder")
    p.add_argument("--solutions", help="GSM8K model_solutions.jsonl (default: $AFTLAB_GSM8K/model_solutions.jsonl)")
    p.add_argument("--limit", type=int, help="first N questions only")
    p.add_argument("--raw", action="store_true", help="keep <<calculator>> annotations and the 'A: N' ending")
    p.add_argument("--device", default="auto")
    p.add_argument("--max-prompt-tokens", type=int, default=512)
    p.add_argument("--out", help="write metrics JSON here (a .md beside it gets the table)")
    p = sub.add_parser("export", help="samples JSONL → datasets-loadable COT rows or TRL preference pairs")
    p.add_argument("--samples", required=True, help="samples JSONL written by `aftlab sample` or `aftlab run`")
    p.add_argument("--format", choices=("jsonl", "pairs"), default="pairs")
    p.add_argument("--out", required=True)
    p.add_argument("--conversational", action="store_true", help="pairs as chat message lists (TRL conversational)")
    p.add_argument("--max-pairs", type=int, help="cap on pairs per question")
    p.add_argument("--loose", action="store_true", help="positives: any correct answer (default: every step checks)")
    p = sub.add_parser("config", help="list every config field of a preset with its value and meaning")
    _common(p)
    p.add_argument("--section", choices=("run", *SECTIONS), help="only this section's fields")
    p.add_argument("--methods", action="store_true", help="list the method registry instead")
    p.add_argument("--json", action="store_true", help="the whole config as JSON (after --set)")
    return ap


def cmd_config(args) -> None:
    if args.methods:
        for name, m in REGISTRY.items():
            extra = (f" [sets {', '.join(f'{k}={v}' for k, v in m.defaults.items())}]" if m.defaults else "")
            print(f"{name:11s} {m.doc}{extra}")
        return
    cfg = _config(args)
    if args.json:
        print(json.dumps(to_dict(cfg), indent=1))
        return
    rows = describe(cfg, args.section)
    width = max(len(name) for name, _, _ in rows)
    for name, value, text in rows:
        print(f"{name:{width}s}  {json.dumps(value, default=str):>12s}  {text}")


def _main_process() -> bool:
    """Whether this process reports (always, unless it is a non-zero rank of a launch)."""
    from .train.distributed import main_process
    return main_process()


def cmd_run(args) -> None:
    from .eval.metrics import aggregate
    from .eval.stats import pooled_comparisons
    from .pipeline import run
    seeds = _numbers(args.seeds, int, "--seeds") if args.seeds else [args.seed]
    results = []
    for seed in seeds:
        args.seed = seed
        out = Path(args.out) / f"seed-{seed}" if args.seeds else Path(args.out)
        results.append(run(_config(args), out, progress=not args.no_progress, sampler=args.sampler,
                           trackers=args.report_to, reuse=args.reuse))
        if _main_process():
            print(f"wrote {out / 'report.html'} and {out / 'metrics.json'}")
    if args.seeds and _main_process():
        agg = aggregate(results)
        pooled = pooled_comparisons([json.loads((Path(args.out) / f"seed-{s}" / "per_question.json").read_text())
                                     for s in seeds])  # resample seeds, then questions
        (Path(args.out) / "aggregate.json").write_text(json.dumps(agg | {"comparisons": pooled}, indent=1))
        for method, m in agg.items():
            print(f"{method:12s} " + "  ".join(f"{k}={m[k]['mean']:.3f}±{m[k]['std']:.3f}" for k in
                                               ("task_accuracy", "assessment_accuracy", "rerank_accuracy")))


def cmd_vft(args) -> None:
    from .data.questions import synthetic_from_config
    from .model.lm import build_lm
    from .train.vft import train_vft
    cfg = _config(args)
    train, test = synthetic_from_config(cfg.data)
    lm = build_lm(cfg.model, train + test, cfg.seed)
    with _trackers(args, cfg, args.out) as trackers:
        train_vft(lm, train, cfg.vft, out=Path(args.out) / "vft", seed=cfg.seed, progress=not args.no_progress,
                  accelerate=args.accelerate or None, on_log=trackers.on_log("vft"))
    if _main_process():
        print(f"wrote {Path(args.out) / 'vft'}")


def cmd_sample(args) -> None:
    from .data.questions import synthetic_from_config
    from .model.lm import load_lm_from_config
    from .sampling.samples import sample_cots
    from .train import distributed
    cfg = _config(args)
    train, test = synthetic_from_config(cfg.data)
    examples = train[:cfg.sample.n_questions] if args.split == "train" else test
    sampler = args.sampler
    if sampler == "vllm":  # checked before the model loads; vLLM reads the weights from the model's own folder
        from .sampling.vllm import VLLMSampler, model_folder
        sampler = VLLMSampler(model_folder(args.model))
    lm = load_lm_from_config(cfg.model, args.model)
    s = cfg.sample
    try:
        recs = sample_cots(lm, examples, s.k, s.temperature, s.top_p, s.max_new_tokens, cfg.seed, s.batch_questions,
                           cache=args.out, progress=not args.no_progress, sampler=sampler, dist=distributed.runner())
    finally:
        if not isinstance(sampler, str):
            sampler.close()
    if not _main_process():
        return
    n_pos = sum(x["correct"] for r in recs for x in r["samples"])
    print(f"{len(recs)} questions, {sum(len(r['samples']) for r in recs)} distinct COTs ({n_pos} correct) "
          f"in {args.out}")


def cmd_align(args) -> None:
    from .align.aft import align_from_vft, batch_seed
    from .sampling.samples import read_samples
    cfg = _config(args)
    acfg = cfg.align_for(args.method)
    records = read_samples(args.samples)  # cheap checks first: a bad file fails before the model loads
    if not records:
        raise DataError(f"{args.samples}: no sample records to align on (empty file)")
    # checkpoints go to --out as training runs: re-running the same command resumes a killed run
    # beside the checkpoint folder, which every save replaces: RUN/tensorboard for --out RUN/aft_bc, as `run` does
    with _trackers(args, cfg, Path(args.out).resolve().parent) as trackers:
        _, log = align_from_vft(args.model, records, acfg, batch_seed(cfg.seed), cfg.model,
                                progress=not args.no_progress, on_log=trackers.on_log(args.method),
                                out=args.out, accelerate=args.accelerate or None)
    if _main_process():
        print(f"wrote {args.out}; last step: {json.dumps(log[-1])}")


def cmd_eval(args) -> None:
    from .data.questions import synthetic_from_config
    from .eval.evaluate import evaluate, own_sampling
    from .model.lm import load_lm_from_config
    from .sampling.samples import read_samples
    from .train import checkpoint, distributed
    cfg = _config(args)
    _, test = synthetic_from_config(cfg.data)
    records = read_samples(args.eval_samples)
    if not records:
        raise DataError(f"{args.eval_samples}: no sample records to evaluate on (empty file)")
    lm = load_lm_from_config(cfg.model, args.model)
    m = evaluate(lm, test, records, cfg.sample.max_new_tokens, **own_sampling(cfg), dist=distributed.runner())["metrics"]
    if not _main_process():
        return
    text = json.dumps(m, indent=1)
    if args.out:
        checkpoint.write_atomic(args.out, text)
    print(text)


def cmd_report(args) -> None:
    from .report.writer import write_report
    for run in map(Path, args.runs):
        seeds = sorted(run.glob("seed-*/metrics.json")) if not (run / "metrics.json").is_file() else []
        for folder in [m.parent for m in seeds] or [run]:
            print(f"wrote {write_report(folder)}")


def cmd_notebooks(args) -> None:
    from .config import from_dict
    from .notebook import prepare
    run = Path(args.run)
    if not (run / "metrics.json").is_file():
        raise FileNotFoundError(f"{run}: no metrics.json; run `aftlab run --out {run}` first")
    prepare(from_dict(json.loads((run / "config.json").read_text())), run, progress=not args.no_progress)


def cmd_sweep_beta(args) -> None:
    from .sweep import beta_sweep
    betas = _numbers(args.betas, float, "--betas")
    if any(b < 0 for b in betas):
        raise ConfigError(f"--betas {args.betas!r}: beta must be >= 0")
    rows = beta_sweep(Path(args.run), betas, progress=not args.no_progress)
    for r in rows:
        print(f"beta={r['beta']:<6g} gap={r['gap']:.3f} task={r['task_accuracy']:.3f} "
              f"assess={r['assessment_accuracy']:.3f} rerank={r['rerank_accuracy']:.3f}")


def cmd_app(args) -> None:
    import os

    from .app.ui import build_app, launch
    solutions = args.solutions
    default = Path(os.environ.get("AFTLAB_GSM8K", "")) / "model_solutions.jsonl"
    if solutions is None and os.environ.get("AFTLAB_GSM8K") and default.is_file():
        solutions = default
    launch(build_app(args.runs, solutions, adapters_dir=args.adapters), args.host, args.port)


def cmd_assess(args) -> None:
    import os

    from .config import ModelConfig
    from .data.solutions import load_solutions
    from .eval.assess import assess, markdown
    from .model.lm import load_lm_from_config
    from .sampling.solutions import records_of
    from .train import checkpoint
    path = args.solutions or Path(os.environ.get("AFTLAB_GSM8K", "")) / "model_solutions.jsonl"
    if args.limit is not None and args.limit <= 0:
        raise ConfigError(f"--limit {args.limit}: must be > 0")
    records = records_of(load_solutions(path, args.limit, raw=args.raw))  # a bad file fails before the model loads
    lm = load_lm_from_config(ModelConfig(name=args.model, device=args.device, max_prompt_tokens=args.max_prompt_tokens))
    title = f"{args.model} on {Path(path).name}"

    def save(summary):  # after every chunk too: a long CPU run keeps its figures so far if stopped
        if args.out:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            done = summary["n_questions"] == len(records)
            kept = {k: v for k, v in summary.items() if k != "scored"}
            checkpoint.write_atomic(args.out, json.dumps(dict(kept, model=str(args.model), solutions=str(path),
                                                              raw=args.raw, complete=done), indent=1))
            checkpoint.write_atomic(Path(args.out).with_suffix(".md"), markdown(summary, title))
        return summary

    print(markdown(save(assess(lm, records, chunk=10, on_chunk=save)), title))


def cmd_export(args) -> None:
    from .eval.export import export
    from .sampling.samples import read_samples
    records = read_samples(args.samples)
    kw = {} if args.format == "jsonl" else {"strict": not args.loose, "conversational": args.conversational,
                                            "max_pairs": args.max_pairs}
    n = export(records, args.format, args.out, **kw)
    print(f"wrote {n} {'rows' if args.format == 'jsonl' else 'pairs'} to {args.out}")


COMMANDS = {"run": cmd_run, "vft": cmd_vft, "sample": cmd_sample, "align": cmd_align, "eval": cmd_eval,
            "report": cmd_report, "notebooks": cmd_notebooks, "sweep-beta": cmd_sweep_beta, "app": cmd_app,
            "assess": cmd_assess, "export": cmd_export, "config": cmd_config}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if "OMP_NUM_THREADS" not in os.environ:  # on a busy CPU, spinning OpenMP workers cost up to 7x
        from .model.runtime import set_threads
        set_threads("auto")
    try:
        COMMANDS[args.cmd](args)
    except USER_ERRORS as e:
        print(f"aftlab: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("aftlab: interrupted; run the same command again to resume from the last checkpoint",
              file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
