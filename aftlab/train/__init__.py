"""Train: the one training loop, the losses it minimises, and VFT, the first objective it runs (AFT is the second, in
``aftlab.align``).

- ``loop``: ``fit``, the loop both stages call
- ``losses``: pure loss functions of score tensors (VFT, L_A, DC, BC, RBC, DPO, RRHF, PRO)
- ``vft``: vanilla fine-tuning (masked-prompt MLE)
- ``checkpoint``: atomic, resumable checkpoints and the LR schedule
- ``distributed``: one process or many (torchrun/accelerate)
- ``shards``: splitting sampling and evaluation over processes
"""
