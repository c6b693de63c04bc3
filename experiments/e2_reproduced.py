"""Does a re-evaluated E2 reproduce the one it extends? (pre-registration: experiments/e2_powered.md,
check 2)

    python experiments/e2_reproduced.py experiments/e2_tune_runs/new runs/new runs/powered
    #                                   OLD outcomes (seed-S/)      OLD runs  NEW runs (-S)

For S = 0, 1, 2: the VFT model's samples in ``OLD_RUNS-S/eval_samples.jsonl`` are the first records of
``NEW_RUNS-S``'s, and VFT and every tuned model of ``OLD/seed-S`` have, on the questions OLD evaluated (a
prefix of NEW's held-out lists), the same per-question outcomes in NEW. Prints one line per comparison and
exits 1 on any difference.
"""
import argparse
import json
from pathlib import Path


def prefix_equal(old: dict, new: dict) -> list[str]:
    """The outcome lists of ``old`` that are not the start of ``new``'s, by name.

    >>> prefix_equal({"task": [1, 0], "rerank": [1]}, {"task": [1, 0, 1], "rerank": [0, 1]})
    ['rerank']
    """
    return [k for k in old if new[k][:len(old[k])] != old[k]]


def main(old_root: str, old_runs: str, new_runs: str) -> int:
    bad = 0
    for s in (0, 1, 2):
        old, new = Path(old_root) / f"seed-{s}", Path(f"{new_runs}-{s}")
        base = Path(f"{old_runs}-{s}") / "eval_samples.jsonl"
        if base.exists():
            a = base.read_text().splitlines()
            b = (new / "eval_samples.jsonl").read_text().splitlines()[:len(a)]
            same = [json.loads(x) for x in a] == [json.loads(x) for x in b]
            print(f"seed {s}: VFT samples of the first {len(a)} questions {'equal' if same else 'DIFFER'}")
            bad += not same
        vft_old = json.loads((old / "per_question.json").read_text())["vft"]
        vft_new = json.loads((new / "per_question.json").read_text())["vft"]
        diff = prefix_equal(vft_old, vft_new)
        print(f"seed {s}: vft outcomes {'equal' if not diff else 'DIFFER in ' + ', '.join(diff)}")
        bad += bool(diff)
        for p in sorted((old / "tuned").glob("*.json")):
            q = new / "tuned" / p.name
            if not q.exists():
                print(f"seed {s}: {p.stem} not re-run")
                continue
            diff = prefix_equal(json.loads(p.read_text())["outcomes"], json.loads(q.read_text())["outcomes"])
            print(f"seed {s}: {p.stem} outcomes {'equal' if not diff else 'DIFFER in ' + ', '.join(diff)}")
            bad += bool(diff)
    return int(bad > 0)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("old", help="committed outcomes of the earlier evaluation (folders seed-S)")
    ap.add_argument("old_runs", help="the earlier runs' prefix (folders OLD_RUNS-S)")
    ap.add_argument("new_runs", help="the new runs' prefix (folders NEW_RUNS-S)")
    a = ap.parse_args()
    raise SystemExit(main(a.old, a.old_runs, a.new_runs))
