"""Typed configs and named presets shared by the CLI, the notebooks and the app.

Place in the data path: every stage (data → model → VFT → sampling → scoring → losses → AFT →
metrics → report) reads one of these dataclasses; ``RunConfig`` bundles them for a whole run.

>>> cfg = preset("smoke", seed=3)
>>> cfg.seed, cfg.data.seed, cfg.model.name
(3, 3, 'tiny')
>>> replace_path(cfg, "align.beta", "0.3").align.beta
0.3
>>> doc(AlignConfig, "lam")
'weight of the alignment term'

Every field is declared with :func:`F` and a one-line description (its unit where it has one), so
``aftlab config --preset tiny`` lists each field with its value and meaning (:func:`describe`).
"""
from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from .align.methods import REGISTRY
from .errors import ConfigError

METHODS = tuple(REGISTRY)  # the method registry (``aftlab.align.methods``) is the one list of methods
CONSTRAINTS = (None, "detach", "boundary")
NEG_SCOPES = ("all", "divergent")
AUTOCASTS = ("off", "bfloat16", "auto")
NEG_CREDITS = ("all", "divergent", "first_step", "first_token", "first_error")


def F(default, doc: str):
    """A dataclass field with its one-line description (shown by ``aftlab config`` and :func:`describe`)."""
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: type(default)(default), metadata={"doc": doc})
    return field(default=default, metadata={"doc": doc})


def doc(cls, name: str) -> str:
    """The description of field ``name`` of config class ``cls``."""
    return next(f.metadata.get("doc", "") for f in dataclasses.fields(cls) if f.name == name)


def _check(cond: bool, name: str, msg: str) -> None:
    if not cond:
        raise ConfigError(f"{name}: {msg}")


@dataclass
class DataConfig:
    source: str = F("synthetic", "\"synthetic\" or a path to a GSM8K/AQuA/ECQA-format JSONL file")
    test_source: str | None = F(None, "JSONL of held-out questions (when source is a file)")
    n_train: int = F(20000, "synthetic training questions generated")
    n_test: int = F(600, "held-out questions used for every evaluation")
    min_steps: int = F(3, "fewest arithmetic steps in a synthetic problem")
    max_steps: int = F(4, "most arithmetic steps in a synthetic problem")
    max_number: int = F(12, "largest number that appears in a synthetic question")
    alt_reference: float = F(0.5, "share of synthetic questions whose reference uses a non-story step order")
    distractors: float = F(0.0, "share of synthetic questions with one irrelevant sentence (wrong-choice errors)")
    seed: int = F(0, "seed of the synthetic generator (train and test are disjoint)")

    def __post_init__(self):
        _check(self.n_train > 0, "data.n_train", f"must be > 0, got {self.n_train}")
        _check(self.n_test > 0, "data.n_test", f"must be > 0, got {self.n_test}")
        _check(1 <= self.min_steps <= self.max_steps <= 8, "data.min_steps/max_steps",
               f"need 1 <= min_steps <= max_steps <= 8, got {self.min_steps}, {self.max_steps}")
        _check(3 <= self.max_number <= 99, "data.max_number", f"must be in [3, 99], got {self.max_number}")
        _check(0.0 <= self.alt_reference <= 1.0, "data.alt_reference", "must be in [0, 1]")
        _check(0.0 <= self.distractors <= 1.0, "data.distractors", "must be in [0, 1]")


@dataclass
class ModelConfig:
    name: str = F("tiny", "\"tiny\" (built in code), \"smol\" (SmolLM2-135M offline) or a HF id / local path")
    hidden: int = F(128, "tiny: hidden size")
    layers: int = F(3, "tiny: transformer layers")
    heads: int = F(4, "tiny: attention heads")
    ffn: int = F(512, "tiny: feed-forward width")
    tie_embeddings: bool = F(True, "tiny: the output layer shares the input embedding's weights (false: its own)")
    lora: bool = F(False, "train LoRA adapters (PEFT) instead of all weights")
    lora_r: int = F(8, "LoRA rank")
    lora_alpha: int = F(16, "LoRA scaling numerator")
    dtype: str = F("auto", "\"auto\", \"float32\", \"bfloat16\" or \"float16\"")
    autocast: str = F("off", "\"off\", \"bfloat16\" or \"auto\": training steps, scoring and sampling under "
                      "torch.autocast (fp32 master weights; faster on CPUs with AVX512-BF16/AMX, results move at bf16 "
                      "rounding); \"auto\": bfloat16 where a quick matmul check finds it >= 1.3x faster than fp32 "
                      "on this device, else off (the run records which in metrics.json)")
    device: str = F("auto", "\"auto\", \"cpu\", \"cuda\", \"mps\"")
    max_prompt_tokens: int = F(96, "prompts are truncated from the left to this many tokens")
    trust_remote_code: bool = F(False, "allow model code from the model folder (off: safetensors + known archs)")

    def __post_init__(self):
        _check(self.hidden > 0 and self.layers > 0 and self.heads > 0 and self.ffn > 0, "model.hidden/layers/heads/ffn",
               "must be positive")
        _check(self.hidden % self.heads == 0, "model.heads", f"hidden {self.hidden} not divisible by {self.heads}")
        _check(self.dtype in ("auto", "float32", "bfloat16", "float16"), "model.dtype", f"unknown dtype {self.dtype!r}")
        _check(self.lora_r > 0, "model.lora_r", "must be > 0")
        _check(self.autocast in AUTOCASTS, "model.autocast", f"must be one of {AUTOCASTS}, got {self.autocast!r}")


@dataclass
class VFTConfig:
    steps: int = F(1500, "optimizer steps")
    batch_size: int = F(64, "(question, reference COT) pairs per step")
    lr: float = F(2e-3, "peak learning rate")
    betas: tuple[float, float] = F((0.9, 0.98), "AdamW betas")
    weight_decay: float = F(0.01, "AdamW weight decay")
    warmup: int = F(50, "linear warmup steps")
    min_lr_ratio: float = F(0.05, "cosine decays to lr * min_lr_ratio")
    clip: float = F(1.0, "gradient-norm clip")
    checkpoint_every: int = F(500, "steps between checkpoints (0: only at the end)")
    log_every: int = F(25, "steps between loss-history entries")

    def __post_init__(self):
        self.betas = tuple(self.betas)
        _check(self.steps > 0, "vft.steps", f"must be > 0, got {self.steps}")
        _check(self.batch_size > 0, "vft.batch_size", f"must be > 0, got {self.batch_size}")
        _check(self.lr > 0, "vft.lr", f"must be > 0, got {self.lr}")
        _check(0 <= self.min_lr_ratio <= 1, "vft.min_lr_ratio", "must be in [0, 1]")


@dataclass
class SampleConfig:
    k: int = F(8, "COTs sampled per question")
    temperature: float = F(0.8, "sampling temperature (0: greedy)")
    top_p: float = F(1.0, "nucleus sampling mass")
    max_new_tokens: int = F(48, "cap on generated COT tokens")
    n_questions: int = F(3000, "training questions to sample COTs for")
    batch_questions: int = F(64, "questions per generate() call (rows = batch_questions * k)")

    def __post_init__(self):
        _check(1 <= self.k <= 64, "sample.k", f"must be in [1, 64], got {self.k}")
        _check(self.temperature >= 0, "sample.temperature", f"must be >= 0, got {self.temperature}")
        _check(0 < self.top_p <= 1, "sample.top_p", "must be in (0, 1]")
        _check(self.max_new_tokens > 0, "sample.max_new_tokens", "must be > 0")
        _check(self.n_questions > 0, "sample.n_questions", "must be > 0")


@dataclass
class AlignConfig:
    method: str = F("aft_bc", "alignment method, an entry of the registry aftlab.align.methods (aftlab config --methods)")
    constraint: str | None = F(None, "None, \"detach\" (DC) or \"boundary\" (BC); set by aft_* methods, a choice for "
                               "dpo/rrhf/pro")
    beta: float = F(0.1, "BC boundary margin below the worst positive, in nats/token (the scores' units, whatever "
                    "gamma is); replaced by the calibrated value when beta_quantile > 0")
    beta_quantile: float = F(0.0, "0: use align.beta; q in (0, 1): beta = the q-quantile of the starting model's "
                             "per-negative gaps min(s_p) - s_n on the training samples (nats/token), so a share q of "
                             "negatives start above the boundary (pushed down) and 1 - q below it (pulled up)")
    gamma: float = F(1.0, "score scale: losses see gamma * s (the paper: 1; SimPO-style scaling multiplies the "
                     "alignment gradient by gamma)")
    balance: float = F(0.0, "0: off; > 0: each step the alignment gradient is rescaled to this fraction of the NLL "
                       "gradient's norm (one process only), so NLL progresses as in RFT")
    lam: float = F(1.0, "weight of the alignment term")
    nll_weight: float = F(1.0, "weight of the VFT (NLL on positives) term")
    dpo_beta: float = F(0.1, "DPO inverse temperature on summed log-ratios")
    lr: float = F(1e-4, "peak learning rate (continues VFT's optimizer state)")
    warmup: int = F(10, "linear warmup steps")
    min_lr_ratio: float = F(0.1, "cosine decays to lr * min_lr_ratio")
    epochs: float = F(2.0, "passes over the sampled questions")
    questions_per_step: int = F(16, "questions (with all their COTs) per optimizer step")
    clip: float = F(1.0, "gradient-norm clip")
    strict_positives: bool = F(True, "positives must also pass every arithmetic step check")
    include_reference: bool = F(True, "add the reference COT to each question's positives")
    sample_positives: bool = F(True, "the model's own right samples are positives (false: the reference alone, as in "
                               "vft_cont, the control that isolates more NLL from learning from samples)")
    checkpoint_every: int = F(50, "steps between resumable checkpoints when training into a folder (0: end only)")
    neg_scope: str = F("all", "tokens a negative's score covers: \"all\", or \"divergent\" (after its longest prefix shared "
                       "with a positive)")
    truncate: bool = F(False, "pairwise methods only: drop pairs whose negative is already below the boundary (no pull up)")
    neg_credit: str = F("all", "tokens of a negative the gradient reaches (its score keeps all): " + ", ".join(NEG_CREDITS)
                        + "; see aftlab.align.credit")
    max_cots: int = F(16, "most COTs per question in one AFT step (positives first); the rest are left out, with a warning")

    def __post_init__(self):
        _check(self.max_cots >= 2, "align.max_cots", f"must be >= 2, got {self.max_cots}")
        _check(self.neg_scope in NEG_SCOPES, "align.neg_scope", f"must be one of {NEG_SCOPES}, got {self.neg_scope!r}")
        _check(self.neg_credit in NEG_CREDITS, "align.neg_credit",
               f"must be one of {NEG_CREDITS}, got {self.neg_credit!r}")
        _check(self.method in METHODS, "align.method", f"unknown method {self.method!r}; choose from {METHODS}")
        _check(self.constraint in CONSTRAINTS, "align.constraint", f"must be one of {CONSTRAINTS}")
        _check(self.beta >= 0, "align.beta", f"must be >= 0, got {self.beta}")
        _check(self.gamma > 0, "align.gamma", f"must be > 0, got {self.gamma}")
        _check(0 <= self.beta_quantile < 1, "align.beta_quantile", f"must be in [0, 1), got {self.beta_quantile}")
        _check(self.balance >= 0, "align.balance", f"must be >= 0, got {self.balance}")
        _check(self.lam >= 0 and self.nll_weight >= 0, "align.lam/nll_weight", "must be >= 0")
        _check(self.lr > 0, "align.lr", "must be > 0")
        _check(self.epochs > 0, "align.epochs", "must be > 0")
        _check(self.questions_per_step > 0, "align.questions_per_step", "must be > 0")
        _check(self.checkpoint_every >= 0, "align.checkpoint_every", "must be >= 0")
        _check(self.sample_positives or self.include_reference, "align.sample_positives/include_reference",
               "at least one must be true: positives are the right samples, the reference, or both")


@dataclass
class RunConfig:
    preset: str = F("tiny", "name of the preset this config started from")
    seed: int = F(0, "seed of every random choice (data, init, batches, sampling)")
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    vft: VFTConfig = field(default_factory=VFTConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    align: AlignConfig = field(default_factory=AlignConfig)
    methods: tuple[str, ...] = F(("rft", "aft_bc", "aft_dc", "align_only"), "continuations compared with VFT")
    method_overrides: dict = F({}, "per-method AlignConfig overrides {method: {field: value}}")
    rounds: int = F(1, "sample → align rounds (iterative AFT)")
    eval_k: int = F(8, "samples per held-out question in the fixed assessment set")
    assess_questions: int = F(2000, "held-out questions (the first of data.n_test) that start the fixed assessment set: "
                              "assessment, strict assessment and rerank; greedy task accuracy uses all n_test")
    assess_mixed: int = F(0, "grow the assessment set past assess_questions, 1,024 held-out questions at a time, "
                          "until this many of its questions have a right and a wrong COT (the ones assessment "
                          "counts: n_assess_questions) or data.n_test runs out; 0: exactly assess_questions")
    sc_questions: int = F(200, "held-out questions on which each model's own eval_k samples give self-consistency (0: off)")

    def __post_init__(self):
        self.methods = tuple(self.methods)
        for m in self.methods:
            _check(m in METHODS, "methods", f"unknown method {m!r}; choose from {METHODS}")
        _check(self.rounds >= 1, "rounds", "must be >= 1")
        _check(1 <= self.eval_k <= 64, "eval_k", "must be in [1, 64]")
        _check(self.sc_questions >= 0, "sc_questions", "must be >= 0")
        _check(self.assess_questions >= 1, "assess_questions", "must be >= 1")
        _check(self.assess_mixed >= 0, "assess_mixed", "must be >= 0")
        self._check_overrides()

    def _check_overrides(self) -> None:
        """Every override names a registered method and AlignConfig fields of the right types, and gives
        a valid AlignConfig: a bad one stops the run at load, not after VFT and sampling."""
        _check(isinstance(self.method_overrides, dict), "method_overrides",
               f"expected a mapping {{method: {{field: value}}}}, got {type(self.method_overrides).__name__}")
        for method, over in self.method_overrides.items():
            name = f"method_overrides.{method}"
            _check(method in METHODS, name, f"unknown method; choose from {METHODS}")
            _check(isinstance(over, dict), name, f"expected a mapping of AlignConfig fields, got {type(over).__name__}")
            _check("method" not in over, f"{name}.method", f"set by the key ({method!r}), not overridable")
            _typed(AlignConfig, over, f"{name}.")
            try:
                self.align_for(method)
            except ConfigError as e:
                raise ConfigError(f"{name}: {e}") from None

    def align_for(self, method: str) -> AlignConfig:
        """The AlignConfig used for ``method``: the shared one, the method, then its overrides."""
        base = dataclasses.asdict(self.align)
        base.update(METHOD_DEFAULTS.get(method, {}))
        base.update(self.method_overrides.get(method, {}))
        base["method"] = method
        return AlignConfig(**base)


# Per-method defaults on top of ``RunConfig.align``: what distinguishes the methods (from the registry).
METHOD_DEFAULTS: dict[str, dict] = {name: m.defaults for name, m in REGISTRY.items()}


SECTIONS = {"data": DataConfig, "model": ModelConfig, "vft": VFTConfig, "sample": SampleConfig, "align": AlignConfig}


def describe(cfg: RunConfig, section: str | None = None) -> list[tuple[str, Any, str]]:
    """(dotted name, value, description) of every field of ``cfg`` (or of one ``section``).

    >>> [row for row in describe(preset("tiny"), "align") if row[0] == "align.max_cots"]
    [('align.max_cots', 16, 'most COTs per question in one AFT step (positives first); the rest are left out, with a warning')]
    """
    if section is not None and section not in SECTIONS and section != "run":
        raise ConfigError(f"section {section!r}: choose from run, {', '.join(SECTIONS)}")
    rows = []
    for f in dataclasses.fields(cfg):
        if f.name in SECTIONS:
            if section in (None, f.name):
                sub = getattr(cfg, f.name)
                rows += [(f"{f.name}.{g.name}", getattr(sub, g.name), g.metadata.get("doc", ""))
                         for g in dataclasses.fields(sub)]
        elif section in (None, "run"):
            rows.append((f.name, getattr(cfg, f.name), f.metadata.get("doc", "")))
    return rows


def _e2() -> RunConfig:
    """The powered-E2 default (200,000 questions, VFT at 0.96-0.97): the committed E2 outcomes were made with it.

    Until 2026-12-07 this was ``tiny``; it keeps every setting, so its E2 commands and figures stay valid."""
    # Its settings and why (each pre-registered, experiments/INDEX.md): VFT at batch 64 for 3,000 steps (batch 32 x
    # 1,500 left VFT under-trained, and more NLL then wins by construction); 200,000 distinct training questions,
    # each seen about once (vft_recipe.md: validation greedy 0.961-0.972 on seeds 0-2, against 0.804-0.954 with
    # 20,000); BC's margin calibrated from the VFT model's own gaps; one alignment epoch for every method, RFT
    # included; greedy on 10,000 held-out questions and an assessment set grown until 2,000 of its questions have a
    # right and a wrong COT (e2_powered.md).
    cfg = RunConfig(preset="e2")
    cfg.data.n_train = 200_000
    cfg.data.n_test = 10_000
    cfg.assess_mixed = 2000
    cfg.vft.steps = 3000
    cfg.align.epochs = 1.0
    cfg.align.beta_quantile = 0.75
    return cfg


def _smoke() -> RunConfig:
    """Seconds on a 2-core CPU: for tests and notebook smoke mode (learning happens, effects need not)."""
    return RunConfig(
        preset="smoke",
        data=DataConfig(n_train=2000, n_test=48, min_steps=2, max_steps=3),
        model=ModelConfig(hidden=64, layers=2, heads=2, ffn=128),
        vft=VFTConfig(steps=150, batch_size=32, lr=3e-3, warmup=10, checkpoint_every=0),
        sample=SampleConfig(k=4, n_questions=48, max_new_tokens=32, batch_questions=48),
        align=AlignConfig(epochs=1.0, questions_per_step=8, warmup=2),
        eval_k=4,
    )


def _smol() -> RunConfig:
    """SmolLM2-135M-Instruct offline with LoRA: a real pretrained model, sized for a CPU."""
    return RunConfig(
        preset="smol",
        data=DataConfig(n_train=2000, n_test=50, min_steps=2, max_steps=3),
        # autocast "auto": bf16 where this machine's bf16 matmuls are faster (the 4-question smoke run 115 s
        # -> 73 s on an AVX512-BF16 CPU, 2026-12-03); fp32 elsewhere
        model=ModelConfig(name="smol", lora=True, lora_r=16, lora_alpha=32, max_prompt_tokens=160, autocast="auto"),
        vft=VFTConfig(steps=30, batch_size=8, lr=2e-4, warmup=3, weight_decay=0.0, checkpoint_every=0),
        sample=SampleConfig(k=4, n_questions=24, max_new_tokens=64, batch_questions=8),
        align=AlignConfig(lr=1e-4, epochs=1.0, questions_per_step=4, warmup=2),
        eval_k=4,
    )


def _smol_gsm8k() -> RunConfig:
    """E6 on a real LM (``aftlab.kfold``, experiments/e6_smol_gsm8k.md): smol + LoRA trained on GSM8K
    ``model_solutions`` (right/wrong solutions written by other models), no sampling. Prompts hold a whole
    GSM8K question (at most 233 tokens in the file); greedy COTs get a GSM8K-sized 256 new tokens (the
    references run to 293, median 86). Positives are the solutions labelled right (``is_correct``; no step
    check: the labels are the file's) plus the reference; every arm gets the same budget (``align.epochs``
    and ``align.questions_per_step``), lr and epochs chosen per arm on validation questions."""
    cfg = _smol()
    cfg.preset = "smol-gsm8k"
    cfg.model.max_prompt_tokens = 256
    cfg.sample.max_new_tokens = 256
    cfg.align = AlignConfig(lr=1e-4, epochs=1.0, questions_per_step=4, warmup=10, strict_positives=False,
                            checkpoint_every=20)
    cfg.methods = ("rft", "aft_bc", "aft_dc", "align_only", "dpo")
    return cfg


def _tiny() -> RunConfig:
    """The teaching default: a fast miniature of the paper's regime, a VFT model that still errs often.

    Chosen on validation questions by criteria written before any candidate ran (experiments/tiny_default.md):
    a 96-wide 2-layer model on 3,000 two- or three-step problems, VFT for 1,200 steps: greedy 0.50 and assessment
    accuracy 0.71 on validation questions, in about three minutes of VFT on two cores. VFT is not at its plateau
    (twice the steps gain 13 points), which is why E2 on this default carries the vft_cont control."""
    return RunConfig(
        preset="tiny",
        data=DataConfig(n_train=3000, n_test=2000, min_steps=2, max_steps=3),
        model=ModelConfig(hidden=96, layers=2, heads=4, ffn=384),
        vft=VFTConfig(steps=1200),
        sample=SampleConfig(n_questions=2000),
        align=AlignConfig(epochs=1.0, beta_quantile=0.75),
        assess_questions=1000, assess_mixed=1000)


PRESETS = {"tiny": _tiny, "e2": _e2, "smoke": _smoke, "smol": _smol, "smol-gsm8k": _smol_gsm8k}


def preset(name: str, seed: int | None = None) -> RunConfig:
    """A fresh RunConfig for the named preset; ``seed`` (if given) seeds data, model and sampling."""
    if name not in PRESETS:
        raise ConfigError(f"preset: unknown preset {name!r}; choose from {sorted(PRESETS)}")
    cfg = PRESETS[name]()
    if seed is not None:
        cfg.seed = seed
        cfg.data.seed = seed
    return cfg


def _coerce(value: str, current: Any, name: str) -> Any:
    if isinstance(current, bool):
        if value.lower() in ("1", "true", "yes", "on"):
            return True
        if value.lower() in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{name}: expected a boolean, got {value!r}")
    if value.lower() in ("none", "null") and (current is None or isinstance(current, str)):
        return None
    try:
        if isinstance(current, int):
            return int(value)
        if isinstance(current, float):
            out = float(value)
            if not math.isfinite(out):  # nan slips through every "> 0" check; inf lr poisons training
                raise ValueError
            return out
        if isinstance(current, tuple):
            return tuple(float(v) for v in value.split(","))
    except ValueError:
        raise ConfigError(f"{name}: expected a finite {type(current).__name__}, got {value!r}") from None
    return value


def replace_path(cfg: RunConfig, path: str, value: str) -> RunConfig:
    """Set a dotted field (``"align.beta"``, or one method's override ``"method_overrides.aft_bc.beta"``)
    from a string, type-checked; returns a new validated config.

    >>> replace_path(preset("smoke"), "method_overrides.aft_bc.beta", "0.3").align_for("aft_bc").beta
    0.3
    """
    d = to_dict(cfg)
    parts = path.split(".")
    if parts[0] == "method_overrides" and len(parts) == 3:
        method, name = parts[1:]
        over = d["method_overrides"].setdefault(method, {})
        hints = typing.get_type_hints(AlignConfig) if method in METHODS else {}
        # a known field is read as its type (the method's current value says which); the rest is left to from_dict
        over[name] = _coerce(value, getattr(cfg.align_for(method), name), path) if name in hints else value
        return from_dict(d)
    node = d
    for p in parts[:-1]:
        if not isinstance(node.get(p), dict):
            raise ConfigError(f"{path}: unknown config section {p!r}")
        node = node[p]
    if parts[-1] not in node:
        raise ConfigError(f"{path}: unknown config key {parts[-1]!r}")
    node[parts[-1]] = _coerce(value, node[parts[-1]], path)
    return from_dict(d)


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


def _type_ok(value: Any, hint: Any) -> bool:
    """Whether ``value`` fits a field's type hint (JSON-shaped: lists stand for tuples)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if hint is type(None):
        return value is None
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, a) for a in args)
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:  # ints are fine for floats; nan/inf never are
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if hint is str:
        return isinstance(value, str)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_type_ok(v, args[0]) for v in value)
        return len(value) == len(args) and all(_type_ok(v, a) for v, a in zip(value, args))
    if origin is dict or hint is dict:
        return isinstance(value, dict)
    return True


def _typed(cls, values: dict, prefix: str) -> dict:
    """``values`` checked against ``cls``'s fields: unknown keys and wrong types raise ConfigError."""
    hints = typing.get_type_hints(cls)
    for name, value in values.items():
        full = f"{prefix}{name}"
        if name not in hints:
            raise ConfigError(f"{full}: unknown config key")
        if not _type_ok(value, hints[name]):
            want = hints[name].__name__ if isinstance(hints[name], type) else str(hints[name])
            raise ConfigError(f"{full}: expected {want}, got {type(value).__name__} {value!r}"[:300])
    return values


def from_dict(d: dict) -> RunConfig:
    """Rebuild a RunConfig from ``to_dict`` output; unknown keys and wrong types raise ConfigError
    naming the field."""
    if not isinstance(d, dict):
        raise ConfigError(f"config: expected a mapping, got {type(d).__name__}")
    kw = {}
    for key, value in d.items():
        if key in SECTIONS:
            if not isinstance(value, dict):
                raise ConfigError(f"{key}: expected a mapping of fields, got {type(value).__name__}")
            kw[key] = SECTIONS[key](**_typed(SECTIONS[key], value, f"{key}."))
        else:
            kw[key] = _typed(RunConfig, {key: value}, "")[key]
    return RunConfig(**kw)
