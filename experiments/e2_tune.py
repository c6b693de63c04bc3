"""E2, tuned: learning rate and epochs chosen per method on a validation split of training questions,
then the chosen settings compared on the held-out set (pre-registration: experiments/README.md,
2026-12-02 evening).

    python experiments/e2_tune.py runs/e2-0 --methods rft          # one process per method, resumable
    python experiments/e2_tune.py runs/e2-0 --methods aft_bc
    python experiments/e2_tune.py runs/e2-0 --report [--json experiments/e2_tune.json]

Per method: every (lr, epochs) of the grid trains on the run's sampled questions but the last
``--validation`` and is evaluated on those (``sweep.variant_sweep(validation=...)``) ->
``RUN/tune/METHOD_lr=..._epochs=....json``; the VFT model's own validation figures -> ``RUN/tune/vft.json``.
The chosen setting (:func:`choose`, the pre-registered rule) is re-trained on all sampled questions with
the run's batch order and evaluated on the held-out set -> ``RUN/tuned/METHOD.json`` (metrics and
per-question outcomes). ``--report`` prints the validation table, the choices and the paired held-out
comparisons (``stats.pooled_comparisons``) with the decision rule's verdict.
"""
import argparse
import json
import time
from pathlib import Path

from e2_power import PRIMARY, SHOWN, verdict

from aftlab.checkpoint import write_atomic
from aftlab.evaluate import evaluate
from aftlab.model import load_lm
from aftlab.stats import pooled_comparisons, question_outcomes
from aftlab.sweep import sweep_inputs, variant_sweep

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
        lm = load_lm(run / "vft", cfg.model.device, max_prompt_tokens=cfg.model.max_prompt_tokens)
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


def final(run: Path, method: str, setting: dict, why: str) -> dict:
    path = run / "tuned" / f"{method}.json"
    if not path.exists():
        t = time.time()
        res = variant_sweep(run, {method: {"method": method, **setting}}, progress=False, outcomes=True)[method]
        outcomes, log = res.pop("outcomes"), res.pop("train_log")
        write_atomic(path, json.dumps({"setting": setting, "why": why, "metrics": res, "outcomes": outcomes,
                                       "train_log_last": log[-1], "seconds": round(time.time() - t)}))
        print(f"{path}: {time.time() - t:.0f} s", flush=True)
    return json.loads(path.read_text())


def report(run: Path, methods: list[str], n_val: int, out_json: str | None):
    vft = vft_validation(run, n_val)
    print(f"validation: the last {n_val} sampled training questions; VFT task {vft['task_accuracy']:.4f}, "
          f"strict {vft['assessment_accuracy_strict']:.4f}, rerank {vft['rerank_accuracy']:.4f}\n")
    print("| method | lr | epochs | task | strict assessment | rerank | criterion |\n|---|---|---|---|---|---|---|")
    chosen = {}
    for method in methods:
        rows = [(s, json.loads(p.read_text())["metrics"]) for s in grid()
                if (p := run / "tune" / f"{key(method, s)}.json").exists()]
        for s, m in rows:
            print(f"| {method} | {s['lr']:g} | {s['epochs']} | {m['task_accuracy']:.4f} | "
                  f"{m['assessment_accuracy_strict']:.4f} | {m['rerank_accuracy']:.4f} | {criterion(m):.4f} |")
        if len(rows) == len(grid()):
            chosen[method] = choose(rows, vft["task_accuracy"])
    print("\nchosen:", {m: c for m, c in chosen.items()})
    finals = {m: json.loads(p.read_text()) for m in methods if (p := run / "tuned" / f"{m}.json").exists()}
    if not finals:
        return
    per_q = {"vft": json.loads((run / "per_question.json").read_text())["vft"],
             **{m: f["outcomes"] for m, f in finals.items()}}
    comp = pooled_comparisons([per_q])
    print(f"\nheld-out, tuned settings, one seed and batch order (interim): {len(per_q['vft']['task'])} greedy "
          f"questions, {len(per_q['vft']['rerank'])} assessment questions\n")
    print("| method | vs | " + " | ".join(SHOWN) + " |\n|---|---|" + "---|" * len(SHOWN))
    for method, by in comp.items():
        for vs, c in by.items():
            cells = [f"{100 * c[k]['diff']:+.2f} [{100 * c[k]['lo']:+.2f}, {100 * c[k]['hi']:+.2f}]" if k in c else "–"
                     for k in SHOWN]
            print(f"| {method} | {vs} | " + " | ".join(cells) + " |")
    verdicts = {m: verdict(by["rft"]) for m, by in comp.items() if m not in ("rft", "vft") and "rft" in by}
    for m, v in verdicts.items():
        print(f"{m}: {v} (interim: 1 of 3 seeds, 1 of 3 batch orders)")
    if out_json:
        Path(out_json).write_text(json.dumps({
            "validation_questions": n_val, "vft_validation": vft, "chosen": chosen,
            "final_metrics": {m: {"setting": f["setting"], "why": f["why"], "metrics": f["metrics"],
                                  "seconds": f["seconds"]} for m, f in finals.items()},
            "comparisons": comp, "verdicts": verdicts, "primary": PRIMARY}, indent=1))


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("run")
    ap.add_argument("--methods", default="rft,aft_bc")
    ap.add_argument("--validation", type=int, default=1000)
    ap.add_argument("--report", action="store_true", help="print the tables from what has finished")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    run, methods = Path(a.run), a.methods.split(",")
    wanted = json.loads((run / "config.json").read_text())["sample"]["n_questions"]
    sampled = len((run / "samples_r1.jsonl").read_text().splitlines()) if (run / "samples_r1.jsonl").exists() else 0
    if sampled < wanted:  # tuning needs the VFT model and all its samples; the held-out stage metrics.json
        raise SystemExit(f"{run}: samples_r1.jsonl holds {sampled} of {wanted} questions — let `aftlab run` finish sampling")
    if a.report:
        report(run, methods, a.validation, a.json)
        raise SystemExit(0)
    (run / "tune").mkdir(exist_ok=True)
    (run / "tuned").mkdir(exist_ok=True)
    vft_task = vft_validation(run, a.validation)["task_accuracy"]
    for method in methods:
        setting, why = choose(tune(run, method, a.validation), vft_task)
        print(f"{method}: chose {setting} ({why})", flush=True)
    while not (run / "metrics.json").exists():  # the run's own evaluation (VFT's held-out outcomes) first
        time.sleep(30)
    for method in methods:
        final(run, method, *choose(tune(run, method, a.validation), vft_task))
