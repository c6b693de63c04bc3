"""aftlab: a research workbench for Alignment Fine-Tuning (AFT).

The package follows the data path, each stage a subpackage that imports only the ones before it:
``data`` → ``model`` → ``train`` (the loop, VFT) → ``sampling`` → ``align`` (losses, methods, AFT) →
``eval`` → ``report`` → ``app``; ``config`` describes every stage, and ``pipeline``, ``sweep``,
``notebook``, ``kfold`` (E6: arms on external COTs, K-fold) and ``cli`` run them. ``aftlab.losses`` is kept
as a name for ``aftlab.train.losses``.

>>> from aftlab import losses
>>> losses.__name__
'aftlab.train.losses'
"""
import importlib

_ALIASES = {"losses": "aftlab.train.losses"}


def __getattr__(name: str):
    if name in _ALIASES:
        return importlib.import_module(_ALIASES[name])
    raise AttributeError(f"module 'aftlab' has no attribute {name!r}")
