#!/usr/bin/env bash
# E2 on the tiny default (pre-registration: experiments/e2_tiny.md). Run from the repository root:
#   nice -n 10 experiments/e2_tiny.sh > runs/e2_tiny.log 2>&1
# Base runs go to runs/e2tiny-S: each starts from runs/tiny-S's VFT model, samples and VFT evaluation when that run
# exists (the same models: `aftlab run --preset tiny --seed S`, experiments/tiny_e1e3.py), else trains them. Then
# seed 0's validation grid, the held-out stage (3 seeds x batch orders 1, 2, 3), the report, and the per-question
# outcomes copied to experiments/e2_tune_runs/tiny/seed-S. Resumable: every stage skips what has finished.
set -euo pipefail
PY=${PY:-python}
M=rft,aft_bc,aft_dc,aft_rbc,vft_cont
for s in 0 1 2; do
  d=runs/e2tiny-$s
  if [ -f "runs/tiny-$s/metrics.json" ] && [ ! -d "$d" ]; then
    mkdir -p "$d/evals"
    cp -r runs/tiny-$s/{vft,samples_r1.jsonl,eval_samples.jsonl,stages.json,config.json} "$d/"
    cp "runs/tiny-$s/evals/vft.json" "$d/evals/"
  fi
  [ -f "$d/metrics.json" ] || $PY -m aftlab.cli run --preset tiny --seed "$s" --no-progress --methods rft --out "$d"
done
$PY experiments/e2_tune.py runs/e2tiny-0 --methods $M --tune-only
for s in 0 1 2; do
  $PY experiments/e2_tune.py "runs/e2tiny-$s" --methods $M --settings-from runs/e2tiny-0 --orders 1,2,3
done
$PY experiments/e2_tune.py runs/e2tiny-{0,1,2} --methods $M --report --baselines rft,vft,vft_cont \
  --json experiments/e2_tune_tiny.json
for s in 0 1 2; do
  d="experiments/e2_tune_runs/tiny/seed-$s"; mkdir -p "$d"
  cp "runs/e2tiny-$s"/{config,metrics,per_question}.json "$d/"; cp -r "runs/e2tiny-$s"/{tune,tuned} "$d/"
done
