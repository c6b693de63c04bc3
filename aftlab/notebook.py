"""Cached stages and widgets for the guided notebooks (``notebooks/0*.ipynb``).

Place in the data path: beside ``pipeline`` at the top; each ``ensure_*`` runs one stage (data →
VFT → sampling → AFT → evaluate) through the same library functions the pipeline uses, or reloads
that stage's output from the notebooks' shared work folder, so any notebook runs on its own and
the later ones reuse what the earlier ones computed. The folder has a pipeline run's layout
(``config.json``, ``vft/``, ``samples_r1.jsonl``, ``eval_samples.jsonl``), so ``aftlab.sweep`` works
on it directly.

>>> cfg = config("tiny", seed=1, smoke=True)
>>> cfg.preset, cfg.seed, cfg.model.name
('notebook-smoke', 1, 'tiny')
>>> workdir(cfg, root="runs/notebooks").parent.as_posix()
'runs/notebooks'
"""
from __future__ import annotations

import dataclasses
import hashlib
import html
import json
import os
import shutil
from pathlib import Path

from . import checkpoint
from .config import RunConfig, VFTConfig, preset, to_dict

SMOKE_NAME = "notebook-smoke"


def smoke_config(seed: int = 0) -> RunConfig:
    """The notebooks' smoke mode: the ``smoke`` preset on an easier task (2–3 steps, numbers ≤ 5)
    with a longer VFT, so that in about a minute the model solves some questions and fails others
    (the smoke preset itself stays near 0% and leaves no positives to rank)."""
    cfg = preset("smoke", seed=seed)
    cfg.preset = SMOKE_NAME  # not the `smoke` preset: a reader must not mistake one for the other
    cfg.data = dataclasses.replace(cfg.data, max_number=5, n_test=64)
    cfg.model = dataclasses.replace(cfg.model, ffn=256)
    cfg.vft = dataclasses.replace(cfg.vft, steps=400, lr=5e-3)
    cfg.sample = dataclasses.replace(cfg.sample, k=6, n_questions=96, batch_questions=96)
    cfg.eval_k = 6
    return cfg


def config(preset_name: str = "tiny", seed: int = 0, smoke: bool = False) -> RunConfig:
    """The RunConfig a notebook uses: ``smoke_config`` in smoke mode, else the named preset."""
    return smoke_config(seed) if smoke else preset(preset_name, seed=seed)


def banner(cfg: RunConfig, smoke: bool, work: Path | None = None):
    """What a notebook shows under its setup cell: a loud warning in smoke mode, else the settings used."""
    from IPython.display import HTML
    where = f"; work folder <code>{html.escape(str(work))}</code>" if work else ""
    settings = (f"preset <b>{html.escape(cfg.preset)}</b>, seed {cfg.seed}, {cfg.data.n_train:,} training / "
                f"{cfg.data.n_test:,} held-out questions, VFT {cfg.vft.steps:,} steps{where}")
    if smoke:
        return HTML('<div style="border:3px solid #d62728;background:#fff3f3;padding:10px;font-size:1.1em">'
                    "<b>⚠ SMOKE MODE: figures are not meaningful.</b> A toy run that checks in a minute that "
                    "the cells run and each claim holds in direction; the prose describes the full "
                    "experiment. Set <code>AFTLAB_SMOKE=0</code> (or <code>SMOKE = False</code>) for it.<br>"
                    f"<small>{settings}</small></div>")
    return HTML(f'<div style="border-left:4px solid #1f77b4;padding:4px 10px">Full mode: {settings}.</div>')


def _repo_root() -> Path:
    here = Path.cwd().resolve()
    for p in (here, *here.parents):
        if (p / "pyproject.toml").is_file() and (p / "aftlab").is_dir():
            return p
    return here


def workdir(cfg: RunConfig, root: str | Path | None = None) -> Path:
    """The shared work folder of a config: ``<root>/<preset>-s<seed>-<hash of the stage configs>``.

    ``root`` defaults to ``$AFTLAB_NOTEBOOK_RUNS`` or ``runs/notebooks`` under the repository, so
    notebooks started from ``notebooks/`` and scripts started from the root share it. The hash
    covers data, model, VFT, sampling and evaluation settings and the library's code
    (:func:`code_version`): changing any of them starts a fresh folder instead of reusing stale
    artifacts, so a code fix never leaves results of the old code behind.
    """
    root = Path(root or os.environ.get("AFTLAB_NOTEBOOK_RUNS") or _repo_root() / "runs" / "notebooks")
    d = to_dict(cfg)
    key = json.dumps({k: d[k] for k in ("data", "model", "vft", "sample", "eval_k", "sc_questions", "seed")}
                     | {"code": code_version()}, sort_keys=True)
    return root / f"{cfg.preset}-s{cfg.seed}-{hashlib.sha1(key.encode()).hexdigest()[:8]}"


def code_version() -> str:
    """A hash of the library's source files: part of every notebook cache key.

    >>> len(code_version())
    12
    """
    h = hashlib.sha1()
    for p in sorted(Path(__file__).resolve().parent.glob("*.py")):
        h.update(p.name.encode() + p.read_bytes())
    return h.hexdigest()[:12]


def _weights_key(path: Path) -> list:
    """What identifies a saved model's weights cheaply: each weights file's name, size and mtime."""
    return [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(Path(path).glob("*.safetensors"))]


def task(cfg: RunConfig):
    """(train, test) examples of the config (the synthetic generator is deterministic and fast)."""
    from .data import synthetic_from_config
    return synthetic_from_config(cfg.data)


def _write_config(cfg: RunConfig, d: Path) -> None:
    d.mkdir(parents=True, exist_ok=True)
    (d / "config.json").write_text(json.dumps(to_dict(cfg), indent=1))


def _load(cfg: RunConfig, path: Path):
    from .model import load_lm
    lm = load_lm(path, cfg.model.device, cfg.model.dtype, max_prompt_tokens=cfg.model.max_prompt_tokens)
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
    from .model import build_lm
    from .vft import train_vft

    d = Path(d)
    _write_config(cfg, d)
    found = checkpoint.find(d / "vft")
    if found is not None and checkpoint.load_state(found)["step"] >= cfg.vft.steps:
        return _load(cfg, found), checkpoint.load_state(found)["history"]
    train, test = task(cfg)
    lm = build_lm(cfg.model, train + test, cfg.seed)
    seg = max(1, cfg.vft.steps // max(1, snapshots))
    vcfg: VFTConfig = dataclasses.replace(cfg.vft, checkpoint_every=seg)
    history: list[dict] = []
    for stop in sorted({*range(seg, cfg.vft.steps, seg), cfg.vft.steps}):
        history = train_vft(lm, train, vcfg, out=d / "vft", seed=cfg.seed, progress=progress, stop_after=stop)
        snap, ckpt = d / "vft_steps" / f"step_{stop}", checkpoint.find(d / "vft")
        if not snap.exists() and ckpt is not None and checkpoint.load_state(ckpt)["step"] == stop:
            shutil.copytree(ckpt, snap)
    return lm, history


def ensure_samples(cfg: RunConfig, d: Path, lm=None, progress: bool = True) -> tuple[list[dict], list[dict]]:
    """(training records, held-out records): k labelled VFT samples per question, as the pipeline
    draws them (same seeds, same cache files), sampled now unless cached."""
    from .sampling import sample_cots

    d = Path(d)
    s = cfg.sample
    lm = lm if lm is not None else ensure_vft(cfg, d, progress=progress)[0]
    train, test = task(cfg)
    kw = dict(temperature=s.temperature, top_p=s.top_p, max_new_tokens=s.max_new_tokens,
              batch_questions=s.batch_questions, progress=progress)
    eval_records = sample_cots(lm, test, k=cfg.eval_k, seed=cfg.seed + 1, cache=d / "eval_samples.jsonl", **kw)
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
    from .align import align_from_vft, batch_seed

    d = Path(d)
    acfg = dataclasses.replace(cfg.align_for(method or name), **overrides)
    out = model_dir(d, name)
    meta = out / "align.json"
    if meta.is_file() and json.loads(meta.read_text())["config"] == dataclasses.asdict(acfg):
        return _load(cfg, out), json.loads(meta.read_text())["log"]
    train_records, _ = ensure_samples(cfg, d, progress=progress)
    lm, log = align_from_vft(checkpoint.find(d / "vft"), train_records, acfg, batch_seed(cfg.seed),
                             device=cfg.model.device, max_prompt_tokens=cfg.model.max_prompt_tokens,
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
    from .evaluate import evaluate, own_sampling

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
    key = {n: json.dumps(v, sort_keys=True) for n, v in variants.items()}
    todo = {n: v for n, v in variants.items() if done.get(n, {}).get("key") != key[n]}
    if todo:
        for n, res in variant_sweep(d, todo, progress=progress).items():
            done[n] = {"key": key[n], "result": res}
            cache.write_text(json.dumps(done))
    return {n: done[n]["result"] for n in variants}


# ---------------------------------------------------------------- views

def sample_stats(records: list[dict]) -> dict:
    """Counts over sampled records: draws, distinct COTs, right/strict shares (per draw), questions
    with both groups or only one, and right COTs that are not the reference text.

    >>> rec = {"reference": "1 + 1 = 2. #### 2", "n_sampled": 3, "samples": [
    ...     {"cot": "1 + 1 = 2. #### 2", "correct": True, "strict": True, "count": 2},
    ...     {"cot": "1 + 1 = 3. #### 3", "correct": False, "strict": False, "count": 1}]}
    >>> s = sample_stats([rec]); s["right_share"], s["questions_mixed"], s["right_not_reference"]
    (0.6666666666666666, 1, 0)
    """
    from .data import canonical

    draws = sum(r["n_sampled"] for r in records)
    right = sum(s["count"] for r in records for s in r["samples"] if s["correct"])
    strict = sum(s["count"] for r in records for s in r["samples"] if s["strict"])
    kinds = [{s["correct"] for s in r["samples"]} for r in records]
    return {"questions": len(records), "draws": draws, "distinct": sum(len(r["samples"]) for r in records),
            "right_share": right / max(draws, 1), "strict_share": strict / max(draws, 1),
            "questions_mixed": sum(k == {True, False} for k in kinds),
            "questions_all_right": sum(k == {True} for k in kinds),
            "questions_all_wrong": sum(k == {False} for k in kinds),
            "right_not_reference": sum(s["correct"] and s["cot"] != canonical(r["reference"])
                                       for r in records for s in r["samples"])}


def pos_neg_scores(records: list[dict], scores: list[list[float]]) -> tuple[list[float], list[float]]:
    """Scores of all right and of all wrong samples, for ``plots.score_distributions``.

    >>> pos_neg_scores([{"samples": [{"correct": True}, {"correct": False}]}], [[-0.1, -0.2]])
    ([-0.1], [-0.2])
    """
    pairs = [(x, s["correct"]) for r, sc in zip(records, scores) for s, x in zip(r["samples"], sc)]
    return [x for x, ok in pairs if ok], [x for x, ok in pairs if not ok]


def strict_only(records: list[dict], scores: list[list[float]]) -> tuple[list[dict], list[list[float]]]:
    """Records and scores without the lucky samples (right answer, some wrong step): what is left
    is clean positives (every step checks out) and wrong answers.

    >>> recs = [{"samples": [{"correct": True, "strict": False}, {"correct": False, "strict": False}]}]
    >>> r, s = strict_only(recs, [[-0.1, -0.2]]); len(r[0]["samples"]), s
    (1, [[-0.2]])
    """
    out_r, out_s = [], []
    for r, sc in zip(records, scores):
        keep = [i for i, s in enumerate(r["samples"]) if s["strict"] or not s["correct"]]
        out_r.append({**r, "samples": [r["samples"][i] for i in keep]})
        out_s.append([sc[i] for i in keep])
    return out_r, out_s


def token_view(lm, question: str, cot: str) -> tuple[list[str], list[float]]:
    """(tokens, per-token log-probs) of a COT (EOS included) under ``lm``, for ``plots.token_logprobs_view``."""
    from .scoring import score

    ids = lm.cot_ids(cot)
    _, per_token = score(lm, [lm.prompt_ids(question)], [ids])
    return lm.tokenizer.convert_ids_to_tokens(ids), per_token[0].tolist()


def credit_spans(lm, record: dict, strict: bool = True) -> list[dict]:
    """For each wrong COT of a sampled ``record``: the tokens it shares with a positive, the first
    step where it leaves every positive (what ``neg_credit="first_step"`` pushes down) and the rest,
    cut exactly as the AFT trainer cuts them (``sampling.groups`` then ``align.pack``)."""
    from .align import pack
    from .sampling import groups

    g = groups([record], strict)
    p = pack(lm, g, max_cots=len(g[0]["pos"]) + len(g[0]["neg"]))[0][0]
    out = []
    for cot, ids, a, b in zip(g[0]["neg"], p["cots"][p["n_pos"]:], p["skip"][p["n_pos"]:], p["stop"][p["n_pos"]:]):
        text = [lm.tokenizer.decode(x, skip_special_tokens=True) for x in (ids[:a], ids[a:b], ids[b:])]
        out.append({"cot": cot, "shared": text[0], "first_step": text[1], "rest": text[2]})
    return out


def credit_table(spans: list[dict]) -> str:
    """HTML: each wrong COT with its shared prefix plain, its first wrong step in bold red, the rest grey."""
    rows = "".join(f"<tr><td><code>{html.escape(x['shared'])} <b style='color:#c0392b'>"
                   f"{html.escape(x['first_step'])}</b> <span style='color:#999'>{html.escape(x['rest'])}"
                   "</span></code></td></tr>" for x in spans)
    return f"<table><tr><th>wrong COT: shared with a right one · <b>first wrong step</b> · rest</th></tr>{rows}</table>"


def ranked_table(record: dict, scores: dict[str, list[float]] | None = None) -> str:
    """HTML table of one question's samples: label, a mark per arithmetic step, answer, draws, and the
    score and rank under each checkpoint in ``scores`` (rows sorted by the first checkpoint's score, best
    first). A right answer reached through a wrong step is labelled "lucky", not "right".

    >>> rec = {"question": "q", "answer": "2", "reference": "1 + 1 = 2. #### 2", "samples": [
    ...     {"cot": "1 + 1 = 3. #### 3", "answer": "3", "correct": False, "strict": False, "count": 1},
    ...     {"cot": "1 + 1 = 2. #### 2", "answer": "2", "correct": True, "strict": True, "count": 2}]}
    >>> rows = ranked_table(rec, {"vft": [-0.1, -0.5]}).split("<table>")[1]  # wrong COT scored higher: first
    >>> rows.index("#### 3") < rows.index("#### 2"), "-0.100 (1)" in rows
    (True, True)
    >>> lucky = {**rec, "samples": [{"cot": "2 * 2 = 5. 5 - 3 = 2. #### 2", "answer": "2", "correct": True,
    ...                              "strict": False, "count": 1}]}
    >>> "lucky" in ranked_table(lucky) and "✗✓" in ranked_table(lucky)
    True
    """
    from .answers import step_marks
    samples = record["samples"]
    scores = scores or {}
    order = list(range(len(samples)))
    if scores:
        first = next(iter(scores.values()))
        order.sort(key=lambda i: -first[i])
    ranks = {n: {i: r for r, i in enumerate(sorted(range(len(v)), key=lambda i: -v[i]), 1)}
             for n, v in scores.items()}
    head = "".join(f"<th>{html.escape(n)} score (rank)</th>" for n in scores)
    rows = []
    for i in order:
        s = samples[i]
        tag, color = (("✔ right", "#2a9d8f") if s["strict"] else ("✔ answer, ✘ a step (lucky)", "#b8860b")
                      if s["correct"] else ("✘ wrong", "#e76f51"))
        cells = "".join(f"<td>{v[i]:.3f} ({ranks[n][i]})</td>" for n, v in scores.items())
        rows.append(f"<tr><td style='color:{color}'>{tag}</td><td><code>{html.escape(s['cot'])}</code></td>"
                    f"<td>{step_marks(s['cot'])}</td><td>{html.escape(str(s['answer']))}</td>"
                    f"<td>{s.get('count', 1)}</td>{cells}</tr>")
    return (f"<p><b>Q:</b> {html.escape(record['question'])} <b>gold:</b> {html.escape(str(record['answer']))}"
            f"<br><b>reference:</b> <code>{html.escape(record['reference'])}</code></p>"
            f"<table><tr><th>label</th><th>COT</th><th>steps</th><th>answer</th><th>draws</th>{head}</tr>"
            f"{''.join(rows)}</table>")


def question_picker(records: list[dict], scores: dict[str, list[list[float]]] | None = None,
                    only_mixed: bool = True, limit: int = 200):
    """An ipywidgets box: pick a question, see its samples ranked by each checkpoint's scores.

    ``scores``: {checkpoint: per-record score lists, as ``evaluate`` returns}; ``only_mixed`` lists
    only questions with both right and wrong samples (the ones assessment accuracy is about).
    """
    import ipywidgets as w

    idx = [i for i, r in enumerate(records)
           if not only_mixed or len({s["correct"] for s in r["samples"]}) == 2][:limit]
    if not idx:
        return w.HTML("<p>No question with both right and wrong samples.</p>")
    view = w.HTML()

    def show(i: int) -> None:
        view.value = ranked_table(records[i], {n: v[i] for n, v in (scores or {}).items()})

    pick = w.Dropdown(options=[(f"{records[i]['id']}: {records[i]['question'][:70]}", i) for i in idx],
                      description="question", layout=w.Layout(width="95%"))
    pick.observe(lambda ch: show(ch["new"]), names="value")
    show(idx[0])
    return w.VBox([pick, view])


def side_by_side(greedy: dict[str, list[dict]], n: int = 8) -> str:
    """HTML table: the greedy COTs of several models for the same first ``n`` questions."""
    names = list(greedy)
    head = "".join(f"<th>{html.escape(m)}</th>" for m in names)
    rows = []
    for j in range(min(n, *(len(v) for v in greedy.values()))):
        cells = []
        for m in names:
            g = greedy[m][j]
            mark = "✔" if g["correct"] else ("✘" if g["finished"] else "✘ (unfinished)")
            cells.append(f"<td><code>{html.escape(g['cot'][:300])}</code> {mark}</td>")
        rows.append(f"<tr><td>{html.escape(greedy[names[0]][j]['question'])}</td>{''.join(cells)}</tr>")
    return f"<table><tr><th>question</th>{head}</tr>{''.join(rows)}</table>"


def metric_table(rows: dict[str, dict], keys=("task_accuracy", "assessment_accuracy", "rerank_accuracy",
                                             "mean_pos_score", "mean_neg_score", "repetition_rate",
                                             "unfinished_rate")) -> str:
    """HTML table of chosen metrics per model (missing values left blank)."""
    head = "".join(f"<th>{k}</th>" for k in keys)
    body = "".join(
        f"<tr><th>{html.escape(n)}</th>" + "".join(
            f"<td>{m[k]:.3f}</td>" if isinstance(m.get(k), (int, float)) else "<td></td>" for k in keys) + "</tr>"
        for n, m in rows.items())
    return f"<table><tr><th>model</th>{head}</tr>{body}</table>"


def figure_output(fig) -> dict:
    """A plotly figure as an nbformat ``display_data`` output: the bundle ``display(fig)`` would
    publish under the current ``plotly.io.renderers.default``, plus a text fallback."""
    data = dict(fig._repr_mimebundle_())
    data.setdefault("text/plain", f"<plotly figure: {fig.layout.title.text or 'untitled'}>")
    return {"output_type": "display_data", "data": data, "metadata": {}}


def beta_slider(rows: list[dict], keys=("gap", "train_gap", "train_neg_score", "task_accuracy",
                                        "assessment_accuracy", "rerank_accuracy")):
    """An ipywidgets box: move beta over precomputed runs (``rows``: ``{"beta": b, metric: ...}``,
    optionally ``train_log``) and see that run's metrics and its score trajectory.

    The figure is written into the ``Output`` widget's ``outputs`` state rather than captured with
    ``with out: display(...)``: capture makes nbclient (nbconvert, papermill) echo the outputs back to
    the kernel mid-cell, and under ipykernel 7 that intermittently left the cell's execute_reply
    unanswered and the whole run hung (seen twice on notebook 05 in full mode)."""
    import ipywidgets as w

    from .plots import training_curves

    rows = sorted(rows, key=lambda r: r["beta"])
    table, curve = w.HTML(), w.Output()

    def show(b: float) -> None:
        r = next(x for x in rows if x["beta"] == b)
        table.value = metric_table({f"beta = {b:g}": r}, keys)
        log = r.get("train_log")
        fig = training_curves({f"BC, beta={b:g}": log}, ("neg_score", "gap", "boundary")) if log else None
        curve.outputs = (figure_output(fig),) if fig else ()

    slider = w.SelectionSlider(options=[r["beta"] for r in rows], description="beta", continuous_update=False)
    slider.observe(lambda ch: show(ch["new"]), names="value")
    show(rows[0]["beta"])
    return w.VBox([slider, table, curve])
