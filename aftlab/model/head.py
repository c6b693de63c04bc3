"""The LM head, fused with the log-prob of the taken token: ``log softmax(h W^T)[t]`` without a (N, V) tensor.

Place in the data path: inside **scoring** (every score, VFT's NLL and AFT's loss read log-probs of
the COT tokens through it).

Scoring needs one number per COT position, the log-prob of the token that was taken, yet the plain
path materialises logits (N, V), their exp for the logsumexp, and in the backward a softmax and a
zero-filled gather gradient of the same size — 49,152 floats per position for smol. Here the rows run
in chunks of about ``CHUNK_ELEMENTS / V``: forward keeps only ``z_t - logsumexp(z)``; backward
recomputes each chunk's logits and applies ``d lp / d z = onehot(t) - softmax(z)`` directly. When the
head's weight is frozen (LoRA: the tied embedding does not train) the input gradient direction
``W[t] - softmax(z) W`` is formed in the forward instead, so nothing is recomputed. The result equals
``log_softmax(h @ W.T)[t]`` and its gradients up to float rounding (``tests/test_speed_equivalence.py``).

>>> h, w, t = torch.randn(5, 4), torch.randn(7, 4), torch.tensor([0, 1, 2, 3, 6])
>>> ref = torch.log_softmax(h @ w.T, -1).gather(-1, t[:, None])[:, 0]
>>> torch.allclose(taken_logprobs(h, w, t), ref, atol=1e-6)
True
"""
from __future__ import annotations

import torch

CHUNK_ELEMENTS = 1 << 22  # logits per chunk (16 MiB in fp32): stays in cache, large enough for a fast matmul


def _rows(vocab: int) -> int:
    return max(1, CHUNK_ELEMENTS // vocab)


def _autocast(device_type: str):
    """The autocast state of ``device_type`` now, to replay in the backward (which autograd runs outside it)."""
    return {"device_type": device_type, "enabled": torch.is_autocast_enabled(device_type),
            "dtype": torch.get_autocast_dtype(device_type)}


class _TakenLogprobs(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, target):  # (M, H), (V, H), (M,) -> (M,)
        rows = _rows(weight.shape[0])
        out = torch.empty(hidden.shape[0], dtype=torch.float32, device=hidden.device)
        direction = hidden.new_empty(hidden.shape, dtype=torch.float32) if (
            ctx.needs_input_grad[0] and not ctx.needs_input_grad[1]) else None
        for s in range(0, hidden.shape[0], rows):
            z = torch.nn.functional.linear(hidden[s:s + rows], weight).float()  # (m, V)
            t = target[s:s + rows]
            lse = torch.logsumexp(z, -1)
            out[s:s + rows] = z.gather(-1, t[:, None])[:, 0] - lse
            if direction is not None:  # frozen head: d lp / d h = W[t] - softmax(z) W, formed now
                p = torch.exp(z - lse[:, None])
                direction[s:s + rows] = weight[t].float() - _mm(p, weight)
        ctx.save_for_backward(hidden, weight, target, direction)
        ctx.autocast = _autocast(hidden.device.type)
        return out

    @staticmethod
    def backward(ctx, grad):  # (M,)
        hidden, weight, target, direction = ctx.saved_tensors
        if direction is not None:
            return (grad[:, None] * direction).to(hidden.dtype), None, None
        want_h, want_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_h = torch.empty_like(hidden) if want_h else None
        grad_w = torch.zeros_like(weight, dtype=torch.float32) if want_w else None
        rows = _rows(weight.shape[0])
        with torch.autocast(**ctx.autocast):
            for s in range(0, hidden.shape[0], rows):
                h, t, g = hidden[s:s + rows], target[s:s + rows], grad[s:s + rows]
                z = torch.nn.functional.linear(h, weight).float()  # (m, V), recomputed
                dz = torch.softmax(z, -1).mul_(-g[:, None])  # g * (onehot(t) - softmax(z))
                dz[torch.arange(len(t), device=t.device), t] += g
                if want_h:
                    grad_h[s:s + rows] = _mm(dz, weight).to(hidden.dtype)
                if want_w:
                    grad_w += _mm(dz.T, h)
        return grad_h, None if grad_w is None else grad_w.to(weight.dtype), None


def _mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b`` in fp32, or in the autocast dtype when autocast is on (a matmul autocast would cast)."""
    if torch.is_autocast_enabled(a.device.type):
        dt = torch.get_autocast_dtype(a.device.type)
        return (a.to(dt) @ b.to(dt)).float()
    return a.float() @ b.float()


def taken_logprobs(hidden: torch.Tensor, weight: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``log_softmax(hidden @ weight.T)[i, target[i]]`` for each row i: (M, H), (V, H), (M,) -> (M,), fp32,
    differentiable in ``hidden`` and ``weight``, never holding more than one chunk of logits."""
    return _TakenLogprobs.apply(hidden, weight, target)


def split_head(model) -> tuple[torch.nn.Module, torch.Tensor] | None:
    """``(decoder, head weight)`` when ``model``'s logits are exactly ``decoder(...).last_hidden_state @ W.T``
    (no bias, soft-capping or logit scale; PEFT-wrapped models included), else None (use the logits)."""
    try:
        decoder, head = model.get_decoder(), model.get_output_embeddings()
    except (AttributeError, NotImplementedError):
        return None
    cfg = getattr(model, "config", None)
    plain = (isinstance(head, torch.nn.Linear) and head.bias is None and type(head) is torch.nn.Linear
             and getattr(cfg, "final_logit_softcapping", None) is None and getattr(cfg, "logit_scale", None) is None
             and getattr(cfg, "logits_scaling", None) is None and decoder is not None)
    return (decoder, head.weight) if plain else None
