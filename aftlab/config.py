"""Typed configs and named presets shared by the CLI, the notebooks and the app.

Place in the data path: every stage (data → model → VFT → sampling → scoring → losses → AFT →
metrics → report) reads one of these dataclasses; ``RunConfig`` bundles them for a whole run.

>>> cfg = preset("smoke", seed=3)
>>> cfg.seed, cfg.data.seed, cfg.model.name
(3, 3, 'tiny')
>>> replace_path(cfg, "align.beta", "0.3").align.beta
0.3
"""
from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any

METHODS = ("rft", "aft_bc", "aft_dc", "align_only", "aft_rbc", "dpo", "rrhf", "pro")
CONSTRAINTS = (None, "detach", "boundary")
NEG_SCOPES = ("all", "divergent")
NEG_CREDITS = ("all", "divergent", "first_step", "first_token", "first_error")


class ConfigError(ValueError):
    """A config value is invalid; the message names the field."""


def _check(cond: bool, name: str, msg: str) -> None:
    if not cond:
        raise ConfigError(f"{name}: {msg}")


@dataclass
class DataConfig:
    source: str = "synthetic"  # "synthetic" or a path to a GSM8K/AQuA/ECQA-format JSONL file
    test_source: str | None = None  # JSONL of held-out questions (when source is a file)
    n_train: int = 20000  # synthetic training questions generated
    n_test: int = 600  # held-out questions used for every evaluation
    min_steps: int = 3  # fewest arithmetic steps in a synthetic problem
    max_steps: int = 4  # most arithmetic steps in a synthetic problem
    max_number: int = 12  # largest number that appears in a synthetic question
    alt_reference: float = 0.5  # share of synthetic questions whose reference uses a non-story step order
    distractors: float = 0.0  # share of synthetic questions with one irrelevant sentence (wrong-choice errors)
    seed: int = 0  # seed of the synthetic generator (train and test are disjoint)

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
    name: str = "tiny"  # "tiny" (built in code), "smol" (SmolLM2-135M offline) or a HF id / local path
    hidden: int = 128  # tiny: hidden size
    layers: int = 3  # tiny: transformer layers
    heads: int = 4  # tiny: attention heads
    ffn: int = 512  # tiny: feed-forward width
    lora: bool = False  # train LoRA adapters (PEFT) instead of all weights
    lora_r: int = 8  # LoRA rank
    lora_alpha: int = 16  # LoRA scaling numerator
    dtype: str = "auto"  # "auto", "float32", "bfloat16" or "float16"
    device: str = "auto"  # "auto", "cpu", "cuda", "mps"
    max_prompt_tokens: int = 96  # prompts are truncated from the left to this many tokens
    trust_remote_code: bool = False  # allow model code from the model folder (off: safetensors + known archs)

    def __post_init__(self):
        _check(self.hidden > 0 and self.layers > 0 and self.heads > 0 and self.ffn > 0, "model.hidden/layers/heads/ffn",
               "must be positive")
        _check(self.hidden % self.heads == 0, "model.heads", f"hidden {self.hidden} not divisible by {self.heads}")
        _check(self.dtype in ("auto", "float32", "bfloat16", "float16"), "model.dtype", f"unknown dtype {self.dtype!r}")
        _check(self.lora_r > 0, "model.lora_r", "must be > 0")


@dataclass
class VFTConfig:
    steps: int = 1500  # optimizer steps
    batch_size: int = 64  # (question, reference COT) pairs per step
    lr: float = 2e-3  # peak learning rate
    betas: tuple[float, float] = (0.9, 0.98)  # AdamW betas
    weight_decay: float = 0.01  # AdamW weight decay
    warmup: int = 50  # linear warmup steps
    min_lr_ratio: float = 0.05  # cosine decays to lr * min_lr_ratio
    clip: float = 1.0  # gradient-norm clip
    checkpoint_every: int = 500  # steps between checkpoints (0: only at the end)
    log_every: int = 25  # steps between loss-history entries

    def __post_init__(self):
        self.betas = tuple(self.betas)
        _check(self.steps > 0, "vft.steps", f"must be > 0, got {self.steps}")
        _check(self.batch_size > 0, "vft.batch_size", f"must be > 0, got {self.batch_size}")
        _check(self.lr > 0, "vft.lr", f"must be > 0, got {self.lr}")
        _check(0 <= self.min_lr_ratio <= 1, "vft.min_lr_ratio", "must be in [0, 1]")


@dataclass
class SampleConfig:
    k: int = 8  # COTs sampled per question
    temperature: float = 0.8  # sampling temperature (0: greedy)
    top_p: float = 1.0  # nucleus sampling mass
    max_new_tokens: int = 48  # cap on generated COT tokens
    n_questions: int = 3000  # training questions to sample COTs for
    batch_questions: int = 64  # questions per generate() call (rows = batch_questions * k)

    def __post_init__(self):
        _check(1 <= self.k <= 64, "sample.k", f"must be in [1, 64], got {self.k}")
        _check(self.temperature >= 0, "sample.temperature", f"must be >= 0, got {self.temperature}")
        _check(0 < self.top_p <= 1, "sample.top_p", "must be in (0, 1]")
        _check(self.max_new_tokens > 0, "sample.max_new_tokens", "must be > 0")
        _check(self.n_questions > 0, "sample.n_questions", "must be > 0")


@dataclass
class AlignConfig:
    method: str = "aft_bc"  # one of METHODS
    constraint: str | None = None  # for dpo/rrhf/pro: None, "detach" or "boundary"
    beta: float = 0.1  # BC boundary margin below the worst positive (in gamma-scaled score units)
    gamma: float = 10.0  # score scale: losses see gamma * s (as SimPO scales length-normalised log-probs)
    lam: float = 1.0  # weight of the alignment term
    nll_weight: float = 1.0  # weight of the VFT (NLL on positives) term
    dpo_beta: float = 0.1  # DPO inverse temperature on summed log-ratios
    lr: float = 1e-4  # peak learning rate (continues VFT's optimizer state)
    warmup: int = 10  # linear warmup steps
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio
    epochs: float = 2.0  # passes over the sampled questions
    questions_per_step: int = 16  # questions (with all their COTs) per optimizer step
    clip: float = 1.0  # gradient-norm clip
    strict_positives: bool = True  # positives must also pass every arithmetic step check
    include_reference: bool = True  # add the reference COT to each question's positives
    checkpoint_every: int = 50  # steps between resumable checkpoints when training into a folder (0: end only)
    neg_scope: str = "all"  # a negative's score in the loss: "all" its tokens, "divergent" those after its longest shared prefix with a positive
    truncate: bool = False  # aft_bc/aft_dc/align_only (others ignore it): drop pairs whose negative is already below the boundary
    neg_credit: str = "all"  # which of a negative's scored tokens get the gradient (its score keeps them all): "all", "divergent", "first_step" (the step where it leaves every positive) "first_token" (the token where it does) or "first_error" (the result of its first wrong arithmetic step)

    def __post_init__(self):
        _check(self.neg_scope in NEG_SCOPES, "align.neg_scope", f"must be one of {NEG_SCOPES}, got {self.neg_scope!r}")
        _check(self.neg_credit in NEG_CREDITS, "align.neg_credit",
               f"must be one of {NEG_CREDITS}, got {self.neg_credit!r}")
        _check(self.method in METHODS, "align.method", f"unknown method {self.method!r}; choose from {METHODS}")
        _check(self.constraint in CONSTRAINTS, "align.constraint", f"must be one of {CONSTRAINTS}")
        _check(self.beta >= 0, "align.beta", f"must be >= 0, got {self.beta}")
        _check(self.gamma > 0, "align.gamma", f"must be > 0, got {self.gamma}")
        _check(self.lam >= 0 and self.nll_weight >= 0, "align.lam/nll_weight", "must be >= 0")
        _check(self.lr > 0, "align.lr", "must be > 0")
        _check(self.epochs > 0, "align.epochs", "must be > 0")
        _check(self.questions_per_step > 0, "align.questions_per_step", "must be > 0")
        _check(self.checkpoint_every >= 0, "align.checkpoint_every", "must be >= 0")


@dataclass
class RunConfig:
    preset: str = "tiny"  # name of the preset this config started from
    seed: int = 0  # seed of every random choice (data, init, batches, sampling)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    vft: VFTConfig = field(default_factory=VFTConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    align: AlignConfig = field(default_factory=AlignConfig)
    methods: tuple[str, ...] = ("rft", "aft_bc", "aft_dc", "align_only")  # continuations compared with VFT
    method_overrides: dict = field(default_factory=dict)  # per-method AlignConfig overrides {method: {field: value}}
    rounds: int = 1  # sample → align rounds (iterative AFT)
    eval_k: int = 8  # samples per held-out question in the fixed assessment set

    def __post_init__(self):
        self.methods = tuple(self.methods)
        for m in self.methods:
            _check(m in METHODS, "methods", f"unknown method {m!r}; choose from {METHODS}")
        _check(self.rounds >= 1, "rounds", "must be >= 1")
        _check(1 <= self.eval_k <= 64, "eval_k", "must be in [1, 64]")

    def align_for(self, method: str) -> AlignConfig:
        """The AlignConfig used for ``method``: the shared one, the method, then its overrides."""
        base = dataclasses.asdict(self.align)
        base.update(METHOD_DEFAULTS.get(method, {}))
        base.update(self.method_overrides.get(method, {}))
        base["method"] = method
        return AlignConfig(**base)


# Per-method defaults on top of ``RunConfig.align``: what distinguishes the methods.
METHOD_DEFAULTS: dict[str, dict] = {
    "rft": {"lam": 0.0},
    "aft_bc": {"constraint": "boundary"},
    "aft_dc": {"constraint": "detach"},
    "align_only": {"constraint": None},
    "aft_rbc": {"constraint": "boundary"},
}


def _tiny() -> RunConfig:
    # batch 32 (not 64) and one alignment epoch (not 2) keep `make demo` under 15 minutes on 2 cores;
    # the 3-seed figures of 2026-11-24 in experiments/README.md used the class defaults.
    cfg = RunConfig(preset="tiny")
    cfg.vft.batch_size = 32
    cfg.align.epochs = 1.0
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
        model=ModelConfig(name="smol", lora=True, lora_r=16, lora_alpha=32, max_prompt_tokens=160),
        vft=VFTConfig(steps=30, batch_size=8, lr=2e-4, warmup=3, weight_decay=0.0, checkpoint_every=0),
        sample=SampleConfig(k=4, n_questions=24, max_new_tokens=64, batch_questions=8),
        align=AlignConfig(lr=1e-4, epochs=1.0, questions_per_step=4, warmup=2),
        eval_k=4,
    )


PRESETS = {"tiny": _tiny, "smoke": _smoke, "smol": _smol}


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
    """Set a dotted field (``"align.beta"``) from a string, type-checked; returns a new validated config."""
    d = to_dict(cfg)
    node, parts = d, path.split(".")
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
    sections = {"data": DataConfig, "model": ModelConfig, "vft": VFTConfig, "sample": SampleConfig,
                "align": AlignConfig}
    if not isinstance(d, dict):
        raise ConfigError(f"config: expected a mapping, got {type(d).__name__}")
    kw = {}
    for key, value in d.items():
        if key in sections:
            if not isinstance(value, dict):
                raise ConfigError(f"{key}: expected a mapping of fields, got {type(value).__name__}")
            kw[key] = sections[key](**_typed(sections[key], value, f"{key}."))
        else:
            kw[key] = _typed(RunConfig, {key: value}, "")[key]
    return RunConfig(**kw)
