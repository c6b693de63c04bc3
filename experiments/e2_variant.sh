#!/usr/bin/env bash
# A tuned E2 on the tiny default with some settings changed: the design of the pre-registered E2s of
# experiments/INDEX.md (seed 0's validation grid chooses lr x epochs per method; the choices carried to
# VFT seeds 0, 1, 2 x batch orders 1, 2, 3; pooled paired CIs). Resumable: every stage skips what a
# previous call finished. Run from the repository root:
#   nice -n 10 experiments/e2_variant.sh NAME [KEY=VALUE ...] > runs/e2_NAME.log 2>&1
# Base runs go to runs/NAME-S; the report to experiments/e2_tune_NAME.json; the per-question outcomes
# are then copied to experiments/e2_tune_runs/NAME/seed-S (config, metrics, per_question, tune/, tuned/).
# FROM=OTHER: start each runs/NAME-S from runs/OTHER-S's VFT checkpoint and training samples (the same
# models and samples, evaluated anew) and carry the settings runs/OTHER-0's grid chose (no tuning here).
set -euo pipefail
NAME=$1; shift
PY=${PY:-.venv/bin/python}
M=${METHODS:-rft,aft_bc,aft_dc}
SETS=(); for kv in "$@"; do SETS+=(--set "$kv"); done
TUNED=runs/${FROM:-$NAME}-0
base() {
  if [ -n "${FROM:-}" ] && [ ! -d "runs/$NAME-$1/vft" ]; then
    mkdir -p "runs/$NAME-$1"; cp -r "runs/$FROM-$1/vft" "runs/$FROM-$1/samples_r1.jsonl" "runs/$NAME-$1/"
  fi
  [ -f "runs/$NAME-$1/metrics.json" ] || $PY -m aftlab.cli run --preset tiny --seed "$1" --no-progress \
    ${SETS[@]+"${SETS[@]}"} --methods rft --out "runs/$NAME-$1"; }
base 0
[ -n "${FROM:-}" ] || $PY experiments/e2_tune.py "runs/$NAME-0" --methods "$M" --tune-only
base 1
base 2
for s in 0 1 2; do
  $PY experiments/e2_tune.py "runs/$NAME-$s" --methods "$M" --settings-from "$TUNED" --orders 1,2,3
done
$PY experiments/e2_tune.py runs/"$NAME"-{0,1,2} --methods "$M" --report --json "experiments/e2_tune_$NAME.json" \
  $([ -n "${FROM:-}" ] && echo --tuning-run "$TUNED")
for s in 0 1 2; do
  d="experiments/e2_tune_runs/$NAME/seed-$s"; mkdir -p "$d"
  cp "runs/$NAME-$s"/{config,metrics,per_question}.json "$d/"; cp -r "runs/$NAME-$s"/{tune,tuned} "$d/"
done
