"""VFT recipe study: more distinct training questions vs more passes over fewer (pre-registration:
experiments/vft_recipe.md). Chooses on validation questions, never on the held-out set.

    python experiments/vft_recipe.py --seeds 0,1,2 --arm A --existing runs/e2-{seed}/vft
    python experiments/vft_recipe.py --seeds 0,1,2 --arm B --n-train 200000 --steps 1500
    python experiments/vft_recipe.py --report
    python experiments/vft_recipe.py --heldout C --seeds 0,1,2   # after the choice: the held-out figure
    python experiments/vft_recipe.py --plateau D C --seeds 0      # D - C on validation, paired (experiments/vft_plateau.md)

Per (arm, seed): trains the VFT of preset ``tiny`` with ``data.n_train`` and ``vft.steps`` overridden
(weights in ``runs/vft-recipe/ARM-SEED``, not committed) or loads an existing one, then greedy-decodes the
seed's validation questions (:func:`validation`) -> ``experiments/vft_recipe_runs/ARM-SEED.json`` (accuracy
and the per-question outcomes). ``--report`` applies the pre-registered rule (:func:`decide`).
"""
import argparse
import json
import time
from pathlib import Path

from aftlab.config import preset
from aftlab.data.questions import Example, synthetic_from_config, synthetic_splits
from aftlab.eval.evaluate import greedy
from aftlab.eval.stats import mcnemar_exact, paired_bootstrap
from aftlab.model.lm import build_lm, load_lm_from_config
from aftlab.model.runtime import set_threads
from aftlab.train.checkpoint import write_atomic
from aftlab.train.vft import train_vft

HERE = Path(__file__).parent
RESULTS = HERE / "vft_recipe_runs"
N_VAL, VAL_SEED, EXCLUDE = 2000, 1000, 205_000  # validation size, generator offset, stream prefix kept out
BAR, SPREAD, GAIN = 0.90, 0.05, 0.03


def validation(seed: int, n: int = N_VAL) -> list[Example]:
    """``n`` questions of the training distribution (generator seed ``VAL_SEED + seed``), none of which is
    among the first ``EXCLUDE`` questions of seed ``seed``'s stream (every arm's training and held-out split)."""
    cfg = preset("tiny", seed=seed).data
    taken = {e.question for part in synthetic_splits(EXCLUDE - 1, 1, seed, cfg.min_steps, cfg.max_steps,
                                                     cfg.max_number, cfg.alt_reference, cfg.distractors) for e in part}
    pool, _ = synthetic_splits(2 * n, 1, VAL_SEED + seed, cfg.min_steps, cfg.max_steps, cfg.max_number,
                               cfg.alt_reference, cfg.distractors)
    val = [e for e in pool if e.question not in taken][:n]
    assert len(val) == n, f"only {len(val)} validation questions outside the training stream"
    return [Example(f"val-{i}", e.question, e.solution, e.answer, terms=e.terms) for i, e in enumerate(val)]


def run_one(arm: str, seed: int, n_train: int | None, steps: int | None, existing: str | None) -> dict:
    cfg = preset("tiny", seed=seed)
    if n_train:
        cfg.data.n_train = n_train
    if steps:
        cfg.vft.steps = steps
    tick = time.time()
    if existing:
        folder = Path(existing.format(seed=seed))
        lm = load_lm_from_config(cfg.model, folder, device="cpu")
        history = json.loads((folder / "history.json").read_text())  # the VFT log: a list of rows, as train_vft returns
        seconds = None
    else:
        train, test = synthetic_from_config(cfg.data)
        lm = build_lm(cfg.model, train + test, seed)
        history = train_vft(lm, train, cfg.vft, out=Path("runs/vft-recipe") / f"{arm}-{seed}", seed=seed)
        seconds = time.time() - tick
    rows = greedy(lm, validation(seed), cfg.sample.max_new_tokens)
    acc = sum(r["correct"] for r in rows) / len(rows)
    out = {"arm": arm, "seed": seed, "n_train": cfg.data.n_train, "steps": cfg.vft.steps,
           "validation_accuracy": acc, "n_validation": len(rows), "vft_seconds": seconds,
           "final_loss": history[-1]["loss"], "correct": [int(r["correct"]) for r in rows]}
    RESULTS.mkdir(exist_ok=True)
    write_atomic(RESULTS / f"{arm}-{seed}.json", json.dumps(out))
    print(f"{arm} seed {seed}: validation greedy {acc:.4f} (VFT {seconds or 0:.0f} s)", flush=True)
    return out


def decide(acc: dict[str, dict[int, float]]) -> str:
    """The pre-registered rule over ``{arm: {seed: validation accuracy}}`` (arms A, B, C; B before C).

    >>> decide({"A": {0: .85, 1: .81, 2: .95}, "B": {0: .92, 1: .91, 2: .94}})
    'B: min 0.910 >= 0.900, spread 0.030 <= 0.05'
    >>> decide({"A": {0: .85, 1: .81, 2: .95}, "B": {0: .86, 1: .80, 2: .95}, "C": {0: .88, 1: .86, 2: .96}})
    'C: min 0.860 exceeds A by 0.050 (bar not met)'
    """
    lo_a = min(acc["A"].values())
    for arm in ("B", "C"):
        if arm in acc:
            lo, hi = min(acc[arm].values()), max(acc[arm].values())
            if lo >= max(BAR, lo_a) and hi - lo <= SPREAD:
                return f"{arm}: min {lo:.3f} >= {max(BAR, lo_a):.3f}, spread {hi - lo:.3f} <= {SPREAD}"
    if "C" in acc and min(acc["C"].values()) - lo_a >= GAIN:
        return f"C: min {min(acc['C'].values()):.3f} exceeds A by {min(acc['C'].values()) - lo_a:.3f} (bar not met)"
    return "A stays" + ("" if "C" in acc else " (C not run)")


def heldout(arm: str, seeds: list[int]) -> dict:
    """Held-out greedy accuracy of an arm's VFT models (the ``data.n_test`` questions that follow its
    training questions): reported after the choice, never used for it."""
    out = {}
    for seed in seeds:
        run = json.loads((RESULTS / f"{arm}-{seed}.json").read_text())
        cfg = preset("tiny", seed=seed)
        cfg.data.n_train = run["n_train"]
        _, test = synthetic_from_config(cfg.data)
        lm = load_lm_from_config(cfg.model, Path("runs/vft-recipe") / f"{arm}-{seed}", device="cpu")
        rows = greedy(lm, test, cfg.sample.max_new_tokens)
        out[seed] = sum(r["correct"] for r in rows) / len(rows)
        print(f"{arm} seed {seed}: held-out greedy {out[seed]:.4f} on {len(rows):,} questions", flush=True)
    write_atomic(HERE / f"vft_recipe_heldout_{arm}.json", json.dumps({"arm": arm, "heldout_accuracy": out}))
    return out


def plateau(longer: str, base: str, seeds: list[int]) -> dict:
    """Paired validation comparison of two arms on the same questions (pre-registered 2026-12-03,
    experiments/vft_plateau.md): ``longer`` − ``base`` greedy accuracy per seed, bootstrap 95% CI and exact McNemar p, and the
    rule's reading (at the plateau: CI upper end < +1 point; more steps pay: lower end > 0)."""
    out = {}
    for seed in seeds:
        a, b = (json.loads((RESULTS / f"{arm}-{seed}.json").read_text()) for arm in (longer, base))
        d = paired_bootstrap(a["correct"], b["correct"])
        d["mcnemar_p"] = mcnemar_exact(a["correct"], b["correct"])
        d["reading"] = ("at the plateau" if d["hi"] < 0.01 else "more steps pay" if d["lo"] > 0
                        else "inconclusive")
        out[seed] = d
        print(f"seed {seed}: {longer} ({a['steps']:,} steps) {a['validation_accuracy']:.4f} - {base} "
              f"({b['steps']:,}) {b['validation_accuracy']:.4f} = {100 * d['diff']:+.2f} points "
              f"[{100 * d['lo']:+.2f}, {100 * d['hi']:+.2f}], McNemar p {d['mcnemar_p']:.3g}: {d['reading']}")
    write_atomic(HERE / f"vft_plateau_{longer}_{base}.json", json.dumps(out, indent=1))
    return out


def report() -> dict:
    rows = [json.loads(p.read_text()) for p in sorted(RESULTS.glob("*.json"))]
    acc: dict[str, dict[int, float]] = {}
    for r in rows:
        acc.setdefault(r["arm"], {})[r["seed"]] = r["validation_accuracy"]
        print(f"| {r['arm']} | {r['seed']} | {r['n_train']:,} | {r['steps']:,} | {r['validation_accuracy']:.4f} | "
              f"{r['final_loss']:.4f} | {r['vft_seconds'] or 0:.0f} |")
    verdict = decide(acc) if "A" in acc else "A missing"
    print("rule:", verdict)
    summary = {"accuracy": acc, "verdict": verdict,
               "runs": [{k: v for k, v in r.items() if k != "correct"} for r in rows]}
    write_atomic(HERE / "vft_recipe.json", json.dumps(summary, indent=1))
    return summary


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arm")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--n-train", type=int)
    ap.add_argument("--steps", type=int)
    ap.add_argument("--existing", help="VFT folder pattern with {seed}: evaluate instead of training")
    ap.add_argument("--threads", default="auto")
    ap.add_argument("--report", action="store_true")
    ap.add_argument("--heldout", metavar="ARM", help="held-out greedy accuracy of ARM's trained models")
    ap.add_argument("--plateau", nargs=2, metavar=("LONGER", "BASE"), help="paired validation difference of two arms")
    a = ap.parse_args(argv)
    if a.report:
        return report()
    if a.plateau:
        return plateau(*a.plateau, [int(x) for x in a.seeds.split(",")])
    set_threads(a.threads)
    if a.heldout:
        return heldout(a.heldout, [int(x) for x in a.seeds.split(",")])
    for s in (int(x) for x in a.seeds.split(",")):
        if not (RESULTS / f"{a.arm}-{s}.json").exists():
            run_one(a.arm, s, a.n_train, a.steps, a.existing)


if __name__ == "__main__":
    main()
