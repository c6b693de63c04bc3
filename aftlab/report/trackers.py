"""Training curves where researchers look: each VFT and AFT log entry mirrored to TensorBoard, Trackio,
MLflow or Weights & Biases, as transformers' ``report_to`` does.

Place in the data path: beside ``train`` (its ``fit`` calls ``on_log`` with every new log entry; the
loop itself imports no tracker). The run folder's JSON logs (``vft/history.json``,
``align_logs.json``) stay the source of truth; a tracker is a view of the same rows. Every backend is
optional and imported only when chosen, and each writes locally by default:

* ``tensorboard`` — event files in ``<out>/tensorboard`` (``pip install tensorboard``);
* ``trackio`` — Trackio's local database, project ``aftlab`` (``pip install trackio``; no Space
  unless ``TRACKIO_SPACE_ID`` is set);
* ``mlflow`` — ``<out>/mlflow.db`` (or the file store ``<out>/mlruns`` with ``mlflow-skinny``) unless
  ``MLFLOW_TRACKING_URI`` says otherwise;
* ``wandb`` — offline mode in ``<out>/wandb`` unless ``WANDB_MODE`` says otherwise (``wandb sync``).

Each stage logs under its own prefix (``vft/loss``, ``aft_bc/gap``, …) against its own step count:
loss, gradient norm, learning rate and, for AFT, the positive and negative mean scores, their gap,
the boundary and the share of negatives below it.

>>> parse("tensorboard, mlflow")
['tensorboard', 'mlflow']
>>> scalars({"step": 3, "loss": 0.5, "gap": float("nan"), "method": "aft_bc", "round": 1})
{'loss': 0.5}
>>> seen = []
>>> class Memory:
...     def log(self, stage, step, values): seen.append((stage, step, values))
...     def close(self): pass
>>> t = Trackers([Memory()]); t.on_log("vft")({"step": 2, "loss": 1.25, "lr": 0.001}); t.close()
>>> seen
[('vft', 2, {'loss': 1.25, 'lr': 0.001})]
"""
from __future__ import annotations

import importlib.util
import json
import math
import os
from pathlib import Path
from typing import Callable, Protocol

from ..errors import ConfigError
from ..records import LogRow

NOT_SCALARS = ("step", "round")  # the x axis, and the round a row came from (its stage prefix says it)


class Tracker(Protocol):
    """One backend: ``log`` a stage's scalars at a step; ``close`` flushes and ends the run."""

    def log(self, stage: str, step: int, values: dict[str, float]) -> None: ...

    def close(self) -> None: ...


def scalars(row: LogRow) -> dict[str, float]:
    """The numeric fields of a log entry worth plotting: finite numbers other than the step and round."""
    return {k: float(v) for k, v in row.items() if k not in NOT_SCALARS and isinstance(v, (int, float))
            and not isinstance(v, bool) and math.isfinite(v)}


def _flat(config: dict, prefix: str = "") -> dict[str, object]:
    """``{"align": {"beta": 0.1}}`` → ``{"align.beta": 0.1}`` (what MLflow's params want)."""
    out = {}
    for k, v in config.items():
        if isinstance(v, dict):
            out |= _flat(v, f"{prefix}{k}.")
        else:
            out[f"{prefix}{k}"] = v if isinstance(v, (int, float, str, bool)) or v is None else json.dumps(v)
    return out


def _needs(module: str, backend: str):
    """``module``, imported now that ``backend`` (also its package's name) was chosen."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(f"--report-to {backend}: the `{backend}` package is not installed "
                          f"(pip install {backend}, or pip install 'aftlab[trackers]')") from None


class TensorBoard:
    def __init__(self, out: Path, name: str, config: dict):
        writer = _needs("torch.utils.tensorboard", "tensorboard").SummaryWriter
        self.w = writer(log_dir=str(out / "tensorboard"))
        self.w.add_text("config", "```\n" + json.dumps(config, indent=1) + "\n```")

    def log(self, stage, step, values):
        for k, v in values.items():
            self.w.add_scalar(f"{stage}/{k}", v, step)

    def close(self):
        self.w.close()


class Trackio:
    def __init__(self, out: Path, name: str, config: dict):
        self.run = _needs("trackio", "trackio").init(project="aftlab", name=name, config=config)

    def log(self, stage, step, values):  # one step counter per run: each stage carries its own as a field
        self.run.log({f"{stage}/{k}": v for k, v in values.items()} | {f"{stage}/step": step})

    def close(self):
        self.run.finish()


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


class MLflow:
    def __init__(self, out: Path, name: str, config: dict):
        self.mlflow = _needs("mlflow", "mlflow")
        if not os.environ.get("MLFLOW_TRACKING_URI"):
            self.mlflow.set_tracking_uri(mlflow_uri(out))
        self.mlflow.set_experiment("aftlab")
        self.mlflow.start_run(run_name=name)
        self.mlflow.log_params({k: str(v)[:500] for k, v in _flat(config).items()})

    def log(self, stage, step, values):
        self.mlflow.log_metrics({f"{stage}/{k}": v for k, v in values.items()}, step=step)

    def close(self):
        self.mlflow.end_run()


class WandB:
    def __init__(self, out: Path, name: str, config: dict):
        wandb = _needs("wandb", "wandb")
        out.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(project="aftlab", name=name, config=config, dir=str(out),
                              mode=os.environ.get("WANDB_MODE", "offline"))
        self.stages: set[str] = set()

    def log(self, stage, step, values):
        if stage not in self.stages:  # each stage plotted against its own step, which restarts at 1
            self.run.define_metric(f"{stage}/step")
            self.run.define_metric(f"{stage}/*", step_metric=f"{stage}/step")
            self.stages.add(stage)
        self.run.log({f"{stage}/{k}": v for k, v in values.items()} | {f"{stage}/step": step})

    def close(self):
        self.run.finish()


BACKENDS: dict[str, Callable[[Path, str, dict], Tracker]] = {
    "tensorboard": TensorBoard, "trackio": Trackio, "mlflow": MLflow, "wandb": WandB}


def parse(text: str | list[str] | None) -> list[str]:
    """Backend names from ``--report-to`` (comma-separated; ``none`` or empty: no tracker)."""
    names = text if isinstance(text, list) else [x.strip() for x in (text or "").split(",")]
    names = [n for n in names if n and n != "none"]
    unknown = [n for n in names if n not in BACKENDS]
    if unknown:
        raise ConfigError(f"--report-to {','.join(unknown)}: unknown tracker; choose from {', '.join(BACKENDS)}")
    return list(dict.fromkeys(names))


class Trackers:
    """Several trackers as one: ``on_log(stage)`` is the callback ``train.fit`` takes."""

    def __init__(self, trackers: list[Tracker]):
        self.trackers = list(trackers)

    def on_log(self, stage: str) -> Callable[[LogRow], None] | None:
        """The ``on_log`` callback of a stage (``vft``, ``aft_bc``, …); None when nothing is tracked."""
        if not self.trackers:
            return None

        def log(row: LogRow) -> None:
            values = scalars(row)
            for t in self.trackers:
                t.log(stage, int(row["step"]), values)
        return log

    def close(self) -> None:
        for t in self.trackers:
            t.close()

    def __enter__(self) -> Trackers:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_trackers(names: str | list[str] | None, out: str | Path, config: dict | None = None,
                  name: str | None = None) -> Trackers:
    """The trackers ``names`` for a run writing into ``out`` (run name ``name``, default the folder's
    name), each given the run's ``config``; a missing package fails here, before any training."""
    out = Path(out)
    chosen = parse(names)
    opened: list[Tracker] = []
    try:
        for n in chosen:
            opened.append(BACKENDS[n](out, name or out.resolve().name, config or {}))
    except BaseException:
        Trackers(opened).close()
        raise
    return Trackers(opened)
