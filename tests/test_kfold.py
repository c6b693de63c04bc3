"""E6's design on external COTs: model_solutions rows → records → arms trained with the one loop → held-out
metrics pooled over folds → released adapters that load offline (aftlab.data.solutions, aftlab.sampling.solutions,
aftlab.kfold, aftlab.eval.assess, aftlab.eval.crossval).

The end-to-end tests train a tiny model (built and saved here) with LoRA in place of smol, on a small file in
model_solutions' format made from the synthetic task: seconds, no network; the real file and smol are in
tests/test_smol.py.
"""
import json
import math
import re

import pytest

from aftlab.data.questions import DataError

SOURCES = ("6b_finetuning", "6b_verification", "175b_finetuning", "175b_verification")


def _as_file_format(cot: str) -> str:
    """A COT in model_solutions' layout: steps on lines, a final 'A: N' line, a calculator annotation."""
    body, answer = cot.rsplit("####", 1)
    steps = [s.strip() + "." for s in body.split(".") if s.strip()]
    steps[0] = steps[0].replace(" = ", " = <<x>>", 1)
    return "\n".join(steps) + f"\nA: {answer.strip()}"


def solutions_rows(n: int = 12, seed: int = 0) -> list[dict]:
    """``n`` synthetic questions in model_solutions' format: per question two right solutions (6b_verification,
    175b_verification), two wrong ones, and on every third question an unfinished 175b_finetuning solution."""
    from aftlab.data.questions import synthetic_splits, valid_solutions
    train, _ = synthetic_splits(n, 1, seed=seed, min_steps=2, max_steps=3)
    rows = []
    for i, e in enumerate(train):
        right = (valid_solutions(e) * 2)[:2]
        wrong = [right[0].rsplit("####", 1)[0] + f"#### {int(e.answer) + d}" for d in (1, 2)]
        row = {"question": e.question, "ground_truth": _as_file_format(e.solution)}
        for src, cot, ok in zip(SOURCES, [wrong[0], right[0], wrong[1], right[1]], [False, True, False, True]):
            row[src] = {"solution": _as_file_format(cot), "is_correct": ok}
        if i % 3 == 0:
            row["175b_finetuning"]["solution"] = _as_file_format(wrong[1]).rsplit("\n", 1)[0]  # cut off: no answer
        rows.append(row)
    return rows


@pytest.fixture()
def solutions_file(tmp_path):
    path = tmp_path / "model_solutions.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in solutions_rows()))
    return path


# ---------------------------------------------------------------- data: rows, checks, folds
def test_rows_parse_with_gold_labels_and_unfinished_solutions(solutions_file):
    from aftlab.data.solutions import load_solutions
    rows = load_solutions(solutions_file)
    assert len(rows) == 12 and rows[0]["id"] == "line-1" and rows[4]["id"] == "line-5"
    assert all(r["gold"] and r["reference"].endswith(f"#### {r['gold']}") for r in rows)
    assert rows[0]["finished"] == [True, True, False, True] and rows[1]["finished"] == [True] * 4
    assert not any("<<" in c for r in rows for c in r["cots"] + [r["reference"]])


def test_a_label_that_contradicts_the_answer_is_refused_naming_file_line_and_field(tmp_path):
    from aftlab.data.solutions import load_solutions
    rows = solutions_rows(3)
    rows[1]["6b_finetuning"]["is_correct"] = True  # its answer is gold + 1
    rows[2]["175b_verification"]["is_correct"] = False  # its answer is the gold one
    path = tmp_path / "ms.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError, match=r"^2 is_correct label\(s\) contradict") as e:
        load_solutions(path)
    assert re.search(r"ms.jsonl:2: field '6b_finetuning.is_correct': is_correct is true but its answer \d+ does not "
                     r"match the gold answer \d+", str(e.value))
    assert re.search(r"ms.jsonl:3: field '175b_verification.is_correct': is_correct is false but its answer \d+ "
                     r"matches", str(e.value))  # every contradiction of the file, not the first alone
    rows[0]["175b_finetuning"]["is_correct"] = True  # unfinished (no answer) yet labelled right
    path.write_text(json.dumps(rows[0]) + "\n")
    with pytest.raises(DataError, match=r"ms.jsonl:1: field '175b_finetuning.is_correct': .* no final answer line"):
        load_solutions(path)
    assert len(load_solutions(path, check=False)) == 1  # a caller that knows can still read it
    path.write_text(json.dumps({**rows[0], "ground_truth": "no answer here"}) + "\n")
    with pytest.raises(DataError, match=r"ms.jsonl:1: field 'ground_truth'"):
        load_solutions(path)


def test_folds_partition_questions_deterministically():
    from aftlab.data.solutions import fold_of, split_folds
    ids = [f"line-{i}" for i in range(1, 661)]
    folds = fold_of(ids, k=3, seed=0)
    assert sorted(set(folds.values())) == [0, 1, 2] and [list(folds.values()).count(f) for f in range(3)] == [220] * 3
    assert fold_of(ids[::-1], 3, 0) == folds and fold_of(ids, 3, 1) != folds  # order-free, seed-bound
    held = [split_folds(ids, 3, f)[1] for f in range(3)]
    assert sorted(sum(held, [])) == sorted(ids)  # each question held out exactly once
    train, test = split_folds(ids, 3, 1)
    assert not set(train) & set(test) and len(train) == 440
    with pytest.raises(ValueError, match="fold 3"):
        split_folds(ids, 3, 3)


# ---------------------------------------------------------------- records and groups
def test_records_pass_the_samples_checks_and_become_aft_groups(solutions_file, tmp_path):
    from aftlab.data.solutions import load_solutions
    from aftlab.sampling.samples import groups, read_samples
    from aftlab.sampling.solutions import records_of, write_records
    recs = records_of(load_solutions(solutions_file))
    assert read_samples(write_records(recs, tmp_path / "s.jsonl")) == recs  # the cache's own checks and format
    r0 = recs[0]
    assert [s["source"] for s in r0["samples"]] == ["6b_finetuning", "6b_verification", "175b_verification"]
    assert [s["correct"] for s in r0["samples"]] == [False, True, True] and r0["n_sampled"] == 4
    assert all("\n" not in s["cot"] for s in r0["samples"]) and "\n" not in r0["reference"]
    g = groups(recs, strict=False)[0]
    right = [r0["samples"][1]["cot"], r0["samples"][2]["cot"]]
    assert g["pos"] == right + ([r0["reference"]] if r0["reference"] not in right else [])
    assert g["neg"] == [r0["samples"][0]["cot"]]  # the unfinished solution is in neither group


def test_records_refuse_a_label_the_loader_was_told_not_to_check(tmp_path):
    from aftlab.data.solutions import load_solutions
    from aftlab.sampling.solutions import records_of
    rows = solutions_rows(2)
    rows[1]["6b_finetuning"]["is_correct"] = True
    path = tmp_path / "ms.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError, match=r"line-2: field '6b_finetuning.is_correct'"):
        records_of(load_solutions(path, check=False))


def test_arms_train_on_what_they_say(solutions_file):
    from aftlab.config import preset
    from aftlab.data.solutions import load_solutions
    from aftlab.kfold import ARMS, align_config, arm_groups
    from aftlab.sampling.solutions import records_of
    recs, cfg = records_of(load_solutions(solutions_file)), preset("smol-gsm8k")
    got = {arm: arm_groups(arm, recs, align_config(arm, cfg, 1e-4, 1.0))[1] for arm in ARMS if ARMS[arm].method}
    assert got["vft"]["pos"] == [recs[1]["reference"]] and got["vft"]["neg"] == []
    assert len(got["rft"]["pos"]) in (2, 3) and got["rft"]["neg"] == []  # two right solutions + the reference
    assert recs[1]["reference"] in got["rft"]["pos"]
    for arm in ("aft_bc", "aft_dc", "align_only", "dpo", "dpo_bc"):
        assert got[arm]["pos"] == got["rft"]["pos"] and len(got[arm]["neg"]) == 2
        assert len(got[arm]["levels"]) == len(got[arm]["pos"]) + 2
    assert align_config("dpo_bc", cfg, 1e-4, 1.0).constraint == "boundary"
    assert align_config("aft_bc", cfg, 1e-4, 1.0).beta_quantile == 0.0  # beta fixed in nats/token, never negative
    assert align_config("aft_bc", cfg, 1e-4, 1.0).beta == align_config("dpo_bc", cfg, 1e-4, 1.0).beta == 0.1
    assert align_config("dpo", cfg, 1e-4, 1.0).constraint is None
    assert align_config("aft_dc", cfg, 3e-4, 2.0).constraint == "detach"
    assert not align_config("rft", cfg, 1e-4, 1.0).strict_positives  # right = the file's label


# ---------------------------------------------------------------- metrics on external COTs
def test_same_size_pairs_remove_the_writer_size_confound():
    from aftlab.eval.assess import metric_rows
    # a judge that prefers 175B text whatever its answer: every 175B solution above every 6B one
    rec = {"id": "q", "samples": [{"correct": True, "source": "175b_a"}, {"correct": False, "source": "6b_a"},
                                  {"correct": True, "source": "6b_b"}, {"correct": False, "source": "175b_b"}]}
    rows = metric_rows([rec], [{"id": "q", "scores": [-0.5, -2.0, -1.0, -0.6], "ref_nll": 1.0, "ref_tokens": 1}])
    assert rows["assessment_cross_size"] == [[1.0, 2]]  # wins every cross-size pair by style alone
    assert rows["assessment_same_size"] == [[2.0, 2]]
    style = [-0.5, -2.0, -2.1, -0.4]  # prefers 175B and, within a size, the wrong one
    rows = metric_rows([rec], [{"id": "q", "scores": style, "ref_nll": 1.0, "ref_tokens": 1}])
    assert rows["assessment_cross_size"] == [[1.0, 2]] and rows["assessment_same_size"] == [[0.0, 2]]
    with pytest.raises(ValueError, match="met the scores"):
        metric_rows([rec], [{"id": "other", "scores": style, "ref_nll": 1.0, "ref_tokens": 1}])


# ---------------------------------------------------------------- the design end to end, on tiny
@pytest.fixture()
def tiny_design(solutions_file, tmp_path):
    from aftlab.config import ModelConfig, preset
    from aftlab.data.solutions import load_solutions
    from aftlab.kfold import Design
    from aftlab.model.lm import tiny_lm
    rows = load_solutions(solutions_file)
    base = tmp_path / "tiny-base"
    tiny_lm([r["question"] + " " + " ".join(r["cots"]) + " " + r["reference"] for r in rows], hidden=32, layers=1,
            heads=2, ffn=64).save(base)
    cfg = preset("smol-gsm8k")
    cfg.model = ModelConfig(name=str(base), lora=True, lora_r=2, lora_alpha=4, device="cpu")
    cfg.align.questions_per_step, cfg.align.warmup, cfg.align.checkpoint_every = 2, 1, 0
    cfg.sample.max_new_tokens = 6
    design = Design(solutions=str(solutions_file), out=str(tmp_path / "e6"), folds=2, inner_folds=2, lrs=(1e-3, 1e-2),
                    greedy_questions=2, greedy_arms=("base", "rft", "aft_bc", "align_only", "vft", "dpo_bc"))
    return design, cfg


ARMS_TESTED = ("base", "vft", "rft", "aft_bc", "align_only", "dpo_bc")


def test_kfold_runs_tunes_on_validation_only_resumes_and_pools(tiny_design, monkeypatch):
    from aftlab import kfold
    from aftlab.eval.crossval import markdown, table
    design, cfg = tiny_design
    seen = []
    train_arm = kfold.train_arm
    monkeypatch.setattr(kfold, "train_arm", lambda arm, recs, *a, **k: seen.append((arm, [r["id"] for r in recs]))
                        or train_arm(arm, recs, *a, **k))
    results = {arm: [] for arm in ARMS_TESTED}
    for f in range(2):
        seen.clear()
        for arm in ARMS_TESTED:
            results[arm].append(kfold.run_fold(design, cfg, f, arm, progress=False))
        held = set(results["base"][f]["ids"])
        assert all(not held & set(ids) for _, ids in seen)  # no training of this fold saw its held-out questions
        trained = sorted(len(ids) for a, ids in seen if kfold.ARMS[a].method)
        assert trained == [3] * 10 + [6] * 5  # inner training (3 of 6) at 2 grid points, then all 6: x 5 arms
    for arm in ARMS_TESTED:
        for f, r in enumerate(results[arm]):
            assert len(r["ids"]) == 6 and r["n_train"] == 6 and r["fold"] == f
            assert len(r["scored"]) == 6 and len(r["greedy"]) == 2
            assert all(len(s["scores"]) == len(rec["samples"]) for s, rec in
                       zip(r["scored"], kfold.fold_records(design, f)[1]))  # every question mixed here
            if kfold.ARMS[arm].method:
                assert r["chosen"]["lr"] in design.lrs and len(r["log"]) == 3  # 6 questions, 2 per step, 1 epoch
    # a finished cell is read back, not trained again; a lost result file costs no new tuning
    seen.clear()
    assert kfold.run_fold(design, cfg, 0, "aft_bc", progress=False) == results["aft_bc"][0]
    (kfold.Path(design.out) / "fold-0" / "aft_bc" / "result.json").unlink()
    again = kfold.run_fold(design, cfg, 0, "aft_bc", progress=False)
    assert [a for a, _ in seen] == ["aft_bc"]  # the final training only (its checkpoint: no step re-run)
    assert again["scored"] == results["aft_bc"][0]["scored"] and again["log"] == results["aft_bc"][0]["log"]
    tab = table(results, n_resamples=200)
    assert tab["folds"] == [0, 1] and set(tab["arms"]) == set(ARMS_TESTED)
    assert tab["arms"]["rft"]["assessment"]["n"] == 12  # every question held out once, each with pairs
    assert tab["arms"]["base"]["rerank"]["n"] == 12 and tab["arms"]["base"]["unfinished"]["n"] == 4
    d = tab["vs"]["aft_bc"]["rft"]["ref_nll"]
    assert d["lo"] <= d["diff"] <= d["hi"] and "base" in tab["vs"]["rft"] and "rft" not in tab["vs"]["rft"]
    v = tab["verdicts"]
    assert v["aft_beats_rft"]["aft_bc"]["assessment"]["verdict"] in ("shown", "not shown")
    assert v["degradation"]["verdict"] == ("shown" if v["degradation"]["lo"] > 0 else "not shown")
    text = markdown(tab)
    assert "| aft_bc |" in text and "Paired differences arm − rft" in text and "degradation" in text


def test_pooling_refuses_results_of_other_questions(tiny_design):
    from aftlab import kfold
    from aftlab.eval.crossval import table
    design, cfg = tiny_design
    a = kfold.run_fold(design, cfg, 0, "base", progress=False)
    b = dict(a, ids=list(reversed(a["ids"])))
    with pytest.raises(ValueError, match="held-out questions differ"):
        table({"base": [a], "rft": [b]}, n_resamples=50)


def test_released_adapter_loads_offline_and_assess_prints_cis(tiny_design, tmp_path, capsys):
    from aftlab import kfold
    from aftlab.cli import main
    from aftlab.eval.crossval import table
    from aftlab.model.lm import load_lm
    from aftlab.model.scoring import score_texts
    design, cfg = tiny_design
    results = {arm: [kfold.run_fold(design, cfg, f, arm, progress=False) for f in range(2)] for arm in ("base", "rft",
                                                                                                         "aft_bc")}
    folder = kfold.release(design, cfg, "aft_bc", tmp_path / "adapters" / "smol-gsm8k" / "aft_bc", results["aft_bc"],
                           table(results, n_resamples=100), progress=False)
    assert (folder / "adapter_model.safetensors").is_file()
    conf = json.loads((folder / "adapter_config.json").read_text())
    assert conf["base_model_name_or_path"] == cfg.model.name  # a tiny base keeps its path; smol's is named "smol"
    card = (folder / "README.md").read_text()
    assert "# smol-gsm8k / aft_bc" in card and "| assessment |" in card and "{" not in card.split("```")[0]
    assert f"lr {kfold.released_settings(results['aft_bc'])['lr']:g}" in card
    lm = load_lm(folder, device="cpu")
    assert type(lm.model).__name__ == "PeftModelForCausalLM"
    recs = kfold.fold_records(design, 0)[1]
    s = score_texts(lm, [recs[0]["question"]], [recs[0]["samples"][0]["cot"]])
    assert math.isfinite(float(s[0]))
    out = tmp_path / "assess.json"
    assert main(["assess", "--model", str(folder), "--solutions", design.solutions, "--device", "cpu",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "95% CI" in printed and "| assessment |" in printed and "| rerank |" in printed
    m = json.loads(out.read_text())
    assert m["complete"] and m["n_unfinished"] == 4 and m["metrics"]["rerank"]["n"] == 12
    assert all(x["lo"] <= x["value"] <= x["hi"] for x in m["metrics"].values())
    with pytest.raises(ValueError, match="trains nothing"):
        kfold.release(design, cfg, "base", tmp_path / "x", results["base"], {}, progress=False)


def test_the_driver_reports_pooled_results_and_verdicts(tiny_design, tmp_path, capsys):
    """experiments/e6_smol_gsm8k.py report: the README's and the pre-registration's report command, on result
    files of the same layout (made here by the tiny design)."""
    import importlib.util
    from pathlib import Path

    from aftlab import kfold
    design, cfg = tiny_design
    for arm in ("base", "rft", "aft_bc", "align_only"):
        for f in range(2):
            kfold.run_fold(design, cfg, f, arm, progress=False)
    path = Path(__file__).parents[1] / "experiments" / "e6_smol_gsm8k.py"
    spec = importlib.util.spec_from_file_location("e6_smol_gsm8k", path)
    driver = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(driver)
    out = tmp_path / "res"
    driver.main(["report", "--solutions", design.solutions, "--out", design.out, "--folds", "2",
                 "--arms", "base,rft,aft_bc,align_only", "--results", str(out)])
    text = out.with_suffix(".md").read_text()
    assert "| aft_bc |" in text and "aft_bc beats RFT on assessment: **" in text and "degradation (align_only" in text
    tab = json.loads(out.with_suffix(".json").read_text())
    assert tab["folds"] == [0, 1] and set(tab["arms"]) == {"base", "rft", "aft_bc", "align_only"}
    assert "Folds pooled" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="not all done"):  # a release before its folds ran refuses
        driver.main(["release", "--solutions", design.solutions, "--out", design.out, "--arms", "aft_dc"])
