"""Run C chains of an SG-MCMC kernel as one batched computation (for large steps, one per block
of chains, each block on its own thread: :mod:`slt_probe.sampling.groups`).

The driver owns the minibatching, the loss trace and divergence handling; the kernel owns the
update rule. A chain whose loss or position goes non-finite, or whose loss explodes past
``divergence_threshold``, is frozen back at w*, its remaining draws are NaN, and the draw at
which it left is reported: a diverging chain never reaches the mean silently.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field, fields
from functools import partial

import torch

from slt_probe.sampling.functional import FlatModel
from slt_probe.sampling.groups import ChainGroups, num_groups, splittable
from slt_probe.sampling.kernels import SamplerState

_CHECK_EVERY = 25  # divergence is checked per block: cheap, and NaN cannot leak across chains
# Blocks of chains on threads run these 25 steps without meeting: one barrier per 25 steps
# instead of one per step (the MNIST MLP at 8 chains: ~0.8 of its ~8 ms step was the main
# thread's serial work plus waiting for the slower block).


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


class NoiseStream:
    """Noise tensors of shape ``[C, d]``, one per step, from generators seeded by ``seed``.

    Each step draws ξ_t ~ N(0, I). With ``leimkuhler_matthews`` a step's noise is instead
    (ξ_t + ξ_{t+1})/2 (ξ_0 drawn at construction): two buffers take turns, the fresh draw goes
    into one and the other, still holding the previous draw, becomes the average in place, so
    the scheme costs one extra pass per step and no copy.

    On CPU ``randn`` is a single-threaded pass (≈ 2.4 ns a number here: 3.8 ms of a 12 ms step of
    the 199k-parameter MLP at 8 chains). Large draws (``split``) therefore give every chain its
    own generator, so that blocks of chains can be drawn on different threads
    (:mod:`slt_probe.sampling.groups`); the numbers depend only on the seed and the shape, never
    on how the chains are grouped. Otherwise one generator draws the whole tensor in one call.
    """

    def __init__(
        self, shape, seed: int, *, device, dtype, split: bool = False, leimkuhler_matthews=False
    ):
        self.shape, self.device, self.dtype = tuple(shape), torch.device(device), dtype
        chains = self.shape[0]
        root = torch.Generator().manual_seed(seed)
        seeds = [int(s) for s in torch.randint(2**62, (chains if split else 1,), generator=root)]
        self.generators = [torch.Generator(device=self.device).manual_seed(s) for s in seeds]
        # buffers overwritten by every draw: a fresh [C, d] tensor per step costs page faults
        # on CPU (glibc returns large freed blocks to the OS)
        self._buffers = [torch.empty(self.shape, device=self.device, dtype=dtype)]
        self.leimkuhler_matthews = leimkuhler_matthews
        if leimkuhler_matthews:
            self._buffers.append(torch.empty_like(self._buffers[0]))
            self._fill(self._buffers[1], 0, chains)  # ξ_0
        self._parity = [0] * chains  # per chain: which buffer the next fresh draw goes into

    def _fill(self, buffer: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
        out = buffer[lo:hi]
        if len(self.generators) == 1:
            if (lo, hi) != (0, self.shape[0]):
                raise ValueError("a NoiseStream without split draws all chains at once")
            return out.normal_(generator=self.generators[0])
        for c in range(lo, hi):
            buffer[c].normal_(generator=self.generators[c])
        return out

    def draw(self, lo: int, hi: int) -> torch.Tensor:
        """This step's noise for chains ``[lo, hi)`` (rows of a shared buffer: consume it before
        the next draw of these chains). Without ``split`` only the whole range can be drawn."""
        if not self.leimkuhler_matthews:
            return self._fill(self._buffers[0], lo, hi)
        parity = self._parity[lo]
        fresh = self._fill(self._buffers[parity], lo, hi)  # ξ_{t+1}
        previous = self._buffers[1 - parity][lo:hi]  # ξ_t, no longer needed after this step
        for c in range(lo, hi):
            self._parity[c] = 1 - parity
        return previous.lerp_(fresh, 0.5)

    def next(self) -> torch.Tensor:
        """The next draw for every chain."""
        return self.draw(0, self.shape[0])


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
    virial_steps: range | None = None,
    burnin_steps: int = 0,
) -> ChainTrace:
    """Run ``num_steps`` kernel steps on ``num_chains`` chains started at w* (or ``init_position``).

    With ``paired_reference`` the loss of w* is also evaluated on every minibatch (a forward
    pass, no gradient), so that L_m(w_t) − L_m(w*) cancels most of the minibatch noise. When the
    loss is a mean of per-example losses (checked), those are computed once at w* and L_m(w*) is
    their mean over the minibatch: no forward pass per step.

    ``virial_steps`` (a range of step indices, e.g. every 8th draw after burn-in) records the two
    inner products behind the virial check of :mod:`slt_probe.estimators.diagnostics`, with the
    gradient the step already computed: three passes over the chains' rows, so they are taken
    on a subsample of steps.

    ``burnin_steps`` (> 0): after that many steps the driver calls the kernel's ``end_burnin()``,
    if it has one (RMSProp-SGLD then stops adapting its preconditioner).
    """
    n = x.shape[0]
    full_batch = batch_size >= n
    shared = shared_batch or full_batch
    ref_fn = _reference_loss(flat, x, y, shared) if paired_reference else None
    if ref_fn is not None:
        ref = torch.full(
            (num_chains, num_steps), float("nan"), dtype=flat.dtype, device=flat.device
        )
    start = (
        flat.w_star.expand(num_chains, -1).clone()
        if init_position is None
        else init_position.clone()
    )
    state = kernel.init(start)
    grad_buffer = torch.empty_like(start)  # reused every step: see NoiseStream
    groups = num_groups(flat.device, num_chains, flat.dim)
    # Blocks on threads need a gradient without torch.func transforms (concurrent transforms
    # on several threads corrupted each other's results): the hand-batched Linear-stack path
    # with the loss applied chain by chain. Other models run as one block.
    threaded_grad = None
    if groups > 1:
        xs, ys = (x, y) if shared else (x[None], y[None])
        threaded_grad = flat.threaded_grad_and_loss(shared, xs, ys)
        if threaded_grad is None:
            groups = 1
    # Noise has its own generators (on the sampling device), seeded from the caller's, so that
    # blocks of chains can draw theirs on their own threads.
    seed = int(torch.randint(2**62, (1,), generator=generator))
    split = splittable(flat.device, num_chains, flat.dim)  # per-chain noise: by shape alone
    noise = NoiseStream(
        start.shape,
        seed,
        device=flat.device,
        dtype=flat.dtype,
        split=split,
        leimkuhler_matthews=getattr(kernel, "noise", None) == "leimkuhler-matthews",
    )
    losses = torch.full((num_chains, num_steps), float("nan"), dtype=flat.dtype, device=flat.device)
    diverged_at = torch.full((num_chains,), -1, dtype=torch.long)
    virial_at = {t: k for k, t in enumerate(virial_steps or ())}
    virial = None
    if virial_at:
        shape = (len(virial_at), 2, num_chains)
        virial = torch.full(shape, float("nan"), dtype=start.dtype, device=start.device)
        delta_buffer = torch.empty_like(start)
    alive = torch.ones(num_chains, dtype=torch.bool, device=flat.device)
    lock = threading.Lock()
    chunk = {}  # this chunk's first step, minibatch indices and starting rows, read by every block

    def batch(idx: torch.Tensor | None, lo: int, hi: int):
        if idx is None:
            return (x, y) if shared else (x[lo:hi], y[lo:hi])
        idx = idx if shared else idx[lo:hi]
        return x[idx], y[idx]

    def advance(lo: int, hi: int) -> None:
        """The chunk's kernel steps of chains [lo, hi): gradient, loss, noise, update. Blocks run
        a whole chunk without waiting for each other: they meet once per chunk, not per step."""
        for k, idx in enumerate(chunk["indices"]):
            t = chunk["start"] + k
            # the chunk's first rows were taken before any block wrote (see below); later ones
            # are this block's own rows of the state, which only it writes
            part = chunk["parts"][lo] if k == 0 else _rows(state, lo, hi)
            xb, yb = batch(idx, lo, hi)
            grads, loss = grad_fn(part.position, xb, yb, out=grad_buffer[lo:hi])
            losses[lo:hi, t] = loss.detach()
            if t in virial_at:
                record = virial[virial_at[t], :, lo:hi]
                delta = torch.sub(part.position, flat.w_star, out=delta_buffer[lo:hi])
                # (a batched [C,1,d] @ [C,d,1] product runs 20× slower than these on CPU)
                record[0] = torch.linalg.vecdot(delta, grads)
                record[1] = torch.linalg.vector_norm(delta, dim=1).square_()
            _write_rows(state, kernel.step(part, grads, noise.draw(lo, hi)), lo, hi, lock)

    runner = ChainGroups(num_chains, groups)
    try:
        grad_fn = threaded_grad or flat.batched_grad_and_loss(shared_batch=shared)
        # chunks of _CHECK_EVERY steps, one ending where the burn-in does
        bounds = {*range(_CHECK_EVERY, num_steps, _CHECK_EVERY), num_steps}
        bounds = sorted(bounds | ({burnin_steps} if 0 < burnin_steps < num_steps else set()))
        for block_start, block_end in zip([0, *bounds], bounds):
            if block_start == burnin_steps > 0 and hasattr(kernel, "end_burnin"):
                kernel.end_burnin()  # between chunks: no block is stepping
            indices = []
            for _ in range(block_start, block_end):
                idx = sample_batch_indices(n, batch_size, num_chains, shared, generator)
                indices.append(None if idx is None else idx.to(x.device))
            # every block's rows are taken before any block writes: a field a kernel creates on
            # its first step (RMSProp's V) must not appear, half-filled, to a block still starting
            parts = {lo: _rows(state, lo, hi) for lo, hi in runner.blocks}
            chunk.update(start=block_start, indices=indices, parts=parts)
            runner.run(advance)
            if ref_fn is not None:
                with torch.no_grad():
                    for k, idx in enumerate(indices):
                        ref[:, block_start + k] = ref_fn(idx, partial(batch, idx, 0, num_chains))
            block = losses[:, block_start:block_end]
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
    finally:
        runner.close()
    dead = ~alive
    if dead.any():
        steps = torch.arange(num_steps, device=losses.device)
        mask = dead[:, None] & (steps[None, :] >= diverged_at.to(losses.device)[:, None])
        losses[mask] = float("nan")
        if virial is not None:
            virial = virial.cpu()
            recorded = torch.tensor(list(virial_at), dtype=torch.long)
            gone = recorded[:, None] >= torch.where(dead.cpu(), diverged_at, num_steps)[None, :]
            virial.masked_fill_(gone[:, None, :], float("nan"))
    return ChainTrace(
        losses=losses.cpu(),
        diverged_at=diverged_at,
        final_position=state.position,
        reference_losses=ref.cpu() if ref_fn is not None else None,
        virial_terms=virial.permute(2, 0, 1).to("cpu", torch.float64)
        if virial is not None
        else None,
        engine={"gradient": getattr(grad_fn, "path", None), "chain_blocks": groups},
    )


def _rows(state: SamplerState, lo: int, hi: int) -> SamplerState:
    """The state of chains [lo, hi): row views of every field."""
    return SamplerState(
        **{
            f.name: None if getattr(state, f.name) is None else getattr(state, f.name)[lo:hi]
            for f in fields(SamplerState)
        }
    )


def _write_rows(state: SamplerState, part: SamplerState, lo: int, hi: int, lock) -> None:
    """Put a kernel's new state of chains [lo, hi) into ``state`` (in-place updates of the row
    views, SGLD's, need nothing; new tensors are copied into their rows)."""
    for f in fields(SamplerState):
        new = getattr(part, f.name)
        if new is None:
            continue
        full = getattr(state, f.name)
        if full is None:  # a field the kernel creates on its first step (RMSProp's V)
            with lock:
                full = getattr(state, f.name)
                if full is None:
                    full = new.new_empty((state.position.shape[0], *new.shape[1:]))
                    setattr(state, f.name, full)
        rows = full[lo:hi]
        if new.data_ptr() != rows.data_ptr():
            rows.copy_(new)


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
