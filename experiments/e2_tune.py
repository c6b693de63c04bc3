"""E2, tuned: learning rate and epochs chosen per method on a validation split of training questions,
then the chosen settings compared on the held-out set (pre-registrations: experiments/archive/e2_tuned.md,
then experiments/e2_powered.md, e2_untied.md and e2_wrong_choice.md).

    python experiments/e2_tune.py runs/e2-0 --methods rft          # one process per method, resumable
    python experiments/e2_tune.py runs/e2-0 --methods aft_bc
    python experiments/e2_tune.py runs/e2-0 --methods rft,aft_bc --orders 2,3             # other batch orders
    python experiments/e2_tune.py runs/e2-1 --settings-from runs/e2-0 --orders 1,2,3      # other VFT seeds
    python experiments/e2_tune.py runs/e2-0 runs/e2-1 --report [--json experiments/e2_tune_NAME.json] [--tuning-run runs/x-0]

Per method: every (lr, epochs) of the grid trains on the run's sampled questions but the last
``--validation`` and is evaluated on those (``sweep.variant_sweep(validation=...)``) ->
``RUN/tune/METHOD_lr=..._epochs=....json``; the VFT model's own validation figures -> ``RUN/tune/vft.json``.
The chosen setting (:func:`choose`, the pre-registered rule) is re-trained on all sampled questions with
each batch order and evaluated on the held-out set -> ``RUN/tuned/METHOD@ORDER.json`` (metrics and
per-question outcomes). ``--settings-from`` takes the choice made by another run's grid (no re-tuning).
``--report`` prints the validation table of the first run, the choices and the paired held-out
comparisons pooled over the runs (seeds) and the batch orders every method finished
(``stats.merge_orders``, ``stats.pooled_comparisons``) with the decision rule's verdict.
"""
import argparse
import json
import time
from pathlib import Path

from e2_power import PRIMARY, table, verdict

from aftlab.eval.evaluate import evaluate
from aftlab.eval.stats import merge_orders, pooled_comparisons
from aftlab.model.lm import load_lm_from_config
from aftlab.sweep import sweep_inputs, variant_sweep
from aftlab.train.checkpoint import write_atomic

LRS, EPOCHS = (1e-4, 3e-4, 1e-3), (1, 2)  # the pre-registered grid, smallest budget first
TASK_MARGIN = 0.01  # a setting is eligible when its validation task accuracy >= VFT's - 1 point


def grid() -> list[dict]:
    return [{"lr": lr, "epochs": ep} for ep in EPOCHS for lr in LRS]


def key(method: str, setting: dict) -> str:
    return f"{method}_lr={setting['lr']:g}_epochs={setting['epochs']:g}"


def criterion(m: dict) -> float:
    """The selection score: the mean of the two primary metrics on the validation questions."""
    return (m["assessment_accuracy_strict"] + m["rerank_accuracy"]) / 2


def choose(rows: list[tuple[dict, dict]], vft_task: float) -> tuple[dict, str]:
    """The pre-registered choice among ``[(setting, validation metrics)]`` in grid order: the highest
    :func:`criterion` among settings whose task accuracy is at least VFT's minus 1 point, the earlier
    (smaller budget) on a tie; the default (lr 1e-4, 1 epoch) when none is eligible.

    >>> rows = [({"lr": 1e-4, "epochs": 1}, {"assessment_accuracy_strict": .70, "rerank_accuracy": .80, "task_accuracy": .85}),
    ...         ({"lr": 1e-3, "epochs": 1}, {"assessment_accuracy_strict": .75, "rerank_accuracy": .81, "task_accuracy": .80}),
    ...         ({"lr": 3e-4, "epochs": 3}, {"assessment_accuracy_strict": .72, "rerank_accuracy": .80, "task_accuracy": .845})]
    >>> choose(rows, vft_task=0.85)
    ({'lr': 0.0003, 'epochs': 3}, 'best eligible of 2')
    """
    eligible = [(s, m) for s, m in rows if m["task_accuracy"] >= vft_task - TASK_MARGIN]
    if not eligible:
        return {"lr": 1e-4, "epochs": 1}, "none eligible: the default"
    best = max(range(len(eligible)), key=lambda i: (criterion(eligible[i][1]), -i))
    return eligible[best][0], f"best eligible of {len(eligible)}"


def vft_validation(run: Path, n_val: int) -> dict:
    path = run / "tune" / "vft.json"
    if not path.exists():
        cfg, _, questions, records = sweep_inputs(run, n_val)
        lm = load_lm_from_config(cfg.model, run / "vft")
        write_atomic(path, json.dumps(evaluate(lm, questions, records, cfg.sample.max_new_tokens)["metrics"]))
    return json.loads(path.read_text())


def tune(run: Path, method: str, n_val: int) -> list[tuple[dict, dict]]:
    rows = []
    for setting in grid():
        path = run / "tune" / f"{key(method, setting)}.json"
        if not path.exists():
            t = time.time()
            res = variant_sweep(run, {method: {"method": method, **setting}}, progress=False, validation=n_val)[method]
            log = res.pop("train_log")
            write_atomic(path, json.dumps({"setting": setting, "metrics": res, "train_log_last": log[-1],
                                           "seconds": round(time.time() - t)}))
            print(f"{path.name}: {time.time() - t:.0f} s, criterion {criterion(res):.4f}, "
                  f"task {res['task_accuracy']:.4f}", flush=True)
        rows.append((setting, json.loads(path.read_text())["metrics"]))
    return rows


def final(run: Path, method: str, setting: dict, why: str, order: int) -> dict:
    path = run / "tuned" / f"{method}@{order}.json"
    if not path.exists():
        t = time.time()
        res = variant_sweep(run, {method: {"method": method, **setting}}, progress=False, outcomes=True,
                            batch_order=order)[method]
        outcomes, log = res.pop("outcomes"), res.pop("train_log")
        write_atomic(path, json.dumps({"setting": setting, "why": why, "metrics": res, "outcomes": outcomes,
                                       "train_log_last": log[-1], "seconds": round(time.time() - t)}))
        print(f"{path}: {time.time() - t:.0f} s", flush=True)
    return json.loads(path.read_text())


def grid_rows(run: Path, method: str) -> list[tuple[dict, dict]]:
    """The finished grid settings of ``method`` in ``run``, in grid order."""
    return [(s, json.loads(p.read_text())["metrics"]) for s in grid()
            if (p := run / "tune" / f"{key(method, s)}.json").exists()]


def chosen(run: Path, method: str, n_val: int) -> tuple[dict, str]:
    rows = grid_rows(run, method)
    if len(rows) < len(grid()):
        raise SystemExit(f"{run}: the grid of {method} has {len(rows)} of {len(grid())} settings — tune there first")
    return choose(rows, vft_validation(run, n_val)["task_accuracy"])


def held_out(run: Path, methods: list[str]) -> tuple[dict, list[int]]:
    """Per-method held-out outcomes of ``run``'s tuned settings, merged over the batch orders every
    method finished, with VFT's from the run's own ``per_question.json``; and those orders."""
    done = {}
    if not (run / "per_question.json").exists():  # the run's own evaluation has not finished
        return {}, []
    for p in (run / "tuned").glob("*@*.json"):
        m, o = p.stem.split("@")
        done.setdefault(int(o), {})[m] = json.loads(p.read_text())["outcomes"]
    orders = sorted(o for o, got in done.items() if all(m in got for m in methods))
    per_q = {"vft": json.loads((run / "per_question.json").read_text())["vft"]}
    if orders:
        per_q |= {m: merge_orders([done[o][m] for o in orders]) for m in methods}
    return per_q, orders


def report(runs: list[Path], methods: list[str], n_val: int, out_json: str | None, tuning: Path | None = None,
           baselines: tuple[str, ...] = ("rft", "vft")):
    tuning = tuning or runs[0]
    vft = vft_validation(tuning, n_val)
    print(f"validation ({tuning}): the last {n_val} sampled training questions; VFT task "
          f"{vft['task_accuracy']:.4f}, strict {vft['assessment_accuracy_strict']:.4f}, rerank {vft['rerank_accuracy']:.4f}\n")
    print("| method | lr | epochs | task | strict assessment | rerank | criterion |\n|---|---|---|---|---|---|---|")
    choices = {}
    for method in methods:
        rows = grid_rows(tuning, method)
        for s, m in rows:
            print(f"| {method} | {s['lr']:g} | {s['epochs']} | {m['task_accuracy']:.4f} | "
                  f"{m['assessment_accuracy_strict']:.4f} | {m['rerank_accuracy']:.4f} | {criterion(m):.4f} |")
        if len(rows) == len(grid()):
            choices[method] = choose(rows, vft["task_accuracy"])
    print("\nchosen:", choices)
    loaded = [held_out(r, methods) for r in runs]
    design = {str(r): o for r, (_, o) in zip(runs, loaded)}
    runs_with = [pq for pq, o in loaded if o]
    print(f"design: batch orders per run {design} (pre-registered: 3 seeds x orders 1, 2, 3)")
    if not runs_with:
        return
    comp = pooled_comparisons(runs_with, baselines=baselines)
    vft_task = {str(r): json.loads((r / "metrics.json").read_text())["methods"]["vft"]["task_accuracy"] for r in runs}
    print(f"VFT greedy task accuracy per run: {vft_task}")
    print("held-out per run: greedy questions", [len(pq["vft"]["task"]) for pq in runs_with], "; assessment set",
          [len(pq["vft"]["rerank"]) for pq in runs_with], "questions, of which with a right and a wrong COT",
          [len(pq["vft"]["assess"]) for pq in runs_with], "\n")
    print(table(comp))
    complete = len(runs_with) == 3 and all(o == [1, 2, 3] for o in design.values())
    verdicts = {m: verdict(by["rft"]) + ("" if complete else " (interim: not the full 3 x 3 design)")
                for m, by in comp.items() if m not in ("rft", "vft") and "rft" in by}
    for m, v in verdicts.items():
        print(f"{m}: {v}")
    if out_json:
        Path(out_json).write_text(json.dumps({
            "validation_questions": n_val, "tuning_run": str(tuning), "vft_validation": vft, "chosen": choices,
            "design": design, "vft_task_accuracy": vft_task, "comparisons": comp, "verdicts": verdicts,
            "primary": PRIMARY}, indent=1))


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--methods", default="rft,aft_bc")
    ap.add_argument("--validation", type=int, default=1000)
    ap.add_argument("--orders", default="1", help="batch orders of the held-out stage (1: the run's own)")
    ap.add_argument("--settings-from", default=None, help="a run whose finished grid chose the settings (no tuning here)")
    ap.add_argument("--report", action="store_true", help="print the tables from what has finished")
    ap.add_argument("--json", default=None)
    ap.add_argument("--tuning-run", default=None, help="--report: the run whose grid chose the settings (default: the first)")
    ap.add_argument("--tune-only", action="store_true", help="run the validation grid, then stop (no held-out stage)")
    ap.add_argument("--baselines", default="rft,vft", help="--report: methods every other is compared with")
    a = ap.parse_args()
    runs, methods = [Path(r) for r in a.runs], a.methods.split(",")
    if a.report:
        report(runs, methods, a.validation, a.json, Path(a.tuning_run) if a.tuning_run else None,
               tuple(a.baselines.split(",")))
        raise SystemExit(0)
    if len(runs) != 1:
        raise SystemExit("train one run at a time (several runs only with --report)")
    run = runs[0]
    wanted = json.loads((run / "config.json").read_text())["sample"]["n_questions"]
    sampled = len((run / "samples_r1.jsonl").read_text().splitlines()) if (run / "samples_r1.jsonl").exists() else 0
    if sampled < wanted:  # tuning needs the VFT model and all its samples; the held-out stage metrics.json
        raise SystemExit(f"{run}: samples_r1.jsonl holds {sampled} of {wanted} questions — let `aftlab run` finish sampling")
    (run / "tune").mkdir(exist_ok=True)
    (run / "tuned").mkdir(exist_ok=True)
    tuning = Path(a.settings_from) if a.settings_from else run
    if not a.settings_from:
        vft_task = vft_validation(run, a.validation)["task_accuracy"]
        for method in methods:
            print(f"{method}: chose {choose(tune(run, method, a.validation), vft_task)}", flush=True)
    if a.tune_only:
        raise SystemExit(0)
    settings = {m: chosen(tuning, m, a.validation) for m in methods}
    while not (run / "metrics.json").exists():  # the run's own evaluation (VFT's held-out outcomes) first
        time.sleep(30)
    for order in map(int, a.orders.split(",")):
        for method in methods:
            final(run, method, *settings[method], order)
