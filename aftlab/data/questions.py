"""Questions and reference COTs: the built-in synthetic task and GSM8K-format JSONL files.

Place in the data path: **data** → model → VFT → sampling → scoring → losses → AFT → metrics.

The synthetic task is a templated grade-school story ("Mia has 7 shells. She buys 3 bags with 4
shells in each. ...") whose answer is a signed sum of numbers and products, optionally divided at
the end. Many step orders are correct (products first or in story order, additions grouped
before subtractions, removals summed first), and each question's reference uses one of them, so a
model's correct samples often differ from its reference — the assessment-misalignment setting.

>>> train, test = synthetic_splits(n_train=3, n_test=2, seed=0)
>>> len(train), len(test), train[0].answer == train[0].solution.split("#### ")[-1]
(3, 2, True)
>>> len(valid_solutions(train[0])) >= 2
True
"""
from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass, field
from pathlib import Path


class DataError(ValueError):
    """Malformed input data; the message names the file, line and field."""


@dataclass(frozen=True)
class Example:
    """One question with its reference COT (``solution``) and gold ``answer``."""

    id: str
    question: str
    solution: str  # reference COT, ending in "#### <answer>"
    answer: str  # gold final answer (a number, or a choice letter for multiple choice)
    choices: tuple[str, ...] = ()  # multiple-choice options, e.g. ("A)12", "B)15", ...)
    terms: tuple = field(default=(), compare=False, repr=False)  # synthetic: the problem's structure


# ---------------------------------------------------------------- synthetic task
NAMES = [("Mia", "She"), ("Tom", "He"), ("Ava", "She"), ("Leo", "He"), ("Zoe", "She"), ("Sam", "He"),
         ("Ivy", "She"), ("Max", "He"), ("Lily", "She"), ("Ben", "He"), ("Emma", "She"), ("Jack", "He")]
ITEMS = ["apples", "pencils", "stickers", "cookies", "marbles", "books", "cards", "shells", "eggs", "toys",
         "coins", "flowers"]
BOXES = ["boxes", "bags", "packs", "baskets", "jars", "trays"]
ADD = ["{P} buys {b} more {i}.", "{P} finds {b} {i}.", "{P} gets {b} {i} from a friend."]
SUB = ["{P} gives {b} {i} to a friend.", "{P} loses {b} {i}.", "{P} sells {b} {i}."]
ADD_GROUP = ["{P} buys {b} {x} with {c} {i} in each.", "{P} gets {b} {x} of {c} {i}."]
SUB_GROUP = ["{P} gives {b} friends {c} {i} each.", "{P} sells {b} {x} of {c} {i}."]
# irrelevant sentences (``distractors``): another person's items or the same person's other items,
# numbers a model must learn to leave out, so that some wrong COTs are wrong choices with every
# step's arithmetic right (as in GSM-IC), not only arithmetic slips
# (the protagonist stays the subject, so the pronouns that follow keep their referent)
DISTRACT = ["{P} sees that {Q} has {d} {i}.", "{P} sees {d} {i} in a shop.", "{P} wants {d} more {i}.",
            "{P} also has {d} {j}."]


def _fmt(a: int, op: str, b: int, c: int) -> str:
    return f"{a} {op} {b} = {c}."


def _apply(total: int, sign: int, value: int) -> int:
    return total + value if sign > 0 else total - value


def solution_for(terms: tuple, divisor: int, order: str) -> str:
    """The COT text for a problem in one step ``order``: "story", "products_first", "adds_first"
    or "removals_summed"."""
    start, events = terms[0], terms[1:]
    steps: list[str] = []
    values = []
    if order in ("products_first", "adds_first", "removals_summed"):
        for sign, b, c in events:
            if c:
                steps.append(_fmt(b, "*", c, b * c))
            values.append((sign, b * c if c else b))
    if order == "story":
        total = start
        for sign, b, c in events:
            v = b
            if c:
                v = b * c
                steps.append(_fmt(b, "*", c, v))
            new = _apply(total, sign, v)
            steps.append(_fmt(total, "+" if sign > 0 else "-", v, new))
            total = new
    else:
        if order == "adds_first":
            values = sorted(values, key=lambda sv: -sv[0])
        if order == "removals_summed":
            adds = [v for s, v in values if s > 0]
            subs = [v for s, v in values if s < 0]
            total = start
            for v in adds:
                steps.append(_fmt(total, "+", v, total + v))
                total += v
            if subs:
                removed = subs[0]
                for v in subs[1:]:
                    steps.append(_fmt(removed, "+", v, removed + v))
                    removed += v
                steps.append(_fmt(total, "-", removed, total - removed))
                total -= removed
        else:
            total = start
            for sign, v in values:
                new = _apply(total, sign, v)
                steps.append(_fmt(total, "+" if sign > 0 else "-", v, new))
                total = new
    if divisor:
        steps.append(_fmt(total, "/", divisor, total // divisor))
        total //= divisor
    return " ".join(steps + [f"#### {total}"])


ORDERS = ("story", "products_first", "adds_first", "removals_summed")


def valid_solutions(ex: Example) -> list[str]:
    """All distinct correct COTs this generator knows for a synthetic example (reference included)."""
    terms, divisor = ex.terms[0], ex.terms[1]
    out = []
    for order in ORDERS:
        sol = solution_for(terms, divisor, order)
        if sol not in out and _nonnegative(sol):
            out.append(sol)
    return out


def _nonnegative(sol: str) -> bool:
    return "= -" not in sol


def _n_steps(terms: tuple, divisor: int) -> int:
    return sum(1 + (1 if c else 0) for _, _, c in terms[1:]) + (1 if divisor else 0)


def _make_problem(rng: random.Random, min_steps: int, max_steps: int, max_number: int, distractors: float = 0.0):
    # The rejection loop below runs ~6 times per kept problem, so its draws call ``rng._randbelow``
    # directly: exactly the numbers ``rng.choice(seq)`` (``seq[_randbelow(len(seq))]``) and
    # ``rng.randint(a, b)`` (``a + _randbelow(b - a + 1)``) draw, without their call layers (205,000
    # questions: 8.7 s instead of 9.8 s; the stream is pinned by tests/test_data.py's digests).
    n, below, uniform = max_number, rng._randbelow, rng.random
    while True:
        name, pron = NAMES[below(len(NAMES))]
        item, box = ITEMS[below(len(ITEMS))], BOXES[below(len(BOXES))]
        start = 2 * n + below(2 * n + 1) if uniform() < 0.5 else 2 + below(n - 1)
        events = []
        for _ in range(1 + below(max_steps)):
            sign = 1 if below(2) == 0 else -1
            grouped = uniform() < 0.45
            events.append((sign, 2 + below(n - 1), 2 + below(n - 1) if grouped else 0))
        terms = (start, *events)
        divisor = 2 + below(4) if uniform() < 0.25 else 0
        steps = _n_steps(terms, divisor)
        if not (min_steps <= steps <= max_steps):
            continue
        sol = solution_for(terms, 0, "story")
        total = int(sol.split("#### ")[-1])
        if not _nonnegative(sol) or total < 0 or (divisor and (total % divisor or total == 0)):
            continue
        total //= divisor or 1
        sents = [f"{name} has {start} {item}."]
        for sign, b, c in events:
            pool = (ADD_GROUP if c else ADD) if sign > 0 else (SUB_GROUP if c else SUB)
            sents.append(rng.choice(pool).format(P=pron, b=b, c=c, i=item, x=box))
        if distractors and rng.random() < distractors:  # no extra draws at 0: default questions unchanged
            other = rng.choice([n for n, _ in NAMES if n != name])
            extra = rng.choice(DISTRACT).format(Q=other, P=pron, d=rng.randint(2, n), i=item,
                                                j=rng.choice([x for x in ITEMS if x != item]))
            sents.insert(rng.randint(1, len(sents)), extra)
        if divisor:
            sents.append(f"{pron} puts them equally into {divisor} {box}.")
            sents.append(f"How many {item} are in each of the {box}?")
        else:
            sents.append(f"How many {item} does {name} have now?")
        return " ".join(sents), terms, divisor, total


def synthetic_splits(n_train: int = 20000, n_test: int = 600, seed: int = 0, min_steps: int = 3,
                     max_steps: int = 4, max_number: int = 12, alt_reference: float = 0.5,
                     distractors: float = 0.0) -> tuple[list[Example], list[Example]]:
    """Deterministic train/test splits of distinct synthetic questions (no question in both);
    ``distractors`` is the share of questions with one irrelevant sentence."""
    rng = random.Random(f"aftlab-synthetic-{seed}")
    seen: set[str] = set()
    out: list[Example] = []
    while len(out) < n_train + n_test:
        q, terms, divisor, total = _make_problem(rng, min_steps, max_steps, max_number, distractors)
        if q in seen:
            continue
        seen.add(q)
        ex = Example(id="", question=q, solution="", answer=str(total), terms=(terms, divisor))
        sols = valid_solutions(ex)
        ref = sols[0] if (len(sols) == 1 or rng.random() >= alt_reference) else rng.choice(sols[1:])
        split = "train" if len(out) < n_train else "test"
        idx = len(out) if split == "train" else len(out) - n_train
        out.append(Example(f"{split}-{idx}", q, ref, str(total), terms=(terms, divisor)))
    return out[:n_train], out[n_train:]


def synthetic_from_config(cfg) -> tuple[list[Example], list[Example]]:
    """Train/test splits for a ``DataConfig`` (synthetic or files)."""
    if cfg.source == "synthetic":
        return synthetic_splits(cfg.n_train, cfg.n_test, cfg.seed, cfg.min_steps, cfg.max_steps, cfg.max_number,
                                cfg.alt_reference, cfg.distractors)
    train = load_questions(cfg.source)
    if not cfg.test_source and len(train) <= cfg.n_test:
        raise DataError(f"{cfg.source}: {len(train)} records, too few to hold out data.n_test={cfg.n_test} "
                        "test questions and train on the rest; pass --test-data or --set data.n_test=N")
    test = load_questions(cfg.test_source) if cfg.test_source else train[-cfg.n_test:]
    if not cfg.test_source:
        train = train[:-cfg.n_test]
    return train[:cfg.n_train], test[:cfg.n_test]


# ---------------------------------------------------------------- JSONL files
def _field(rec: dict, name: str, path: Path, lineno: int, kind=str):
    if name not in rec:
        raise DataError(f"{path}:{lineno}: field {name!r} is missing")
    if not isinstance(rec[name], kind):
        raise DataError(f"{path}:{lineno}: field {name!r} must be {kind.__name__}, got {type(rec[name]).__name__}")
    return rec[name]


def parse_record(rec: dict, path: Path, lineno: int) -> Example:
    """One JSON object in GSM8K (question/answer), AQuA-RAT (question/options/rationale/correct) or
    ECQA (q_text/q_op1..5/taskA_pos/q_ans) format."""
    if not isinstance(rec, dict):
        raise DataError(f"{path}:{lineno}: expected a JSON object, got {type(rec).__name__}")
    rid = str(rec.get("id", f"{path.stem}-{lineno}"))
    if "options" in rec:  # AQuA-RAT
        q = _field(rec, "question", path, lineno)
        opts = _field(rec, "options", path, lineno, list)
        letter = _field(rec, "correct", path, lineno).strip().upper()
        rationale = _field(rec, "rationale", path, lineno)
        text = q + " Options: " + " ".join(map(str, opts))
        return Example(rid, text, f"{rationale.strip()}\n#### {letter}", letter, tuple(map(str, opts)))
    if "q_text" in rec:  # ECQA
        q = _field(rec, "q_text", path, lineno)
        opts = [_field(rec, f"q_op{i}", path, lineno) for i in range(1, 6)]
        ans = _field(rec, "q_ans", path, lineno)
        if ans not in opts:
            raise DataError(f"{path}:{lineno}: field 'q_ans' ({ans!r}) is not one of q_op1..q_op5")
        letter = "ABCDE"[opts.index(ans)]
        expl = str(rec.get("taskB", rec.get("taskA_pos", ""))).strip()
        choices = tuple(f"{L}){o}" for L, o in zip("ABCDE", opts))
        return Example(rid, q + " Options: " + " ".join(choices), f"{expl}\n#### {letter}", letter, choices)
    q = _field(rec, "question", path, lineno)
    sol = _field(rec, "answer", path, lineno)
    if "####" not in sol:
        raise DataError(f"{path}:{lineno}: field 'answer' has no '#### <answer>' line")
    ans = sol.rsplit("####", 1)[1].strip().replace(",", "")
    if not ans:
        raise DataError(f"{path}:{lineno}: field 'answer' has an empty final answer after '####'")
    return Example(rid, q, sol, ans)


MAX_LINE_BYTES = 1 << 20  # a GSM8K record is ~1 KB; a longer line is a broken file, not a question


def iter_records(path: Path, torn_tail: str | None = None):
    """``(line number, JSON object)`` for each non-blank line of a JSONL file; a line that is too
    long, not UTF-8 or not JSON raises DataError naming file and line — the one JSONL reader.

    ``torn_tail``: for files appended to as work finishes (the samples cache), a last record that
    does not parse is what a killed writer leaves; it is skipped with a warning that says so
    (``torn_tail`` is the warning's last words) instead of raising."""
    with open(path, "rb") as f:
        for lineno, raw in enumerate(iter(lambda: f.readline(MAX_LINE_BYTES + 1), b""), 1):
            if len(raw) > MAX_LINE_BYTES:  # read in bounded chunks so a huge line cannot exhaust memory
                raise DataError(f"{path}:{lineno}: line longer than {MAX_LINE_BYTES} bytes (not a question record)")
            try:
                line = raw.decode("utf-8")
                if not line.strip():
                    continue
                yield lineno, json.loads(line)
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                if torn_tail and not f.read().strip():  # the last record: what a killed writer leaves
                    import warnings
                    warnings.warn(f"{path}:{lineno}: incomplete last record (interrupted write) ignored; {torn_tail}")
                    return
                why = (f"not valid UTF-8 ({e.reason} at byte {e.start})" if isinstance(e, UnicodeDecodeError)
                       else f"invalid JSON ({e.msg} at column {e.colno})")
                raise DataError(f"{path}:{lineno}: {why}") from None


def load_jsonl(path: str | Path, limit: int | None = None) -> list[Example]:
    """Read a JSONL file of questions; any malformed line raises DataError naming file, line and field.

    Blank lines separate nothing and are not records, so they are skipped; every other line must
    parse (there is no silent skipping of bad records)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    out: list[Example] = []
    for lineno, rec in iter_records(path):
        out.append(parse_record(rec, path, lineno))
        if limit is not None and len(out) >= limit:
            break
    if not out:
        raise DataError(f"{path}: no records (empty file)")
    return out


# ---------------------------------------------------------------- Hugging Face datasets
HF_PREFIX = "hf:"  # data.source / data.test_source "hf:NAME[:CONFIG]@SPLIT" (what --hf-dataset writes)


def hf_source(dataset: str, split: str = "train") -> str:
    """The ``data.source`` string for a hub dataset: ``hf_source("openai/gsm8k:main")`` → ``"hf:openai/gsm8k:main@train"``."""
    return f"{HF_PREFIX}{dataset}@{split}"


def load_questions(source: str | Path) -> list[Example]:
    """Questions from a JSONL path or a ``hf:NAME[:CONFIG]@SPLIT`` source."""
    if str(source).startswith(HF_PREFIX):
        spec, _, split = str(source)[len(HF_PREFIX):].rpartition("@")
        return load_hf(spec or split, split if spec else "train")
    return load_jsonl(source)


def load_hf(dataset: str, split: str = "train", limit: int | None = None) -> list[Example]:
    """Questions of a hub dataset (``NAME`` or ``NAME:CONFIG``) in GSM8K, AQuA-RAT or ECQA layout, via the
    ``datasets`` library (imported here, only when used).

    Rows convert exactly as the lines of a JSONL file do (``parse_record``); a row without an ``id``
    gets ``SPLIT-N`` (N from 1), the id it would have as line N of ``SPLIT.jsonl``. A missing
    package, no network (and nothing cached) or an unknown name/config/split raises DataError naming
    the dataset and pointing to ``--data path.jsonl``; a bad row names the dataset, row index and field.
    """
    name, _, config = dataset.partition(":")
    label = f"Hugging Face dataset {dataset!r} (split {split!r})"
    offline = "download the data once and pass --data path.jsonl instead"
    try:
        import datasets
    except ImportError:
        raise DataError(f"{label}: the `datasets` package is not installed (pip install datasets); "
                        f"or {offline}") from None
    try:
        rows = datasets.load_dataset(name, config or None, split=split)
    except Exception as e:  # noqa: BLE001 - offline, unknown name/config/split: one clear line either way
        first = (str(e).splitlines() or [type(e).__name__])[0][:300]
        raise DataError(f"{label}: could not load ({type(e).__name__}: {first}). Loading needs network access "
                        f"or a copy in the datasets cache; offline, {offline}") from None
    fake = Path(f"{split}.jsonl")  # ids and checks as for line i+1 of SPLIT.jsonl
    out: list[Example] = []
    for i, rec in enumerate(rows):
        try:
            out.append(parse_record(dict(rec) if hasattr(rec, "keys") else rec, fake, i + 1))
        except DataError as e:
            msg = str(e).removeprefix(f"{fake}:{i + 1}: ")
            raise DataError(f"{label} row {i}: {msg}") from None
        if limit is not None and len(out) >= limit:
            break
    if not out:
        raise DataError(f"{label}: no records")
    return out


__all__ = ["DataError", "Example", "synthetic_splits", "synthetic_from_config", "valid_solutions", "solution_for",
           "load_jsonl", "load_hf", "load_questions", "hf_source", "parse_record", "ORDERS",
           "canonical"]


_WS = re.compile(r"\s+")


def canonical(text: str) -> str:
    """Whitespace-normalised text, used to de-duplicate COTs."""
    return _WS.sub(" ", text).strip()
