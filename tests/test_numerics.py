"""Numerical faults: NaN/inf stops training with a message naming the step, before the bad update,
and the last good checkpoint stays loadable; low-precision scoring agrees with float32.

Tolerance for low-precision scoring on CPU: length-normalised scores within 0.1 (bfloat16) or 0.05
(float16) nats/token of float32, and at least 90% of (reference, wrong) pairs ranked the same.
"""
import json

import pytest
import torch

from aftlab.align.aft import train_align
from aftlab.cli import main
from aftlab.config import AlignConfig, VFTConfig
from aftlab.model.lm import load_lm
from aftlab.model.scoring import score_texts
from aftlab.sampling.samples import groups, label
from aftlab.train import checkpoint
from aftlab.train.loop import NonFiniteError
from aftlab.train.vft import train_vft


def _wrong(solution: str) -> str:
    """The reference COT with its final answer changed: a plausible negative."""
    head, ans = solution.rsplit("#### ", 1)
    return f"{head}#### {int(ans) + 1}"


def _records(examples):
    return [{"id": e.id, "question": e.question, "answer": e.answer, "reference": e.solution,
             "samples": [{**label(e.solution, e.answer), "count": 1}, {**label(_wrong(e.solution), e.answer),
                                                                       "count": 1}],
             "n_sampled": 2, "n_duplicates": 0} for e in examples]


def _poison(model) -> None:
    """One NaN output-embedding row: every position's logsumexp, hence every loss, becomes NaN."""
    with torch.no_grad():
        model.get_output_embeddings().weight[0].fill_(float("nan"))


def test_vft_with_a_nan_weight_stops_at_step_0(tiny, small_task, tmp_path):
    train, _ = small_task
    _poison(tiny.model)
    with pytest.raises(NonFiniteError, match=r"VFT step 0: loss is nan; training stopped; no checkpoint written yet"):
        train_vft(tiny, train, VFTConfig(steps=5, batch_size=8, warmup=1), out=tmp_path / "vft", progress=False)
    assert checkpoint.find(tmp_path / "vft") is None


def test_nan_mid_alignment_names_the_step_and_keeps_the_last_good_checkpoint(trained, small_task, tmp_path):
    _, vft_dir, _ = trained
    train, _ = small_task
    g = groups(_records(train[:16]))
    cfg = AlignConfig(method="aft_bc", constraint="boundary", epochs=2, questions_per_step=4, checkpoint_every=2)
    lm = load_lm(vft_dir)
    calls = {"n": 0}

    per_step = 2  # forwards per AFT step: the questions, then their COTs from the KV cache (share_prefix)

    def nan_from_step_three(module, inputs, output):  # scores go NaN from step 3 on
        calls["n"] += 1
        return output * float("nan") if calls["n"] > 3 * per_step else None

    lm.model.get_input_embeddings().register_forward_hook(nan_from_step_three)
    out = tmp_path / "aft"
    with pytest.raises(NonFiniteError, match=r"AFT \(aft_bc\) step 3: loss is nan; training stopped; "
                                             r"last good checkpoint \(step 2\) kept at"):
        train_align(lm, g, cfg, seed=1, out=out, progress=False)
    assert all(torch.isfinite(p).all() for p in lm.model.parameters())  # the NaN step never updated weights
    assert checkpoint.load_state(out)["step"] == 2
    resumed = load_lm(vft_dir)
    log = train_align(resumed, g, cfg, seed=1, out=out, progress=False)  # resumes cleanly from step 2
    assert len(log) == 8 and all(torch.isfinite(torch.tensor(r["loss"])) for r in log)
    fresh = load_lm(vft_dir)
    ref = train_align(fresh, g, cfg, seed=1, progress=False)
    assert json.dumps(ref) == json.dumps(log)


def test_cli_reports_nan_as_a_user_error_without_traceback(trained, small_task, tmp_path, capsys):
    train, _ = small_task
    bad = load_lm(trained[1])
    _poison(bad.model)
    bad.save(tmp_path / "poisoned")
    samples = tmp_path / "s.jsonl"
    samples.write_text("".join(json.dumps(r) + "\n" for r in _records(train[:8])))
    out = tmp_path / "aft"
    assert main(["align", "--preset", "smoke", "--model", str(tmp_path / "poisoned"), "--samples", str(samples),
                 "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "aftlab: error: AFT (aft_bc) step 0: loss is nan" in err and "Traceback" not in err
    assert not out.exists()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_scoring_matches_float32(trained, small_task, dtype):
    _, vft_dir, _ = trained
    _, test = small_task
    qs = [e.question for e in test for _ in range(2)]
    cots = [c for e in test for c in (e.solution, _wrong(e.solution))]
    full = score_texts(load_lm(vft_dir), qs, cots)
    low_lm = load_lm(vft_dir)
    low_lm.model.to(dtype)
    low = score_texts(low_lm, qs, cots)
    assert torch.isfinite(low).all()
    diff = (low - full).abs().max().item()
    tol = 0.1 if dtype == torch.bfloat16 else 0.05  # bfloat16 keeps 8 mantissa bits, float16 11
    assert diff <= tol, f"{dtype}: scores differ from float32 by up to {diff:.4f} nats/token"
    same = ((full[0::2] > full[1::2]) == (low[0::2] > low[1::2])).float().mean().item()
    assert same >= 0.9, f"{dtype}: only {same:.0%} of pairs ranked as in float32"
