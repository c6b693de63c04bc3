"""Choosing the new `tiny` default: candidates screened and checked on validation questions
(pre-registration: experiments/tiny_default.md).

    python experiments/tiny_default.py screen NAME --steps N --set data.max_number=20 --set model.hidden=96
    python experiments/tiny_default.py full NAME      # 2N-step VFT, plateau CI, assessment on own samples
    python experiments/tiny_default.py report         # the table, from experiments/tiny_default_runs/*.json
    python experiments/tiny_default.py curve NAME --steps M --set ...   # a learning curve (search aid, below)

Per candidate and seed: the `e2` preset with the overrides, VFT for N steps (weights in
``runs/tiny-default/NAME-sS-N``, not committed), greedy on 10,000 validation questions of the candidate's task ->
``experiments/tiny_default_runs/NAME-sS.json``. ``full`` adds the 2N-step VFT, the paired CI of its gain, and the
N-step model's assessment accuracy on its own k = 8 samples of validation questions (grown until 1,000 are mixed).
``curve`` is a search aid, not a criterion: one M-step VFT, greedy on the first 2,000 validation questions after
each quarter of its schedule -> ``experiments/tiny_default_runs/curve-NAME-sS.json``; it shows where a candidate's
accuracy levels off before the N and 2N runs are spent on it.
"""
import argparse
import json
import os
import time
from pathlib import Path

from aftlab.config import preset, replace_path
from aftlab.data.questions import Example, synthetic_from_config, synthetic_splits
from aftlab.eval.evaluate import assessment_set, greedy, n_mixed
from aftlab.eval.metrics import assessment_accuracy, pair_wins
from aftlab.eval.stats import interval, paired_bootstrap
from aftlab.model.lm import build_lm, load_lm_from_config
from aftlab.model.runtime import set_threads
from aftlab.train.checkpoint import write_atomic
from aftlab.train.vft import train_vft

HERE = Path(__file__).parent
RESULTS = HERE / "tiny_default_runs"
WEIGHTS = Path("runs/tiny-default")
N_VAL, VAL_SEED, MIN_MIXED = int(os.environ.get("TINY_DEFAULT_NVAL", 10_000)), 2000, 1000
LOW, HIGH, MAX_ASSESS, MAX_GAIN, MAX_VFT_SECONDS = 0.35, 0.75, 0.85, 0.015, 240.0


def candidate(overrides: list[str], seed: int):
    cfg = preset("e2", seed=seed)
    for o in overrides:
        path, value = o.split("=", 1)
        cfg = replace_path(cfg, path, value)
    return cfg


def validation(cfg) -> list[Example]:
    """``N_VAL`` questions of the candidate's task (generator seed ``VAL_SEED + seed``) that are neither among its
    training nor its held-out questions."""
    d = cfg.data
    taken = {e.question for part in synthetic_from_config(d) for e in part}
    pool, _ = synthetic_splits(2 * N_VAL, 1, VAL_SEED + d.seed, d.min_steps, d.max_steps, d.max_number,
                               d.alt_reference, d.distractors)
    val = [e for e in pool if e.question not in taken][:N_VAL]
    assert len(val) == N_VAL, f"only {len(val)} validation questions outside the candidate's questions"
    return [Example(f"val-{i}", e.question, e.solution, e.answer, terms=e.terms) for i, e in enumerate(val)]


def train(cfg, steps: int, folder: Path):
    cfg.vft.steps = steps
    train_q, test_q = synthetic_from_config(cfg.data)
    lm = build_lm(cfg.model, train_q + test_q, cfg.seed)
    tick = time.time()
    hist = train_vft(lm, train_q, cfg.vft, out=folder, seed=cfg.seed, progress=False)
    return lm, time.time() - tick, hist[-1]["loss"]


def path(name: str, seed: int) -> Path:
    return RESULTS / f"{name}-s{seed}.json"


def screen(name: str, overrides: list[str], steps: int, seed: int) -> dict:
    cfg = candidate(overrides, seed)
    lm, seconds, loss = train(cfg, steps, WEIGHTS / f"{name}-s{seed}-{steps}")
    val = validation(cfg)
    rows = greedy(lm, val, cfg.sample.max_new_tokens)
    acc = sum(r["correct"] for r in rows) / len(rows)
    out = {"name": name, "seed": seed, "overrides": overrides, "steps": steps, "vft_seconds": seconds,
           "final_loss": loss, "accuracy": acc, "n_validation": len(rows),
           "vocab": len(lm.tokenizer), "correct": [int(r["correct"]) for r in rows]}
    RESULTS.mkdir(exist_ok=True)
    write_atomic(path(name, seed), json.dumps(out))
    print(f"{name} s{seed}: {steps} steps in {seconds:.0f} s, validation greedy {acc:.4f}", flush=True)
    return out


def full(name: str, seed: int) -> dict:
    run = json.loads(path(name, seed).read_text())
    cfg = candidate(run["overrides"], seed)
    val = validation(cfg)
    if "correct_2n" not in run:
        lm2, seconds2, loss2 = train(candidate(run["overrides"], seed), 2 * run["steps"],
                                     WEIGHTS / f"{name}-s{seed}-{2 * run['steps']}")
        rows = greedy(lm2, val, cfg.sample.max_new_tokens)
        run |= {"vft_seconds_2n": seconds2, "final_loss_2n": loss2, "accuracy_2n": sum(r["correct"] for r in rows) / len(rows),
                "correct_2n": [int(r["correct"]) for r in rows]}
        write_atomic(path(name, seed), json.dumps(run))
    run["gain"] = paired_bootstrap(run["correct_2n"], run["correct"])
    lm = load_lm_from_config(cfg.model, WEIGHTS / f"{name}-s{seed}-{run['steps']}", device="cpu")
    s = cfg.sample
    tick = time.time()
    records = assessment_set(lm, val, MIN_MIXED, s.k, MIN_MIXED, temperature=s.temperature, top_p=s.top_p,
                             max_new_tokens=s.max_new_tokens, seed=seed + 1, batch_questions=s.batch_questions,
                             progress=False)
    from aftlab.eval.evaluate import rescore
    scores = rescore(lm, records)
    correct = [[x["correct"] for x in r["samples"]] for r in records]
    a = assessment_accuracy(scores, correct)
    wins = [list(pair_wins(sc, c)) for sc, c in zip(scores, correct)]
    mixed = [w for w in wins if w[1]]
    run |= {"assessment": a["pairs"], "assessment_ci": interval(mixed) if mixed else None, "n_mixed": n_mixed(records),
            "n_assess_questions": len(records), "assess_seconds": time.time() - tick,
            "sample_accuracy": sum(x["correct"] * x["count"] for r in records for x in r["samples"])
            / sum(x["count"] for r in records for x in r["samples"])}
    write_atomic(path(name, seed), json.dumps(run))
    g = run["gain"]
    print(f"{name} s{seed}: 2N {run['accuracy_2n']:.4f} - N {run['accuracy']:.4f} = {100 * g['diff']:+.2f} "
          f"[{100 * g['lo']:+.2f}, {100 * g['hi']:+.2f}] points; assessment {a['pairs']:.4f} on "
          f"{run['n_mixed']} mixed questions", flush=True)
    return run


def curve(name: str, overrides: list[str], steps: int, seed: int) -> dict:
    cfg = candidate(overrides, seed)
    cfg.vft.steps, cfg.vft.checkpoint_every = steps, steps // 4
    train_q, test_q = synthetic_from_config(cfg.data)
    lm = build_lm(cfg.model, train_q + test_q, cfg.seed)
    val = validation(cfg)[:2000]
    points, tick = [], time.time()
    for quarter in range(1, 5):
        train_vft(lm, train_q, cfg.vft, out=WEIGHTS / f"curve-{name}-s{seed}", seed=seed, progress=False,
                  stop_after=quarter * steps // 4)
        elapsed = time.time() - tick
        acc = sum(r["correct"] for r in greedy(lm, val, cfg.sample.max_new_tokens)) / len(val)
        points.append({"step": quarter * steps // 4, "accuracy": acc, "vft_seconds": elapsed})
        print(f"curve {name} s{seed}: step {points[-1]['step']} greedy {acc:.4f} ({elapsed:.0f} s)", flush=True)
        tick = time.time() - elapsed
    out = {"name": name, "seed": seed, "overrides": overrides, "steps": steps, "points": points}
    RESULTS.mkdir(exist_ok=True)
    write_atomic(RESULTS / f"curve-{name}-s{seed}.json", json.dumps(out))
    return out


def verdict(r: dict) -> str:
    """The pre-registered criteria of one candidate run, as a short reading.

    >>> verdict({"accuracy": 0.5, "vft_seconds": 100, "gain": {"hi": 0.01}, "assessment": 0.8, "n_mixed": 1200})
    'meets all'
    >>> verdict({"accuracy": 0.9, "vft_seconds": 100})
    'fails: greedy 0.900 outside [0.35, 0.75]'
    """
    fails = []
    if not LOW <= r["accuracy"] <= HIGH:
        fails.append(f"greedy {r['accuracy']:.3f} outside [{LOW}, {HIGH}]")
    if r["vft_seconds"] > MAX_VFT_SECONDS:
        fails.append(f"VFT {r['vft_seconds']:.0f} s > {MAX_VFT_SECONDS:.0f} s")
    if "gain" in r and r["gain"]["hi"] >= MAX_GAIN:
        fails.append(f"2N gain CI upper end {100 * r['gain']['hi']:+.2f} >= +1.5 points")
    if "assessment" in r:
        if r["assessment"] > MAX_ASSESS:
            fails.append(f"assessment {r['assessment']:.3f} > {MAX_ASSESS}")
        if r["n_mixed"] < MIN_MIXED:
            fails.append(f"{r['n_mixed']} mixed questions < {MIN_MIXED}")
    if fails:
        return "fails: " + "; ".join(fails)
    return "meets all" if "assessment" in r else "screened in"


def report() -> list[dict]:
    rows = []
    print("| candidate | seed | overrides | N | VFT s | greedy N | greedy 2N − N (95% CI), points | assessment (95% CI) "
          "| mixed | verdict |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for p in sorted(RESULTS.glob("*.json"), key=lambda p: p.stat().st_mtime):
        if p.name.startswith("curve-"):
            c = json.loads(p.read_text())
            print(f"| {c['name']} (curve) | {c['seed']} | {' '.join(c['overrides'])} | {c['steps']:,} | "
                  f"{c['points'][-1]['vft_seconds']:.0f} | "
                  + ", ".join(f"{q['step']}: {q['accuracy']:.3f}" for q in c["points"]) + " | | | | search aid |")
            continue
        r = json.loads(p.read_text())
        if "correct_2n" in r:
            r["gain"] = paired_bootstrap(r["correct_2n"], r["correct"])
        g = r.get("gain")
        gain = f"{100 * g['diff']:+.2f} [{100 * g['lo']:+.2f}, {100 * g['hi']:+.2f}]" if g else "—"
        ci = r.get("assessment_ci")
        assess = f"{r['assessment']:.3f} [{ci['lo']:.3f}, {ci['hi']:.3f}]" if ci else "—"
        print(f"| {r['name']} | {r['seed']} | {' '.join(r['overrides'])} | {r['steps']:,} | {r['vft_seconds']:.0f} | "
              f"{r['accuracy']:.4f} | {gain} | {assess} | {r.get('n_mixed', '—')} | {verdict(r)} |")
        rows.append({k: v for k, v in r.items() if not k.startswith("correct")} | {"verdict": verdict(r)})
    write_atomic(HERE / "tiny_default.json", json.dumps(rows, indent=1))
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("stage", choices=["screen", "full", "report", "curve"])
    ap.add_argument("name", nargs="?")
    ap.add_argument("--steps", type=int)
    ap.add_argument("--set", action="append", default=[], dest="overrides", metavar="FIELD=VALUE")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", default="auto")
    a = ap.parse_args(argv)
    if a.stage == "report":
        return report()
    set_threads(a.threads)
    if a.stage == "screen":
        return screen(a.name, a.overrides, a.steps, a.seed)
    if a.stage == "curve":
        return curve(a.name, a.overrides, a.steps, a.seed)
    return full(a.name, a.seed)


if __name__ == "__main__":
    main()
