"""Every cached stage carries a fingerprint of exactly what it depends on (``aftlab.stages``): a setting changes
the stages that read it and everything downstream, nothing else; a re-run on the same folder computes those
again (logged), reuses the rest, and ends where a fresh run with the new settings ends."""
import json
import os

import pytest

from aftlab.cli import main
from aftlab.config import preset, replace_path
from aftlab.data.questions import synthetic_from_config
from aftlab.stages import MANIFEST, StaleStage, plan, questions_fingerprint, read_manifest, reconcile


def _plan(cfg, sampler="hf"):
    return plan(cfg, questions_fingerprint(*synthetic_from_config(cfg.data)), sampler)


def _base():
    cfg = preset("smoke")
    cfg.methods = ("rft", "aft_bc")
    return cfg


VFT_ON = {"vft", "eval_samples", "samples_r1", "eval/vft", "align/rft_r1", "model/rft", "eval/rft", "align/aft_bc_r1",
          "model/aft_bc", "eval/aft_bc", "results"}
TRAIN_SAMPLES_ON = VFT_ON - {"vft", "eval_samples", "eval/vft"}
EVAL_SAMPLES_ON = {"eval_samples", "eval/vft", "eval/rft", "eval/aft_bc", "results"}
ALIGN_ON = {"align/rft_r1", "model/rft", "eval/rft", "align/aft_bc_r1", "model/aft_bc", "eval/aft_bc", "results"}
CHANGES = {  # one field of each section -> the stages whose fingerprint it changes
    "data.max_steps=4": VFT_ON, "data.n_test=40": VFT_ON,  # held-out words are in tiny's vocabulary
    "model.hidden=32": VFT_ON, "model.autocast=bfloat16": VFT_ON,
    "model.device=cpu": set(), "model.trust_remote_code=true": set(),
    "vft.lr=0.001": VFT_ON, "vft.checkpoint_every=10": set(), "vft.log_every=5": set(),
    "sample.k=3": TRAIN_SAMPLES_ON, "sample.n_questions=40": TRAIN_SAMPLES_ON,
    "sample.batch_questions=16": VFT_ON - {"vft"},  # each batch of questions is seeded: other batches, other COTs
    "sample.temperature=0.7": VFT_ON - {"vft"}, "sample.max_new_tokens=30": VFT_ON - {"vft"},
    "align.lr=0.001": ALIGN_ON, "align.beta=0.3": ALIGN_ON,  # rft logs the boundary too
    "align.checkpoint_every=7": set(),
    "method_overrides.aft_bc.beta=0.3": {"align/aft_bc_r1", "model/aft_bc", "eval/aft_bc", "results"},
    "eval_k=3": EVAL_SAMPLES_ON, "assess_questions=20": EVAL_SAMPLES_ON,
    "sc_questions=10": {"eval/vft", "eval/rft", "eval/aft_bc", "results"},
    "seed=1": VFT_ON,
}


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_a_setting_changes_exactly_the_stages_that_depend_on_it(change):
    a = _plan(_base())
    b = _plan(replace_path(_base(), *change.split("=")))
    assert a.keys() == b.keys()
    assert {n for n in a if a[n].fingerprint != b[n].fingerprint} == CHANGES[change]


def test_methods_rounds_and_sampler_change_only_what_they_reach():
    a = _plan(_base())
    fewer = _base()
    fewer.methods = ("rft",)
    b = _plan(fewer)
    assert {n for n in b if a[n].fingerprint != b[n].fingerprint} == {"results"}  # rft's own stages stay
    two = _base()
    two.rounds = 2
    c = _plan(two)
    assert {n for n in a if a[n].fingerprint != c[n].fingerprint} == {"model/rft", "eval/rft", "model/aft_bc",
                                                                        "eval/aft_bc", "results"}
    assert c["samples_rft_r2"].upstream == ("align/rft_r1",) and "align/rft_r2" in c
    d = _plan(_base(), sampler="vllm")
    assert {n for n in a if a[n].fingerprint != d[n].fingerprint} == VFT_ON - {"vft"}


def _fill(out, stages):
    for st in stages.values():
        for o in st.outputs:
            p = out / o
            p.parent.mkdir(parents=True, exist_ok=True)
            if "." in p.name:
                p.write_text("{}")
            else:
                p.mkdir(exist_ok=True)
                (p / "model.safetensors").write_text("")


def test_reconcile_reuses_same_settings_and_removes_changed_stages_and_their_downstream(tmp_path):
    a = _plan(_base())
    lines = []
    assert reconcile(tmp_path, a, log=lines.append) == [] and lines == []  # a fresh folder: nothing to say
    _fill(tmp_path, a)
    (tmp_path / "align" / "aft_bc_r1.old").mkdir()  # left by a kill mid-swap: goes with its checkpoint
    assert reconcile(tmp_path, a, log=lines.append) == []
    assert lines == ["reusing (same settings; an interrupted stage resumes): " + ", ".join(a)]
    b = _plan(replace_path(_base(), "method_overrides.aft_bc.lr", "0.001"))
    lines.clear()
    assert reconcile(tmp_path, b, log=lines.append) == ["align/aft_bc_r1", "model/aft_bc", "eval/aft_bc", "results"]
    assert lines[0] == ("align/aft_bc_r1: settings changed (align.lr 0.0001 -> 0.001): retraining; "
                        "downstream: model/aft_bc, eval/aft_bc, results")
    assert not (tmp_path / "align" / "aft_bc_r1").exists() and not (tmp_path / "align" / "aft_bc_r1.old").exists()
    assert not (tmp_path / "metrics.json").exists() and not (tmp_path / "aft_bc").exists()
    assert (tmp_path / "vft").is_dir() and (tmp_path / "align" / "rft_r1").is_dir() and (tmp_path / "evals" / "rft.json").exists()
    assert {n: r["fingerprint"] for n, r in read_manifest(tmp_path).items()} == {n: s.fingerprint for n, s in b.items()}


def test_strict_reuse_refuses_and_leaves_the_folder_alone(tmp_path):
    a = _plan(_base())
    reconcile(tmp_path, a, log=lambda *_: None)
    _fill(tmp_path, a)
    manifest = (tmp_path / MANIFEST).read_text()
    with pytest.raises(StaleStage, match=r"vft \(settings changed \(vft.lr 0.003 -> 0.001\); downstream: eval_samples"):
        reconcile(tmp_path, _plan(replace_path(_base(), "vft.lr", "0.001")), reuse="strict")
    assert (tmp_path / MANIFEST).read_text() == manifest and (tmp_path / "vft").is_dir()
    assert reconcile(tmp_path, a, reuse="strict") == []  # the same settings pass


def test_a_method_left_out_keeps_its_stages_until_what_it_came_from_changes(tmp_path):
    a = _plan(_base())
    reconcile(tmp_path, a, log=lambda *_: None)
    _fill(tmp_path, a)
    only_rft = _base()
    only_rft.methods = ("rft",)
    assert reconcile(tmp_path, _plan(only_rft), log=lambda *_: None) == ["results"]
    assert (tmp_path / "align" / "aft_bc_r1").is_dir() and "align/aft_bc_r1" in read_manifest(tmp_path)
    lines = []
    stale = reconcile(tmp_path, _plan(replace_path(only_rft, "vft.lr", "0.001")), log=lines.append)
    assert {"align/aft_bc_r1", "model/aft_bc", "eval/aft_bc"} <= set(stale)
    assert not (tmp_path / "align" / "aft_bc_r1").exists() and "align/aft_bc_r1" not in read_manifest(tmp_path)
    assert len(lines) == 1 and lines[0].startswith("vft: settings changed") and "align/aft_bc_r1" in lines[0]


def test_outputs_without_a_fingerprint_are_computed_again(tmp_path):
    a = _plan(_base())
    _fill(tmp_path, a)  # a run folder from before fingerprints: nothing says what made it
    lines = []
    assert set(reconcile(tmp_path, a, log=lines.append)) == set(a)
    assert lines[0].startswith("vft: written without a fingerprint") and len(lines) == 1
    assert not (tmp_path / "vft").exists()


SMALL = ["--preset", "smoke", "--methods", "rft,aft_bc", "--set", "vft.steps=30", "--set", "data.n_test=12",
         "--set", "sample.n_questions=12", "--set", "data.n_train=300", "--no-progress"]


def _metrics(out) -> str:
    """metrics.json without its timings and provenance (date, machine), as text (NaN equals NaN)."""
    m = json.loads((out / "metrics.json").read_text())
    return json.dumps({k: v for k, v in m.items() if k not in ("seconds", "stage_seconds", "provenance")}, sort_keys=True)


@pytest.mark.slow
def test_rerun_with_other_settings_recomputes_what_they_change_and_equals_a_fresh_run(tmp_path, capsys):
    x = tmp_path / "x"
    assert main(["run", *SMALL, "--out", str(x)]) == 0
    capsys.readouterr()
    # the example: another VFT learning rate retrains VFT and everything after it, and says so
    assert main(["run", *SMALL, "--out", str(x), "--set", "vft.lr=1e-3"]) == 0
    said = capsys.readouterr().out
    assert ("vft: settings changed (vft.lr 0.003 -> 0.001): retraining; downstream: eval_samples, samples_r1, "
            "eval/vft, align/rft_r1, model/rft, eval/rft, align/aft_bc_r1, model/aft_bc, eval/aft_bc, results") in said
    assert "reusing" not in said
    assert main(["run", *SMALL, "--out", str(tmp_path / "fresh"), "--set", "vft.lr=1e-3"]) == 0
    assert _metrics(x) == _metrics(tmp_path / "fresh")
    # one method's setting: that method is trained and evaluated again, the rest is reused untouched
    vft_written = os.path.getmtime(x / "vft" / "model.safetensors")
    samples = (x / "samples_r1.jsonl").read_text()
    before = json.loads(_metrics(x))
    capsys.readouterr()
    more = ["--set", "vft.lr=1e-3", "--set", "method_overrides.aft_bc.lr=1e-3"]
    assert main(["run", *SMALL, "--out", str(x), *more]) == 0
    said = capsys.readouterr().out
    assert ("align/aft_bc_r1: settings changed (align.lr 0.0001 -> 0.001): retraining; downstream: model/aft_bc, "
            "eval/aft_bc, results") in said
    assert "reusing (same settings; an interrupted stage resumes): vft, eval_samples, samples_r1, eval/vft, " \
           "align/rft_r1, model/rft, eval/rft" in said
    assert os.path.getmtime(x / "vft" / "model.safetensors") == vft_written and (x / "samples_r1.jsonl").read_text() == samples
    after = json.loads(_metrics(x))
    assert after["methods"]["rft"] == before["methods"]["rft"] and after["methods"]["vft"] == before["methods"]["vft"]
    assert main(["run", *SMALL, "--out", str(tmp_path / "fresh2"), *more]) == 0
    assert _metrics(x) == _metrics(tmp_path / "fresh2")
    # --reuse strict: stale stages stop the run before anything changes
    capsys.readouterr()
    assert main(["run", *SMALL, "--out", str(x), "--reuse", "strict"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("aftlab: error: ") and "vft.lr 0.001 -> 0.003" in err and "Traceback" not in err
    assert os.path.getmtime(x / "vft" / "model.safetensors") == vft_written and _metrics(x) == _metrics(tmp_path / "fresh2")
