"""Device-correct tensors, checked without a GPU: the VFT step and the AFT step of every registered method
run with the model on a second device (``virtual_device``: a CPU mask meeting the model's tensors raises,
as it does on CUDA), and the training loop syncs with the host only where it must.

On CUDA itself, ``test_gpu_smoke`` runs VFT steps, an AFT step and sampling; it skips without CUDA."""
import pytest
import torch
from virtual_device import VirtualDevice

from aftlab.align.aft import train_align
from aftlab.align.methods import REGISTRY
from aftlab.config import AlignConfig, VFTConfig, preset
from aftlab.train.vft import train_vft


@pytest.fixture(scope="module")
def groups(small_task):
    """Positive and negative COTs of 8 training questions: one wrong COT per question, made by changing
    the reference's final answer, so every method has pairs and levels to rank."""
    train, _ = small_task
    out = []
    for e in train[:8]:
        wrong = e.solution.rsplit("####", 1)[0] + f"#### {int(e.answer) + 1}"
        out.append({"id": e.id, "question": e.question, "pos": [e.solution], "neg": [wrong], "levels": [3.0, 0.5]})
    return out


def _short(method: str) -> AlignConfig:
    """The run's settings of ``method``, cut to two steps of 4 questions."""
    cfg = preset("smoke").align_for(method)
    return AlignConfig(**{**cfg.__dict__, "epochs": 1.0, "questions_per_step": 4, "warmup": 1, "beta_quantile": 0.0})


def test_vft_steps_run_on_a_second_device(tiny, small_task):
    train, _ = small_task
    with VirtualDevice() as dev:
        dev.put(tiny.model)
        assert tiny.device == dev.DEVICE
        hist = train_vft(tiny, train, VFTConfig(steps=2, batch_size=16, warmup=1, checkpoint_every=0, log_every=1),
                         progress=False)
    assert len(hist) == 2 and all(torch.isfinite(torch.tensor(h["loss"])) for h in hist)


@pytest.mark.parametrize("method", sorted(REGISTRY))
def test_aft_step_of_every_method_runs_on_a_second_device(method, tiny, groups):
    with VirtualDevice() as dev:
        dev.put(tiny.model)
        log = train_align(tiny, groups, _short(method), progress=False)
    assert len(log) == 2 and all(torch.isfinite(torch.tensor(r["loss"])) for r in log)


def test_sampling_and_rescoring_run_on_a_second_device(tiny, small_task):
    from aftlab.eval.evaluate import rescore
    from aftlab.sampling.samples import sample_cots
    train, _ = small_task
    with VirtualDevice() as dev:
        dev.put(tiny.model)
        recs = sample_cots(tiny, train[:4], k=3, temperature=1.0, max_new_tokens=8, seed=0, progress=False)
        scores = rescore(tiny, recs)
    assert [len(s) for s in scores] == [len(r["samples"]) for r in recs]


def test_the_second_device_catches_a_cpu_mask(tiny, groups, monkeypatch):
    """The check can fail: a step whose masks are built on the CPU (as ``_matrix`` built them) raises."""
    from aftlab.align import aft
    real = aft._matrix

    def on_cpu(packed, values):
        return tuple(t.cpu() if t.dtype == torch.bool else t for t in real(packed, values))
    monkeypatch.setattr(aft, "_matrix", on_cpu)
    with VirtualDevice() as dev, pytest.raises(RuntimeError, match="meets tensors on the device"):
        dev.put(tiny.model)
        train_align(tiny, groups, _short("aft_bc"), progress=False)


def test_vft_syncs_with_the_host_only_at_log_steps_and_for_the_finite_check(tiny, small_task):
    """Per step, one sync: whether loss and gradient norm are finite, which must be known before the update.
    The loss and gradient norm are read back at log steps only (here every third of 6 steps)."""
    train, _ = small_task
    with VirtualDevice() as dev:
        dev.put(tiny.model)
        hist = train_vft(tiny, train, VFTConfig(steps=6, batch_size=16, warmup=1, checkpoint_every=0, log_every=3),
                         progress=False)
    ours = [(kind, where.split(":")[0]) for kind, where in dev.syncs if not where.startswith("ext:")]
    assert len(hist) == 2
    assert sorted(set(ours)) == [("__bool__", "train/loop.py"), ("__float__", "train/loop.py"),
                                 ("tolist", "train/loop.py")], ours
    assert ours.count(("__bool__", "train/loop.py")) == 6
    assert ours.count(("__float__", "train/loop.py")) == ours.count(("tolist", "train/loop.py")) == 2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="GPU smoke test: needs CUDA")
def test_gpu_smoke(small_task, groups):
    """VFT steps, one AFT step of a pairwise and of the reference-model method, and sampling, on CUDA."""
    from aftlab.model.lm import tiny_lm
    from aftlab.sampling.samples import sample_cots
    train, test = small_task
    lm = tiny_lm([e.question + " " + e.solution for e in train + test], hidden=32, layers=1, heads=2, ffn=64)
    lm.model.to("cuda")
    hist = train_vft(lm, train, VFTConfig(steps=4, batch_size=16, warmup=1, checkpoint_every=0, log_every=2),
                     progress=False)
    assert hist[-1]["loss"] < hist[0]["loss"] * 1.5 and lm.device.type == "cuda"
    for method in ("aft_bc", "dpo"):
        cfg = AlignConfig(**{**_short(method).__dict__, "epochs": 0.5})
        assert torch.isfinite(torch.tensor(train_align(lm, groups, cfg, progress=False)[0]["loss"]))
    recs = sample_cots(lm, train[:4], k=2, temperature=1.0, max_new_tokens=12, seed=0, progress=False)
    assert len(recs) == 4 and all(r["n_sampled"] == 2 for r in recs)
