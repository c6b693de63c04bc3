"""E2 with power: each method re-trained from a finished run's VFT model and samples with other batch orders.

    python experiments/archive/e2_orders.py runs/e2-0 --methods rft,aft_bc,aft_bc_bal --orders 2,3

Writes ``RUN/orders/METHOD@ORDER.json`` ({"metrics", "outcomes"}: the per-question outcomes that the run's
own ``per_question.json`` holds for order 1), skipping those already written, so a killed sweep resumes.
``experiments/e2_power.py`` pools them (pre-registration: experiments/archive/e2_power.md).
"""
import argparse
import json
import time
from pathlib import Path

from aftlab.sweep import variant_sweep
from aftlab.train.checkpoint import write_atomic

if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("run")
    ap.add_argument("--methods", default="rft,aft_bc,aft_bc_bal")
    ap.add_argument("--orders", default="2,3")
    a = ap.parse_args()
    run = Path(a.run)
    if not (run / "metrics.json").exists():
        raise SystemExit(f"{run}: no metrics.json — finish `aftlab run` there first")
    (run / "orders").mkdir(exist_ok=True)
    for order in map(int, a.orders.split(",")):
        for method in a.methods.split(","):
            path = run / "orders" / f"{method}@{order}.json"
            if path.exists():
                continue
            t = time.time()
            res = variant_sweep(run, {method: {"method": method}}, progress=False, batch_order=order,
                                outcomes=True)[method]
            outcomes, log = res.pop("outcomes"), res.pop("train_log")
            write_atomic(path, json.dumps({"metrics": res, "outcomes": outcomes, "seconds": round(time.time() - t),
                                           "train_log_last": log[-1]}))
            print(f"{path}: {time.time() - t:.0f} s, task {res['task_accuracy']:.4f}, "
                  f"strict {res['assessment_accuracy_strict']:.4f}, rerank {res['rerank_accuracy']:.4f}", flush=True)
