"""A stateful λ̂ for people who drive their own sampling loop."""

from __future__ import annotations

import math
import time

import numpy as np
import torch

from slt_probe.estimators.diagnostics import compute_diagnostics
from slt_probe.estimators.result import Diagnostics, LLCResult


class LLCEstimator:
    """Stateful λ̂ for people who drive their own sampling loop (like devinterp's callbacks).

    >>> est = LLCEstimator(num_chains=4, num_draws=200, nbeta=nbeta, init_loss=L0)
    >>> for draw in range(200):
    ...     for chain in range(4):
    ...         est.update(chain, draw, loss_of_that_chain_at_that_draw)
    >>> res = est.result()

    ``update`` also takes a whole draw at once: ``est.update_all(draw, losses[C])``.
    λ̂_c = nβ·(mean_t L_c,t − L_n(w*)); non-finite losses mark the chain diverged from that draw.
    """

    def __init__(
        self,
        num_chains: int,
        num_draws: int,
        nbeta: float,
        init_loss: float,
        *,
        num_burnin: int = 0,
    ):
        if num_chains < 1 or num_draws < 1:
            raise ValueError(
                f"num_chains and num_draws must be >= 1, got {num_chains}, {num_draws}"
            )
        if not math.isfinite(init_loss):
            raise ValueError(f"init_loss must be finite, got {init_loss}")
        self.num_chains, self.num_draws = int(num_chains), int(num_draws)
        self.nbeta, self.init_loss, self.num_burnin = (
            float(nbeta),
            float(init_loss),
            int(num_burnin),
        )
        self.losses = np.full((self.num_chains, self.num_draws), np.nan)
        self._filled = np.zeros((self.num_chains, self.num_draws), dtype=bool)
        self._start = time.perf_counter()

    def update(self, chain: int, draw: int, loss) -> None:
        if not (0 <= chain < self.num_chains and 0 <= draw < self.num_draws):
            raise IndexError(
                f"(chain, draw)=({chain}, {draw}) outside ({self.num_chains}, {self.num_draws})"
            )
        self.losses[chain, draw] = float(loss)
        self._filled[chain, draw] = True

    def update_all(self, draw: int, losses) -> None:
        values = np.asarray(torch.as_tensor(losses).detach().cpu(), dtype=float).reshape(-1)
        if values.size != self.num_chains:
            raise ValueError(
                f"expected {self.num_chains} losses for draw {draw}, got {values.size}"
            )
        for c, v in enumerate(values):
            self.update(c, draw, v)

    def result(self, **hyperparameters) -> LLCResult:
        done = self._filled.all(axis=0)
        draws = int(np.cumprod(done).sum())  # leading draws every chain has reported
        trace = self.losses[:, :draws]
        bad = ~np.isfinite(trace)
        diverged_at = np.where(bad.any(axis=1), bad.argmax(axis=1) + self.num_burnin, -1)
        llc = (
            self.nbeta * (np.mean(trace, axis=1) - self.init_loss)
            if draws
            else np.full(self.num_chains, np.nan)
        )
        llc[diverged_at >= 0] = np.nan
        diag = (
            compute_diagnostics(
                trace, llc, diverged_at, nbeta=self.nbeta, num_burnin=self.num_burnin
            )
            if draws
            else Diagnostics()
        )
        return LLCResult.from_chains(
            llc,
            trace,
            init_loss=self.init_loss,
            step_size=float(hyperparameters.get("step_size", float("nan"))),
            nbeta=self.nbeta,
            localization=float(hyperparameters.get("localization", float("nan"))),
            num_chains=self.num_chains,
            num_draws=draws,
            num_burnin=self.num_burnin,
            batch_size=int(hyperparameters.get("batch_size", 0)),
            n=int(hyperparameters.get("n", 0)),
            sampler=str(hyperparameters.get("sampler", "user")),
            backend="user",
            diagnostics=diag,
            wall_time_s=time.perf_counter() - self._start,
        )
