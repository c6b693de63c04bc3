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

>>> cfg = config("tiny", seed=1, smoke=True)
>>> cfg.preset, cfg.seed, cfg.model.name
('notebook-smoke', 1, 'tiny')
>>> workdir(cfg, root="runs/notebooks").parent.as_posix()
'runs/notebooks'
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

from .config import RunConfig, VFTConfig, preset, to_dict
from .train import checkpoint

SMOKE_NAME = "notebook-smoke"


def smoke_config(seed: int = 0) -> RunConfig:
    """The notebooks' smoke mode: the ``smoke`` preset on an easier task (2 steps, numbers ≤ 5), a
    wider model and a longer VFT, so that in about a minute the model solves most questions and still
    fails some (a probe on 2 cores: 70% greedy after 55 s of VFT; the 2–3-step task with the smoke
    preset's width reached 8%, too weak for the notebooks' claims to show even in direction)."""
    cfg = preset("smoke", seed=seed)
    cfg.preset = SMOKE_NAME  # not the `smoke` preset: a reader must not mistake one for the other
    cfg.data = dataclasses.replace(cfg.data, max_number=5, n_test=64, min_steps=2, max_steps=2)
    cfg.model = dataclasses.replace(cfg.model, hidden=96, heads=4, ffn=384)
    cfg.vft = dataclasses.replace(cfg.vft, steps=400, lr=5e-3)
    cfg.sample = dataclasses.replace(cfg.sample, k=6, n_questions=96, batch_questions=96)
    cfg.eval_k = 6
    return cfg


def config(preset_name: str = "tiny", seed: int = 0, smoke: bool = False) -> RunConfig:
    """The RunConfig a notebook uses: ``smoke_config`` in smoke mode, else the named preset."""
    return smoke_config(seed) if smoke else preset(preset_name, seed=seed)


def setup(preset_name: str = "tiny", seed: int = 0, smoke: bool = False, threads: int | str = "auto") -> RunConfig:
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
    return config(preset_name, seed, smoke)


def _repo_root() -> Path:
    here = Path.cwd().resolve()
    for p in (here, *here.parents):
        if (p / "pyproject.toml").is_file() and (p / "aftlab").is_dir():
            return p
    return here


def workdir(cfg: RunConfig, root: str | Path | None = None) -> Path:
    """The shared work folder of a config: ``<root>/<preset>-s<seed>-<key>``.

    ``root`` defaults to ``$AFTLAB_NOTEBOOK_RUNS`` or ``runs/notebooks`` under the repository, so
    notebooks started from ``notebooks/`` and scripts started from the root share it. The key hashes
    the fingerprints of the stages the folder caches for every notebook (``aftlab.stages``: the VFT
    model, the training and held-out samples and the VFT model's evaluation, so every setting and
    question they depend on) and the library's code (:func:`code_version`): changing any of them starts
    a fresh folder instead of reusing stale artifacts, so a code fix never leaves results of the old
    code behind. Aligned models are cached inside it per alignment settings (:func:`ensure_aligned`).
    """
    from .stages import digest, plan, questions_fingerprint

    root = Path(root or os.environ.get("AFTLAB_NOTEBOOK_RUNS") or _repo_root() / "runs" / "notebooks")
    stages = plan(cfg, questions_fingerprint(*task(cfg)))
    key = digest([stages[n].fingerprint for n in ("vft", "samples_r1", "eval_samples", "eval/vft")] + [code_version()])
    return root / f"{cfg.preset}-s{cfg.seed}-{key[:8]}"


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
    (d / "config.json").write_text(json.dumps(to_dict(cfg), indent=1))


def _load(cfg: RunConfig, path: Path):
    from .model.lm import load_lm_from_config
    lm = load_lm_from_config(cfg.model, path)
    lm.model.eval()
    return lm


def vft_snapshots(d: Path) -> dict[int, Path]:
    """Intermediate VFT checkpoints saved by ``ensure_vft``: {step: folder}, in step order."""
    found = {int(p.name.split("_")[-1]): p for p in (Path(d) / "vft_steps").glob("step_*") if p.is_dir()}
    return dict(sorted(found.items()))


def ensure_vft(cfg: RunConfig, d: Path, snapshots: int = 4, progress: bool = True):
    """The VFT model of ``cfg`` in ``d/vft`` and its loss history, trained now unless already there.

    Training runs in ``snapshots`` equal segments (one uninterrupted schedule, resumed from the
    checkpoint after each), and each segment's model is copied to ``d/vft_steps/step_N`` for the
    assessment-vs-task-accuracy curve across checkpoints.
    """
    from .model.lm import build_lm
    from .train.vft import train_vft

    d = Path(d)
    _write_config(cfg, d)
    found = checkpoint.find(d / "vft")
    if found is not None and checkpoint.load_state(found)["step"] >= cfg.vft.steps:
        return _load(cfg, found), checkpoint.load_state(found)["history"]
    from tqdm.auto import tqdm

    train, test = task(cfg)
    lm = build_lm(cfg.model, train + test, cfg.seed)
    seg = max(1, cfg.vft.steps // max(1, snapshots))
    vcfg: VFTConfig = dataclasses.replace(cfg.vft, checkpoint_every=seg)
    history: list[dict] = []
    done = checkpoint.load_state(found)["step"] if found is not None else 0  # an interrupted run resumes
    # one bar for the whole schedule: each segment's own bar would stop short of its total and be drawn as failed
    with tqdm(total=cfg.vft.steps, initial=done, desc="VFT", disable=not progress) as bar:
        for stop in sorted({*range(seg, cfg.vft.steps, seg), cfg.vft.steps}):
            if stop <= done:
                continue
            history = train_vft(lm, train, vcfg, out=d / "vft", seed=cfg.seed, progress=bar, stop_after=stop)
            snap, ckpt = d / "vft_steps" / f"step_{stop}", checkpoint.find(d / "vft")
            if not snap.exists() and ckpt is not None and checkpoint.load_state(ckpt)["step"] == stop:
                shutil.copytree(ckpt, snap)
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
    """Where ``ensure_aligned`` keeps model ``name`` (``vft`` is the VFT checkpoint)."""
    return Path(d) / ("vft" if name == "vft" else f"aligned/{name}")


def ensure_aligned(cfg: RunConfig, d: Path, name: str, method: str | None = None, progress: bool = True,
                   **overrides):
    """Model ``name``: ``method`` (default: ``name``) trained from the VFT model on the training
    samples with ``cfg.align_for(method)`` plus ``overrides`` (AlignConfig fields); returns
    ``(lm, per-step log)``. Reloaded when a model of that name was trained with the same settings."""
    from .align.aft import align_from_vft, batch_seed

    d = Path(d)
    acfg = dataclasses.replace(cfg.align_for(method or name), **overrides)
    out = model_dir(d, name)
    meta = out / "align.json"
    if meta.is_file() and json.loads(meta.read_text())["config"] == dataclasses.asdict(acfg):
        return _load(cfg, out), json.loads(meta.read_text())["log"]
    train_records, _ = ensure_samples(cfg, d, progress=progress)
    lm, log = align_from_vft(checkpoint.find(d / "vft"), train_records, acfg, batch_seed(cfg.seed), cfg.model,
                             progress=progress)
    if out.exists():
        shutil.rmtree(out)
    lm.save(out)
    meta.write_text(json.dumps({"config": dataclasses.asdict(acfg), "log": log}))
    return lm, log


def ensure_eval(cfg: RunConfig, d: Path, name: str, lm=None, path: Path | None = None) -> dict:
    """``evaluate`` of model ``name`` (greedy task accuracy on the held-out questions, and the
    fixed held-out samples rescored), cached in ``d/evals/<name>.json``; ``path`` loads the model
    from another folder (e.g. a VFT snapshot)."""
    from .eval.evaluate import evaluate, own_sampling

    d = Path(d)
    cache = d / "evals" / f"{name}.json"
    folder = path or (checkpoint.find(d / "vft") if name == "vft" else model_dir(d, name))
    key = json.dumps({"weights": _weights_key(folder) if folder else None, "path": str(path)})
    if cache.is_file() and (found := json.loads(cache.read_text())).get("key") == key:
        return found
    _, eval_records = ensure_samples(cfg, d, progress=False)
    if lm is None:
        lm = _load(cfg, folder)
    _, test = task(cfg)
    res = evaluate(lm, test, eval_records, cfg.sample.max_new_tokens, **own_sampling(cfg),
                   own_records=eval_records if name == "vft" and path is None else None)
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(res | {"key": key}))  # a retrained model (other settings) is evaluated again
    return res


def ensure_variants(cfg: RunConfig, d: Path, variants: dict[str, dict], progress: bool = True) -> dict[str, dict]:
    """``aftlab.sweep.variant_sweep`` over the work folder, cached per variant in ``d/variants.json``
    (keyed by name and settings): {name: metrics + gap + train log}."""
    from .sweep import variant_sweep

    d = Path(d)
    ensure_samples(cfg, d, progress=progress)
    cache = d / "variants.json"
    done = json.loads(cache.read_text()) if cache.is_file() else {}
    # a variant's model follows from its settings over the config's alignment settings (sweep reads config.json)
    shared = {k: v for k, v in to_dict(cfg).items() if k in ("align", "method_overrides")}
    key = {n: json.dumps([v, shared], sort_keys=True) for n, v in variants.items()}
    todo = {n: v for n, v in variants.items() if done.get(n, {}).get("key") != key[n]}
    if todo:
        for n, res in variant_sweep(d, todo, progress=progress).items():
            done[n] = {"key": key[n], "result": res}
            cache.write_text(json.dumps(done))
    return {n: done[n]["result"] for n in variants}
