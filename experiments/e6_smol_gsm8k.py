"""E6 on a real LM: smol + LoRA trained on GSM8K model_solutions, K-fold cross-validated
(pre-registration: experiments/e6_smol_gsm8k.md; the design's code: aftlab.kfold, aftlab.eval.crossval).

    python experiments/e6_smol_gsm8k.py pilot                       # measured seconds per step / question
    python experiments/e6_smol_gsm8k.py run                         # every fold x arm, resumable
    python experiments/e6_smol_gsm8k.py run --fold 0 --arm aft_bc   # one cell
    python experiments/e6_smol_gsm8k.py report                      # pooled table + verdicts
    python experiments/e6_smol_gsm8k.py release --arm aft_bc        # adapters/smol-gsm8k/aft_bc + its card

The solutions file comes from --solutions or $AFTLAB_GSM8K/model_solutions.jsonl. Results go to --out
(default runs/e6: result files, tuning files, checkpoints; not committed); ``report`` writes
experiments/e6_smol_gsm8k_results.{json,md}.
"""
import argparse
import dataclasses
import json
import os
import time
from pathlib import Path

import torch

from aftlab.config import preset
from aftlab.eval.crossval import markdown, table
from aftlab.kfold import ARMS, Design, release, run_fold
from aftlab.train.checkpoint import write_atomic

HERE = Path(__file__).parent
PRIMARY_ARMS = ("base", "vft", "rft", "aft_bc", "align_only")  # the pre-registered rules need these; the rest: stage 2
ADAPTERS = HERE.parent / "adapters" / "smol-gsm8k"


def design_of(args) -> Design:
    path = args.solutions or Path(os.environ.get("AFTLAB_GSM8K", "../shared/data/gsm8k")) / "model_solutions.jsonl"
    return Design(solutions=str(path), out=args.out, folds=args.folds, limit=args.limit, greedy_questions=args.greedy,
                  lrs=tuple(float(x) for x in args.lrs.split(",")), epochs=tuple(float(x) for x in args.epochs.split(",")),
                  train_questions=args.train_questions)


def pilot(design: Design, cfg, arms=("vft", "aft_bc"), steps: int = 2, n_score: int = 4, n_greedy: int = 2) -> dict:
    """Seconds (wall and process CPU) per training step of the cheapest and the costliest kind of arm (the first
    step, which pays one-time costs, is reported apart), per scored question and per greedy question, on the
    first questions of fold 0: the figures the pre-registration's budget is projected from."""
    from aftlab.align.aft import train_align
    from aftlab.kfold import align_config, arm_groups, fold_records, judge
    from aftlab.model.lm import build_lm

    train, held = fold_records(design, 0)
    out = {"threads": torch.get_num_threads(), "questions_per_step": cfg.align.questions_per_step}
    for arm in arms:
        acfg = dataclasses.replace(align_config(arm, cfg, 1e-4, 1.0), warmup=1, beta_quantile=0.0)
        g = arm_groups(arm, train, acfg)[:steps * acfg.questions_per_step]
        lm = build_lm(cfg.model, [], cfg.seed)
        marks = [(time.perf_counter(), time.process_time())]
        train_align(lm, g, acfg, seed=cfg.seed, progress=False,
                    on_log=lambda _: marks.append((time.perf_counter(), time.process_time())))
        wall = [b[0] - a[0] for a, b in zip(marks, marks[1:])]
        cpu = [b[1] - a[1] for a, b in zip(marks, marks[1:])]
        out[arm] = {"first_step": {"wall": wall[0], "cpu": cpu[0]},
                    "later_steps": {"wall": sum(wall[1:]) / len(wall[1:]), "cpu": sum(cpu[1:]) / len(cpu[1:])},
                    "cots_per_question": sum(len(x["pos"]) + len(x["neg"]) for x in g) / len(g)}
        print(arm, out[arm], flush=True)
    tick, cpu0 = time.perf_counter(), time.process_time()
    res = judge(lm, held[:n_score], n_greedy, cfg.sample.max_new_tokens)
    share = res["seconds"]["score"] / (time.perf_counter() - tick)  # split the CPU time as the wall time splits
    cpu = time.process_time() - cpu0
    out["score"] = {"wall_per_question": res["seconds"]["score"] / n_score, "cpu_per_question": share * cpu / n_score,
                    "cots_per_question": 1 + sum(len(r["samples"]) for r in held[:n_score]) / n_score}
    out["greedy"] = {"wall_per_question": res["seconds"]["greedy"] / n_greedy,
                     "cpu_per_question": (1 - share) * cpu / n_greedy, "max_new_tokens": cfg.sample.max_new_tokens,
                     "finished": sum(g["finished"] for g in res["greedy"]), "n": n_greedy}
    print("judge", out["score"], out["greedy"], flush=True)
    out["n_train"], out["n_held"] = len(train), len(held)
    return out


def token_stats(design: Design, cfg) -> dict:
    """Mean tokens per question the design's work runs over (the smol tokenizer only, no model): per arm's
    training group (prompt once + its COTs), a mixed question's scoring (+ samples) and an unmixed one's
    (prompt + reference)."""
    from transformers import AutoTokenizer

    from aftlab.data.solutions import load_solutions
    from aftlab.eval.assess import mixed
    from aftlab.kfold import align_config, arm_groups
    from aftlab.model.lm import LM
    from aftlab.model.smol import smol_path
    from aftlab.sampling.solutions import records_of

    lm = LM(None, AutoTokenizer.from_pretrained(smol_path()), chat=True, max_prompt_tokens=cfg.model.max_prompt_tokens)
    recs = records_of(load_solutions(design.solutions, design.limit))
    prompt = {r["id"]: len(lm.prompt_ids(r["question"])) for r in recs}
    cot = {c: len(lm.cot_ids(c)) for r in recs for c in [r["reference"]] + [s["cot"] for s in r["samples"]]}
    out = {}
    for arm in ARMS:
        if ARMS[arm].method:
            g = arm_groups(arm, recs, align_config(arm, cfg, 1e-4, 1.0))
            out[arm] = sum(prompt[x["id"]] + sum(cot[c] for c in x["pos"] + x["neg"]) for x in g) / len(g)
    score = [prompt[r["id"]] + cot[r["reference"]] + (sum(cot[s["cot"]] for s in r["samples"]) if mixed(r) else 0)
             for r in recs]
    out["score"] = sum(score) / len(score)
    out["score_mixed"] = sum(x for x, r in zip(score, recs) if mixed(r)) / sum(map(mixed, recs))
    out["mixed_share"] = sum(map(mixed, recs)) / len(recs)
    out["n"] = len(recs)
    return out


def project(pilot_res: dict, stats: dict, design: Design, cfg, arms) -> dict:
    """CPU-hours (one thread) per arm per fold and in all, projected from the pilot's measured seconds per
    token (training: VFT's rate for NLL-only arms, AFT-BC's for pairwise ones; scoring; greedy per question)
    and the design's sizes. DPO arms (their reference) and AFT-BC (its calibrated beta) add one no-grad pass
    of the starting model over their training COTs."""
    from aftlab.kfold import align_config

    qps = pilot_res["questions_per_step"]
    nll = pilot_res["vft"]["later_steps"]["cpu"] / (qps * stats["pilot_vft"])
    pair = pilot_res["aft_bc"]["later_steps"]["cpu"] / (qps * stats["pilot_aft_bc"])
    score = pilot_res["score"]["cpu_per_question"] / stats["pilot_score"]
    n_train = (design.folds - 1) * stats["n"] / design.folds
    n_train = min(n_train, design.train_questions or n_train)
    n_held = stats["n"] / design.folds
    n_fit = n_train * (design.inner_folds - 1) / design.inner_folds
    n_val = n_train - n_fit
    grid_epochs = sum(p["epochs"] for p in design.grid())
    chosen_epochs = max(design.epochs)  # the dearest choice: projections are upper bounds
    out = {}
    for arm in arms:
        a = ARMS[arm]
        row = {"score": n_held * stats["score"] * score,
               "greedy": design.greedy_questions * pilot_res["greedy"]["cpu_per_question"] if arm in design.greedy_arms
               else 0.0, "tune": 0.0, "train": 0.0}
        if a.method:
            acfg = align_config(arm, cfg, 1e-4, 1.0)
            no_grad_pass = a.method == "dpo" or acfg.beta_quantile > 0  # DPO's reference; BC's calibrated beta
            per_q = stats[arm] * (nll if a.method == "rft" else pair) + (stats[arm] * score if no_grad_pass else 0)
            row["train"] = n_train * chosen_epochs * per_q
            if len(design.grid()) > 1:  # one point: nothing to choose, no validation training
                row["tune"] = n_fit * grid_epochs * per_q + len(design.grid()) * n_val * stats["score"] * score
        row = {k: v / 3600 for k, v in row.items()}
        row["total_per_fold"] = sum(row.values())
        out[arm] = row
    out["all"] = {"cpu_hours": design.folds * sum(r["total_per_fold"] for r in out.values()),
                  "n_train_per_fold": n_train, "n_held_per_fold": n_held}
    return out


def pilot_tokens(design: Design, cfg, stats: dict, steps: int = 2, n_score: int = 4) -> dict:
    """``stats`` plus the mean tokens per question of the pilot's own questions (what its seconds were spent on)."""
    from transformers import AutoTokenizer

    from aftlab.eval.assess import mixed
    from aftlab.kfold import align_config, arm_groups, fold_records
    from aftlab.model.lm import LM
    from aftlab.model.smol import smol_path

    lm = LM(None, AutoTokenizer.from_pretrained(smol_path()), chat=True, max_prompt_tokens=cfg.model.max_prompt_tokens)
    train, held = fold_records(design, 0)
    out = dict(stats)
    for arm in ("vft", "aft_bc"):
        acfg = align_config(arm, cfg, 1e-4, 1.0)
        g = arm_groups(arm, train, acfg)[:steps * acfg.questions_per_step]
        out[f"pilot_{arm}"] = sum(len(lm.prompt_ids(x["question"])) + sum(len(lm.cot_ids(c)) for c in x["pos"] + x["neg"])
                                  for x in g) / len(g)
    out["pilot_score"] = sum(len(lm.prompt_ids(r["question"])) + len(lm.cot_ids(r["reference"]))
                             + (sum(len(lm.cot_ids(s["cot"])) for s in r["samples"]) if mixed(r) else 0)
                             for r in held[:n_score]) / n_score
    return out


def results_of(design: Design, arms) -> dict[str, list[dict]]:
    out = {}
    for arm in arms:
        found = [json.loads(p.read_text()) for p in sorted(Path(design.out).glob(f"fold-*/{arm}/result.json"))]
        if found:
            out[arm] = found
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cmd", choices=("pilot", "project", "run", "report", "release"))
    ap.add_argument("--solutions")
    ap.add_argument("--out", default="runs/e6")
    ap.add_argument("--folds", type=int, default=Design.folds)
    ap.add_argument("--fold", type=int, help="run: this outer fold only")
    ap.add_argument("--arm", choices=tuple(ARMS), help="run / release: this arm only")
    ap.add_argument("--arms", default=",".join(PRIMARY_ARMS), help="the arms run / report / release / project cover")
    ap.add_argument("--lrs", default=",".join(map(str, Design.lrs)), help="tuning grid: peak learning rates")
    ap.add_argument("--epochs", default=",".join(map(str, Design.epochs)), help="tuning grid: epochs")
    ap.add_argument("--train-questions", type=int, help="at most this many training questions per fold")
    ap.add_argument("--greedy", type=int, default=Design.greedy_questions, help="held-out questions per fold decoded "
                                                                                "greedily (arms of Design.greedy_arms)")
    ap.add_argument("--limit", type=int, help="first N questions of the file only (a smoke run)")
    ap.add_argument("--results", default=str(HERE / "e6_smol_gsm8k_results"), help="report: where the .json/.md go")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: run two cells side by side on 2 cores; "
                                                            "on a busy machine CPU seconds then count work, not spinning)")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    design, cfg = design_of(args), preset("smol-gsm8k")
    arms = [args.arm] if args.arm else list(args.arms.split(","))
    if args.cmd == "pilot":
        torch.set_num_threads(args.threads)
        res = pilot(design, cfg)
        print(json.dumps(res, indent=1))
        (HERE / "e6_smol_gsm8k_pilot.json").write_text(json.dumps(res, indent=1) + "\n")
    elif args.cmd == "project":
        stats = pilot_tokens(design, cfg, token_stats(design, cfg))
        res = project(json.loads((HERE / "e6_smol_gsm8k_pilot.json").read_text()), stats, design, cfg, arms)
        print(json.dumps({"design": dataclasses.asdict(design), "arms": arms, "tokens": stats, "cpu_hours": res},
                         indent=1))
    elif args.cmd == "run":
        torch.set_num_threads(args.threads)
        folds = [args.fold] if args.fold is not None else range(design.folds)
        for fold in folds:
            for arm in arms:
                r = run_fold(design, cfg, fold, arm, progress=not args.no_progress)
                print(f"fold {fold} {arm}: chosen {r['chosen']}, seconds {r['seconds']}", flush=True)
    elif args.cmd == "report":
        tab = table(results_of(design, arms))
        text = f"# E6 results: smol + LoRA on GSM8K model_solutions, {design.folds}-fold\n\n" + markdown(tab)
        results = Path(args.results)
        write_atomic(results.with_suffix(".json"), json.dumps(tab, indent=1))
        write_atomic(results.with_suffix(".md"), text)
        print(text)
    elif args.cmd == "release":
        results = results_of(design, ["base", "rft", *arms])
        tab = table(results)
        for arm in arms:
            if arm not in results or len(results[arm]) < design.folds:
                raise SystemExit(f"release {arm}: its {design.folds} folds are not all done (run them first)")
            folder = release(design, cfg, arm, ADAPTERS / arm, results[arm], tab, progress=not args.no_progress)
            print(f"wrote {folder}")


if __name__ == "__main__":
    main()
