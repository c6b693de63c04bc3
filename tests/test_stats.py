"""Paired statistics checked against independent computations (scipy) and against the metrics they
compare; the run and ``--seeds`` wiring on fake evaluations."""
import json

import numpy as np
import pytest

from aftlab.eval import stats
from aftlab.eval.metrics import assessment_accuracy, rerank_accuracy, strict_view, task_accuracy

scipy_stats = pytest.importorskip("scipy.stats")


def fake_eval(rng, n=40, k=6, methods=("vft", "rft", "aft_bc")):
    """Eval records with random labels and a fake ``evaluate()`` result per method."""
    records = []
    for _ in range(n):
        samples = []
        for _ in range(rng.integers(1, k + 1)):
            ok = bool(rng.random() < 0.5)
            samples.append({"correct": ok, "strict": ok and bool(rng.random() < 0.7)})
        records.append({"question": "q", "samples": samples})
    results = {m: {"greedy": [{"correct": bool(rng.random() < 0.4)} for _ in range(n)],
                   "scores": [np.round(rng.normal(size=len(r["samples"])), 1).tolist() for r in records]}
               for m in methods}  # rounded: some ties, which count one half
    return records, results


def test_mcnemar_matches_scipy_binomtest():
    rng = np.random.default_rng(1)
    for _ in range(30):
        n = int(rng.integers(1, 80))
        a, b = rng.random(n) < rng.random(), rng.random(n) < rng.random()
        n01, n10 = int((a & ~b).sum()), int((~a & b).sum())
        want = scipy_stats.binomtest(n01, n01 + n10, 0.5).pvalue if n01 + n10 else 1.0
        assert stats.mcnemar_exact(a, b) == pytest.approx(want, rel=1e-9)
    assert stats.mcnemar_exact([1] * 600 + [0] * 400, [0] * 600 + [1] * 400) < 1e-9  # big n: no overflow


def test_paired_bootstrap_matches_scipy_percentile_interval():
    rng = np.random.default_rng(2)
    base = rng.normal(size=60)
    a, b = base + rng.normal(0.3, 0.5, 60), base + rng.normal(0.0, 0.5, 60)  # correlated pairs
    ours = stats.paired_bootstrap(a, b, n_resamples=20_000, seed=0)
    ref = scipy_stats.bootstrap((a, b), lambda x, y, axis=-1: x.mean(axis) - y.mean(axis), paired=True,
                                vectorized=True, n_resamples=20_000, method="percentile", random_state=0)
    width = ref.confidence_interval.high - ref.confidence_interval.low
    assert ours["diff"] == pytest.approx(a.mean() - b.mean())
    assert ours["lo"] == pytest.approx(ref.confidence_interval.low, abs=0.05 * width)
    assert ours["hi"] == pytest.approx(ref.confidence_interval.high, abs=0.05 * width)
    unpaired = scipy_stats.bootstrap((a, b), lambda x, y, axis=-1: x.mean(axis) - y.mean(axis), paired=False,
                                     vectorized=True, n_resamples=5_000, method="percentile", random_state=0)
    assert ours["hi"] - ours["lo"] < 0.6 * (unpaired.confidence_interval.high - unpaired.confidence_interval.low)


def test_ratio_of_sums_interval_matches_scipy():
    """Pair-weighted assessment: wins and pairs of a question are resampled together."""
    rng = np.random.default_rng(3)
    pairs = rng.integers(1, 10, 50).astype(float)
    wa, wb = np.floor(pairs * rng.random(50) * 2) / 2, np.floor(pairs * rng.random(50) * 2) / 2
    ours = stats.paired_bootstrap(np.c_[wa, pairs], np.c_[wb, pairs], n_resamples=20_000)
    ref = scipy_stats.bootstrap((wa, pairs, wb, pairs),
                                lambda w1, p1, w2, p2, axis=-1: w1.sum(axis) / p1.sum(axis) - w2.sum(axis) / p2.sum(axis),
                                paired=True, vectorized=True, n_resamples=20_000, method="percentile",
                                random_state=0).confidence_interval
    assert ours["diff"] == pytest.approx(wa.sum() / pairs.sum() - wb.sum() / pairs.sum())
    width = ref.high - ref.low
    assert abs(ours["lo"] - ref.low) < 0.05 * width and abs(ours["hi"] - ref.high) < 0.05 * width


def test_null_intervals_cover_zero_about_95_percent():
    """Two methods that differ only by noise, on questions both mostly get right or wrong: ~95% of
    intervals hold 0. Ignoring the pairing (too wide: ~99.8% here) or a 90% interval (~90%) falls
    outside the band; its ends are 3 standard errors of 400 trials from 95%."""
    rng = np.random.default_rng(4)
    hits = 0
    for i in range(400):
        shared = rng.random(80) < rng.uniform(0.2, 0.8, 80)  # per question, common to both methods
        a, b = shared ^ (rng.random(80) < 0.1), shared ^ (rng.random(80) < 0.1)
        d = stats.paired_bootstrap(a, b, n_resamples=1_000, seed=i)
        hits += d["lo"] <= 0 <= d["hi"]
    assert 0.915 <= hits / 400 <= 0.985


def test_identical_methods_give_zero():
    rng = np.random.default_rng(5)
    x = rng.integers(0, 2, 30)
    d = stats.paired_bootstrap(x, x)
    assert d == {"diff": 0.0, "lo": 0.0, "hi": 0.0}
    assert stats.mcnemar_exact(x, x) == 1.0
    p = stats.pooled_bootstrap([(x, x), (x[:10], x[:10])])
    assert p["diff"] == 0 and p["lo"] <= 0 <= p["hi"]


def test_deterministic_and_seeded():
    rng = np.random.default_rng(6)
    a, b = rng.random(40), rng.random(40)
    assert stats.paired_bootstrap(a, b, seed=3) == stats.paired_bootstrap(a, b, seed=3)
    assert stats.paired_bootstrap(a, b, seed=3) != stats.paired_bootstrap(a, b, seed=4)


def test_outcomes_reproduce_the_metrics():
    records, results = fake_eval(np.random.default_rng(7))
    scores, correct = results["rft"]["scores"], [[s["correct"] for s in r["samples"]] for r in records]
    o = stats.question_outcomes(results["rft"], records)
    wins, pairs = np.array(o["assess"]).T
    assess = assessment_accuracy(scores, correct)
    assert wins.sum() / pairs.sum() == pytest.approx(assess["pairs"])
    assert np.mean(wins / pairs) == pytest.approx(assess["per_question"])
    assert pairs.sum() == assess["n_pairs"] and len(pairs) == assess["n_questions"]
    ws, ps = np.array(o["assess_strict"]).T
    assert ws.sum() / ps.sum() == pytest.approx(assessment_accuracy(*strict_view(scores, records))["pairs"])
    assert np.mean(o["rerank"]) == pytest.approx(rerank_accuracy(scores, correct))
    assert np.mean(o["task"]) == task_accuracy([g["correct"] for g in results["rft"]["greedy"]])
    assert stats.paired_bootstrap(o["assess"], o["assess"])["diff"] == 0


def test_comparisons_for_run_shape_and_json():
    records, results = fake_eval(np.random.default_rng(8))
    run = stats.comparisons_for_run(results, records, n_resamples=500)
    c = run["comparisons"]
    assert set(c) == {"rft", "aft_bc", "vft"} and set(c["rft"]) == {"vft"} and set(c["vft"]) == {"rft"}
    assert set(c["aft_bc"]) == {"rft", "vft"}
    assert set(c["aft_bc"]["rft"]) == set(stats.METRICS)
    for d in c["aft_bc"]["vft"].values():
        assert d["lo"] <= d["diff"] <= d["hi"]
    got = c["aft_bc"]["vft"]["assessment_accuracy"]["diff"]
    want = (assessment_accuracy(results["aft_bc"]["scores"], [[s["correct"] for s in r["samples"]] for r in records])
            ["pairs"] - assessment_accuracy(results["vft"]["scores"],
                                            [[s["correct"] for s in r["samples"]] for r in records])["pairs"])
    assert got == pytest.approx(want)
    assert 0 <= c["aft_bc"]["vft"]["task_accuracy"]["mcnemar_p"] <= 1
    assert run["n_eval_questions"] == 40 and 0 < run["n_assess_questions"] < 40
    assert run["n_rerank_questions"] == len(run["per_question"]["vft"]["rerank"]) > 0
    assert json.loads(json.dumps(run["per_question"])) == run["per_question"]
    no_rft = stats.comparisons_for_run({m: results[m] for m in ("vft", "aft_bc")}, records, n_resamples=200)
    assert no_rft["comparisons"] == {"aft_bc": {"vft": no_rft["comparisons"]["aft_bc"]["vft"]}}


def test_pooled_over_seeds_widens_when_seeds_disagree():
    rng = np.random.default_rng(9)
    seeds = []
    for shift in (0.3, 0.0, -0.1):  # the gain depends on the seed
        b = rng.random(100) < 0.5
        a = np.where(rng.random(100) < abs(shift), shift > 0, b)
        seeds.append((a, b))
    pooled = stats.pooled_bootstrap(seeds, n_resamples=2_000)
    assert pooled["diff"] == pytest.approx(np.mean([a.mean() - b.mean() for a, b in seeds]))
    flat = stats.paired_bootstrap(np.concatenate([a for a, _ in seeds]), np.concatenate([b for _, b in seeds]),
                                  n_resamples=2_000)
    assert pooled["hi"] - pooled["lo"] > 1.5 * (flat["hi"] - flat["lo"])  # seed-to-seed spread counts
    assert stats.pooled_bootstrap(seeds[:1]) == stats.paired_bootstrap(*seeds[0])


def test_cli_seeds_write_pooled_comparisons(tmp_path, monkeypatch, capsys):
    """``aftlab run --seeds`` pools each seed's ``per_question.json`` into ``aggregate.json``."""
    import aftlab.pipeline
    from aftlab.cli import main

    def fake_run(cfg, out, **kw):
        records, results = fake_eval(np.random.default_rng(cfg.seed))
        r = stats.comparisons_for_run(results, records, n_resamples=200)
        out.mkdir(parents=True)
        (out / "per_question.json").write_text(json.dumps(r["per_question"]))
        return {"methods": {m: {"task_accuracy": float(np.mean(o["task"])), "assessment_accuracy": 0.5,
                                "rerank_accuracy": 0.5} for m, o in r["per_question"].items()}}
    monkeypatch.setattr(aftlab.pipeline, "run", fake_run)
    assert main(["run", "--preset", "smoke", "--seeds", "0,1,2", "--out", str(tmp_path), "--no-progress"]) == 0
    agg = json.loads((tmp_path / "aggregate.json").read_text())
    d = agg["comparisons"]["aft_bc"]["rft"]["task_accuracy"]
    assert d["lo"] <= d["diff"] <= d["hi"] and 0 <= d["mcnemar_p"] <= 1
    assert d["diff"] == pytest.approx(agg["aft_bc"]["task_accuracy"]["mean"] - agg["rft"]["task_accuracy"]["mean"])


def test_describe_in_points():
    d = {"diff": -0.052, "lo": -0.09, "hi": -0.011, "mcnemar_p": 0.012}
    text = stats.describe("align_only", "vft", "task_accuracy", d)
    assert text.startswith("align_only − vft on task_accuracy: −5.2 [−9.0, −1.1] points — distinguishable")
    assert "McNemar p = 0.012" in text
    assert "not distinguishable" in stats.describe("a", "b", "m", {"diff": 0.0, "lo": -0.01, "hi": 0.01})


def test_a_metric_without_questions_is_left_out():
    o = {"vft": {"task": [0, 1], "rerank": [1], "assess": [[1, 2]], "assess_strict": []},
         "rft": {"task": [1, 1], "rerank": [0], "assess": [[2, 2]], "assess_strict": []}}
    c = stats.comparisons(o, n_resamples=100)
    assert set(c["rft"]["vft"]) == set(stats.METRICS) - {"assessment_accuracy_strict"}
    assert c["rft"]["vft"]["rerank_accuracy"]["diff"] == -1.0


def test_merge_orders_gives_each_metric_as_its_mean_over_the_runs():
    """Merged over batch orders, every metric equals the mean of the runs' own metrics (pairs per
    question are the same in every run, since they depend on the labels only); McNemar, which needs
    0/1 outcomes, is left out of order-averaged comparisons rather than run on fractions."""
    rng = np.random.default_rng(3)
    pairs = rng.integers(1, 5, size=40)
    runs = [{"task": rng.integers(0, 2, 60).tolist(), "rerank": rng.integers(0, 2, 40).tolist(),
             "assess": [[float(rng.integers(0, p + 1)), int(p)] for p in pairs],
             "assess_strict": [[float(rng.integers(0, p + 1)), int(p)] for p in pairs[:25]]} for _ in range(3)]
    merged = stats.merge_orders(runs)
    for metric in stats.METRICS:
        want = np.mean([stats._diff(stats._per_question(r, metric), np.zeros((1, 2)) + [0, 1]) for r in runs])
        got = stats._diff(stats._per_question(merged, metric), np.zeros((1, 2)) + [0, 1])
        if metric != "assessment_per_question":  # a mean of per-question shares is not linear in wins
            assert got == pytest.approx(want, abs=1e-12), metric
    c = stats.pooled_comparisons([{"vft": runs[0], "rft": merged, "aft_bc": stats.merge_orders(runs[::-1])}])
    assert c["aft_bc"]["rft"]["task_accuracy"]["diff"] == pytest.approx(0, abs=1e-12)
    assert "mcnemar_p" not in c["aft_bc"]["rft"]["task_accuracy"]
    with pytest.raises(ValueError, match="task"):
        stats.merge_orders([runs[0], dict(runs[1], task=runs[1]["task"][:-1])])
