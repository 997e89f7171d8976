"""Throughput of the samplers, side by side in one process so that machine noise cancels.

Figures are chain-steps per second (one SGLD update of one chain = one chain-step):

- ``vmap``: :func:`slt_probe.estimate_llc` with ``backend="vmap"`` (fixed ε, no calibration);
- ``devinterp``: ``estimate_llc(backend="devinterp")``, i.e. devinterp 1.3.2's own
  ``estimate_learning_coeff_with_summary`` over a DataLoader, as its users run it;
- ``devinterp_loop``: devinterp's ``SGMCMC.sgld`` optimizer stepped in a tight Python loop over
  in-memory tensors, chain after chain (the fastest way to use devinterp);
- ``vmap_bf16`` / ``devinterp_loop_bf16``: the same two with the forward and backward passes in
  bfloat16 (``compute_dtype="bfloat16"``; the loop under ``torch.autocast``), so that the
  low-precision figures are compared with low precision;

and the fraction of the machine's dense matmul peak (FLOP/s of a large ``torch.mm``) that one
SGLD step reaches, counting 6·B·(weights) FLOPs per chain-step for a Linear network (forward
2·B·W, backward 4·B·W).
"""

from __future__ import annotations

import copy
import importlib.util
import math
import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from slt_probe.estimators.llc import estimate_llc
from slt_probe.sampling import onednn


@dataclass
class Workload:
    name: str
    model: nn.Module
    loss_fn: Callable
    data: tuple[torch.Tensor, torch.Tensor]
    batch_size: int
    step_size: float

    @property
    def num_params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def matmul_flops_per_chain_step(self) -> float:
        """6·B·Σ(Linear weight sizes): forward + backward of every Linear layer."""
        weights = sum(m.weight.numel() for m in self.model.modules() if isinstance(m, nn.Linear))
        return 6.0 * self.batch_size * weights


def half_sq(out, y):
    return 0.5 * ((out - y) ** 2).sum(-1).mean()


def dln_workload(n: int = 10_000, seed: int = 0) -> Workload:
    """A deep linear network 20-40-40-40-10 (4,400 parameters), y = f(x) + noise."""
    g = torch.Generator().manual_seed(seed)
    widths = [20, 40, 40, 40, 10]
    model = nn.Sequential(*[nn.Linear(a, b, bias=False) for a, b in zip(widths[:-1], widths[1:])])
    x = torch.randn(n, widths[0], generator=g)
    with torch.no_grad():
        y = model(x) + torch.randn(n, widths[-1], generator=g)
    return Workload("dln_4.4k", model, half_sq, (x, y), batch_size=256, step_size=1e-6)


def mlp_workload(n: int = 1000, seed: int = 0) -> Workload:
    """The Omnigrok MNIST MLP 784-200-200-10 (199,210 parameters), MSE on one-hot, batch 200."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Linear(784, 200), nn.ReLU(), nn.Linear(200, 200), nn.ReLU(), nn.Linear(200, 10)
    )
    x = torch.rand(n, 784, generator=g)
    y = nn.functional.one_hot(torch.randint(10, (n,), generator=g), 10).float()
    return Workload(
        "mlp_784-200-200-10", model, nn.MSELoss(), (x, y), batch_size=200, step_size=1e-5
    )


def transformer_workload(p: int = 53, seed: int = 0) -> Workload:
    """The modular-addition transformer of ``models/transformer.py`` (one layer, d = 128) on
    all p² pairs, cross-entropy, batch 128."""
    path = Path(__file__).resolve().parents[2] / "models" / "transformer.py"
    if not path.exists():
        raise FileNotFoundError(
            f"{path} not found: the transformer workload needs the repo's models/"
        )
    spec = importlib.util.spec_from_file_location("slt_probe_models_transformer", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    torch.manual_seed(seed)
    model = module.Transformer(vocab_size=p + 1, num_classes=p).eval()
    a, b = torch.meshgrid(torch.arange(p), torch.arange(p), indexing="ij")
    x = torch.stack([a.reshape(-1), b.reshape(-1), torch.full((p * p,), p)], 1)
    y = (x[:, 0] + x[:, 1]) % p
    return Workload(
        "transformer_modadd", model, nn.CrossEntropyLoss(), (x, y), batch_size=128, step_size=1e-6
    )


def seconds_to_precision(case, target: float = 0.05, max_steps: int = 68_000, **kwargs):
    """Wall seconds of ``estimate_llc(..., target_rse=target, max_steps=max_steps)`` on the case:
    after the burn-in the same chains draw in rounds until split R-hat ≤ 1.05, no drift and a
    standard error ≤ ``target``·λ̂, or ``max_steps`` steps per chain are spent (what a user who
    asks for a trustworthy λ̂ waits for). Returns (seconds, steps per chain, result); whether the
    target was met is ``result.diagnostics.precision["met"]``."""
    res = estimate_llc(
        case.model, case.loss_fn, case.data, target_rse=target, max_steps=max_steps, **kwargs
    )
    return res.wall_time_s, res.diagnostics.precision["steps"], res


def devinterp_tight_loop(
    w: Workload, num_chains: int, steps: int, seed: int = 0, autocast: torch.dtype | None = None
) -> float:
    """Seconds for ``steps`` devinterp SGLD steps per chain, chains in sequence, tensors in memory
    (with ``autocast``, forward and loss under ``torch.autocast("cpu", autocast)``)."""
    # deferred: devinterp is heavy and only this comparison column needs it
    from devinterp.optim.sgmcmc import SGMCMC

    x, y = w.data
    n = x.shape[0]
    nbeta = n / math.log(n)
    gen = torch.Generator().manual_seed(seed)

    start = time.perf_counter()
    for _ in range(num_chains):
        model = copy.deepcopy(w.model)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            opt = SGMCMC.sgld(model.parameters(), lr=w.step_size, localization=1.0, nbeta=nbeta)
        for _ in range(steps):
            idx = torch.randint(n, (w.batch_size,), generator=gen)
            opt.zero_grad()
            with torch.autocast("cpu", dtype=autocast or torch.bfloat16, enabled=bool(autocast)):
                loss = w.loss_fn(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
    return time.perf_counter() - start


def vmap_seconds(w: Workload, num_chains: int, steps: int, **options) -> float:
    """Wall seconds of ``estimate_llc`` on the workload at its fixed ε, ``steps`` draws per chain
    and no burn-in (set-up and diagnostics included); ``options`` go to estimate_llc."""
    res = estimate_llc(
        w.model,
        w.loss_fn,
        w.data,
        step_size=w.step_size,
        num_chains=num_chains,
        num_draws=steps,
        num_burnin=0,
        batch_size=w.batch_size,
        **options,
    )
    return res.wall_time_s


def devinterp_seconds(w: Workload, num_chains: int, steps: int) -> float:
    """The same as :func:`vmap_seconds` through devinterp's own estimator."""
    return vmap_seconds(w, num_chains, steps, backend="devinterp")


def matmul_peak_flops(size: int = 2048, repeats: int = 5, product=None) -> float:
    """Dense float32 matmul FLOP/s on size × size matrices (best of repeats), of ``torch.mm`` or
    of ``product(a, b)`` (e.g. oneDNN's a @ bᵀ)."""
    product = product or torch.mm
    a, b = torch.randn(size, size), torch.randn(size, size)
    return 2.0 * size**3 / onednn.best_of(lambda: product(a, b), repeats)


def matmul_peaks() -> dict[str, float]:
    """This machine's float32 matmul FLOP/s: ``torch.mm`` (the BLAS, MKL here) and, where the
    engine uses it, oneDNN (:mod:`slt_probe.sampling.onednn`); ``peak`` is the larger."""
    peaks = {"torch_mm": matmul_peak_flops()}
    if onednn.enabled():
        peaks["onednn"] = matmul_peak_flops(product=onednn.product)
    peaks["peak"] = max(peaks.values())
    return peaks


def compare(
    w: Workload,
    chains: list[int],
    steps: int,
    variants: dict[str, dict],
    repeats: int = 3,
    loops: dict[str, torch.dtype | None] | None = None,
) -> list[dict]:
    """Rows of chain-steps/s for every variant and chain count: each figure is the median of
    ``repeats`` runs, the variants taking turns within each repeat so that a slow spell of a
    shared machine hits all of them alike. ``loops`` names devinterp tight-loop columns and
    their autocast dtype (default: one float32 loop, ``devinterp_loop``)."""
    loops = {"devinterp_loop": None} if loops is None else loops
    rows = []
    # Warm-up: imports, allocator and thread-pool start-up are not part of the throughput.
    for dtype in loops.values():
        devinterp_tight_loop(w, 1, 3, autocast=dtype)
    devinterp_seconds(w, 1, 3)
    for opts in variants.values():
        vmap_seconds(w, 1, 3, **opts)
    for c in chains:
        runs: dict[str, list[float]] = {}
        for _ in range(max(1, int(repeats))):
            for name, dtype in loops.items():
                runs.setdefault(name, []).append(
                    c * steps / devinterp_tight_loop(w, c, steps, autocast=dtype)
                )
            runs.setdefault("devinterp", []).append(c * steps / devinterp_seconds(w, c, steps))
            for name, opts in variants.items():
                runs.setdefault(name, []).append(c * steps / vmap_seconds(w, c, steps, **opts))
        row = {"workload": w.name, "params": w.num_params, "chains": c, "steps": steps}
        row.update({name: statistics.median(values) for name, values in runs.items()})
        row["repeats"] = max(1, int(repeats))
        rows.append(row)
    return rows
