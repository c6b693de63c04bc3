#!/usr/bin/env bash
# The candidates of experiments/tiny_default.md, in the order they were run (appended as the search went on).
# Each line screens one candidate (N-step VFT, validation greedy); `full` adds the 2N run and the assessment sample.
set -euo pipefail
cd "$(dirname "$0")/.."
T="python experiments/tiny_default.py"
S="--set data.n_test=2000"
$T screen c1 --steps 1500 $S --set model.hidden=64 --set model.ffn=256 --set model.heads=2 --set model.layers=2 --set data.n_train=20000
$T screen c2 --steps 1200 $S --set model.hidden=96 --set model.ffn=384 --set model.layers=2 --set data.n_train=20000 --set data.max_number=20
$T screen c3 --steps 800 $S --set model.layers=2 --set data.n_train=4000
$T screen c4 --steps 1200 $S --set model.hidden=96 --set model.ffn=384 --set model.layers=2 --set data.n_train=50000 --set data.min_steps=2 --set data.max_steps=3 --set data.max_number=30
# after c1-c4 (all far below 0.35 at N): learning curves (search aids), then the formal N / 2N runs of the best
$T curve c5 --steps 2400 $S --set model.hidden=96 --set model.ffn=384 --set model.layers=2 --set data.n_train=20000 --set data.min_steps=2 --set data.max_steps=3
D="$S --set model.hidden=96 --set model.ffn=384 --set model.layers=2 --set data.min_steps=2 --set data.max_steps=3"
$T curve c9 --steps 1600 $D --set data.n_train=3000
$T curve c11 --steps 2400 $S --set model.hidden=64 --set model.ffn=256 --set model.heads=2 --set model.layers=2 --set data.min_steps=2 --set data.max_steps=3 --set data.n_train=20000 --set vft.lr=3e-3
$T screen c9 --steps 1200 $D --set data.n_train=3000 && $T full c9
$T curve c12 --steps 1600 $D --set data.n_train=3000 --set vft.lr=5e-3
$T curve c13 --steps 1600 $D --set data.n_train=2000 --set vft.lr=5e-3
$T screen c9b --steps 1600 $D --set data.n_train=3000 && $T full c9b
# after the choice (c9, N = 1,200): criteria 1-2 on seeds 1 and 2, as pre-registered
for seed in 1 2; do $T screen c9 --seed $seed --steps 1200 $D --set data.n_train=3000 && $T full c9 --seed $seed; done
