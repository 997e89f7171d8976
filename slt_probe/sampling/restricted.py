"""The gradient of Linear-stack chains that each sample whole tensors of their own.

Several groups' chains run as the rows of one ``[R, d]`` batch over the union of the groups'
parameters, row r carrying its group's 0/1 mask (:mod:`slt_probe.estimators.grouped`). When
every row selects whole parameter tensors (the layers of an MLP, whole Linear weights or
biases), most of a row is w*, and the generic gradient wastes work on it: it runs every row's
full forward pass and differentiates every tensor of every row, to multiply most of it by 0.

For a Linear + activation stack (:func:`slt_probe.sampling.stacked.stacked_layers`) this path
computes, chain by chain, only what the row's own tensors change:

- a row's layers before its first sampled tensor are at w* for every row, so their output on
  the shared minibatch is computed once per step and shared by every row that starts later;
- a tensor the row does not sample is the constant w* (no gradient is taken for it), so the
  backward pass stops at the row's first sampled layer and only the row's own tensors are
  differentiated; the rest of the row's gradient is 0, as the mask would make it.

It is plain autograd (no torch.func transform), so blocks of chains may run it on several
threads. The products go through oneDNN where :func:`slt_probe.sampling.stacked.use_onednn`
finds it faster, as the chain-by-chain stack path does.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from slt_probe.sampling import onednn
from slt_probe.sampling.stacked import ONEDNN_MIN_WEIGHTS, Unsupported, split_rows, use_onednn


def whole_tensor_rows(mask: torch.Tensor, numels: list[int]) -> torch.Tensor | None:
    """``[R, P]`` bool: which of the P parameter tensors each row of the 0/1 ``mask`` (``[R,
    d]``) samples, or ``None`` when some row takes only part of a tensor."""
    counts = torch.stack([m.sum(dim=1) for m in torch.split(mask, numels, dim=1)], dim=1)
    full = torch.tensor(numels, dtype=counts.dtype, device=counts.device)
    if not bool(((counts == 0) | (counts == full)).all()):
        return None
    return (counts == full).cpu()


def make_row_restricted_grad_and_loss(
    plan: list[tuple],
    numels: list[int],
    shapes: list[torch.Size],
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    shared_batch: bool,
    sampled: torch.Tensor,
    w_star: torch.Tensor,
) -> Callable:
    """``(W [r, d], x, y, out=None, first_row=0) ↦ (∇L_m [r, d], L_m [r])`` for rows
    ``first_row … first_row + r − 1`` of the batch, row i sampling the tensors ``sampled[i]``
    (``[R, P]`` bool, from :func:`whole_tensor_rows`). Only the coordinates of the tensors a
    row samples are written into ``out``: the others must hold 0 already (a zero-filled buffer
    stays so), which makes the gradient masked without a pass over the whole row. The
    function's ``spans`` lists each row's sampled columns (``(a, b)`` ranges) for
    :class:`~slt_probe.sampling.noise.NoiseStream`. The same contract as the stack's other
    paths otherwise."""
    star = [p[0] for p in split_rows(w_star[None], numels, shapes)]
    rows = [[k for k in range(len(numels)) if sampled[i, k]] for i in range(sampled.shape[0])]
    one = len(rows) == 1  # one mask row shared by every chain
    # the first op each row's forward pass must run (all before it is w*)
    owner = {
        i: j for j, op in enumerate(plan) if op[0] == "linear" for i in op[1:] if i is not None
    }
    start = [min(owner[k] for k in ks) if ks else len(plan) for ks in rows]
    big = {op[1]: shapes[op[1]].numel() >= ONEDNN_MIN_WEIGHTS for op in plan if op[0] == "linear"}
    fast = use_onednn(plan, shapes, w_star[None], None)

    def run(params, h, lo: int, hi: int) -> torch.Tensor:
        for op in plan[lo:hi]:
            if op[0] == "linear":
                if h.dim() != 2:
                    raise Unsupported(f"Linear input of shape {tuple(h.shape)}")
                bias = None if op[2] is None else params[op[2]]
                product = onednn.linear if fast and big[op[1]] else nn.functional.linear
                h = product(h, params[op[1]], bias)
            elif op[0] == "act":
                h = op[1](h)
            else:
                h = h.flatten(op[1])
        return h

    def grad_and_loss(w: torch.Tensor, x, y, out=None, first_row: int = 0):
        chains = w.shape[0]
        pieces = split_rows(w.data, numels, shapes)
        prefix = {0: x}  # the w* forward pass on the shared minibatch, op by op
        with torch.enable_grad():
            losses, leaves = [], []
            for c in range(chains):
                i = 0 if one else first_row + c
                own, begin = rows[i], start[i]
                params = list(star)
                for k in own:
                    params[k] = pieces[k][c].requires_grad_(True)
                    leaves.append(params[k])
                if shared_batch:
                    done = max(k for k in prefix if k <= begin)
                    if done < begin:
                        prefix[begin] = run(star, prefix[done], done, begin)
                    h = prefix[begin]
                else:
                    h = run(star, x[c], 0, begin)
                losses.append(
                    loss_fn(run(params, h, begin, len(plan)), y if shared_batch else y[c])
                )
            losses = torch.stack(losses)
            grads = torch.autograd.grad(losses.sum(), leaves) if leaves else ()
        out = w.new_zeros(w.shape) if out is None else out
        given, parts = iter(grads), split_rows(out, numels, shapes)
        for c in range(chains):
            for k in rows[0 if one else first_row + c]:
                parts[k][c].copy_(next(given))
        return out, losses.detach()

    grad_and_loss.path = "Linear stack, row by row over each row's own tensors"
    grad_and_loss.row_aware = True
    grad_and_loss.spans = [_spans(ks, numels) for ks in rows]
    return grad_and_loss


def _spans(tensors: list[int], numels: list[int]) -> list[tuple[int, int]]:
    """The column ranges of the flat vector that ``tensors`` (indices) cover, adjacent ones
    merged."""
    ends = [sum(numels[: k + 1]) for k in range(len(numels))]
    spans: list[tuple[int, int]] = []
    for k in sorted(tensors):
        a, b = ends[k] - numels[k], ends[k]
        if spans and spans[-1][1] == a:
            spans[-1] = (spans[-1][0], b)
        else:
            spans.append((a, b))
    return spans
