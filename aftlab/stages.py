"""The stages of a run folder, what each depends on, and fingerprints that keep its caches honest.

Place in the data path: beside ``pipeline`` at the top. Every cached stage of ``aftlab run`` (the VFT
model, the sampled COTs, each aligned model, each evaluation, the result files) is a :class:`Stage`: the
settings it reads, by their dotted config names, and the stages whose outputs it reads. Its fingerprint
hashes both, the upstream stages' fingerprints included, so a change anywhere upstream changes it too.
Settings that cannot change a result (``checkpoint_every``, ``log_every``, the device) stay out.

``stages.json`` in the run folder records each stage's fingerprint and settings before the stage runs
(:func:`reconcile`); a re-run with other settings removes what the changed stages and everything
downstream of them wrote, says which and why, and computes them again, while a re-run with the same
settings reuses and resumes them. ``reuse="strict"`` refuses instead of recomputing.

>>> from aftlab.config import preset, replace_path
>>> a = plan(preset("smoke"), questions="q0")
>>> b = plan(replace_path(preset("smoke"), "method_overrides.aft_bc.lr", "0.001"), questions="q0")
>>> [name for name in a if a[name].fingerprint != b[name].fingerprint]
['align/aft_bc_r1', 'model/aft_bc', 'eval/aft_bc', 'results']
>>> changes(a["align/aft_bc_r1"].settings, b["align/aft_bc_r1"].settings)
['align.lr 0.0001 -> 0.001']
"""
from __future__ import annotations

import ast
import dataclasses
import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import RunConfig, to_dict
from .errors import ConfigError
from .train import checkpoint

MANIFEST = "stages.json"
REUSE = ("auto", "strict")
RESULTS = ("metrics.json", "report.html", "align_logs.json", "vft_history.json", "eval_scores.json", "greedy.json",
           "per_question.json")
_NOT_RESULTS = {"model.device", "model.trust_remote_code", "vft.checkpoint_every", "vft.log_every"}


class StaleStage(ConfigError):
    """``reuse="strict"``: a cached stage was computed with other settings; the message names it and why."""


@dataclass
class Stage:
    """One cached stage of a run folder."""

    name: str  # "vft", "samples_r1", "align/aft_bc_r1", "eval/vft", ...
    action: str  # what recomputing it means, for the log: "retraining", "resampling", ...
    settings: dict[str, Any]  # {dotted config name: value}: everything the stage reads from the config
    upstream: tuple[str, ...]  # the stages whose outputs it reads
    outputs: tuple[str, ...]  # its files and folders, relative to the run folder
    fingerprint: str = ""  # of settings and the upstream fingerprints (:func:`plan` fills it)


def digest(obj: Any, n: int = 16) -> str:
    """A short sha256 of a JSON-able object (keys sorted; tuples hash as lists).

    >>> digest({"b": (1, 2), "a": 1}) == digest({"a": 1, "b": [1, 2]})
    True
    """
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:n]


def questions_fingerprint(train: list, test: list) -> str:
    """What identifies a run's questions: every training and held-out question with its reference and answer."""
    return digest([[(e.id, e.question, e.solution, e.answer, list(e.choices)) for e in part] for part in (train, test)])


def _flat(d: dict, prefix: str = "") -> dict[str, Any]:
    return {f"{prefix}{k}": v for k, v in d.items()}


def plan(cfg: RunConfig, questions: str, sampler: str = "hf") -> dict[str, Stage]:
    """The stages of ``aftlab run`` for ``cfg``, in the order they run, each with its fingerprint.

    ``questions``: :func:`questions_fingerprint` of the run's data (a file's contents can change under its
    name); ``sampler``: who draws the COTs (vLLM and transformers draw different ones for one seed)."""
    d = to_dict(cfg)
    s = d["sample"]
    sampling = {f"sample.{k}": s[k] for k in ("temperature", "top_p", "max_new_tokens", "batch_questions")} | {
        "seed": cfg.seed, "sampler": sampler}
    train_sampling = sampling | {"sample.k": s["k"], "sample.n_questions": s["n_questions"]}
    evaluation = {"sample.max_new_tokens": s["max_new_tokens"], "sample.temperature": s["temperature"],
                  "eval_k": cfg.eval_k, "sc_questions": cfg.sc_questions, "seed": cfg.seed}
    vft = _flat(d["data"], "data.") | {"data.questions": questions} | _flat(d["model"], "model.") | _flat(
        d["vft"], "vft.") | {"seed": cfg.seed}
    stages = [Stage("vft", "retraining", {k: v for k, v in vft.items() if k not in _NOT_RESULTS}, (), ("vft", "vft_steps")),
              Stage("eval_samples", "resampling", sampling | {"eval_k": cfg.eval_k,
                    "assess_questions": cfg.assess_questions, "assess_mixed": cfg.assess_mixed}, ("vft",),
                    ("eval_samples.jsonl",)),
              Stage("samples_r1", "resampling", train_sampling, ("vft",), ("samples_r1.jsonl",)),
              Stage("eval/vft", "re-evaluating", evaluation, ("vft", "eval_samples"), ("evals/vft.json",))]
    for m in cfg.methods:
        align = {f"align.{k}": v for k, v in dataclasses.asdict(cfg.align_for(m)).items() if k != "checkpoint_every"}
        align["seed"] = cfg.seed
        previous, samples = "vft", "samples_r1"
        for r in range(1, cfg.rounds + 1):
            if r > 1:  # the previous round's model samples the next round's COTs
                samples = f"samples_{m}_r{r}"
                stages.append(Stage(samples, "resampling", train_sampling, (previous,), (f"{samples}.jsonl",)))
            stages.append(Stage(f"align/{m}_r{r}", "retraining", align, (previous, samples), (f"align/{m}_r{r}",)))
            previous = f"align/{m}_r{r}"
        stages += [Stage(f"model/{m}", "rewriting", {}, (previous,), (m,)),
                   Stage(f"eval/{m}", "re-evaluating", evaluation, (f"model/{m}", "eval_samples"), (f"evals/{m}.json",))]
    stages.append(Stage("results", "rewriting", {"methods": list(cfg.methods)},
                        ("vft", "eval_samples", *(f"eval/{m}" for m in ("vft", *cfg.methods)),
                         *(f"align/{m}_r{r}" for m in cfg.methods for r in range(1, cfg.rounds + 1))), RESULTS))
    out: dict[str, Stage] = {}
    for st in stages:
        st.settings = json.loads(json.dumps(st.settings, default=str))  # as stages.json will hold them
        st.fingerprint = digest([st.settings, [out[u].fingerprint for u in st.upstream]])
        out[st.name] = st
    return out


def changes(old: dict, new: dict, limit: int = 4) -> list[str]:
    """The settings that differ, as ``name old -> new`` (at most ``limit``, then how many more).

    >>> changes({"vft.lr": 0.002, "seed": 0}, {"vft.lr": 0.001, "seed": 0, "sampler": "hf"})
    ['vft.lr 0.002 -> 0.001', 'sampler (unset) -> hf']
    """
    def show(x):
        return "(unset)" if x is _UNSET else x if isinstance(x, str) else json.dumps(x)
    keys = list(new) + [k for k in old if k not in new]
    out = [f"{k} {show(old.get(k, _UNSET))} -> {show(new.get(k, _UNSET))}" for k in keys
           if old.get(k, _UNSET) != new.get(k, _UNSET)]
    return out[:limit] + ([f"{len(out) - limit} more"] if len(out) > limit else [])


_UNSET = object()


def _present(out: Path, rel: str) -> bool:
    p = out / rel
    return p.exists() or any(p.parent.glob(p.name + ".*"))


def _remove(out: Path, rel: str) -> None:
    """Remove an output and what its writers leave beside it (``.old``, ``.tmp-<pid>``, ``.rank<r>``)."""
    p = out / rel
    for q in [p, *p.parent.glob(p.name + ".*")]:
        if q.is_dir() and not q.is_symlink():
            shutil.rmtree(q)
        elif q.exists() or q.is_symlink():
            q.unlink()


def read_manifest(out: str | Path) -> dict[str, dict]:
    """The stages recorded in a run folder: {name: {"fingerprint", "settings", "upstream", "outputs"}}."""
    path = Path(out) / MANIFEST
    return json.loads(path.read_text())["stages"] if path.is_file() else {}


def reconcile(out: str | Path, stages: dict[str, Stage], reuse: str = "auto", log=print, write: bool = True) -> list[str]:
    """Make the run folder ``out`` hold only outputs that ``stages`` (:func:`plan`) may reuse; returns the
    names of the stages whose outputs were removed, to be computed again.

    A stage whose recorded fingerprint differs from the planned one (or whose outputs carry none) is stale;
    so is every recorded stage downstream of a stale one, planned or not (a method left out of this run
    keeps its outputs only while what it was trained from stays). One line per stale stage whose own
    settings changed (or whose inputs changed under it) says why and what follows downstream, e.g.
    ``vft: settings changed (vft.lr 0.002 -> 0.001): retraining; downstream: samples_r1, …``. With
    ``reuse="strict"`` a stale stage raises :class:`StaleStage` before anything is removed. ``write``:
    remove and record (the main process of a launch; the others only check)."""
    if reuse not in REUSE:
        raise ConfigError(f"reuse {reuse!r}: choose from {', '.join(REUSE)}")
    out = Path(out)
    recorded = read_manifest(out)
    graph = {name: tuple(rec.get("upstream", ())) for name, rec in recorded.items()} | {
        name: st.upstream for name, st in stages.items()}
    order = list(stages) + [name for name in recorded if name not in stages]
    reasons: dict[str, str] = {}  # stale stage -> why
    own: set[str] = set()  # stale stages whose own settings changed
    for name in order:
        st, rec = stages.get(name), recorded.get(name)
        outputs = st.outputs if st else tuple(rec.get("outputs", ()))
        if not any(_present(out, o) for o in outputs):
            continue
        if st is None:  # recorded by an earlier run with other methods: stale only below a stale stage
            if any(u in reasons for u in graph[name]):
                reasons[name] = "its inputs changed"
        elif rec is None:
            reasons[name] = "written without a fingerprint (by hand, or by an older aftlab)"
        elif rec["fingerprint"] != st.fingerprint:
            diff = changes(rec.get("settings", {}), st.settings)
            if diff:
                own.add(name)
            ups = [u for u in st.upstream if recorded.get(u, {}).get("fingerprint") != stages[u].fingerprint]
            reasons[name] = (f"settings changed ({', '.join(diff)})" if diff
                             else f"its inputs changed ({', '.join(ups)})" if ups else "its fingerprint changed")
    above = {n: _ancestors(n, graph) & reasons.keys() for n in reasons}
    starts = [n for n in reasons if n in own or not above[n]]  # where a change starts
    down = {n: ", ".join(m for m in order if n in above.get(m, ())) for n in starts}
    if reasons and reuse == "strict":
        raise StaleStage(f"{out}: --reuse strict will not recompute stages cached with other settings: " + "; ".join(
            f"{n} ({reasons[n]}{'; downstream: ' + down[n] if down[n] else ''})" for n in starts)
            + "; use another --out, or drop --reuse strict")
    lines = [f"{n}: {reasons[n]}: {stages[n].action if n in stages else 'removing'}"
             + (f"; downstream: {down[n]}" if down[n] else "") for n in starts]
    if not write:
        return list(reasons)
    for line in lines:
        log(line)
    if reused := [n for n, st in stages.items() if n not in reasons and any(_present(out, o) for o in st.outputs)]:
        log(f"reusing (same settings; an interrupted stage resumes): {', '.join(reused)}")
    for name in reasons:
        for o in (stages[name].outputs if name in stages else recorded[name].get("outputs", ())):
            _remove(out, o)
    kept = {n: rec for n, rec in recorded.items() if n not in stages and n not in reasons}
    new = kept | {n: {"fingerprint": st.fingerprint, "settings": st.settings, "upstream": list(st.upstream),
                      "outputs": list(st.outputs)} for n, st in stages.items()}
    out.mkdir(parents=True, exist_ok=True)
    checkpoint.write_atomic(out / MANIFEST, json.dumps({"stages": new}, indent=1))
    return list(reasons)


def _ancestors(name: str, graph: dict[str, tuple[str, ...]]) -> set[str]:
    seen, todo = set(), list(graph.get(name, ()))
    while todo:
        n = todo.pop()
        if n not in seen:
            seen.add(n)
            todo += graph.get(n, ())
    return seen


def code_hash(source: str) -> str:
    """A hash of what Python ``source`` does: its syntax tree without docstrings (comments never reach
    it), so editing a docstring or a comment keeps the hash and any change of code changes it.

    >>> code_hash('def f():\\n    "Add one."\\n    return 1') == code_hash('def f():\\n    return 1  # one')
    True
    >>> code_hash('def f():\\n    return 1') == code_hash('def f():\\n    return 2')
    False
    """
    tree = ast.parse(source)
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and body
                and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)):
            node.body = body[1:] or [ast.Pass()]
    return digest(ast.dump(tree))
