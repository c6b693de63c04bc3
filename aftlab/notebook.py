"""Cached stages for the guided notebooks (``notebooks/0*.ipynb``); their HTML views and widgets are in
``aftlab.report.views``.

Place in the data path: beside ``pipeline`` at the top; each ``ensure_*`` runs one stage (data →
VFT → sampling → AFT → evaluate) through the same library functions the pipeline uses, or reloads
that stage's output from the notebooks' shared work folder, so any notebook runs on its own and
the later ones reuse what the earlier ones computed. The folder has a pipeline run's layout
(``config.json``, ``vft/``, ``samples_r1.jsonl``, ``eval_samples.jsonl``), so ``aftlab.sweep`` works
on it directly.

Every notebook's setup cell calls :func:`setup`, which prepares the process as the CLI does and
returns :func:`config`'s config:

>>> cfg = config("tiny", seed=1)
>>> cfg.preset, cfg.seed, cfg.model.name
('tiny', 1, 'tiny')
>>> workdir(cfg, root="runs/notebooks", demo="no-such-run").parent.as_posix()
'runs/notebooks'

After ``make demo`` the work folder is the demo's run (``runs/demo``) when it was made with the notebook's
config: the notebooks read its VFT model, samples, aligned models and evaluations, and what they show beyond
the run (:data:`MODELS_04`, :data:`MODELS_05`, :data:`VARIANTS_05`, the VFT snapshots' evaluations) was computed there by
``aftlab notebooks runs/demo`` (:func:`prepare`). Every cache a notebook writes is keyed by the fingerprints
of the stages it was computed from (``aftlab.stages``) and the library's code, so it is never reused under
other settings, wherever the folder is.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

from .config import RunConfig, preset, to_dict
from .train import checkpoint

SHARED = ("vft", "samples_r1", "eval_samples", "eval/vft")  # the stages every notebook reads
# What notebooks 04 and 05 train beyond the run's own methods, in one place: the notebooks show them, and
# ``prepare`` (``aftlab notebooks RUN``, run by ``make demo``) computes them ahead so the notebooks open in seconds.
# The notebook-only trainings push harder and shorter than the preset's alignment (lr 1e-4, NLL weight 1, one epoch),
# so that what each one teaches shows within the notebooks' budget: on the default, one epoch of the collapse setting
# already takes the unconstrained model from 0.49 to 0.06 greedy accuracy (four epochs: 0.10), half an epoch of STRONG
# separates each loss from its +BC form, and the β sweep's higher learning rate lets β bind (task accuracy 0.45 at
# β = 0.01, 0.36 at β = 3; at the preset's settings every β gave 0.48-0.51).
COLLAPSE = {"gamma": 30.0, "nll_weight": 0.0, "lr": 5e-4, "epochs": 1.0}  # a strong push: no NLL term, γ = 30
MODELS_04 = {**{m: {} for m in ("rft", "align_only", "aft_dc", "aft_bc")},
             **{f"{m}_collapse": {"method": m, **COLLAPSE} for m in ("align_only", "aft_bc")},
             **{f"{m}_first_step": {"method": m, "neg_credit": "first_step"} for m in ("align_only", "aft_bc")}}
STRONG = {"lr": 5e-4, "nll_weight": 0.0, "epochs": 0.5}  # the other ranking losses without an NLL term, so their push shows
BETAS = (0.01, 0.1, 1.0, 3.0)  # nats/token; beta_quantile 0, else the calibrated margin replaces each value
BETA_SWEEP = {"lr": 5e-4, "epochs": 0.5}  # AFT-BC with its NLL term, pushed hard enough for β to bind
MODELS_05 = {"aft_rbc": {}}  # ranking feedback, beside the run's RFT and AFT-BC
VARIANTS_05 = {**{f"{loss}{'+BC' if c else ''}": {"method": loss, "constraint": c, **STRONG}
                  for loss in ("dpo", "rrhf", "pro") for c in (None, "boundary")},
               **{f"beta={b}": {"method": "aft_bc", "beta": b, "beta_quantile": 0.0, **BETA_SWEEP} for b in BETAS}}


def config(preset_name: str = "tiny", seed: int = 0) -> RunConfig:
    """The RunConfig a notebook uses: the named preset with the seed."""
    return preset(preset_name, seed=seed)


def setup(preset_name: str = "tiny", seed: int = 0, threads: int | str = "auto") -> RunConfig:
    """The one call of a notebook's setup cell: torch's CPU threads chosen as ``aftlab`` on the command line
    chooses them (``runtime.set_threads``: the usable cores minus those other work keeps busy, unless
    ``OMP_NUM_THREADS`` is set), transformers' own bars and logs silenced (``model.quiet_transformers``),
    plotly figures shown with an HTML view as well (``report.offline``: an HTML export keeps them, plotly.js
    embedded once), and the notebook's config (:func:`config`).

    A kernel left at torch's default (every core) on a machine whose cores are busy ran a notebook
    about 100× slower than one thread would have: OpenMP workers spin waiting for each other."""
    from .model.lm import quiet_transformers
    from .model.runtime import set_threads
    from .report.offline import use_offline_figures

    if "OMP_NUM_THREADS" not in os.environ:
        set_threads(threads)
    quiet_transformers()
    use_offline_figures()
    return config(preset_name, seed)


def _repo_root() -> Path:
    here = Path.cwd().resolve()
    for p in (here, *here.parents):
        if (p / "pyproject.toml").is_file() and (p / "aftlab").is_dir():
            return p
    return here


_PLANS: dict[str, dict] = {}


def _plan(cfg: RunConfig) -> dict:
    """``stages.plan`` of ``cfg`` (memoised: hashing the questions of a large task takes seconds)."""
    from .stages import digest, plan, questions_fingerprint
    key = digest(to_dict(cfg))
    if key not in _PLANS:
        _PLANS[key] = plan(cfg, questions_fingerprint(*task(cfg)))
    return _PLANS[key]


def demo_run(cfg: RunConfig, demo: str | Path | None = None) -> Path | None:
    """The run folder ``make demo`` wrote (``demo``, else ``$AFTLAB_DEMO_RUN``, else ``runs/demo`` under the
    repository) when it is a finished run of ``cfg``: ``metrics.json`` written and the stages every notebook
    reads (:data:`SHARED`) recorded with this config's fingerprints; else None."""
    from .stages import read_manifest

    d = Path(demo or os.environ.get("AFTLAB_DEMO_RUN") or _repo_root() / "runs" / "demo")
    if not (d / "metrics.json").is_file():
        return None
    recorded, stages = read_manifest(d), _plan(cfg)
    return d if all(recorded.get(n, {}).get("fingerprint") == stages[n].fingerprint for n in SHARED) else None


def workdir(cfg: RunConfig, root: str | Path | None = None, demo: str | Path | None = None) -> Path:
    """The notebooks' work folder for ``cfg``: the demo's run when it was made with ``cfg`` (:func:`demo_run`),
    else ``<root>/<preset>-s<seed>-<key>``.

    ``root`` defaults to ``$AFTLAB_NOTEBOOK_RUNS`` or ``runs/notebooks`` under the repository, so
    notebooks started from ``notebooks/`` and scripts started from the root share it. The key hashes
    the fingerprints of the stages every notebook reads (:data:`SHARED`: the VFT model, the training and
    held-out samples and the VFT model's evaluation, so every setting and question they depend on) and the
    library's code (:func:`code_version`): changing any of them starts a fresh folder.
    """

    if (found := demo_run(cfg, demo)) is not None:
        return found
    root = Path(root or os.environ.get("AFTLAB_NOTEBOOK_RUNS") or _repo_root() / "runs" / "notebooks")
    return root / f"{cfg.preset}-s{cfg.seed}-{_key(cfg)[:8]}"


def _key(cfg: RunConfig, *parts) -> str:
    """A cache key: the fingerprints of the stages every notebook reads, the library's code and ``parts``."""
    from .stages import digest
    stages = _plan(cfg)
    return digest([stages[n].fingerprint for n in SHARED] + [code_version(), *parts])


def _pipeline_made(cfg: RunConfig, d: Path, stage: str) -> bool:
    """Whether ``aftlab run`` made ``stage`` in ``d`` with this config's settings (its recorded fingerprint)."""
    from .stages import read_manifest
    stages = _plan(cfg)
    return stage in stages and read_manifest(d).get(stage, {}).get("fingerprint") == stages[stage].fingerprint


def code_version() -> str:
    """A hash of what the library's code does (``stages.code_hash`` of every module of the package): part
    of every notebook cache key. Editing a docstring or a comment keeps it, so a documentation fix does
    not throw away every cached notebook run; any change of code changes it.

    >>> len(code_version())
    12
    """
    from .stages import code_hash, digest

    package = Path(__file__).resolve().parent
    return digest([(p.relative_to(package).as_posix(), code_hash(p.read_text()))
                   for p in sorted(package.rglob("*.py"))], n=12)


def _weights_key(path: Path) -> list:
    """What identifies a saved model's weights cheaply: each weights file's name, size and mtime."""
    return [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(Path(path).glob("*.safetensors"))]


def task(cfg: RunConfig):
    """(train, test) examples of the config (the synthetic generator is deterministic and fast)."""
    from .data.questions import synthetic_from_config
    return synthetic_from_config(cfg.data)


def _write_config(cfg: RunConfig, d: Path) -> None:
    d.mkdir(parents=True, exist_ok=True)
    if not (d / "config.json").is_file():  # a run's own config stays as the run wrote it
        checkpoint.write_atomic(d / "config.json", json.dumps(to_dict(cfg), indent=1))


def _load(cfg: RunConfig, path: Path):
    from .model.lm import load_lm_from_config
    lm = load_lm_from_config(cfg.model, path)
    lm.model.eval()
    return lm


def vft_snapshots(d: Path) -> dict[int, Path]:
    """The VFT model after each quarter of its schedule (``vft_steps/step_N``, the pipeline's and
    :func:`ensure_vft`'s): {step: folder}, in step order."""
    from .train.vft import snapshot_dir
    found = {int(p.name.split("_")[-1]): p for p in snapshot_dir(Path(d) / "vft").glob("step_*") if p.is_dir()}
    return dict(sorted(found.items()))


def ensure_vft(cfg: RunConfig, d: Path, progress: bool = True):
    """The VFT model of ``cfg`` in ``d/vft`` and its loss history, trained now unless already there, with the
    snapshots the pipeline keeps (``pipeline.VFT_SNAPSHOTS`` of them, in ``d/vft_steps``)."""
    from .model.lm import build_lm
    from .pipeline import VFT_SNAPSHOTS
    from .train.vft import train_vft

    d = Path(d)
    _write_config(cfg, d)
    found = checkpoint.find(d / "vft")
    if found is not None and checkpoint.load_state(found)["step"] >= cfg.vft.steps:
        return _load(cfg, found), checkpoint.load_state(found)["history"]
    train, test = task(cfg)
    lm = build_lm(cfg.model, train + test, cfg.seed)
    history = train_vft(lm, train, cfg.vft, out=d / "vft", seed=cfg.seed, progress=progress, snapshots=VFT_SNAPSHOTS)
    return lm, history


def ensure_samples(cfg: RunConfig, d: Path, lm=None, progress: bool = True) -> tuple[list[dict], list[dict]]:
    """(training records, held-out records): k labelled VFT samples per question, as the pipeline
    draws them (same seeds, same cache files), sampled now unless cached."""
    from .eval.evaluate import assessment_set
    from .sampling.samples import sample_cots

    d = Path(d)
    s = cfg.sample
    lm = lm if lm is not None else ensure_vft(cfg, d, progress=progress)[0]
    train, test = task(cfg)
    kw = dict(temperature=s.temperature, top_p=s.top_p, max_new_tokens=s.max_new_tokens,
              batch_questions=s.batch_questions, progress=progress)
    eval_records = assessment_set(lm, test, cfg.assess_questions, cfg.eval_k, cfg.assess_mixed, seed=cfg.seed + 1,
                                  cache=d / "eval_samples.jsonl", **kw)
    train_records = sample_cots(lm, train[:s.n_questions], k=s.k, seed=cfg.seed, cache=d / "samples_r1.jsonl", **kw)
    return train_records, eval_records


def model_dir(d: Path, name: str) -> Path:
    """Where model ``name`` lives: ``vft``, a method the run trained (``d/<method>``), or one a notebook
    trained (``d/aligned/<name>``)."""
    d = Path(d)
    if name == "vft":
        return d / "vft"
    return d / name if (d / name / checkpoint.STATE).is_file() else d / "aligned" / name


def ensure_aligned(cfg: RunConfig, d: Path, name: str, method: str | None = None, progress: bool = True,
                   **overrides):
    """Model ``name``: ``method`` (default: ``name``) trained from the VFT model on the training
    samples with ``cfg.align_for(method)`` plus ``overrides`` (AlignConfig fields); returns
    ``(lm, per-step log)``. The run's own model when ``aftlab run`` trained it with these settings, else
    reloaded from ``d/aligned/<name>`` when trained there from the same VFT model, samples and settings."""
    from .align.aft import align_from_vft, batch_seed

    d = Path(d)
    if not overrides and method in (None, name) and _pipeline_made(cfg, d, f"model/{name}") and (
            found := checkpoint.find(d / name)):
        return _load(cfg, found), checkpoint.load_state(found)["history"]
    acfg = dataclasses.replace(cfg.align_for(method or name), **overrides)
    key = _key(cfg, dataclasses.asdict(acfg))
    out = d / "aligned" / name
    meta = out / "align.json"
    if meta.is_file() and json.loads(meta.read_text()).get("key") == key:
        return _load(cfg, out), json.loads(meta.read_text())["log"]
    train_records, _ = ensure_samples(cfg, d, progress=progress)
    lm, log = align_from_vft(checkpoint.find(d / "vft"), train_records, acfg, batch_seed(cfg.seed), cfg.model,
                             progress=progress)
    if out.exists():
        shutil.rmtree(out)
    lm.save(out)
    checkpoint.write_atomic(meta, json.dumps({"key": key, "config": dataclasses.asdict(acfg), "log": log}))
    return lm, log


def ensure_eval(cfg: RunConfig, d: Path, name: str, lm=None, path: Path | None = None) -> dict:
    """``evaluate`` of model ``name`` (greedy task accuracy on the held-out questions, and the fixed
    held-out samples rescored): the run's own (``evals/<name>.json``) when ``aftlab run`` evaluated it with
    these settings, else computed and cached in ``d/evals/notebook/<name>.json`` under a key of the model's
    weights and what it was made from; ``path`` loads the model from another folder (a VFT snapshot)."""
    from .eval.evaluate import evaluate, own_sampling

    d = Path(d)
    if path is None and _pipeline_made(cfg, d, f"eval/{name}") and (d / "evals" / f"{name}.json").is_file():
        cached = json.loads((d / "evals" / f"{name}.json").read_text())
        if cached.get("fingerprint") == _plan(cfg)[f"eval/{name}"].fingerprint:
            return cached["result"]
    cache = d / "evals" / "notebook" / f"{name}.json"
    folder = path or (checkpoint.find(d / "vft") if name == "vft" else model_dir(d, name))
    key = _key(cfg, name, str(path), _weights_key(folder) if folder else None)
    if cache.is_file() and (found := json.loads(cache.read_text())).get("key") == key:
        return found["result"]
    _, eval_records = ensure_samples(cfg, d, progress=False)
    if lm is None:
        lm = _load(cfg, folder)
    _, test = task(cfg)
    # self-consistency (k more samples of some held-out questions) for VFT and the run's methods only: the
    # notebooks' other models are compared on greedy, assessment and rerank, and CI runs them all from nothing
    own = own_sampling(cfg) if name == "vft" or name in cfg.methods else {}
    res = evaluate(lm, test, eval_records, cfg.sample.max_new_tokens, **own,
                   own_records=eval_records if name == "vft" and path is None else None)
    cache.parent.mkdir(parents=True, exist_ok=True)
    checkpoint.write_atomic(cache, json.dumps({"key": key, "result": res}))
    return res


def snapshot_evals(cfg: RunConfig, d: Path) -> dict[int, dict]:
    """``{step: evaluation}`` of the VFT snapshots (:func:`vft_snapshots`); the last is the final VFT model, whose
    evaluation is the run's own (``ensure_eval(cfg, d, "vft")``)."""
    snaps = vft_snapshots(d)
    return {step: ensure_eval(cfg, d, "vft") if step == max(snaps) else ensure_eval(cfg, d, f"vft_step{step}", path=path)
            for step, path in snaps.items()}


def ensure_variants(cfg: RunConfig, d: Path, variants: dict[str, dict], progress: bool = True) -> dict[str, dict]:
    """``aftlab.sweep.variant_sweep`` over the work folder, cached per variant in ``d/variants.json``
    (keyed by its settings, the config's alignment settings and what the VFT model and samples were made
    from): {name: metrics + gap + train log}."""
    from .sweep import variant_sweep

    d = Path(d)
    ensure_samples(cfg, d, progress=progress)
    cache = d / "variants.json"
    done = json.loads(cache.read_text()) if cache.is_file() else {}
    # a variant's model follows from its settings over the config's alignment settings (sweep reads config.json)
    shared = {k: v for k, v in to_dict(cfg).items() if k in ("align", "method_overrides")}
    key = {n: _key(cfg, v, shared) for n, v in variants.items()}
    todo = {n: v for n, v in variants.items() if done.get(n, {}).get("key") != key[n]}
    if todo:
        for n, res in variant_sweep(d, todo, progress=progress, self_consistency=False).items():
            done[n] = {"key": key[n], "result": res}
            checkpoint.write_atomic(cache, json.dumps(done))
    return {n: done[n]["result"] for n in variants}


def ensure_models(cfg: RunConfig, d: Path, models: dict[str, dict], progress: bool = True) -> dict[str, tuple]:
    """``{name: (per-step log, evaluation)}`` of each model ``{name: {"method": ..., field: value}}``
    (:func:`ensure_aligned`, then :func:`ensure_eval`)."""
    out = {}
    for name, over in models.items():
        over = dict(over)
        lm, log = ensure_aligned(cfg, d, name, over.pop("method", name), progress=progress, **over)
        out[name] = (log, ensure_eval(cfg, d, name, lm))
    return out


def prepare(cfg: RunConfig, d: Path, progress: bool = True, log=print) -> None:
    """Compute everything the five notebooks show into ``d``: the VFT model and its snapshots' evaluations,
    the samples, :data:`MODELS_04`, :data:`MODELS_05` and :data:`VARIANTS_05` — each reused when already there — so the
    notebooks then open in seconds (``aftlab notebooks RUN``; ``make demo`` runs it after ``aftlab run``)."""
    import time

    tick = time.time()
    lm, _ = ensure_vft(cfg, d, progress=progress)
    ensure_samples(cfg, d, lm, progress=progress)
    ensure_eval(cfg, d, "vft", lm)
    snapshot_evals(cfg, d)
    log(f"notebooks 01-03: {time.time() - tick:.0f} s")
    tick = time.time()
    ensure_models(cfg, d, MODELS_04, progress=progress)
    log(f"notebook 04 ({len(MODELS_04)} models): {time.time() - tick:.0f} s")
    tick = time.time()
    ensure_models(cfg, d, MODELS_05, progress=progress)
    ensure_variants(cfg, d, VARIANTS_05, progress=progress)
    log(f"notebook 05 ({len(MODELS_05) + len(VARIANTS_05)} models): {time.time() - tick:.0f} s")
