"""Does `--preset e2` (the powered default, `tiny` until 2026-12-07) still reproduce the committed E2 seed-0 run?

    aftlab run --preset e2 --seed 0 --methods rft --out runs/e2-0
    python experiments/e2_preset_check.py runs/e2-0     # -> experiments/e2_preset_check.json

Compares the run's VFT and RFT with `experiments/e2_tune_runs/powered/seed-0` (the same preset, seed and methods,
run on 2026-12-03): every metric, and the per-question outcomes (greedy right or wrong per held-out question;
rerank hit and assessment wins per question of the assessment set). Since 2026-12-07 a sampled COT that never
finished has no answer and enters no right/wrong pair, so assessment may move where the assessment set holds such
COTs; the check counts them.
"""
import argparse
import json
from pathlib import Path

from aftlab.train.checkpoint import write_atomic

HERE = Path(__file__).parent
COMMITTED = HERE / "e2_tune_runs" / "powered" / "seed-0"


def differences(a: dict, b: dict, keys=("task", "rerank", "assess", "assess_strict")) -> dict[str, int]:
    """Per outcome list, how many questions differ between two ``per_question.json`` entries (-1: lengths differ).

    >>> differences({"task": [1, 0], "rerank": [1]}, {"task": [1, 1], "rerank": [1]}, ("task", "rerank"))
    {'task': 1, 'rerank': 0}
    """
    return {k: -1 if len(a[k]) != len(b[k]) else sum(x != y for x, y in zip(a[k], b[k])) for k in keys}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run")
    a = ap.parse_args(argv)
    run = Path(a.run)
    new_m, old_m = (json.loads((d / "metrics.json").read_text()) for d in (run, COMMITTED))
    new_q, old_q = (json.loads((d / "per_question.json").read_text()) for d in (run, COMMITTED))
    unfinished = sum(not s.get("finished", True) for line in (run / "eval_samples.jsonl").read_text().splitlines()
                     for s in json.loads(line)["samples"])
    out = {"run": str(run), "committed": str(COMMITTED), "unfinished_eval_samples": unfinished, "methods": {}}
    for m in ("vft", "rft"):
        keys = sorted(set(new_m["methods"][m]) & set(old_m["methods"][m]))
        out["methods"][m] = {"metrics": {k: [old_m["methods"][m][k], new_m["methods"][m][k]] for k in keys
                                         if old_m["methods"][m][k] != new_m["methods"][m][k]},
                             "questions_differing": differences(new_q[m], old_q[m])}
    out["same"] = all(not v["metrics"] and not any(v["questions_differing"].values()) for v in out["methods"].values())
    out["seconds"] = {"new": new_m.get("stage_seconds"), "committed": old_m.get("stage_seconds")}
    write_atomic(HERE / "e2_preset_check.json", json.dumps(out, indent=1))
    print(json.dumps({k: v for k, v in out.items() if k != "seconds"}, indent=1))


if __name__ == "__main__":
    main()
