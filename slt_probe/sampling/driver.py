"""Run C chains of an SG-MCMC kernel as one batched (vmapped) computation.

The driver owns the minibatching, the loss trace and divergence handling; the kernel owns the
update rule. A chain whose loss or position goes non-finite, or whose loss explodes past
``divergence_threshold``, is frozen back at w*, its remaining draws are NaN, and the draw at
which it left is reported: a diverging chain never reaches the mean silently.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch

from slt_probe.sampling.functional import FlatModel

_CHECK_EVERY = 25  # divergence is checked per block: cheap, and NaN cannot leak across chains


@dataclass
class ChainTrace:
    """Output of :func:`run_chains`.

    ``losses``: ``[C, num_steps]`` minibatch loss L_m(w_t) at each step's starting point (the
    same draw devinterp records), NaN after a chain diverged. ``diverged_at``: per chain the
    step at which it diverged, or −1. ``final_position``: ``[C, d]``. ``reference_losses``
    (with ``paired_reference``): ``[C, num_steps]`` loss of w* on the same minibatch, L_m(w*).
    """

    losses: torch.Tensor
    diverged_at: torch.Tensor
    final_position: torch.Tensor
    reference_losses: torch.Tensor | None = None


class NoiseStream:
    """N(0, I) tensors of one shape from one generator, in order.

    With ``prefetch`` the next tensor is drawn in a background thread while the caller computes
    (torch releases the GIL inside ``randn``): on CPU, drawing d·C normals is a single-threaded
    pass that costs a third of an SGLD step of a 200k-parameter MLP. The sequence is the one a
    plain loop would draw: only one thread ever touches the generator. Off by default: on the
    2-core development machine the extra thread competes with the two matmul threads and the
    MLP gained nothing (365–387 vs 373–391 chain-steps/s, interleaved runs); it is for machines
    with a spare core.
    """

    def __init__(self, shape, seed: int, *, device, dtype, prefetch: bool = False):
        self.shape, self.device, self.dtype = tuple(shape), device, dtype
        self.generator = torch.Generator(device=device).manual_seed(seed)
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="slt-noise") if prefetch else None
        self._pending = self._pool.submit(self._draw) if self._pool else None

    def _draw(self) -> torch.Tensor:
        return torch.randn(
            self.shape, generator=self.generator, device=self.device, dtype=self.dtype
        )

    def next(self) -> torch.Tensor:
        if self._pool is None:
            return self._draw()
        out = self._pending.result()
        self._pending = self._pool.submit(self._draw)
        return out

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)


def sample_batch_indices(
    n: int, batch_size: int, num_chains: int, shared: bool, generator: torch.Generator
) -> torch.Tensor | None:
    """Minibatch indices for one step (with replacement); ``None`` means full batch."""
    if batch_size >= n:
        return None
    shape = (batch_size,) if shared else (num_chains, batch_size)
    return torch.randint(n, shape, generator=generator)


def run_chains(
    kernel,
    flat: FlatModel,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    num_chains: int,
    num_steps: int,
    batch_size: int,
    generator: torch.Generator,
    shared_batch: bool = False,
    init_position: torch.Tensor | None = None,
    divergence_threshold: float = float("inf"),
    paired_reference: bool = False,
    prefetch_noise: bool = False,
) -> ChainTrace:
    """Run ``num_steps`` kernel steps on ``num_chains`` chains started at w* (or ``init_position``).

    With ``paired_reference`` the loss of w* is also evaluated on every minibatch (a forward
    pass, no gradient), so that L_m(w_t) − L_m(w*) cancels most of the minibatch noise.
    """
    n = x.shape[0]
    full_batch = batch_size >= n
    shared = shared_batch or full_batch
    grad_fn = flat.batched_grad_and_loss(shared_batch=shared)
    ref_fn = None
    if paired_reference:
        ref_fn = flat.loss if shared else torch.func.vmap(flat.loss, in_dims=(None, 0, 0))
        ref = torch.full(
            (num_chains, num_steps), float("nan"), dtype=flat.dtype, device=flat.device
        )
    start = (
        flat.w_star.expand(num_chains, -1).clone()
        if init_position is None
        else init_position.clone()
    )
    state = kernel.init(start)
    # Noise has its own generator (on the sampling device), seeded from the caller's, so that it
    # can be drawn a step ahead in another thread while minibatch indices come from `generator`.
    seed = int(torch.randint(2**62, (1,), generator=generator))
    noise = NoiseStream(
        start.shape, seed, device=flat.device, dtype=flat.dtype, prefetch=prefetch_noise
    )
    losses = torch.full((num_chains, num_steps), float("nan"), dtype=flat.dtype, device=flat.device)
    diverged_at = torch.full((num_chains,), -1, dtype=torch.long)
    alive = torch.ones(num_chains, dtype=torch.bool, device=flat.device)
    block_start = 0
    try:
        for t in range(num_steps):
            idx = sample_batch_indices(n, batch_size, num_chains, shared, generator)
            if idx is None:
                xb, yb = x, y
            else:
                idx = idx.to(x.device)
                xb, yb = x[idx], y[idx]
            grads, loss = grad_fn(state.position, xb, yb)
            losses[:, t] = loss.detach()
            if ref_fn is not None:
                with torch.no_grad():
                    ref[:, t] = ref_fn(flat.w_star, xb, yb)
            state = kernel.step(state, grads.detach(), noise.next())
            if (t + 1) % _CHECK_EVERY == 0 or t + 1 == num_steps:
                block = losses[:, block_start : t + 1]
                bad_loss = ~torch.isfinite(block) | (block > divergence_threshold)
                bad_pos = ~torch.isfinite(state.position).all(dim=1)
                newly = alive & (bad_loss.any(dim=1) | bad_pos)
                if newly.any():
                    for c in torch.nonzero(newly).flatten().tolist():
                        hits = torch.nonzero(bad_loss[c]).flatten()
                        first = int(hits[0]) if len(hits) else block.shape[1] - 1
                        diverged_at[c] = block_start + first
                    alive &= ~newly
                    state = _freeze(state, ~alive, flat.w_star)
                block_start = t + 1
    finally:
        noise.close()
    dead = ~alive
    if dead.any():
        steps = torch.arange(num_steps, device=losses.device)
        mask = dead[:, None] & (steps[None, :] >= diverged_at.to(losses.device)[:, None])
        losses[mask] = float("nan")
    return ChainTrace(
        losses=losses.cpu(),
        diverged_at=diverged_at,
        final_position=state.position,
        reference_losses=ref.cpu() if ref_fn is not None else None,
    )


def _freeze(state, dead: torch.Tensor, center: torch.Tensor):
    """Put diverged chains back at w* with a clean state so they stay finite (and ignored)."""
    state.position[dead] = center
    if state.momentum is not None:
        state.momentum[dead] = 0.0
    if state.thermostat is not None:
        state.thermostat[dead] = 0.0
    if state.second_moment is not None:
        state.second_moment[dead] = 1.0
    return state
