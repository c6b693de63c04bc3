"""Scale-out, proven on CPU: 2 processes (torchrun, gloo) give what 1 process gives.

Each comparison runs the same CLI command once in this process and once under
``torchrun --standalone --nproc_per_node 2`` with one thread per process, with batches that do not
split evenly (7 items on 2 processes). Tolerances: logged losses to 1e-5 relative (the processes'
partial sums are added in another order), weights to 1e-4 absolute after a few Adam steps (Adam
turns float-rounding differences in near-zero gradients into steps of up to ~lr), samples and
greedy answers exactly from the same model (each batch of questions is decoded whole, with the
seed one process uses), metrics.json figures of a whole ``aftlab run`` to 1e-3 (its VFT models
agree to float rounding, not bit for bit, so 90% of its sampled questions must match exactly).
"""
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]

pytestmark = [
    pytest.mark.slow, pytest.mark.multiprocess,
    pytest.mark.skipif(not (torch.distributed.is_available() and torch.distributed.is_gloo_available()),
                       reason="torch.distributed with the gloo backend is not available in this torch build"),
]

SMOKE = ["--preset", "smoke", "--no-progress"]


def one(*args) -> None:
    from aftlab.cli import main
    assert main([*args]) == 0


def two(*args, env: dict | None = None) -> None:
    """``torchrun --standalone --nproc_per_node 2 -m aftlab.cli ARGS`` on the gloo backend."""
    e = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", **(env or {})}
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        e.pop(k, None)
    p = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        "-m", "aftlab.cli", *args], env=e, cwd=ROOT, capture_output=True, text=True,
                       timeout=300)  # a hang (a rank missing from a collective) fails instead of blocking CI
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-6000:]


def weights(folder: Path) -> dict:
    from safetensors.torch import load_file
    return load_file(str(folder / "model.safetensors"))


def assert_same_weights(a: Path, b: Path, tol: float = 1e-4) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    diff = max((wa[k] - wb[k]).abs().max().item() for k in wa)
    assert diff < tol, f"largest weight difference {diff}"


def losses(folder: Path, key: str = "loss") -> list[float]:
    return [x[key] for x in json.loads((folder / "history.json").read_text())]


VFT = [*SMOKE, "--set", "vft.steps=4", "--set", "vft.batch_size=7", "--set", "vft.log_every=1",
       "--set", "vft.warmup=1"]
SAMPLE = [*SMOKE, "--set", "sample.n_questions=21", "--set", "sample.batch_questions=8"]


@pytest.fixture(scope="module")
def vft_pair(tmp_path_factory):
    """The same 4 VFT steps (global batch 7) in 1 and in 2 processes; samples of the 1-process model."""
    root = tmp_path_factory.mktemp("mp")
    one("vft", *VFT, "--out", str(root / "one"))
    two("vft", *VFT, "--out", str(root / "two"))
    one("sample", *SAMPLE, "--model", str(root / "one" / "vft"), "--out", str(root / "samples.jsonl"))
    return root


def test_vft_on_two_processes_matches_one_with_an_uneven_batch(vft_pair):
    a, b = vft_pair / "one" / "vft", vft_pair / "two" / "vft"
    assert len(losses(a)) == 4
    assert losses(b) == pytest.approx(losses(a), rel=1e-5)
    assert losses(b, "grad_norm") == pytest.approx(losses(a, "grad_norm"), rel=1e-5)
    assert_same_weights(a, b)
    assert not list(vft_pair.glob("*/vft.tmp-*"))


@pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None, reason="tensorboard not installed")
def test_a_tracker_on_two_processes_gets_the_main_processes_log(tmp_path):
    """accelerate's trackers need its process state: set up on the main process before training, it must
    be the one the Accelerator then uses (gloo, 2 processes), and only the main process writes events."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    two("vft", *VFT, "--out", str(tmp_path), "--report-to", "tensorboard")
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    points = events.Scalars("vft/loss")
    assert [p.step for p in points] == [1, 2, 3, 4]
    assert [p.value for p in points] == pytest.approx(losses(tmp_path / "vft"), rel=1e-6)
    assert len(list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))) == 1


def test_sampling_on_two_processes_writes_the_one_process_file(vft_pair):
    # 21 questions in batches of 8: rank 0 samples batches 0 and 2, rank 1 batch 1
    out = vft_pair / "samples_two.jsonl"
    two("sample", *SAMPLE, "--model", str(vft_pair / "one" / "vft"), "--out", str(out))
    assert out.read_text() == (vft_pair / "samples.jsonl").read_text()
    assert not list(vft_pair.glob("samples_two.jsonl.rank*"))


@pytest.mark.parametrize("method", ["aft_bc", "dpo"])
def test_align_on_two_processes_matches_one_with_an_uneven_batch(vft_pair, method):
    args = [*SMOKE, "--set", "align.questions_per_step=7", "--set", "align.warmup=1", "--method", method,
            "--model", str(vft_pair / "one" / "vft"), "--samples", str(vft_pair / "samples.jsonl")]
    a, b = vft_pair / f"{method}_one", vft_pair / f"{method}_two"
    one("align", *args, "--out", str(a))
    two("align", *args, "--out", str(b))
    assert len(losses(a)) == 3  # 21 questions, 7 a step
    for key in ("loss", "align_loss", "grad_norm", "pos_score", "neg_score", "neg_below_boundary"):
        assert losses(b, key) == pytest.approx(losses(a, key), rel=1e-4, abs=1e-6), key  # summation order
    assert_same_weights(a, b)


def test_whole_run_on_two_processes_gives_the_one_process_metrics(tmp_path):
    # batches of 16 questions, so both processes sample and decode (48 questions: batches 0, 2 | 1)
    args = ["run", *SMOKE, "--set", "sample.batch_questions=16"]
    one(*args, "--out", str(tmp_path / "one"))
    two(*args, "--out", str(tmp_path / "two"))
    a, b = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("one", "two"))
    assert a["methods"].keys() == b["methods"].keys()
    # the two VFT models agree to float rounding only, so a near-tie draw may go the other way
    # (1 question of 96 in the run this test was written with; on another CPU one greedy COT of 48 in
    # one method); the exact claim, same model and seed -> same samples, is
    # test_sampling_on_two_processes_writes_the_one_process_file
    ga, gb = (json.loads((tmp_path / d / "greedy.json").read_text()) for d in ("one", "two"))
    for method, m in a["methods"].items():
        ca, cb = ([x["cot"] for x in g[method]] for g in (ga, gb))
        flipped = sum(x != y for x, y in zip(ca, cb))
        assert len(ca) == len(cb) == 48 and flipped <= 2, (method, flipped)
        # each greedy metric is a mean over the 48 greedy COTs of a per-COT value in [0, 1]: a flipped
        # COT moves it by at most 1/48; every other metric must agree to 1e-3
        greedy_tol = max(1e-3, flipped / len(ca))
        for key, value in m.items():
            tol = greedy_tol if key in ("task_accuracy", "repetition_rate", "unfinished_rate") else 1e-3
            assert b["methods"][method][key] == pytest.approx(value, abs=tol, nan_ok=True), (method, key, flipped)
    for name in ("samples_r1.jsonl", "eval_samples.jsonl"):
        ra, rb = ([json.loads(x) for x in (tmp_path / d / name).read_text().splitlines()] for d in ("one", "two"))
        assert [r["id"] for r in rb] == [r["id"] for r in ra]  # merged in question order
        assert sum(x == y for x, y in zip(ra, rb)) >= 0.9 * len(ra), name
    assert (tmp_path / "two" / "report.html").is_file() and not list((tmp_path / "two").glob("*.rank*"))


def test_fsdp2_checkpoint_is_gathered_from_both_processes(tmp_path):
    sys.path.insert(0, str(ROOT / "tests"))
    import fsdp_worker

    from aftlab.model.lm import load_lm
    from aftlab.train import checkpoint

    e = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    p = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        str(ROOT / "tests" / "fsdp_worker.py"), str(tmp_path / "ckpt")], env=e, cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-6000:]
    lm = fsdp_worker.build()  # the same 2 steps on the whole batch in this one process
    opt = checkpoint.make_optimizer(lm.model, lr=1e-2)
    fsdp_worker.train(lm.model, opt, fsdp_worker.BATCH)
    saved = load_lm(tmp_path / "ckpt")
    mine = lm.model.state_dict()
    diff = max((mine[k] - v).abs().max().item() for k, v in saved.model.state_dict().items())
    assert diff < 1e-5, diff
    state = checkpoint.load_state(tmp_path / "ckpt")
    fresh = checkpoint.make_optimizer(saved.model, lr=1e-2)
    fresh.load_state_dict(state["optimizer"])  # a resume loads it before prepare, as after plain training
    ours = opt.state_dict()["state"]
    for i, s in state["optimizer"]["state"].items():
        assert torch.allclose(s["exp_avg"], ours[i]["exp_avg"], atol=1e-6)
