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

from slt_probe.sampling.stacked import Unsupported, make_stacked_grad_and_loss, stacked_layers

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

#: Largest model (trainable parameters) given the hand-batched Linear-stack gradient. It removes
#: per-op overhead, which is what limits small networks: +17-65 % chain-steps/s on the
#: 4.4k-parameter DLN of `slt-probe bench speed` (16 to 1 chains); on the 199k-parameter MNIST MLP
#: the step is matmul-bound and vmap was 4 % faster (interleaved runs on 2 cores).
FAST_PATH_MAX_PARAMS = 50_000


class FlatModel:
    """View of ``model`` as ``w ↦ loss_fn(model_w(x), y)`` with ``w`` the flat parameter vector.

    Only parameters with ``requires_grad`` are sampled; frozen parameters and buffers are
    passed through unchanged.
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFn,
        device: torch.device | None = None,
        fast_path: bool = True,
    ):
        self.model = model
        self.loss_fn = loss_fn
        self.fast_path = fast_path
        named = [(k, p) for k, p in model.named_parameters() if p.requires_grad]
        if not named:
            raise ValueError(
                "model has no trainable parameters (all requires_grad=False): nothing to sample; "
                "unfreeze the parameters whose local learning coefficient you want."
            )
        first = named[0][1]
        self.device = torch.device(device) if device is not None else first.device
        self.dtype = first.dtype
        self.names = [k for k, _ in named]
        self.shapes = [p.shape for _, p in named]
        self.numels = [p.numel() for _, p in named]
        self.dim = int(sum(self.numels))
        self.frozen = {
            k: p.detach().to(self.device)
            for k, p in model.named_parameters()
            if not p.requires_grad
        }
        self.buffers = {k: b.detach().to(self.device) for k, b in model.named_buffers()}
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

    def flatten_params(self) -> torch.Tensor:
        return self.w_star.clone()

    def forward(self, w: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        tensors = {**self.buffers, **self.frozen, **self.unflatten(w)}
        return functional_call(self.model, tensors, (x,))

    def loss(self, w: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean minibatch loss L_m(w) (the loss function's units)."""
        return self.loss_fn(self.forward(w, x), y)

    def batched_grad_and_loss(
        self, shared_batch: bool
    ) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
        """``(W [C,d], x, y) ↦ (∇L_m [C,d], L_m [C])`` for C chains at once.

        With ``shared_batch`` every chain sees the same minibatch (``x``: ``[B, ...]``), which lets
        the first layer run as one wide matmul; otherwise ``x`` is ``[C, B, ...]``. Linear +
        activation stacks take the hand-batched path of :mod:`slt_probe.sampling.stacked`
        (unless ``fast_path=False``); everything else goes through ``vmap(grad_and_value)``.
        """
        in_dims = (0, None, None) if shared_batch else (0, 0, 0)
        general = vmap(grad_and_value(self.loss), in_dims=in_dims)
        small = self.dim <= FAST_PATH_MAX_PARAMS
        plan = stacked_layers(self.model, self.names) if self.fast_path and small else None
        if plan is None:
            return general
        fast = make_stacked_grad_and_loss(
            plan, self.numels, self.shapes, self.loss_fn, shared_batch
        )
        use_fast = True

        def grad_and_loss(w, x, y):
            nonlocal use_fast
            if use_fast:
                try:
                    return fast(w, x, y)
                except Unsupported:
                    use_fast = False
            return general(w, x, y)

        return grad_and_loss

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
