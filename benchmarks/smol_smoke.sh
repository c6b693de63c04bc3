#!/usr/bin/env bash
# The performance issue's 4-question smol smoke run, timed: wall seconds, stage seconds and the autocast
# the run chose. Extra arguments go to `aftlab run` (e.g. --set model.autocast=off). One run is not a
# measurement (±20% between runs on a 2-core VM); compare commits by running this from each checkout.
#   benchmarks/smol_smoke.sh [--set KEY=VALUE ...]
set -euo pipefail
PY=${PY:-.venv/bin/python}
out=$(mktemp -d /tmp/smol-smoke.XXXX)
start=$(date +%s.%N)
$PY -m aftlab.cli run --preset smol --set vft.steps=4 --set sample.n_questions=4 --set data.n_test=4 \
  --methods rft,aft_bc --no-progress --out "$out" "$@" > "$out.log" 2>&1
end=$(date +%s.%N)
$PY -c "import json,sys; m=json.load(open('$out/metrics.json')); print(f'{$end-$start:.1f} s wall;',
  {k: round(v, 1) for k, v in m['stage_seconds'].items()}, 'autocast', m.get('autocast'))"
