#!/usr/bin/env bash
# The untied-embeddings E2 (pre-registration: experiments/README.md, 2026-12-03 third session).
# Resumable: every stage skips what a previous call finished. Run from the repository root:
#   nice -n 10 experiments/e2_untied.sh > runs/e2_untied.log 2>&1
set -euo pipefail
PY=${PY:-.venv/bin/python}
M=rft,aft_bc,aft_dc
base() { [ -f "runs/untied-$1/metrics.json" ] || $PY -m aftlab.cli run --preset tiny --seed "$1" --no-progress \
  --set model.tie_embeddings=false --methods rft --out "runs/untied-$1"; }
base 0
$PY experiments/e2_tune.py runs/untied-0 --methods $M --tune-only
base 1
base 2
for s in 0 1 2; do
  $PY experiments/e2_tune.py runs/untied-$s --methods $M --settings-from runs/untied-0 --orders 1,2,3
done
$PY experiments/e2_tune.py runs/untied-{0,1,2} --methods $M --report --json experiments/e2_tune_untied.json
