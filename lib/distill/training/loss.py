"""The training loss: summed next-token cross-entropy over target tokens, without full logits.

The plain path (`chunk_tokens` 0) runs the model's LM head over the whole sequence: for one 32k-token row
and a 152k vocabulary that is 32k x 152k logits, about 20 GB in fp32, plus as much again for their gradient.
The chunked path runs the model without its head (its forward returns the final hidden states), keeps only
the positions that have a target, and computes head and cross-entropy `chunk_tokens` positions at a time,
each chunk under activation checkpointing: its logits are freed after the forward and recomputed in the
backward, so at most one chunk's logits exist at a time. The result is the same sum (to float rounding, since
it is added up in another order) with the same gradients.

On a GPU with Liger installed (liger-kernel), its fused linear cross-entropy does the same in one kernel
family, without materializing even a chunk's logits in fp32.
"""

from __future__ import annotations

import contextlib

from distill.training.packing import IGNORE


def token_loss_sum(model, ids, labels, pos, autocast, chunk_tokens: int = 0):
    """Summed cross-entropy over target tokens (labels shifted by one, IGNORE skipped)."""
    import torch.nn.functional as F

    head = model.get_output_embeddings()
    if not chunk_tokens or head is None or getattr(model.config, "final_logit_softcapping", None):
        with autocast():  # a head that does more than a linear map (logit softcapping) keeps the plain path
            logits = model(input_ids=ids, position_ids=pos, use_cache=False).logits
        return F.cross_entropy(logits[:, :-1].float().reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1),
                               ignore_index=IGNORE, reduction="sum")
    with autocast(), _without_head(head):
        hidden = model(input_ids=ids, position_ids=pos, use_cache=False).logits  # the head's input
    targets = labels[:, 1:].reshape(-1)
    keep = targets != IGNORE
    return linear_cross_entropy_sum(hidden[:, :-1].reshape(-1, hidden.shape[-1])[keep], head.weight,
                                    getattr(head, "bias", None), targets[keep], chunk_tokens)


@contextlib.contextmanager
def _without_head(head):
    """The model's forward with its LM head passing the hidden states through: the root forward still runs
    (so FSDP gathers and frees the root's parameters as usual), and `.logits` holds the head's input."""
    head.forward = lambda hidden, *args, **kwargs: hidden
    try:
        yield
    finally:
        del head.forward  # back to the class's forward


def linear_cross_entropy_sum(hidden, weight, bias, targets, chunk_tokens: int):
    """sum(cross_entropy(hidden @ weight.T + bias, targets)) over rows, `chunk_tokens` rows at a time,
    each chunk recomputed in backward (or Liger's fused kernel on a GPU where it is installed)."""
    import torch
    from torch.utils.checkpoint import checkpoint

    if hidden.shape[0] == 0:
        return (hidden.sum() + weight.sum()) * 0.0  # no target token: zero, still part of the graph
    fused = _liger() if hidden.is_cuda else None
    if fused is not None:
        return fused(weight, hidden, targets, bias)
    total = hidden.new_zeros((), dtype=torch.float32)
    for start in range(0, hidden.shape[0], chunk_tokens):
        end = start + chunk_tokens
        total = total + checkpoint(_chunk_loss, hidden[start:end], weight, bias, targets[start:end],
                                   use_reentrant=False)
    return total


def _chunk_loss(hidden, weight, bias, targets):
    import torch.nn.functional as F

    logits = F.linear(hidden, weight.to(hidden.dtype), None if bias is None else bias.to(hidden.dtype))
    return F.cross_entropy(logits.float(), targets, reduction="sum")


_LIGER: list = []


def _liger():
    """Liger's fused linear cross-entropy (sum over tokens) when liger-kernel is installed, else None."""
    if not _LIGER:
        try:
            from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss
        except ImportError:
            _LIGER.append(None)
        else:
            _LIGER.append(LigerFusedLinearCrossEntropyLoss(ignore_index=IGNORE, reduction="sum"))
    return _LIGER[0]
