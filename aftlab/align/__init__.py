"""Align (AFT): the registry of methods (each a loss of ``aftlab.train.losses``) and the alignment objective, trained by
``train.loop.fit``.

- ``methods``: the registry, one entry per method
- ``credit``: which tokens of a negative the gradient reaches
- ``aft``: the alignment step, ``train_align`` and ``align_from_vft``
"""
