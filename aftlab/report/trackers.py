"""Training curves where researchers look: each VFT and AFT log entry mirrored to TensorBoard, Trackio,
MLflow or Weights & Biases through ``accelerate.tracking``, as transformers' ``report_to`` does.

Place in the data path: beside ``train`` (its ``fit`` calls ``on_log`` with every new log entry; the
loop itself imports no tracker). The run folder's JSON logs (``vft/history.json``,
``align_logs.json``) stay the source of truth; a tracker is a view of the same rows. The backends are
accelerate's own tracker classes, used without an ``Accelerator``; aftlab only picks where each
writes (locally by default) and how a stage's step reaches it. Every backend package is optional
and imported only when chosen:

* ``tensorboard`` — event files in ``<out>/tensorboard`` (``pip install tensorboard``), the run's
  config as hyperparameters;
* ``trackio`` — Trackio's local database, project ``aftlab`` (``pip install trackio``; no Space
  unless ``TRACKIO_SPACE_ID`` is set);
* ``mlflow`` — ``<out>/mlflow.db`` (or the file store ``<out>/mlruns`` with ``mlflow-skinny``) unless
  ``MLFLOW_TRACKING_URI`` says otherwise, experiment ``aftlab``;
* ``wandb`` — offline mode in ``<out>/wandb`` unless ``WANDB_MODE`` says otherwise (``wandb sync``).

Each stage logs under its own prefix (``vft/loss``, ``aft_bc/gap``, …) against its own step count:
loss, gradient norm, learning rate and, for AFT, the positive and negative mean scores, their gap,
the boundary and the share of negatives below it. TensorBoard and MLflow take a step per value;
W&B and Trackio keep one rising step counter per run, so there each stage's step travels as a value
of its own (``vft/step``) and W&B plots the stage against it.

>>> parse("tensorboard, mlflow")
['tensorboard', 'mlflow']
>>> scalars({"step": 3, "loss": 0.5, "gap": float("nan"), "method": "aft_bc", "round": 1})
{'loss': 0.5}
>>> from accelerate.tracking import GeneralTracker
>>> class Memory(GeneralTracker):
...     name, requires_logging_directory, tracker, seen = "memory", False, None, []
...     def log(self, values, step=None): self.seen.append((step, values))
>>> t = Trackers([Memory()]); t.on_log("vft")({"step": 2, "loss": 1.25, "lr": 0.001}); t.close()
>>> Memory.seen
[(2, {'vft/loss': 1.25, 'vft/lr': 0.001})]
"""
from __future__ import annotations

import importlib.util
import json
import math
import os
from pathlib import Path
from typing import Callable

from accelerate import PartialState
from accelerate.tracking import GeneralTracker, MLflowTracker, TensorBoardTracker, TrackioTracker, WandBTracker

from ..errors import ConfigError
from ..records import LogRow
from ..train import distributed

NOT_SCALARS = ("step", "round")  # the x axis, and the round a row came from (its stage prefix says it)
ONE_STEP_COUNTER = ("wandb", "trackio")  # a run's step only rises: stages, which each restart at 1, log theirs as a value


def scalars(row: LogRow) -> dict[str, float]:
    """The numeric fields of a log entry worth plotting: finite numbers other than the step and round."""
    return {k: float(v) for k, v in row.items() if k not in NOT_SCALARS and isinstance(v, (int, float))
            and not isinstance(v, bool) and math.isfinite(v)}


def _flat(config: dict, prefix: str = "") -> dict[str, object]:
    """``{"align": {"beta": 0.1}}`` → ``{"align.beta": 0.1}``; lists as JSON (what hyperparameter tables take)."""
    out = {}
    for k, v in config.items():
        if isinstance(v, dict):
            out |= _flat(v, f"{prefix}{k}.")
        else:
            out[f"{prefix}{k}"] = v if isinstance(v, (int, float, str, bool)) or v is None else json.dumps(v)
    return out


def mlflow_uri(out: Path) -> str:
    """Where MLflow writes when ``MLFLOW_TRACKING_URI`` is unset: a SQLite database ``<out>/mlflow.db``
    where SQLAlchemy is installed (full ``mlflow``), else the file store ``<out>/mlruns``, which MLflow 3
    keeps in maintenance mode and refuses unless ``MLFLOW_ALLOW_FILE_STORE`` is set (``mlflow-skinny``
    has no SQLAlchemy, so that flag is set here, for this process only, when it is not set already)."""
    out.mkdir(parents=True, exist_ok=True)
    if importlib.util.find_spec("sqlalchemy") is not None:
        return "sqlite:///" + str((out / "mlflow.db").resolve())
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    return (out / "mlruns").resolve().as_uri()


def _mlflow(out: Path, name: str) -> MLflowTracker:
    if not os.environ.get("MLFLOW_TRACKING_URI"):  # MLflow's default store sits in the working directory
        import mlflow
        mlflow.set_tracking_uri(mlflow_uri(out))
    return MLflowTracker(experiment_name="aftlab", run_name=name)


def _wandb(out: Path, name: str) -> WandBTracker:
    out.mkdir(parents=True, exist_ok=True)
    return WandBTracker("aftlab", name=name, dir=str(out), mode=os.environ.get("WANDB_MODE", "offline"))


# name → the (not yet started) accelerate tracker of a run writing into ``out`` under the run name ``name``
BACKENDS: dict[str, Callable[[Path, str], GeneralTracker]] = {
    "tensorboard": lambda out, name: TensorBoardTracker("tensorboard", out),  # writes <out>/tensorboard
    "trackio": lambda out, name: TrackioTracker("aftlab", name=name),
    "mlflow": _mlflow,
    "wandb": _wandb}


def parse(text: str | list[str] | None) -> list[str]:
    """Backend names from ``--report-to`` (comma-separated; ``none`` or empty: no tracker)."""
    names = text if isinstance(text, list) else [x.strip() for x in (text or "").split(",")]
    names = [n for n in names if n and n != "none"]
    unknown = [n for n in names if n not in BACKENDS]
    if unknown:
        raise ConfigError(f"--report-to {','.join(unknown)}: unknown tracker; choose from {', '.join(BACKENDS)}")
    return list(dict.fromkeys(names))


class Trackers:
    """Several accelerate trackers as one: ``on_log(stage)`` is the callback ``train.fit`` takes."""

    def __init__(self, trackers: list[GeneralTracker]):
        self.trackers = list(trackers)

    def on_log(self, stage: str) -> Callable[[LogRow], None] | None:
        """The ``on_log`` callback of a stage (``vft``, ``aft_bc``, …); None when nothing is tracked."""
        if not self.trackers:
            return None
        for t in self.trackers:
            if t.name == "wandb":  # W&B plots the stage against its own step rather than the run's counter
                t.tracker.define_metric(f"{stage}/step")
                t.tracker.define_metric(f"{stage}/*", step_metric=f"{stage}/step")

        def log(row: LogRow) -> None:
            values, step = {f"{stage}/{k}": v for k, v in scalars(row).items()}, int(row["step"])
            for t in self.trackers:
                if t.name in ONE_STEP_COUNTER:
                    t.log(values | {f"{stage}/step": step})
                else:
                    t.log(values, step=step)
        return log

    def close(self) -> None:
        for t in self.trackers:
            t.finish()

    def __enter__(self) -> Trackers:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_trackers(names: str | list[str] | None, out: str | Path, config: dict | None = None,
                  name: str | None = None) -> Trackers:
    """The trackers ``names`` for a run writing into ``out`` (run name ``name``, default the folder's
    name), started and given the run's ``config``; a missing package fails here, before any training.

    Call it on the process that reports (the main one of a launch). accelerate's trackers log through
    its multi-process logger, which needs accelerate's process state: it is set up here as
    ``train.distributed`` sets it up (under a launch on CPU, with ``cpu=True``), so the ``Accelerator``
    that training builds later finds the same state."""
    out = Path(out)
    chosen = parse(names)
    if chosen:
        PartialState(cpu=distributed.cpu_launch())
    opened: list[GeneralTracker] = []
    try:
        for n in chosen:
            try:
                tracker = BACKENDS[n](out, name or out.resolve().name)
                tracker.start()
            except ImportError as e:
                raise ConfigError(f"--report-to {n}: the `{n}` package is not installed or does not import "
                                  f"({e}); pip install {n}, or pip install 'aftlab[trackers]'") from None
            opened.append(tracker)
            tracker.store_init_configuration(_flat(config or {}))
    except BaseException:
        Trackers(opened).close()
        raise
    return Trackers(opened)
