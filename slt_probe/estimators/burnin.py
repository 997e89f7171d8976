"""Burn-in that lasts until the loss trace stops trending.

A chain started at w* first relaxes: its loss rises from L_n(w*) (and at a singular w* it may
overshoot and fall back while the chain spreads along the flat directions). How long that takes
depends on the model, ε, γ and nβ, so no fixed burn-in fits every estimate: a burn-in shorter
than the relaxation leaves the transient in the draws, which read λ̂ too high or too low and
show it as a trend between the first and the last third of the trace.

:func:`extend_burnin` therefore judges the main run's draws and, while they trend, continues every
chain by a third of the draws and moves the end of the burn-in by as much: the oldest third of
the window, the one that trended, is discarded and a new third is drawn, so the window keeps
``num_draws`` draws and slides towards stationarity. It stops when the window no longer trends
or the burn-in has reached ``max_burnin`` steps; an estimate whose trace still trends then keeps
the drift warning of :func:`slt_probe.estimators.diagnostics.compute_diagnostics`.

With at least four usable chains, the window *trends* when the chains' mean drift
nβ·(mean of the last third − mean of the first third) exceeds 5 % of λ̂, three standard errors
of λ̂ and 0.05: the drift warning of
:func:`~slt_probe.estimators.diagnostics.compute_diagnostics` with 5 % of λ̂ in place of its 10 %,
the precision ``target_rse=0.05`` asks for. A trend below that is one the estimate's precision
cannot tell from noise, and such an estimate is the same number, bit for bit, as without this
rule. Split R-hat above 1.1 alone is not a trend: chains that mix slowly disagree however late
their window starts, and more draws (``target_rse``), not a later window, answer that.

The extension costs at most ``max_burnin − num_burnin`` steps per chain. Each extension continues
the chains (their kernel state, minibatch stream seeded per extension) rather than restarting
them, so no step already taken is wasted on a second burn-in.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from slt_probe.estimators.posterior import VIRIAL_EVERY, Budget, LocalPosterior
from slt_probe.estimators.recipes import read_window
from slt_probe.sampling.driver import ChainTrace
from slt_probe.sampling.kernel import Kernel

#: Default ``max_burnin`` as a multiple of ``num_burnin``.
MAX_BURNIN_FACTOR = 4


def default_max_burnin(num_burnin: int, num_draws: int) -> int:
    """``max_burnin`` when none is given: 4 × ``num_burnin``, and at least ``num_burnin`` +
    ``num_draws`` so that a run with little burn-in may still discard one whole window."""
    return max(MAX_BURNIN_FACTOR * num_burnin, num_burnin + num_draws)


#: A window trends when its mean drift exceeds this fraction of λ̂ (and 3 standard errors).
TREND_FRACTION = 0.05


#: Fewest usable chains a trend is judged on, as split R-hat is in ``target_rse``'s rule: with
#: two or three the standard error of λ̂ is itself too noisy to tell a trend from a slow wander.
MIN_CHAINS = 4


def trending(llc_per_chain: np.ndarray, diagnostics) -> bool:
    """Whether a window's draws are still in the transient (see module docstring); never with
    fewer than :data:`MIN_CHAINS` usable chains."""
    used = np.isfinite(llc_per_chain)
    if used.sum() < MIN_CHAINS or not diagnostics.drift:
        return False
    llc = np.asarray(llc_per_chain)[used]
    drift = float(np.mean(np.asarray(diagnostics.drift)))
    stderr = float(np.std(llc, ddof=1) / np.sqrt(len(llc)))
    return abs(drift) > max(TREND_FRACTION * abs(float(np.mean(llc))), 3.0 * stderr, 0.05)


def extend_burnin(
    posterior: LocalPosterior,
    kernel: Kernel,
    budget: Budget,
    step_size: float,
    trace: ChainTrace,
    max_burnin: int,
) -> tuple[ChainTrace, Budget, dict]:
    """Slide the window of draws of ``trace`` (the main run of ``budget``) until it stops
    trending or the burn-in reaches ``max_burnin`` steps (see module docstring).

    Returns the continued trace (its virial records cut to the window), the budget with the
    burn-in actually used, and the record ``{"requested", "used", "max", "extensions",
    "trending"}``.
    """
    requested, extensions = budget.num_burnin, 0
    step = max(budget.num_draws // 3, 1)
    # the step index of each virial record, so the records of discarded draws can be dropped
    recorded = list(range(budget.num_burnin, budget.num_steps, VIRIAL_EVERY))
    while True:
        _, _, llc, diagnostics = read_window(posterior, trace, budget.num_burnin)
        still = trending(llc, diagnostics)
        if not still or budget.num_burnin + step > max_burnin:
            break
        seed = budget.seed + 7907 * (extensions + 1)  # each extension its own batches and noise
        steps = budget.num_steps
        extra = posterior.chains(
            kernel, step_size, step, seed, budget.num_chains, burnin=0, init_state=trace.final_state
        )
        trace = trace.extend(extra)
        recorded += [steps + s for s in range(0, step, VIRIAL_EVERY)]
        budget = Budget(budget.num_chains, budget.num_burnin + step, budget.num_draws, budget.seed)
        extensions += 1
    if extensions and trace.virial_terms is not None:
        keep = [k for k, s in enumerate(recorded) if s >= budget.num_burnin]
        trace = replace(trace, virial_terms=trace.virial_terms[:, keep])
    record = {
        "requested": requested,
        "used": budget.num_burnin,
        "max": max_burnin,
        "extensions": extensions,
        "trending": bool(still),
    }
    return trace, budget, record
