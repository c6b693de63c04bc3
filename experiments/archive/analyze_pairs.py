"""Held-out (right, wrong) pairs of a run split by kind, scored by one model.

    python experiments/archive/analyze_pairs.py runs/b32-0 [MODEL_DIR]   # default MODEL_DIR: RUN/vft

Kinds: whether the right COT is step-valid ("strict") or reaches the right answer through a wrong
step ("lucky"), and whether the two COTs share their first step (>= 6 tokens of common prefix).
Prints pair counts and the share the model ranks right.
"""
import json
import sys

import torch

from aftlab.align.credit import shared_prefix
from aftlab.config import from_dict
from aftlab.eval.evaluate import rescore
from aftlab.model.lm import load_lm_from_config
from aftlab.sampling.samples import read_samples

torch.set_num_threads(1)
run = sys.argv[1]
model = sys.argv[2] if len(sys.argv) > 2 else run + "/vft"
recs = read_samples(run + "/eval_samples.jsonl")
with open(run + "/config.json") as f:
    lm = load_lm_from_config(from_dict(json.load(f)).model, model)  # as the run ran it
kinds: dict[str, list[int]] = {}
for r, sc in zip(recs, rescore(lm, recs)):
    cots = r["samples"]
    ids = [lm.cot_ids(c["cot"]) for c in cots]
    for i, right in enumerate(cots):
        for j, wrong in enumerate(cots):
            if right["correct"] and not wrong["correct"]:
                start = "same_start" if shared_prefix(ids[j], [ids[i]]) >= 6 else "diff_start"
                key = f"{start}/{'strict' if right['strict'] else 'lucky'}_right"
                k = kinds.setdefault(key, [0, 0])
                k[0] += sc[i] > sc[j]
                k[1] += 1
for key, (ok, n) in sorted(kinds.items()):
    print(f"{key:28s} pairs {n:5d}  ranked right {ok / n:.3f}")
