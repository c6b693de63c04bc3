"""Optional vLLM backend for sampling: ``aftlab sample|run --sampler vllm``.

Place in the data path: data → model → VFT → **sampling** (drawing the COTs) → scoring → ...

A drop-in for ``aftlab.sampling.samples.generate``: ``sample_cots(..., sampler="vllm")`` dedups, labels and
caches exactly as with the default Hugging Face sampler; only the drawing of the k COTs moves to a
vLLM engine (continuous batching, paged KV cache — much faster on a CUDA GPU). Prompts are the
LM's own prompt token ids (``lm.prompt_ids``: plain layout or chat template, truncated the same way),
passed to vLLM as ``prompt_token_ids``, and completions are decoded with ``lm.decode``, so the
tokenisation on both sides is identical to the HF path. Options map as k → ``SamplingParams(n=k)``,
temperature, top_p, max_new_tokens → ``max_tokens``, seed (one per question: batch seed + position),
and generation stops at the tokenizer's EOS. Temperature 0 is greedy: one completion, repeated k
times, as ``generate`` does. The same seed gives the same COTs within a backend, not across the two.

vLLM loads weights from a folder: ``model_path`` when the caller knows a folder (or hub id) holding
exactly the LM's current weights (``aftlab sample --model FOLDER``); otherwise the LM is saved to a
temporary folder first (LoRA adapters merged into a copy), removed again by ``close()``.

``vllm`` is imported only here, when chosen; it is not a dependency of aftlab.
"""
from __future__ import annotations

import gc
import shutil
import tempfile
from pathlib import Path

from ..errors import ConfigError


class VLLMUnavailable(ConfigError):
    """``--sampler vllm`` was asked for but vLLM cannot be imported."""


def import_vllm():
    """The ``vllm`` module, or VLLMUnavailable saying how to get it."""
    try:
        import vllm
    except ImportError as e:
        detail = (str(e).splitlines() or [type(e).__name__])[0][:200]
        missing = isinstance(e, ModuleNotFoundError) and (e.name or "vllm").split(".")[0] == "vllm"
        why = "is not installed" if missing else f"could not be imported ({detail})"
        raise VLLMUnavailable(
            f"--sampler vllm: the vllm package {why}. Install it with `pip install vllm` (it needs a "
            "CUDA GPU and a matching PyTorch build), or use the default sampler (--sampler hf).") from None
    return vllm


class VLLMSampler:
    """A callable with ``aftlab.sampling.samples.generate``'s signature, backed by one lazily started vLLM engine.

    ``model_path``: a folder (or hub id) holding the LM's current weights; None saves the LM to a
    temporary folder when the engine starts. ``engine_kw`` go to ``vllm.LLM`` (e.g. ``dtype``,
    ``gpu_memory_utilization``, ``tensor_parallel_size``). Call ``close()`` to stop the engine and
    remove the temporary folder; ``sample_cots(sampler="vllm")`` does both for you.
    """

    def __init__(self, model_path: str | Path | None = None, **engine_kw):
        self.vllm = import_vllm()  # fail before any model is loaded or trained
        self.model_path = str(model_path) if model_path is not None else None
        self.engine_kw = engine_kw
        self.llm = None
        self._lm = None
        self._tmp: str | None = None

    # ------------------------------------------------------------ engine
    def _folder(self, lm) -> str:
        if self.model_path is not None:
            return self.model_path
        self._tmp = tempfile.mkdtemp(prefix="aftlab-vllm-")
        save_merged(lm, self._tmp)
        return self._tmp

    def _engine(self, lm):
        if self.llm is not None and self._lm is lm:
            return self.llm
        self.close()
        folder = self._folder(lm)
        kw = dict(model=folder, tokenizer=folder, trust_remote_code=False)
        if "gpu_memory_utilization" not in self.engine_kw:
            util = _free_gpu_share()  # the HF copy of the model may already sit on the same GPU
            if util is not None:
                kw["gpu_memory_utilization"] = util
        kw.update(self.engine_kw)
        self.llm = self.vllm.LLM(**kw)
        self._lm = lm
        return self.llm

    def close(self) -> None:
        """Stop the engine (freeing its GPU memory) and delete the temporary model folder."""
        if self.llm is not None:
            self.llm = None
            self._lm = None
            gc.collect()
            try:
                import torch
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
            except Exception:  # noqa: BLE001 - freeing memory is best effort
                pass
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    # ------------------------------------------------------------ sampling
    def sampling_params(self, lm, k: int, temperature: float, top_p: float, max_new_tokens: int, seed: int):
        """``vllm.SamplingParams`` for one question (greedy: n=1, repeated k times by the caller)."""
        sample = temperature > 0
        return self.vllm.SamplingParams(n=k if sample else 1, temperature=temperature if sample else 0.0,
                                        top_p=top_p if sample else 1.0, max_tokens=max_new_tokens, seed=seed,
                                        stop_token_ids=[lm.tokenizer.eos_token_id])

    def __call__(self, lm, questions: list[str], k: int = 1, temperature: float = 0.0, top_p: float = 1.0,
                 max_new_tokens: int = 48, seed: int = 0) -> list[list[tuple[str, bool]]]:
        """k completions per question as (text, finished) pairs, like ``aftlab.sampling.samples.generate``."""
        llm = self._engine(lm)
        prompts = [{"prompt_token_ids": lm.prompt_ids(q)} for q in questions]
        params = [self.sampling_params(lm, k, temperature, top_p, max_new_tokens, seed + i)
                  for i in range(len(questions))]
        outs = llm.generate(prompts, params, use_tqdm=False)
        eos = lm.tokenizer.eos_token_id
        results = []
        for out in outs:
            row = []
            for c in out.outputs:
                toks = list(c.token_ids)
                finished = getattr(c, "finish_reason", None) == "stop" or eos in toks
                row.append((lm.decode(toks), finished))
            if len(row) == 1 and k > 1:  # greedy: the k copies are identical
                row = row * k
            if len(row) != k:
                raise RuntimeError(f"vLLM returned {len(row)} completions for a question, expected {k}")
            results.append(row)
        return results


def save_merged(lm, folder: str | Path) -> None:
    """Save ``lm`` as a plain ``save_pretrained`` folder vLLM can load; LoRA adapters are merged into a
    copy (the LM itself keeps its adapters)."""
    model = lm.model
    if hasattr(model, "merge_and_unload"):  # a PEFT model: vLLM wants full weights
        import copy
        model = copy.deepcopy(model).merge_and_unload()
    model.save_pretrained(folder, safe_serialization=True)
    lm.tokenizer.save_pretrained(folder)


def _free_gpu_share() -> float | None:
    """90% of the GPU memory free now, as a share of the total (vLLM's gpu_memory_utilization)."""
    try:
        import torch
        if not torch.cuda.is_available():
            return None
        free, total = torch.cuda.mem_get_info()
    except Exception:  # noqa: BLE001 - no usable CUDA: leave vLLM's default
        return None
    return round(min(0.9, 0.9 * free / total), 3)


def model_folder(name_or_path: str | Path) -> str | None:
    """The folder (or hub id) vLLM can load for a ``load_lm`` argument as it is on disk, or None when
    the LM must be saved first (a PEFT adapter folder needs merging)."""
    if str(name_or_path) == "smol":
        from ..model.smol import smol_path
        return str(smol_path())
    path = Path(name_or_path)
    if path.is_dir() and (path / "adapter_config.json").is_file():
        return None
    return str(name_or_path)
