"""Run C chains of an SG-MCMC kernel as one batched computation (for large steps, one per block
of chains, each block on its own thread: :mod:`slt_probe.sampling.groups`).

The driver owns the minibatching, the loss trace and divergence handling; the kernel owns the
update rule. A chain whose loss or position goes non-finite, or whose loss explodes past
``divergence_threshold``, is frozen back at w*, its remaining draws are NaN, and the draw at
which it left is reported: a diverging chain never reaches the mean silently.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from functools import partial

import torch

from slt_probe.sampling.functional import FlatModel
from slt_probe.sampling.groups import ChainGroups, num_groups, splittable
from slt_probe.sampling.kernel import ChainState, Kernel, Potential, check_step_size
from slt_probe.sampling.noise import NoiseStream

#: Steps per chunk. Divergence is checked once per chunk (cheap, and NaN cannot leak across
#: chains), and blocks of chains on threads step a whole chunk without meeting: one barrier per
#: chunk instead of one per step, where the main thread's serial work and the wait for the
#: slower block would otherwise take a large share of a step.
_CHECK_EVERY = 25


@dataclass
class ChainTrace:
    """Output of :func:`run_chains`.

    ``losses``: ``[C, num_steps]`` minibatch loss L_m(w_t) at each step's starting point (the
    same draw devinterp records), NaN after a chain diverged. ``diverged_at``: per chain the
    step at which it diverged, or −1. ``final_position``: ``[C, d]``. ``reference_losses``
    (with ``paired_reference``): ``[C, num_steps]`` loss of w* on the same minibatch, L_m(w*).
    ``virial_terms`` (with ``virial_steps``): ``[C, K, 2]`` float64, at each of the K recorded
    steps (w_t − w*)·∇L_m(w_t) and ‖w_t − w*‖², NaN after a chain diverged. ``engine``: how the
    steps ran (the gradient's path, the number of chain blocks on threads).
    """

    losses: torch.Tensor
    diverged_at: torch.Tensor
    final_position: torch.Tensor
    reference_losses: torch.Tensor | None = None
    virial_terms: torch.Tensor | None = None
    engine: dict = field(default_factory=dict)
    final_state: ChainState | None = field(default=None, repr=False)

    def extend(self, more: ChainTrace) -> ChainTrace:
        """This trace followed by ``more`` (the same chains continued from ``final_state``): a
        chain that diverged here stays diverged, whatever it did in ``more``."""
        steps = self.losses.shape[1]
        earlier = self.diverged_at >= 0
        later = torch.where(more.diverged_at >= 0, more.diverged_at + steps, -1)
        losses = torch.cat([self.losses, more.losses], dim=1)
        losses[earlier, steps:] = float("nan")
        return ChainTrace(
            losses=losses,
            diverged_at=torch.where(earlier, self.diverged_at, later),
            final_position=more.final_position,
            reference_losses=_cat(self.reference_losses, more.reference_losses, 1),
            virial_terms=_cat(self.virial_terms, more.virial_terms, 1),
            engine=more.engine,
            final_state=more.final_state,
        )


def _cat(a: torch.Tensor | None, b: torch.Tensor | None, dim: int) -> torch.Tensor | None:
    if a is None or b is None:
        return b if a is None else a
    return torch.cat([a, b], dim=dim)


def sample_batch_indices(
    n: int, batch_size: int, num_chains: int, shared: bool, generator: torch.Generator
) -> torch.Tensor | None:
    """Minibatch indices for one step (with replacement); ``None`` means full batch."""
    if batch_size >= n:
        return None
    shape = (batch_size,) if shared else (num_chains, batch_size)
    return torch.randint(n, shape, generator=generator)


def run_chains(
    kernel: Kernel,
    potential: Potential,
    step_size: float,
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
    virial_steps: range | None = None,
    burnin_steps: int = 0,
    init_state: ChainState | None = None,
) -> ChainTrace:
    """Run ``num_steps`` steps of ``kernel`` at ``step_size`` on ``potential`` (whose centre is
    ``flat.w_star``) for ``num_chains`` chains started at w* (or ``init_position``).

    Run options live here; kernel options live on the kernel. Steps run in chunks of
    ``_CHECK_EVERY``; within a chunk, blocks of chains (:mod:`slt_probe.sampling.groups`) step
    without meeting, and divergence is checked when they meet.

    With ``paired_reference`` the loss of w* is also evaluated on every minibatch (a forward
    pass, no gradient), so that L_m(w_t) − L_m(w*) cancels most of the minibatch noise. When the
    loss is a mean of per-example losses (checked), those are computed once at w* and L_m(w*) is
    their mean over the minibatch: no forward pass per step.

    ``virial_steps`` (a range of step indices, e.g. every 8th draw after burn-in) records the two
    inner products behind the virial check of :mod:`slt_probe.estimators.diagnostics`, with the
    gradient the step already computed: three passes over the chains' rows, so they are taken
    on a subsample of steps.

    ``burnin_steps`` (> 0): after that many steps (between chunks) the driver calls
    ``kernel.end_burnin(state)`` (RMSProp-SGLD then stops adapting its preconditioner).

    ``init_state`` (a previous trace's ``final_state``, the same kernel and step size) continues
    those chains instead of starting new ones.

    ``potential.mask`` (``[d]`` shared or ``[C, d]`` one row per chain) restricts the chains to
    the masked coordinates: each step's gradient and noise are multiplied by the chain's mask
    row, so the other coordinates never leave w*. Where every row selects whole tensors of a
    Linear stack, the gradient and the noise are computed on each row's own tensors only and
    are masked as they come (:mod:`slt_probe.sampling.restricted`).
    """
    run = _ChainRun(
        kernel,
        init_state
        if init_state is not None
        else kernel.init(
            _start(flat, num_chains, init_position), potential, check_step_size(step_size)
        ),
        flat,
        x,
        y,
        num_steps=num_steps,
        batch_size=batch_size,
        shared=shared_batch or batch_size >= x.shape[0],
        paired_reference=paired_reference,
        virial_steps=virial_steps,
        mask=potential.row_mask(num_chains, flat.device, flat.dtype),
    )
    # Noise has its own generators (on the sampling device), seeded from the caller's, so that
    # blocks of chains can draw theirs on their own threads; the split depends on shape alone.
    run.noise = NoiseStream(
        run.state.position.shape,
        int(torch.randint(2**62, (1,), generator=generator)),
        device=flat.device,
        dtype=flat.dtype,
        split=splittable(flat.device, num_chains, flat.dim),
        leimkuhler_matthews=kernel.leimkuhler_matthews,
        spans=getattr(run.grad_fn, "spans", None),
    )
    runner = ChainGroups(num_chains, run.groups)
    try:
        # chunks of _CHECK_EVERY steps, one ending where the burn-in does
        bounds = {*range(_CHECK_EVERY, num_steps, _CHECK_EVERY), num_steps}
        bounds = sorted(bounds | ({burnin_steps} if 0 < burnin_steps < num_steps else set()))
        for chunk_start, chunk_end in zip([0, *bounds], bounds):
            if chunk_start == burnin_steps > 0:
                run.state = kernel.end_burnin(run.state)  # between chunks: no block is stepping
            run.chunk(runner, chunk_start, chunk_end, generator)
            run.check_divergence(chunk_start, chunk_end, divergence_threshold)
    finally:
        runner.close()
    return run.trace()


def _start(flat: FlatModel, num_chains: int, init_position: torch.Tensor | None) -> torch.Tensor:
    if init_position is None:
        return flat.w_star.expand(num_chains, -1).clone()
    return init_position.clone()


class _ChainRun:
    """The buffers of one :func:`run_chains` call and the steps that fill them: a chunk of steps
    for every block of chains, the divergence check between chunks, the trace at the end."""

    def __init__(
        self,
        kernel,
        state,
        flat,
        x,
        y,
        *,
        num_steps,
        batch_size,
        shared,
        paired_reference,
        virial_steps,
        mask,
    ):
        self.kernel, self.state, self.flat, self.x, self.y = kernel, state, flat, x, y
        self.batch_size, self.shared = batch_size, shared
        num_chains = state.position.shape[0]
        full = (num_chains, num_steps)
        self.ref_fn = _reference_loss(flat, x, y, shared) if paired_reference else None
        self.ref = None
        if self.ref_fn is not None:
            self.ref = torch.full(full, float("nan"), dtype=flat.dtype, device=flat.device)
        # reused every step (see NoiseStream); zero-filled for a gradient that writes only the
        # coordinates its rows sample (the row-restricted path)
        self.grad_buffer = torch.zeros_like(state.position)
        self.groups = num_groups(flat.device, num_chains, flat.dim)
        # Blocks on threads need a gradient without torch.func transforms (concurrent transforms
        # on several threads corrupted each other's results): the hand-batched Linear-stack path
        # with the loss applied chain by chain. Other models run as one block.
        # rows sampling whole tensors of a Linear stack: only their own tensors' work
        threaded_grad = flat.row_restricted_grad_and_loss(mask, shared, x, y)
        if self.groups > 1 and threaded_grad is None:
            xs, ys = (x, y) if shared else (x[None], y[None])
            threaded_grad = flat.threaded_grad_and_loss(shared, xs, ys)
            if threaded_grad is None:
                self.groups = 1
        self.grad_fn = threaded_grad or flat.batched_grad_and_loss(shared_batch=shared)
        self.row_aware = getattr(self.grad_fn, "row_aware", False)  # told its rows' offset
        self.losses = torch.full(full, float("nan"), dtype=flat.dtype, device=flat.device)
        self.diverged_at = torch.full((num_chains,), -1, dtype=torch.long)
        self.alive = torch.ones(num_chains, dtype=torch.bool, device=flat.device)
        self.virial_at = {t: k for k, t in enumerate(virial_steps or ())}
        self.virial = None
        if self.virial_at:
            shape = (len(self.virial_at), 2, num_chains)
            position = state.position
            self.virial = torch.full(
                shape, float("nan"), dtype=position.dtype, device=position.device
            )
            self.delta_buffer = torch.empty_like(position)
        self.lock = threading.Lock()
        self.noise: NoiseStream | None = None
        self.mask: torch.Tensor | None = mask  # [1, d] or [C, d]: see run_chains
        # this chunk's first step, minibatch indices and starting rows, read by every block
        self.current: dict = {}

    def batch(self, idx: torch.Tensor | None, lo: int, hi: int):
        if idx is None:
            return (self.x, self.y) if self.shared else (self.x[lo:hi], self.y[lo:hi])
        idx = idx if self.shared else idx[lo:hi]
        return self.x[idx], self.y[idx]

    def chunk(self, runner: ChainGroups, start: int, end: int, generator) -> None:
        """Steps [start, end) of every block of chains, then the paired reference losses."""
        n, num_chains = self.x.shape[0], self.state.position.shape[0]
        indices = []
        for _ in range(start, end):
            idx = sample_batch_indices(n, self.batch_size, num_chains, self.shared, generator)
            indices.append(None if idx is None else idx.to(self.x.device))
        # every block's rows are taken before any block writes: a field a kernel creates on
        # its first step (RMSProp's V) must not appear, half-filled, to a block still starting
        parts = {lo: self.state.rows(lo, hi) for lo, hi in runner.blocks}
        self.current.update(start=start, indices=indices, parts=parts)
        runner.run(self.advance)
        if self.ref_fn is not None:
            with torch.no_grad():
                for k, idx in enumerate(indices):
                    get_batch = partial(self.batch, idx, 0, num_chains)
                    self.ref[:, start + k] = self.ref_fn(idx, get_batch)

    def advance(self, lo: int, hi: int) -> None:
        """The chunk's kernel steps of chains [lo, hi): gradient, loss, noise, update. Blocks run
        a whole chunk without waiting for each other: they meet once per chunk, not per step."""
        chunk = self.current
        for k, idx in enumerate(chunk["indices"]):
            t = chunk["start"] + k
            # the chunk's first rows were taken before any block wrote (see ``chunk``); later
            # ones are this block's own rows of the state, which only it writes
            part = chunk["parts"][lo] if k == 0 else self.state.rows(lo, hi)
            xb, yb = self.batch(idx, lo, hi)
            offset = {"first_row": lo} if self.row_aware else {}
            grads, loss = self.grad_fn(part.position, xb, yb, out=self.grad_buffer[lo:hi], **offset)
            noise = self.noise.draw(lo, hi)
            if self.mask is not None and not self.row_aware:  # (row-aware: masked already)
                rows = self.mask if self.mask.shape[0] == 1 else self.mask[lo:hi]
                grads, noise = grads.mul_(rows), noise.mul_(rows)
            self.losses[lo:hi, t] = loss.detach()
            if t in self.virial_at:
                record = self.virial[self.virial_at[t], :, lo:hi]
                delta = torch.sub(part.position, self.flat.w_star, out=self.delta_buffer[lo:hi])
                # (a batched [C,1,d] @ [C,d,1] product runs 20× slower than these on CPU)
                record[0] = torch.linalg.vecdot(delta, grads)
                record[1] = torch.linalg.vector_norm(delta, dim=1).square_()
            new = self.kernel.step(part, grads, noise)
            self.state.write_rows(new, lo, hi, self.lock)

    def check_divergence(self, start: int, end: int, threshold: float) -> None:
        """Chains whose loss in steps [start, end) went non-finite or above ``threshold``, or
        whose position is not finite, are marked with the step they left at and reset."""
        block = self.losses[:, start:end]
        bad_loss = ~torch.isfinite(block) | (block > threshold)
        bad_pos = ~torch.isfinite(self.state.position).all(dim=1)
        newly = self.alive & (bad_loss.any(dim=1) | bad_pos)
        if not newly.any():
            return
        for c in torch.nonzero(newly).flatten().tolist():
            hits = torch.nonzero(bad_loss[c]).flatten()
            first = int(hits[0]) if len(hits) else block.shape[1] - 1
            self.diverged_at[c] = start + first
        self.alive &= ~newly
        self.state = self.kernel.reset(self.state, ~self.alive, self.flat.w_star)

    def trace(self) -> ChainTrace:
        """The :class:`ChainTrace`, with NaN wherever a chain had left."""
        losses, virial, dead = self.losses, self.virial, ~self.alive
        if dead.any():
            steps = torch.arange(losses.shape[1], device=losses.device)
            left = self.diverged_at.to(losses.device)
            losses[dead[:, None] & (steps[None, :] >= left[:, None])] = float("nan")
            if virial is not None:
                virial = virial.cpu()
                recorded = torch.tensor(list(self.virial_at), dtype=torch.long)
                until = torch.where(dead.cpu(), self.diverged_at, losses.shape[1])
                virial.masked_fill_((recorded[:, None] >= until[None, :])[:, None, :], float("nan"))
        return ChainTrace(
            losses=losses.cpu(),
            diverged_at=self.diverged_at,
            final_position=self.state.position,
            reference_losses=self.ref.cpu() if self.ref is not None else None,
            virial_terms=None
            if virial is None
            else virial.permute(2, 0, 1).to("cpu", torch.float64),
            engine={"gradient": getattr(self.grad_fn, "path", None), "chain_blocks": self.groups},
            final_state=self.state,
        )


def _reference_loss(flat: FlatModel, x, y, shared: bool):
    """``(idx, get_batch) ↦ L_m(w*)`` on the step's minibatch (``[C]`` or a scalar);
    ``get_batch()`` gathers the minibatch, needed only when the loss is not a mean of
    per-example losses."""
    per_example = flat.per_example_losses(flat.w_star, x, y)
    if per_example is not None:
        per_example = per_example.to(torch.float64)
        return lambda idx, get_batch: per_example[idx].mean(-1)
    forward = flat.loss if shared else torch.func.vmap(flat.loss, in_dims=(None, 0, 0))
    return lambda idx, get_batch: forward(flat.w_star, *get_batch())
