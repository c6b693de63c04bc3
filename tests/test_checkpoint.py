"""Checkpoint helpers: continuing an optimizer's moments, and saves that do only what they say."""
import pytest

from aftlab.model.lm import add_lora, tiny_lm
from aftlab.train import checkpoint


def _lm(small_task, hidden=32):
    train, test = small_task
    return tiny_lm([e.question + " " + e.solution for e in train + test], hidden=hidden, layers=1, heads=2, ffn=64)


def _trained_state(lm) -> dict:
    """The trainer state of one AdamW step on every parameter of ``lm``."""
    opt = checkpoint.make_optimizer(lm.model, 1e-3)
    sum((p ** 2).sum() for p in lm.model.parameters()).backward()
    opt.step()
    return {"optimizer": opt.state_dict()}


def test_moments_of_the_same_parameters_continue(small_task):
    lm = _lm(small_task)
    state = _trained_state(lm)
    opt = checkpoint.make_optimizer(lm.model, 1e-3)
    checkpoint.continue_optimizer(opt, state, lr=5e-4, weight_decay=0.0)
    assert len(opt.state) == len(list(lm.model.parameters())) and opt.param_groups[0]["lr"] == 5e-4


def test_lora_after_a_full_fine_tune_starts_fresh_moments_and_says_so(small_task):
    lm = _lm(small_task)
    state = _trained_state(lm)
    lora = add_lora(lm, r=2, alpha=4)
    opt = checkpoint.make_optimizer(lora.model, 1e-3)
    with pytest.warns(UserWarning, match="different parameter set"):
        checkpoint.continue_optimizer(opt, state, lr=5e-4, weight_decay=0.0)
    assert not opt.state and opt.param_groups[0]["lr"] == 5e-4


def test_moments_of_parameters_with_other_shapes_are_not_loaded(small_task):
    """As many parameters, other shapes (another model width): loading them would fail at the first step."""
    state = _trained_state(_lm(small_task, hidden=32))
    wide = _lm(small_task, hidden=64)
    opt = checkpoint.make_optimizer(wide.model, 1e-3)
    with pytest.warns(UserWarning, match="different parameter set"):
        checkpoint.continue_optimizer(opt, state, lr=5e-4, weight_decay=0.0)
    sum((p ** 2).sum() for p in wide.model.parameters()).backward()
    opt.step()


def test_save_reads_no_test_hook_from_the_environment(small_task, tmp_path, monkeypatch):
    """Pausing inside a save is the interruption tests' business (they wrap what save calls), not an
    environment variable that production code obeys."""
    import time

    def no_sleep(seconds):
        raise AssertionError(f"checkpoint.save slept {seconds} s")
    monkeypatch.setenv("AFTLAB_TEST_CKPT_PAUSE", "60")
    monkeypatch.setattr(time, "sleep", no_sleep)
    lm = _lm(small_task)
    checkpoint.save(tmp_path / "ckpt", lm, step=1)
    checkpoint.save(tmp_path / "ckpt", lm, step=2)  # the second save moves the first aside
    assert checkpoint.load_state(tmp_path / "ckpt")["step"] == 2
