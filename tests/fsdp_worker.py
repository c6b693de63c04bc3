"""Run by ``test_multiprocess.py`` under torchrun (2 CPU processes, gloo): FSDP2 on CPU, then the checkpoint.

accelerate 1.15 turns FSDP on only for GPU-type backends (on CPU processes it sets up plain DDP), so
this worker shards the tiny model with torch's own ``fully_shard`` (the FSDP2 that accelerate applies
on GPUs), trains 2 steps on a fixed batch (each process takes half) and saves through
``aftlab.train.distributed``, which must gather the full weights and optimizer state from both processes.

    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/fsdp_worker.py OUT
"""
import sys

import torch

BATCH = [[1, 5, 6, 7, 8, 2], [1, 9, 10, 11, 12, 2], [1, 5, 9, 6, 10, 2], [1, 13, 14, 15, 16, 2]]


def build():
    from aftlab.model.lm import tiny_lm
    words = "a b c d e f g h i j k l m n o p".split()
    return tiny_lm([" ".join(words)], hidden=16, layers=2, heads=2, ffn=32, seed=0)


def train(model, opt, rows) -> None:
    """2 AdamW steps on the token-mean loss of ``rows`` (all of equal length, so halves average exactly)."""
    ids = torch.tensor(rows)
    for _ in range(2):
        opt.zero_grad(set_to_none=True)
        model(input_ids=ids, labels=ids).loss.backward()
        opt.step()


def main(out: str) -> None:
    from torch.distributed.fsdp import fully_shard

    from aftlab.train import checkpoint, distributed
    dist = distributed.runner()  # WORLD_SIZE=2: sets up the gloo process group
    lm = build()
    for layer in lm.model.model.layers:
        fully_shard(layer)
    fully_shard(lm.model)
    assert distributed.sharded(lm.model)
    opt = checkpoint.make_optimizer(lm.model, lr=1e-2)
    train(lm.model, opt, BATCH[dist.rank::dist.world])
    dist.save(out, lm, opt, step=2, history=[{"step": 2}])


if __name__ == "__main__":
    main(sys.argv[1])
