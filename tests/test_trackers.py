"""``--report-to``: every VFT and AFT log entry reaches the chosen trackers, with the values of the run's
JSON logs (the source of truth); a tracker that is not installed fails before any training."""
import importlib.util
import json
import math
import sys
import types

import pytest
from accelerate.tracking import GeneralTracker

from aftlab.cli import main
from aftlab.report import trackers

TENSORBOARD = importlib.util.find_spec("tensorboard") is not None
TRACKIO = importlib.util.find_spec("trackio") is not None
MLFLOW = importlib.util.find_spec("mlflow") is not None


class Memory(GeneralTracker):
    """An accelerate tracker that keeps what it is given (registered as ``memory`` for the run below)."""
    name, requires_logging_directory = "memory", False
    runs: list["Memory"] = []

    def __init__(self, out, run_name):
        super().__init__()
        self.out, self.run_name, self.config, self.rows, self.closed = out, run_name, None, [], False
        Memory.runs.append(self)

    @property
    def tracker(self):
        return self.rows

    def store_init_configuration(self, values):
        self.config = values

    def log(self, values, step=None, **kwargs):
        self.rows.append((step, values))

    def finish(self):
        self.closed = True


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory):
    """A short ``aftlab run --report-to memory[,tensorboard,trackio,mlflow]`` (VFT, sampling, one AFT
    method), with each real tracker that is installed."""
    out = tmp_path_factory.mktemp("tracked")
    names = ",".join(["memory"] + [n for n, on in (("tensorboard", TENSORBOARD), ("trackio", TRACKIO),
                                                   ("mlflow", MLFLOW)) if on])
    Memory.runs.clear()
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(trackers.BACKENDS, "memory", Memory)
        mp.setenv("TRACKIO_DIR", str(out / "trackio"))  # Trackio's local database, not ~/.cache
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        assert main(["run", "--preset", "smoke", "--methods", "aft_bc", "--out", str(out), "--no-progress",
                     "--set", "vft.steps=30", "--set", "vft.log_every=5", "--set", "data.n_test=16",
                     "--set", "sample.n_questions=24", "--report-to", names]) == 0
    (run,) = Memory.runs
    return out, run


def _json_logs(out):
    vft = json.loads((out / "vft_history.json").read_text())
    aft = json.loads((out / "align_logs.json").read_text())["aft_bc"]
    return vft, aft


def test_every_vft_and_aft_log_entry_reaches_the_tracker_with_the_json_values(tracked_run):
    out, run = tracked_run
    vft, aft = _json_logs(out)
    assert run.closed and run.run_name == out.resolve().name and run.config["preset"] == "smoke"
    assert run.config["align.beta"] == json.loads((out / "config.json").read_text())["align"]["beta"]
    got = {stage: [(step, {k.split("/", 1)[1]: x for k, x in v.items()}) for step, v in run.rows
                   if all(k.startswith(stage + "/") for k in v)] for stage in ("vft", "aft_bc")}
    assert len(got["vft"]) + len(got["aft_bc"]) == len(run.rows)  # every row under one stage's prefix
    assert [s for s, _ in got["vft"]] == [r["step"] for r in vft] == [5, 10, 15, 20, 25, 30]
    assert [s for s, _ in got["aft_bc"]] == [r["step"] for r in aft] and len(aft) >= 2
    for (_, values), row in zip(got["vft"] + got["aft_bc"], vft + aft):
        assert values == trackers.scalars(row)
    for key in ("loss", "grad_norm", "lr"):
        assert all(key in v for _, v in got["vft"] + got["aft_bc"])
    for key in ("pos_score", "neg_score", "gap", "neg_below_boundary"):
        assert all(key in v for _, v in got["aft_bc"]), key
    assert all(math.isfinite(x) for _, v in got["aft_bc"] for x in v.values())


@pytest.mark.skipif(not TENSORBOARD, reason="tensorboard not installed (pip install 'aftlab[tensorboard]')")
def test_tensorboard_event_files_hold_the_json_curves(tracked_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    out, _ = tracked_run
    vft, aft = _json_logs(out)
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"vft/loss", "vft/grad_norm", "vft/lr", "aft_bc/loss", "aft_bc/pos_score", "aft_bc/neg_score",
            "aft_bc/gap", "aft_bc/grad_norm", "aft_bc/lr"} <= tags
    for tag, rows, key in (("vft/loss", vft, "loss"), ("aft_bc/gap", aft, "gap"), ("aft_bc/lr", aft, "lr")):
        points = events.Scalars(tag)
        assert [p.step for p in points] == [r["step"] for r in rows]
        assert [p.value for p in points] == pytest.approx([r[key] for r in rows], rel=1e-5)


def _curves(vft, aft):
    """(tag, step, value) of the JSON logs' loss curves and AFT gap, as each tracker names them."""
    return [(f"{stage}/{key}", r["step"], r[key]) for stage, rows, key in
            (("vft", vft, "loss"), ("aft_bc", aft, "loss"), ("aft_bc", aft, "gap")) for r in rows]


@pytest.mark.skipif(not MLFLOW, reason="mlflow not installed (pip install 'aftlab[trackers]')")
def test_mlflow_store_holds_the_json_curves(tracked_run):
    import mlflow
    out, _ = tracked_run
    vft, aft = _json_logs(out)
    client = mlflow.MlflowClient(trackers.mlflow_uri(out))
    (run,) = client.search_runs([client.get_experiment_by_name("aftlab").experiment_id])
    assert run.info.run_name == out.resolve().name and run.data.params["preset"] == "smoke"
    curves = _curves(vft, aft)
    history = {tag: {p.step: p.value for p in client.get_metric_history(run.info.run_id, tag)}
               for tag in {tag for tag, _, _ in curves}}
    for tag, step, value in curves:
        assert history[tag][step] == pytest.approx(value, rel=1e-6), tag


@pytest.mark.skipif(not TRACKIO, reason="trackio not installed (pip install 'aftlab[trackers]')")
def test_trackio_database_holds_the_json_curves(tracked_run):
    import sqlite3
    out, _ = tracked_run
    vft, aft = _json_logs(out)
    with sqlite3.connect(out / "trackio" / "aftlab.db") as db:  # Trackio's local store, one row per log call
        rows = [json.loads(m) for (m,) in db.execute("SELECT metrics FROM metrics ORDER BY id")]
    logged = {(tag, row[tag.split("/")[0] + "/step"]): v for row in rows for tag, v in row.items()}
    for tag, step, value in _curves(vft, aft):
        assert logged[(tag, step)] == pytest.approx(value, rel=1e-6), tag


def test_a_missing_tracker_package_fails_before_training(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "wandb", None)  # as if not installed, whether or not it is
    assert main(["vft", "--preset", "smoke", "--out", str(tmp_path), "--no-progress", "--report-to", "wandb"]) == 2
    err = capsys.readouterr().err
    assert "--report-to wandb" in err and "pip install wandb" in err and "Traceback" not in err
    assert not (tmp_path / "vft").exists()


def test_an_unknown_tracker_is_refused_by_name(tmp_path, capsys):
    assert main(["vft", "--preset", "smoke", "--out", str(tmp_path), "--report-to", "tensorbored"]) == 2
    assert "unknown tracker" in capsys.readouterr().err


def test_no_tracker_means_no_callback():
    assert trackers.open_trackers("none", ".").on_log("vft") is None


def test_wandb_plots_each_stage_against_its_own_step(tmp_path, monkeypatch):
    """W&B keeps one rising step per run, and each stage restarts at step 1: every row travels with its
    stage's step as a value, which W&B is told to plot that stage against (a fake ``wandb`` records what
    accelerate's tracker passes to it; the real one, offline, writes a binary log only its service reads)."""
    calls = []

    class Run:
        def log(self, values, step=None, **kwargs):
            calls.append(("log", values, step))

        def define_metric(self, name, step_metric=None):
            calls.append(("define_metric", name, step_metric))

        def finish(self):
            calls.append(("finish",))

    class Config:
        def update(self, values, allow_val_change=False):
            calls.append(("config", values))

    fake = types.ModuleType("wandb")
    fake.init, fake.config = lambda **kwargs: calls.append(("init", kwargs)) or Run(), Config()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    with trackers.open_trackers("wandb", tmp_path / "run", {"align": {"beta": 0.1}}) as t:
        vft, aft = t.on_log("vft"), t.on_log("aft_bc")
        vft({"step": 5, "loss": 2.0})
        vft({"step": 10, "loss": 1.5})
        aft({"step": 1, "loss": 0.5, "gap": 0.25, "round": 1})
    (init,) = [c[1] for c in calls if c[0] == "init"]
    assert init["project"] == "aftlab" and init["name"] == "run" and init["mode"] == "offline"
    assert init["dir"] == str(tmp_path / "run") and ("config", {"align.beta": 0.1}) in calls
    assert ("define_metric", "vft/*", "vft/step") in calls and ("define_metric", "aft_bc/*", "aft_bc/step") in calls
    assert [c[1:] for c in calls if c[0] == "log"] == [
        ({"vft/loss": 2.0, "vft/step": 5}, None), ({"vft/loss": 1.5, "vft/step": 10}, None),
        ({"aft_bc/loss": 0.5, "aft_bc/gap": 0.25, "aft_bc/step": 1}, None)]
    assert calls[-1] == ("finish",)
