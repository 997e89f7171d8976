"""A hand-batched gradient for Linear + activation stacks (MLPs, deep linear networks).

``torch.func.vmap`` runs any model, but for small networks each vmapped op costs more in Python
dispatch and batching rules than in arithmetic. For the most common models in this field (plain
MLPs and deep linear networks) the C chains can be written out directly:

- activations are kept feature-major, ``[C, features, B]``, so every layer is ``W @ h`` with
  contiguous operands and no transposes inside the loop;
- every layer is one ``bmm`` over the chain dimension (plus a broadcast bias); the first layer's
  input minibatch, which all chains share, is broadcast over chains (stride 0). The weights are
  strided views of the ``[C, d]`` position: folding them into one wide ``[C·out, in]`` matmul
  would copy the whole position every step for no faster product;
- plain autograd differentiates ``Σ_c L_m(w_c)`` with respect to each parameter's ``[C, ...]``
  view of the position, which is the per-chain gradient (chain c's loss depends only on row c);
  the pieces are concatenated once into ``[C, d]``.

Only the loss function is vmapped (over chains), so any ``loss_fn(output, target)`` works.
:func:`stacked_layers` decides whether a model qualifies; the result is checked against the
vmap path in the tests.

Where oneDNN multiplies float32 matrices faster than torch's BLAS
(:mod:`slt_probe.sampling.onednn`, decided by measurement on the machine) and the layers are
large enough for the products to dominate, the same plan runs chain by chain instead, every
large Linear's forward and backward products through oneDNN. Batching over chains would need
each layer's weights of all chains side by side, a copy of the whole position per step.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.func import vmap

from slt_probe.sampling import onednn

#: Weights (out × in) from which a Linear layer's products go through oneDNN, when it is faster;
#: below it the call overhead of three products a chain outweighs what they save.
ONEDNN_MIN_WEIGHTS = 1 << 14

# Elementwise modules that act the same on a [C, B, features] tensor as on [B, features].
_ELEMENTWISE = (nn.ReLU, nn.Tanh, nn.GELU, nn.SiLU, nn.Sigmoid, nn.LeakyReLU, nn.ELU, nn.Identity)


def _sequential_of(model: nn.Module) -> list[nn.Module] | None:
    """The flat list of leaf modules a model runs in order, when that is all its forward does.

    ``nn.Sequential`` (nested ones too) qualifies; so does a module that declares
    ``as_sequential()`` returning an equivalent ``nn.Sequential`` over its own parameters.
    """
    if hasattr(model, "as_sequential"):
        model = model.as_sequential()
    if type(model) is not nn.Sequential:  # a subclass may override forward
        return None
    out: list[nn.Module] = []
    for child in model:
        if type(child) is nn.Sequential:
            inner = _sequential_of(child)
            if inner is None:
                return None
            out += inner
        else:
            out.append(child)
    return out


def stacked_layers(model: nn.Module, names: list[str]) -> list[tuple] | None:
    """Plan of ops for the hand-batched path, or ``None`` when the model does not qualify.

    Each op is ``("linear", weight_index, bias_index | None)`` with indices into ``names`` (the
    sampled parameters in flat order), ``("act", module)`` or ``("flatten", start_dim)``.
    Qualifies: Linear layers whose parameters are all sampled, elementwise activations and
    ``Flatten``; anything else (attention, norms, dropout, frozen Linear) returns ``None``.
    """
    layers = _sequential_of(model)
    if not layers:
        return None
    params = dict(model.named_parameters())
    by_id = {id(params[k]): i for i, k in enumerate(names)}
    plan: list[tuple] = []
    for layer in layers:
        if type(layer) is nn.Linear:
            w = by_id.get(id(layer.weight))
            b = None if layer.bias is None else by_id.get(id(layer.bias))
            if w is None or (layer.bias is not None and b is None):
                return None
            plan.append(("linear", w, b))
        elif type(layer) in _ELEMENTWISE:
            plan.append(("act", layer))
        elif type(layer) is nn.Flatten and layer.end_dim == -1 and layer.start_dim >= 1:
            plan.append(("flatten", layer.start_dim))
        else:
            return None
    if not any(op[0] == "linear" for op in plan):
        return None
    used = sorted(i for op in plan if op[0] == "linear" for i in op[1:] if i is not None)
    if used != list(range(len(names))):  # every sampled parameter must appear exactly once
        return None
    return plan


def split_rows(w: torch.Tensor, numels: list[int], shapes: list[torch.Size]) -> list[torch.Tensor]:
    """Stacked positions ``[C, d]`` as per-parameter views ``[C, *shape]`` (no copy)."""
    c = w.shape[0]
    return [p.view(c, *shape) for p, shape in zip(torch.split(w, numels, dim=1), shapes)]


class ChainLoss:
    """``loss_fn`` vmapped over chains: ``(out [C, B, ...], y) ↦ [C]``.

    ``torch.func.vmap`` spends tens of µs a call in Python (pytree flattening, in_dims checks)
    around the few µs the loss itself takes, a visible share of a small network's step. With one
    tensor in and one out, the same functorch primitives can be called directly (one batch
    level, chains on dim 0). They are private, so the lean call is checked against
    ``torch.func.vmap`` on the first call (values and gradients) and dropped for good if it is
    missing, raises or disagrees.
    """

    def __init__(self, loss_fn, shared_batch: bool):
        self.loss_fn, self.shared_batch = loss_fn, shared_batch
        self.public = vmap(loss_fn, in_dims=(0, None if shared_batch else 0))
        self.lean = None
        self.checked = False

    def _lean(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        from torch._C import _functorch as ft

        c = out.shape[0]
        level = ft._vmap_increment_nesting(c, "error")
        try:
            target = y if self.shared_batch else ft._add_batch_dim(y, 0, level)
            return ft._remove_batch_dim(
                self.loss_fn(ft._add_batch_dim(out, 0, level), target), level, c, 0
            )
        finally:
            ft._vmap_decrement_nesting()

    def _agrees(self, out: torch.Tensor, y: torch.Tensor) -> bool:
        try:
            probe = out.detach().clone().requires_grad_(True)
            lean = self._lean(probe, y)
            (g_lean,) = torch.autograd.grad(lean.sum(), probe)
            public = self.public(probe, y)
            (g_public,) = torch.autograd.grad(public.sum(), probe)
        except Exception:
            return False
        return (
            lean.shape == public.shape
            and torch.allclose(lean, public, rtol=1e-5, atol=1e-7)
            and torch.allclose(g_lean, g_public, rtol=1e-5, atol=1e-7)
        )

    def __call__(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if not self.checked:
            with torch.enable_grad():
                self.lean = self._lean if self._agrees(out, y) else None
            self.checked = True
        return (self.lean or self.public)(out, y)


class Unsupported(ValueError):
    """The inputs do not fit the hand-batched path (e.g. Linear over a sequence axis)."""


def make_stacked_grad_and_loss(
    plan: list[tuple],
    numels: list[int],
    shapes: list[torch.Size],
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    shared_batch: bool,
    compute_dtype: torch.dtype | None = None,
    transform_free: bool = False,
) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """``(W [C,d], x, y, out=None) ↦ (∇L_m [C,d], L_m [C])``, the same contract as the vmap path.

    With ``compute_dtype`` the layers run in that dtype (weights and input cast on the way in,
    the output cast back before the loss), as :class:`~slt_probe.sampling.functional.FlatModel`
    does. ``transform_free`` applies the loss chain by chain instead of under ``vmap``: plain
    autograd only, which is safe to run on several threads at once (torch.func transforms on
    concurrent threads corrupted each other's results here)."""
    if transform_free:

        def batched_loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            ys = [y] * len(out) if shared_batch else y
            return torch.stack([loss_fn(o, t) for o, t in zip(out, ys)])

    else:
        batched_loss = ChainLoss(loss_fn, shared_batch)

    def forward(pieces: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        # Feature-major layout: activations are kept as [C, features, B] so that every layer is
        # W [C, out, in] @ h [C, in, B] with contiguous operands (no transposes in the loop).
        c, out_dtype = pieces[0].shape[0], pieces[0].dtype
        low = compute_dtype if compute_dtype not in (None, out_dtype) else None
        if low is not None:
            pieces = [p.to(low) for p in pieces]
            x = x.to(low) if x.is_floating_point() else x
        h, per_chain = x, not shared_batch
        major = False  # h is still in the input's own layout ([B, ...] or [C, B, ...])
        for op in plan:
            if op[0] == "linear":
                if not major:
                    if h.dim() != (3 if per_chain else 2):
                        raise Unsupported(f"Linear input of shape {tuple(h.shape)}")
                    h = h.transpose(-1, -2)  # [in, B] or [C, in, B]
                weight = pieces[op[1]]  # [C, out, in]
                if not per_chain:
                    h = h.expand(c, *h.shape)
                h = weight.bmm(h)
                major = per_chain = True
                if op[2] is not None:
                    h = h + pieces[op[2]].unsqueeze(2)
            elif op[0] == "act":
                h = op[1](h)
            else:
                if major:
                    raise Unsupported("Flatten after a Linear layer")
                h = h.flatten(op[1] + (1 if per_chain else 0))
        h = h.transpose(1, 2) if major else h
        return h.to(out_dtype) if low is not None else h

    def grad_and_loss(w: torch.Tensor, x: torch.Tensor, y: torch.Tensor, out=None):
        with torch.enable_grad():
            # One leaf per parameter: the gradient of a slice of one flat leaf would be a
            # zero-filled [C, d] tensor per parameter, summed (half the MLP step's time).
            # w.data, not w.detach(): detach shares the position's version counter, and other
            # blocks of chains update their rows of it in place on other threads while this
            # block's backward pass still needs its saved inputs
            pieces = [p.requires_grad_(True) for p in split_rows(w.data, numels, shapes)]
            losses = batched_loss(forward(pieces, x), y)
            grads = torch.autograd.grad(losses.sum(), pieces)
        flat = torch.cat([g.reshape(w.shape[0], -1) for g in grads], dim=1, out=out)
        return flat, losses.detach()

    per_chain = make_per_chain_grad_and_loss(plan, numels, shapes, loss_fn, shared_batch)
    chosen = None

    def dispatch(w: torch.Tensor, x: torch.Tensor, y: torch.Tensor, out=None):
        nonlocal chosen
        if chosen is None:  # decided on the first call, when the device and dtype are known
            onednn_path = use_onednn(plan, shapes, w, compute_dtype)
            chosen = per_chain if onednn_path else grad_and_loss
            dispatch.path = (
                "Linear stack, chain by chain, float32 products through oneDNN"
                if onednn_path
                else "Linear stack, batched over chains (bmm)"
            )
        return chosen(w, x, y, out=out)

    dispatch.path = None
    return dispatch


def use_onednn(plan, shapes, w: torch.Tensor, compute_dtype: torch.dtype | None) -> bool:
    """Whether the chain-by-chain oneDNN gradient serves this stack: float32 on CPU, a Linear
    of at least ``ONEDNN_MIN_WEIGHTS`` weights, and oneDNN faster than the BLAS here."""
    largest = max(shapes[op[1]].numel() for op in plan if op[0] == "linear")
    return (
        w.device.type == "cpu"
        and w.dtype == torch.float32
        and compute_dtype in (None, torch.float32)
        and largest >= ONEDNN_MIN_WEIGHTS
        and onednn.enabled()
    )


def make_per_chain_grad_and_loss(
    plan: list[tuple],
    numels: list[int],
    shapes: list[torch.Size],
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    shared_batch: bool,
) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """The stack's gradient chain by chain, with :func:`slt_probe.sampling.onednn.linear` for
    every Linear of at least ``ONEDNN_MIN_WEIGHTS`` weights (``torch.nn.functional.linear``
    for the smaller ones). Same contract as the batched path; plain autograd only, so blocks
    of chains may run it on several threads at once."""
    big = {op[1]: shapes[op[1]].numel() >= ONEDNN_MIN_WEIGHTS for op in plan if op[0] == "linear"}

    def forward(params: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        h = x
        for op in plan:
            if op[0] == "linear":
                if h.dim() != 2:
                    raise Unsupported(f"Linear input of shape {tuple(h.shape)}")
                weight = params[op[1]]
                bias = None if op[2] is None else params[op[2]]
                linear = onednn.linear if big[op[1]] else nn.functional.linear
                h = linear(h, weight, bias)
            elif op[0] == "act":
                h = op[1](h)
            else:
                h = h.flatten(op[1])
        return h

    def grad_and_loss(w: torch.Tensor, x: torch.Tensor, y: torch.Tensor, out=None):
        chains = w.shape[0]
        with torch.enable_grad():
            # per-chain leaves that are views of the position rows (w.data: see the batched path)
            pieces = split_rows(w.data, numels, shapes)
            leaves = [[p[c].requires_grad_(True) for p in pieces] for c in range(chains)]
            losses = torch.stack(
                [
                    loss_fn(
                        forward(leaves[c], x if shared_batch else x[c]),
                        y if shared_batch else y[c],
                    )
                    for c in range(chains)
                ]
            )
            grads = torch.autograd.grad(losses.sum(), [p for chain in leaves for p in chain])
        if out is None:
            out = w.new_empty(w.shape)
        k = len(pieces)
        for c in range(chains):
            torch.cat([g.reshape(-1) for g in grads[c * k : (c + 1) * k]], out=out[c])
        return out, losses.detach()

    return grad_and_loss
