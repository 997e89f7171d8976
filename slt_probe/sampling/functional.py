"""A torch module seen as a pure function of one flat parameter vector.

Stacking every trainable parameter into one vector ``w ∈ R^d`` keeps the samplers trivial (one
tensor per chain, a handful of ops per step) and lets ``torch.func.vmap`` run C chains as one
batched computation over a ``[C, d]`` matrix. The module itself is never modified: parameters are
substituted with ``torch.func.functional_call``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.func import functional_call, grad_and_value, vmap

from slt_probe.sampling.restricted import make_row_restricted_grad_and_loss, whole_tensor_rows
from slt_probe.sampling.stacked import (
    Unsupported,
    make_stacked_grad_and_loss,
    split_rows,
    stacked_layers,
)

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


_DTYPES = {
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
    "float32": torch.float32,
    "fp32": torch.float32,
    "float64": torch.float64,
    "fp64": torch.float64,
}


def resolve_dtype(value: torch.dtype | str | None) -> torch.dtype | None:
    """``torch.bfloat16``, ``"bfloat16"``/``"bf16"``, ``"float32"`` … → a floating dtype."""
    if value is None or isinstance(value, torch.dtype) and value.is_floating_point:
        return value
    if isinstance(value, str) and value.lower() in _DTYPES:
        return _DTYPES[value.lower()]
    raise ValueError(
        f"compute_dtype must be a floating torch dtype or one of {sorted(_DTYPES)}, got {value!r}"
    )


class FlatModel:
    """View of ``model`` as ``w ↦ loss_fn(model_w(x), y)`` with ``w`` the flat parameter vector.

    Only parameters with ``requires_grad`` are sampled (or, with ``names``, exactly the
    parameters named there, whatever their ``requires_grad``); the others and buffers are
    passed through unchanged.

    ``compute_dtype`` (e.g. ``torch.bfloat16``) runs the model's forward and backward passes in
    that dtype: parameters, floating buffers and inputs are cast on the way in, outputs are
    cast back before ``loss_fn``, so positions, gradients and losses keep the model's dtype.
    Every loss, w*'s included, goes through the same arithmetic, so the rounding of the cast
    largely cancels in L(w) − L(w*).
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFn,
        device: torch.device | None = None,
        fast_path: bool = True,
        compute_dtype: torch.dtype | str | None = None,
        names: list[str] | tuple[str, ...] | None = None,
    ):
        self.model = model
        self.loss_fn = loss_fn
        self.fast_path = fast_path
        chosen = set(names) if names is not None else None
        named = [
            (k, p)
            for k, p in model.named_parameters()
            if (p.requires_grad if chosen is None else k in chosen)
        ]
        if not named:
            raise ValueError(
                "model has no trainable parameters (all requires_grad=False): nothing to sample; "
                "unfreeze the parameters whose local learning coefficient you want."
            )
        first = named[0][1]
        self.device = torch.device(device) if device is not None else first.device
        self.dtype = first.dtype
        self.compute_dtype = resolve_dtype(compute_dtype) or self.dtype
        self.names = [k for k, _ in named]
        self.shapes = [p.shape for _, p in named]
        self.numels = [p.numel() for _, p in named]
        self.dim = int(sum(self.numels))
        self.frozen = {
            k: self._lower(p.detach().to(self.device))
            for k, p in model.named_parameters()
            if k not in self.names
        }
        self.buffers = {
            k: self._lower(b.detach().to(self.device)) for k, b in model.named_buffers()
        }
        with torch.no_grad():
            self.w_star = torch.cat([p.detach().reshape(-1) for _, p in named]).to(
                device=self.device, dtype=self.dtype
            )

    def unflatten(self, w: torch.Tensor) -> dict[str, torch.Tensor]:
        """Split a flat vector (``[d]``) into named parameter tensors (views, no copy)."""
        out = {}
        for name, piece, shape in zip(self.names, torch.split(w, self.numels), self.shapes):
            out[name] = piece.view(shape)
        return out

    def split(self, w: torch.Tensor) -> list[torch.Tensor]:
        """Split stacked positions ``[C, d]`` into per-parameter views ``[C, *shape]`` (no copy)."""
        return split_rows(w, self.numels, self.shapes)

    def flatten_params(self) -> torch.Tensor:
        return self.w_star.clone()

    def _lower(self, t: torch.Tensor) -> torch.Tensor:
        """``t`` in the compute dtype (floating tensors only)."""
        if t.is_floating_point() and t.dtype != self.compute_dtype:
            return t.to(self.compute_dtype)
        return t

    def _call(self, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        params = {k: self._lower(v) for k, v in params.items()}
        out = functional_call(
            self.model, {**self.buffers, **self.frozen, **params}, (self._lower(x),)
        )
        return out.to(self.dtype) if out.is_floating_point() and out.dtype != self.dtype else out

    def forward(self, w: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self._call(self.unflatten(w), x)

    def loss(self, w: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean minibatch loss L_m(w) (the loss function's units)."""
        return self.loss_fn(self.forward(w, x), y)

    def _loss_of_pieces(self, pieces: list[torch.Tensor], x, y) -> torch.Tensor:
        return self.loss_fn(self._call(dict(zip(self.names, pieces)), x), y)

    def _stacked(self, shared_batch: bool, transform_free: bool = False):
        """The hand-batched Linear-stack gradient, or ``None`` when the model does not qualify."""
        plan = stacked_layers(self.model, self.names) if self.fast_path else None
        if plan is None:
            return None
        return make_stacked_grad_and_loss(
            plan,
            self.numels,
            self.shapes,
            self.loss_fn,
            shared_batch,
            self.compute_dtype,
            transform_free,
        )

    def threaded_grad_and_loss(self, shared_batch: bool, x: torch.Tensor, y: torch.Tensor):
        """The hand-batched gradient with the loss applied chain by chain: no torch.func
        transform, so blocks of chains can run it on several threads at once. ``None`` when the
        model or the inputs do not fit that path (checked on two examples of ``x, y``)."""
        return self._if_it_fits(
            self._stacked(shared_batch, transform_free=True), shared_batch, x, y
        )

    def row_restricted_grad_and_loss(self, mask, shared_batch: bool, x, y):
        """The gradient of :mod:`slt_probe.sampling.restricted` for chains whose mask rows
        (``[R, d]``) each select whole tensors of a Linear stack; ``None`` when the mask, the
        model or the inputs do not fit that path (checked on two examples of ``x, y``)."""
        if mask is None or not self.fast_path or self.compute_dtype != self.dtype:
            return None
        plan = stacked_layers(self.model, self.names)
        sampled = None if plan is None else whole_tensor_rows(mask, self.numels)
        if sampled is None:
            return None
        fn = make_row_restricted_grad_and_loss(
            plan, self.numels, self.shapes, self.loss_fn, shared_batch, sampled, self.w_star
        )
        return self._if_it_fits(fn, shared_batch, x, y)

    def _if_it_fits(self, fn, shared_batch: bool, x, y):
        """``fn`` if one call on two examples of ``x, y`` at w* goes through, else ``None``: the
        hand-written paths raise ``Unsupported`` on inputs they do not cover (a loss that is not
        a mean over examples, labels of another shape), and the caller then takes the general
        path instead of failing mid-chain."""
        if fn is None:
            return None
        xs, ys = (x[:2], y[:2]) if shared_batch else (x[:1, :2], y[:1, :2])
        try:
            fn(self.w_star[None], xs, ys)
        except Unsupported:
            return None
        return fn

    def batched_grad_and_loss(
        self, shared_batch: bool
    ) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
        """``(W [C,d], x, y, out=None) ↦ (∇L_m [C,d], L_m [C])`` for C chains at once (the
        gradient written into ``out`` when given).

        With ``shared_batch`` every chain sees the same minibatch (``x``: ``[B, ...]``, broadcast
        over chains); otherwise ``x`` is ``[C, B, ...]``. Linear +
        activation stacks take the hand-batched path of :mod:`slt_probe.sampling.stacked`
        (unless ``fast_path=False``); everything else goes through ``vmap(grad_and_value)``.
        The returned function's ``path`` names the path its calls took (set by the first call).
        """
        in_dims = (0, None, None) if shared_batch else (0, 0, 0)
        per_piece = vmap(grad_and_value(self._loss_of_pieces), in_dims=in_dims)

        def general(w, x, y, out=None):
            # Differentiate with respect to each parameter's own view, then concatenate once:
            # the gradient of a slice of a flat leaf is a zero-filled [C, d] tensor per
            # parameter, which on large models costs as much as the gradient itself.
            grads, loss = per_piece(self.split(w.detach()), x, y)
            flat = torch.cat([g.detach().reshape(w.shape[0], -1) for g in grads], dim=1, out=out)
            return flat, loss

        general.path = "torch.func vmap"
        fast = self._stacked(shared_batch)
        if fast is None:
            return general
        use_fast = True

        def grad_and_loss(w, x, y, out=None):
            nonlocal use_fast
            if use_fast:
                try:
                    result = fast(w, x, y, out=out)
                    grad_and_loss.path = fast.path
                    return result
                except Unsupported:
                    use_fast = False
                    grad_and_loss.path = "torch.func vmap (the inputs did not fit the Linear stack)"
            return general(w, x, y, out=out)

        grad_and_loss.path = None
        return grad_and_loss

    @torch.no_grad()
    def per_example_losses(
        self, w: torch.Tensor, x: torch.Tensor, y: torch.Tensor, chunk: int = 4096
    ) -> torch.Tensor | None:
        """ℓ_i(w) for every example, ``[n]``, when the loss is their mean; otherwise ``None``.

        ``loss_fn`` is only known as a batch-mean scalar, so each example's loss is the loss of
        a batch of one (vmapped), and the claim L_m = mean_i ℓ_i is checked on two minibatches
        before it is used (a class-weighted or sum-reduced loss fails it and gets ``None``).
        """
        outs = [self.forward(w, x[s : s + chunk]) for s in range(0, x.shape[0], chunk)]
        out = torch.cat(outs)
        try:
            single = vmap(lambda o, t: self.loss_fn(o.unsqueeze(0), t.unsqueeze(0)))
            per = torch.cat(
                [single(out[s : s + chunk], y[s : s + chunk]) for s in range(0, len(out), chunk)]
            )
        except Exception:  # a loss vmap cannot batch: fall back to a forward pass per step
            return None
        if per.shape != (x.shape[0],):
            return None
        g = torch.Generator().manual_seed(0)
        for size in (min(7, len(per)), min(64, len(per))):
            idx = torch.randperm(len(per), generator=g)[:size].to(per.device)
            batch = self.loss_fn(out[idx], y[idx])
            mean = per[idx].to(torch.float64).mean()
            if batch.dim() != 0 or not torch.isclose(
                batch.to(torch.float64), mean, rtol=1e-5, atol=1e-7 * float(mean.abs()) + 1e-12
            ):
                return None
        return per

    @torch.no_grad()
    def full_loss(
        self, w: torch.Tensor, x: torch.Tensor, y: torch.Tensor, chunk: int = 4096
    ) -> float:
        """L_n(w) over the whole dataset, in chunks, weighted by chunk size (mean loss)."""
        n = x.shape[0]
        total = 0.0
        for start in range(0, n, chunk):
            xb, yb = x[start : start + chunk], y[start : start + chunk]
            total += float(self.loss(w, xb, yb)) * xb.shape[0]
        return total / n
