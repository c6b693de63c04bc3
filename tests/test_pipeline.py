import json
from pathlib import Path

import pytest

from aftlab.cli import main

REQUIRED = {"task_accuracy", "assessment_accuracy", "rerank_accuracy", "mean_pos_score", "mean_neg_score",
            "repetition_rate", "self_consistency", "sample_accuracy", "perplexity"}


def test_smoke_run_writes_metrics_and_report(smoke_run):
    out, metrics = smoke_run
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["preset"] == "smoke" and saved["seed"] == 0 and saved["seconds"] > 0
    assert set(saved["methods"]) == {"vft", "rft", "aft_bc", "aft_dc", "align_only"}
    for m in saved["methods"].values():
        assert REQUIRED <= set(m)
        assert 0 <= m["task_accuracy"] <= 1 and 0 <= m["repetition_rate"] <= 1
        assert 0 <= m["self_consistency"] <= 1 and 0 <= m["sample_accuracy"] <= 1 and m["perplexity"] >= 1
    html = (out / "report.html").read_text()
    assert "plotly" in html.lower() and "Accuracy per method" in html and "What this run found" in html
    assert len(html) > 1_000_000  # plotly.js is inlined: the report opens offline


def test_smoke_run_learned(smoke_run):
    out, metrics = smoke_run
    hist = json.loads((out / "vft_history.json").read_text())
    assert hist[-1]["loss"] < 0.5 * hist[0]["loss"]
    greedy = json.loads((out / "greedy.json").read_text())["vft"]
    assert sum("####" in g["cot"] for g in greedy) >= 0.8 * len(greedy)  # learned the COT format
    assert metrics["methods"]["vft"]["n_pairs"] > 0


def test_self_consistency_is_the_majority_vote_of_the_models_own_samples(smoke_run):
    """VFT's figure comes from the fixed sample set (its own samples), recomputed here by hand."""
    from collections import Counter

    from aftlab.config import preset
    from aftlab.data.answers import is_correct
    from aftlab.sampling.samples import read_samples
    out, metrics = smoke_run
    n = min(preset("smoke").sc_questions, preset("smoke").data.n_test)
    hits = 0
    for r in read_samples(out / "eval_samples.jsonl")[:n]:
        votes = Counter()
        for s in r["samples"]:
            if s["answer"] is not None:
                votes[s["answer"]] += s["count"]
        hits += bool(votes) and is_correct(f"#### {votes.most_common(1)[0][0]}", r["answer"])
    assert metrics["methods"]["vft"]["self_consistency"] == hits / n


def test_rerun_reuses_cached_stages_only_under_the_same_settings(smoke_run, capsys, tmp_path):
    """The same settings reuse every cached stage; another held-out k resamples the assessment set and
    evaluates again, and says so (a re-run once reused the old samples under the new config.json)."""
    import os
    import shutil
    out = tmp_path / "rerun"  # a copy: the rerun rewrites config.json / metrics.json, which other tests read
    shutil.copytree(smoke_run[0], out)
    before = (out / "eval_samples.jsonl").read_text()
    vft_written = os.path.getmtime(out / "vft" / "model.safetensors")
    assert main(["run", "--preset", "smoke", "--out", str(out), "--methods", "rft", "--no-progress"]) == 0
    said = capsys.readouterr().out
    assert "reusing (same settings; an interrupted stage resumes): vft, eval_samples, samples_r1, eval/vft, " \
           "align/rft_r1, model/rft, eval/rft" in said and "wrote" in said
    assert (out / "eval_samples.jsonl").read_text() == before
    assert main(["run", "--preset", "smoke", "--out", str(out), "--methods", "rft", "--set", "eval_k=3",
                 "--no-progress"]) == 0
    said = capsys.readouterr().out
    assert "eval_samples: settings changed (eval_k 4 -> 3): resampling; downstream: eval/vft, eval/rft, results" in said
    assert {r["n_sampled"] for r in map(json.loads, (out / "eval_samples.jsonl").read_text().splitlines())} == {3}
    assert os.path.getmtime(out / "vft" / "model.safetensors") == vft_written  # VFT does not read eval_k
    assert json.loads((out / "metrics.json").read_text())["methods"].keys() == {"vft", "rft"}


def test_cli_user_errors_exit_2_without_traceback(capsys, tmp_path):
    assert main(["run", "--preset", "smoke", "--out", str(tmp_path), "--set", "align.beta=-1"]) == 2
    err = capsys.readouterr().err
    assert "align.beta" in err and "Traceback" not in err
    assert main(["run", "--preset", "smoke", "--out", str(tmp_path), "--set", "sample.k=zero"]) == 2
    assert main(["run", "--preset", "smoke", "--out", str(tmp_path), "--set", "nope.x=1"]) == 2
    assert main(["run", "--preset", "smoke", "--out", str(tmp_path), "--data", str(tmp_path / "none.jsonl")]) == 2
    assert "none.jsonl" in capsys.readouterr().err


def test_stage_commands_on_a_finished_run(smoke_run, tmp_path, capsys):
    out, _ = smoke_run
    s = tmp_path / "s.jsonl"
    assert main(["sample", "--preset", "smoke", "--model", str(out / "vft"), "--out", str(s), "--no-progress",
                 "--set", "sample.n_questions=6"]) == 0
    assert len(s.read_text().splitlines()) == 6
    assert main(["align", "--preset", "smoke", "--model", str(out / "vft"), "--samples", str(s), "--method", "aft_bc",
                 "--out", str(tmp_path / "bc"), "--no-progress"]) == 0
    assert main(["eval", "--preset", "smoke", "--model", str(tmp_path / "bc"), "--eval-samples",
                 str(out / "eval_samples.jsonl"), "--out", str(tmp_path / "m.json"), "--no-progress"]) == 0
    assert "assessment_accuracy" in json.loads((tmp_path / "m.json").read_text())


def test_beta_sweep_from_cli(smoke_run, capsys):
    out, _ = smoke_run
    assert main(["sweep-beta", "--run", str(out), "--betas", "0.01,3", "--no-progress"]) == 0
    rows = json.loads((out / "beta_sweep.json").read_text())
    assert [r["beta"] for r in rows] == [0.01, 3.0]
    assert (out / "beta_sweep.html").is_file()


def test_align_stage_reproduces_the_runs_model(smoke_run, tmp_path):
    """`aftlab align` on a run's VFT model and samples trains the model `aftlab run` trained (same batch order)."""
    import torch

    from aftlab.model.lm import load_lm
    out, _ = smoke_run
    assert main(["align", "--preset", "smoke", "--seed", "0", "--model", str(out / "vft"), "--samples",
                 str(out / "samples_r1.jsonl"), "--method", "aft_dc", "--out", str(tmp_path / "dc"),
                 "--no-progress"]) == 0
    mine, theirs = load_lm(tmp_path / "dc").model.state_dict(), load_lm(out / "aft_dc").model.state_dict()
    vft = load_lm(out / "vft").model.state_dict()
    assert any(not torch.equal(vft[k], theirs[k]) for k in theirs)  # alignment changed the weights
    assert max(float((mine[k] - theirs[k]).abs().max()) for k in theirs) <= 1e-6


def test_smoke_run_writes_paired_comparisons(smoke_run):
    """metrics.json compares every method with rft and vft question by question; per_question.json
    holds what the intervals were computed from."""
    import pytest
    out, metrics = smoke_run  # the files on disk may come from a later re-run with fewer methods
    saved = json.loads((out / "metrics.json").read_text())
    per_q = json.loads((out / "per_question.json").read_text())
    assert set(per_q) == set(saved["methods"]) and len(per_q["vft"]["task"]) == saved["n_eval_questions"]
    assert saved["n_assess_questions"] == len(per_q["vft"]["assess"]) > 0
    c, m = metrics["comparisons"], metrics["methods"]
    assert set(c) == set(m) and set(c["aft_bc"]) == {"rft", "vft"} and set(c["vft"]) == {"rft"}
    d = c["aft_bc"]["vft"]["task_accuracy"]
    assert d["diff"] == pytest.approx(m["aft_bc"]["task_accuracy"] - m["vft"]["task_accuracy"])
    assert d["lo"] <= d["diff"] <= d["hi"] and 0 <= d["mcnemar_p"] <= 1
    a = c["aft_bc"]["rft"]["assessment_accuracy_strict"]
    assert a["diff"] == pytest.approx(m["aft_bc"]["assessment_accuracy_strict"] - m["rft"]["assessment_accuracy_strict"])


SMALL = ["--set", "vft.steps=30", "--set", "data.n_test=12", "--set", "sample.n_questions=12", "--set",
         "data.n_train=300", "--no-progress"]


def test_two_rounds_resample_with_the_aligned_model_and_train_again(tmp_path):
    out = tmp_path / "r2"
    assert main(["run", "--preset", "smoke", "--rounds", "2", "--methods", "aft_bc", "--out", str(out), *SMALL]) == 0
    log = json.loads((out / "align_logs.json").read_text())["aft_bc"]
    rounds = [r["round"] for r in log]
    assert rounds == sorted(rounds) and set(rounds) == {1, 2} and rounds.count(1) == rounds.count(2)
    r1 = (out / "samples_r1.jsonl").read_text()
    r2 = (out / "samples_aft_bc_r2.jsonl").read_text()  # round 2 sampled by the round-1 model
    assert len(r2.splitlines()) == 12 and r2 != r1
    assert (out / "align" / "aft_bc_r2").is_dir() and "aft_bc" in json.loads((out / "metrics.json").read_text())["methods"]


def test_seeds_write_one_run_each_and_an_aggregate_with_pooled_intervals(tmp_path):
    out = tmp_path / "seeds"
    assert main(["run", "--preset", "smoke", "--seeds", "0,1", "--methods", "rft,aft_dc", "--out", str(out), *SMALL]) == 0
    per_seed = [json.loads((out / f"seed-{s}" / "metrics.json").read_text()) for s in (0, 1)]
    assert [m["seed"] for m in per_seed] == [0, 1]
    agg = json.loads((out / "aggregate.json").read_text())
    task = [m["methods"]["aft_dc"]["task_accuracy"] for m in per_seed]
    assert agg["aft_dc"]["task_accuracy"]["n"] == 2
    assert abs(agg["aft_dc"]["task_accuracy"]["mean"] - sum(task) / 2) < 1e-12
    d = agg["comparisons"]["aft_dc"]["rft"]["task_accuracy"]
    diffs = [m["methods"]["aft_dc"]["task_accuracy"] - m["methods"]["rft"]["task_accuracy"] for m in per_seed]
    assert abs(d["diff"] - sum(diffs) / 2) < 1e-12 and d["lo"] <= d["diff"] <= d["hi"]


def test_validation_sweep_trains_without_the_held_back_questions_and_evaluates_on_them(smoke_run, monkeypatch):
    """Settings are chosen on training questions: the last n sampled ones are held back from training
    and are the evaluation set (greedy on the questions, assessment on the VFT model's samples of them)."""
    from aftlab import sweep
    from aftlab.sampling.samples import read_samples
    out, _ = smoke_run
    every = read_samples(out / "samples_r1.jsonl")
    trained_on = []
    real = sweep.align_from_vft

    def spy(vft_dir, records, *a, **kw):
        trained_on.extend(r["id"] for r in records)
        return real(vft_dir, records, *a, **kw)
    monkeypatch.setattr(sweep, "align_from_vft", spy)
    res = sweep.variant_sweep(out, {"rft": {"method": "rft"}}, progress=False, validation=3, outcomes=True)["rft"]
    assert trained_on == [r["id"] for r in every[:-3]]
    assert len(res["outcomes"]["task"]) == len(res["outcomes"]["rerank"]) == 3
    _, _, questions, records = sweep.sweep_inputs(out, 3)
    assert [e.id for e in questions] == [r["id"] for r in records] == [r["id"] for r in every[-3:]]
    with pytest.raises(ValueError, match="validation: 0 questions"):
        sweep.split_validation(every, 0)


def _experiment(name: str):
    """The module experiments/NAME.py, its doctests run and passing."""
    import doctest
    import importlib.util
    import sys
    sys.path.insert(0, str(Path(__file__).parents[1] / "experiments"))
    spec = importlib.util.spec_from_file_location(name, Path(__file__).parents[1] / "experiments" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    result = doctest.testmod(mod)
    assert result.attempted >= 1 and result.failed == 0
    return mod


def test_vft_recipe_rule_and_validation_questions(monkeypatch):
    """experiments/vft_recipe.py: the pre-registered rule, and validation questions that no arm trains or
    is tested on."""
    from aftlab.data.questions import synthetic_splits
    mod = _experiment("vft_recipe")
    assert mod.decide({"A": {0: .85, 1: .81}, "B": {0: .95, 1: .89}}) == "A stays (C not run)"  # B under the bar
    assert mod.decide({"A": {0: .95, 1: .93}, "B": {0: .94, 1: .92}, "C": {0: .95, 1: .94}}).startswith("C: min 0.940")
    assert mod.decide({"A": {0: .85}, "C": {0: .86}}) == "A stays"  # under the bar and gaining < 3 points
    monkeypatch.setattr(mod, "EXCLUDE", 3000)
    val = mod.validation(0, n=100)
    stream = {e.question for part in synthetic_splits(2999, 1, seed=0) for e in part}
    assert len(val) == len({e.question for e in val}) == 100 and not {e.question for e in val} & stream
    assert [e.question for e in mod.validation(0, n=100)] == [e.question for e in val]


def test_e2_tune_choice_rule():
    """The pre-registered choice of experiments/e2_tune.py (its worked example)."""
    mod = _experiment("e2_tune")
    row = lambda s, r, t: {"assessment_accuracy_strict": s, "rerank_accuracy": r, "task_accuracy": t}  # noqa: E731
    assert mod.choose([({"lr": 1}, row(.9, .9, .5))], vft_task=0.8) == ({"lr": 1e-4, "epochs": 1}, "none eligible: the default")
    assert mod.choose([({"lr": 1}, row(.7, .7, .8)), ({"lr": 2}, row(.7, .7, .8))], 0.8)[0] == {"lr": 1}  # tie: smaller budget
