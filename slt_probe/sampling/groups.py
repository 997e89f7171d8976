"""Chain groups: a sampling step split by chain over threads, each thread on one core.

On CPU, torch's intra-op (OpenMP) workers spin for milliseconds after every parallel op, so a
thread started beside them (to draw noise, say) runs at half speed; and ``randn`` is
single-threaded whatever the thread count. For large draws the driver therefore gives each of T
threads a contiguous block of chains and lets it do that block's whole step (gradient, noise,
update) with one intra-op thread: every core works on its own chains, nothing spins, and the
Gaussian draws run in parallel (``slt-probe bench speed`` compares it with one block on all
intra-op threads).

Small models keep one block: their step is Python dispatch, which threads would only contend for.
So do models without the hand-batched Linear-stack gradient: the driver splits a step only when
that gradient (with the loss applied chain by chain) fits, so that plain autograd is all that
runs on two threads at once, never a torch.func transform.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import torch

#: Fewest numbers per step (chains × parameters) for which the step is split over threads.
GROUPS_MIN = 1 << 18


def splittable(device: torch.device, num_chains: int, dim: int) -> bool:
    """Whether a step is large enough to split by chain (a property of the shapes alone, so
    that the noise, drawn per chain when splittable, does not depend on the thread count)."""
    return torch.device(device).type == "cpu" and num_chains > 1 and num_chains * dim >= GROUPS_MIN


def num_groups(device: torch.device, num_chains: int, dim: int) -> int:
    """How many chain blocks a step is split into (1: no threads)."""
    if not splittable(device, num_chains, dim):
        return 1
    return max(1, min(torch.get_num_threads(), num_chains))


class ChainGroups:
    """Runs ``fn(lo, hi)`` for each block of chains ``[lo, hi)``, the first on the calling thread.

    While open, the calling thread and the workers share the caller's intra-op threads out
    evenly (one each on 2 cores; 4 each for 4 blocks on 16); ``close`` restores the caller's
    thread count. ``torch.set_num_threads`` also sets MKL's thread count,
    which is process-wide: run concurrent large estimates in processes (as ``slt-probe study``
    does), not in threads of one process.
    """

    def __init__(self, num_chains: int, groups: int):
        bounds = [round(i * num_chains / groups) for i in range(groups + 1)]
        self.blocks = list(zip(bounds[:-1], bounds[1:]))
        self._previous = torch.get_num_threads()
        self.threads_per_block = max(1, self._previous // len(self.blocks))
        self._pool = None
        if len(self.blocks) > 1:
            torch.set_num_threads(self.threads_per_block)
            self._pool = ThreadPoolExecutor(
                len(self.blocks) - 1,
                thread_name_prefix="slt-chains",
                initializer=torch.set_num_threads,
                initargs=(self.threads_per_block,),
            )

    def run(self, fn: Callable[[int, int], None]) -> None:
        grad_mode = torch.is_grad_enabled()  # thread-local: workers follow the caller's

        def block(lo: int, hi: int) -> None:
            with torch.set_grad_enabled(grad_mode):
                fn(lo, hi)

        jobs = (
            [self._pool.submit(block, lo, hi) for lo, hi in self.blocks[1:]] if self._pool else []
        )
        try:
            fn(*self.blocks[0])
        finally:
            for job in jobs:
                job.result()  # waits for every block, and re-raises a worker's exception

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
            torch.set_num_threads(self._previous)
