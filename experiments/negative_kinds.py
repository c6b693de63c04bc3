"""What kind of wrong COTs a run's VFT model samples on the held-out assessment questions.

    python experiments/negative_kinds.py runs/new-0 runs/distract-0 [...]

Counts the sampled COTs of ``RUN/eval_samples.jsonl`` (with their multiplicity, ``count``): right ones, and
wrong ones split into *slips* (some step's claimed result is wrong: ``answers.step_quality`` < 1, as stored
in each sample's ``quality``) and *choices* (every step's arithmetic right, the answer wrong: a wrong plan,
e.g. a number the question gave but did not ask to use). Prints one line per run and the share of choices
among the negatives (the wrong-choice E2's manipulation check, experiments/e2_wrong_choice.md).
"""
import argparse
import json
from pathlib import Path


def kinds(run: str | Path) -> dict[str, int]:
    counts = {"right": 0, "slip": 0, "choice": 0}
    with open(Path(run) / "eval_samples.jsonl") as f:
        for line in f:
            for s in json.loads(line)["samples"]:
                kind = "right" if s["correct"] else "slip" if s["quality"] < 1.0 else "choice"
                counts[kind] += s.get("count", 1)
    return counts


def main(runs: list[str]) -> None:
    for run in runs:
        c = kinds(run)
        neg = c["slip"] + c["choice"]
        print(f"{run}: right {c['right']:,}, slips {c['slip']:,}, choices {c['choice']:,}; "
              f"choices among negatives {c['choice'] / max(neg, 1):.1%}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", help="run folders holding eval_samples.jsonl")
    main(ap.parse_args().runs)
