"""Shared fixtures: a smoke-preset run (seconds on CPU) reused by the pipeline-level tests, and where GSM8K is."""
import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

# The one place the tests find GSM8K: the slice in tests/data/gsm8k (see its README), or with $AFTLAB_GSM8K
# (opt-in) a folder holding the full train.jsonl, test.jsonl and model_solutions.jsonl.
GSM8K = Path(os.environ.get("AFTLAB_GSM8K") or Path(__file__).resolve().parent / "data" / "gsm8k")
if missing := [n for n in ("train.jsonl", "test.jsonl", "model_solutions.jsonl") if not (GSM8K / n).is_file()]:
    raise pytest.UsageError(f"AFTLAB_GSM8K={GSM8K}: no {', '.join(missing)} there (unset it to use the tests' slice)")


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
    """A finished ``aftlab run --preset smoke`` folder and its metrics."""
    from aftlab.config import preset
    from aftlab.pipeline import run

    out = tmp_path_factory.mktemp("smoke_run")
    metrics = run(preset("smoke", seed=0), out, progress=False, log=lambda *_: None)
    return out, metrics


@pytest.fixture(scope="session")
def small_task():
    from aftlab.data.questions import synthetic_splits
    return synthetic_splits(n_train=400, n_test=16, seed=0, min_steps=2, max_steps=3)


@pytest.fixture()
def tiny(small_task):
    """A fresh, untrained small tiny-architecture LM over the small task's vocabulary."""
    from aftlab.model.lm import tiny_lm
    train, test = small_task
    return tiny_lm([e.question + " " + e.solution for e in train + test], hidden=32, layers=1, heads=2, ffn=64)


@pytest.fixture(scope="session")
def trained(small_task, tmp_path_factory):
    """A small LM after a short VFT run (enough to emit well-formed COTs), and its checkpoint folder."""
    from aftlab.config import VFTConfig
    from aftlab.model.lm import tiny_lm
    from aftlab.train.vft import train_vft
    train, test = small_task
    lm = tiny_lm([e.question + " " + e.solution for e in train + test], hidden=64, layers=2, heads=2, ffn=128)
    out = tmp_path_factory.mktemp("trained") / "vft"
    hist = train_vft(lm, train, VFTConfig(steps=120, batch_size=32, lr=3e-3, warmup=10, checkpoint_every=0),
                     out=out, progress=False)
    return lm, out, hist
