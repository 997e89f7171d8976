"""Weight-restricted λ̂ of many groups at once: groups × chains as one batch of rows.

:func:`estimate_llc_groups` estimates the weight-restricted LLC (see
:mod:`slt_probe.estimators.selection`) of every group — every attention head of a transformer,
every layer, every neuron block (:mod:`slt_probe.groups`) — in one batched computation instead of
one estimate after another. The model is flattened over the union of the groups' parameters;
the G groups' C chains each are G·C rows of one chain matrix, row g·C + c carrying group g's
0/1 mask, so a step is one batched gradient for every group's chains and one shared minibatch;
group g's λ̂ comes from its C rows.

One step size serves every row. ``step_size="auto"`` calibrates it on the union of the groups
unrestricted: by Cauchy interlacing the top curvature of each group's restricted potential is
at most the union's, so that ε is within the stable range of every group — the safest choice,
smaller than a group's own "auto" ε would be (slower mixing for the flattest groups, never an
unstable one). :class:`~slt_probe.probe.LLCProbe` passes the whole model's ε, which interlacing
makes safe for every group alike.
"""

from __future__ import annotations

import inspect
import time
from dataclasses import replace
from typing import Any

import torch

from slt_probe.estimators.arguments import check_arguments
from slt_probe.estimators.diagnostics import virial_check
from slt_probe.estimators.llc import estimate_llc
from slt_probe.estimators.posterior import LocalPosterior
from slt_probe.estimators.recipes import calibrate, read_window
from slt_probe.estimators.result import LLCResult
from slt_probe.estimators.selection import Selection, resolve_groups
from slt_probe.sampling.driver import ChainTrace


def _defaults() -> dict[str, Any]:
    sig = inspect.signature(estimate_llc)
    return {k: p.default for k, p in sig.parameters.items() if p.default is not p.empty}


def _union(model: torch.nn.Module, selections: dict[str, Selection]) -> Selection:
    named = dict(model.named_parameters())
    touched = {k for s in selections.values() for k in s.names}
    names = tuple(k for k in named if k in touched)
    return Selection(names, dict.fromkeys(names), {k: p.numel() for k, p in named.items()})


def _row_masks(union: Selection, selections: dict[str, Selection], chains: int) -> torch.Tensor:
    rows = []
    for sel in selections.values():
        mask = sel.flat_mask(union.names)
        if mask is None:
            mask = torch.ones(sum(union.sizes[k] for k in union.names), dtype=torch.bool)
        rows.append(mask[None].expand(chains, -1))
    return torch.cat(rows)


def _rows(trace: ChainTrace, lo: int, hi: int) -> ChainTrace:
    def part(t):
        return None if t is None else t[lo:hi]

    return ChainTrace(
        losses=trace.losses[lo:hi],
        diverged_at=trace.diverged_at[lo:hi],
        final_position=trace.final_position[lo:hi],
        reference_losses=part(trace.reference_losses),
        virial_terms=part(trace.virial_terms),
        engine=trace.engine,
    )


def estimate_llc_groups(
    model: torch.nn.Module, loss_fn, data, groups: dict, **options
) -> dict[str, LLCResult]:
    """``{group name: LLCResult}``: the weight-restricted λ̂ of every group of ``groups``
    (``{name: selection}``, a selection being anything ``estimate_llc(params=...)`` takes, e.g.
    ``slt_probe.groups.attention_heads(model)``), all groups' chains in one batched run (see
    module docstring). ``options`` are ``estimate_llc``'s keywords (vmap backend, one step size,
    a fixed burn-in: no ``extrapolate``, ``target_rse`` or ``max_burnin``); every group gets
    ``num_chains`` chains. Each result has λ̂ per chain, its spread, R-hat, ESS, divergences
    and the virial ratio over the group's own coordinates; ``sampled_weights`` names the
    group's weights.

    >>> import torch
    >>> import slt_probe.groups
    >>> mlp = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))
    >>> x = torch.randn(400, 3)
    >>> res = estimate_llc_groups(mlp, torch.nn.functional.mse_loss, (x, mlp(x).detach()),
    ...                           slt_probe.groups.layers(mlp), num_draws=50, num_burnin=50)
    >>> sorted(res), res["2"].sampled_weights["total"]
    (['0', '2'], 5)
    """
    started = time.perf_counter()
    selections = resolve_groups(model, groups)
    union = _union(model, selections)
    everything = dict.fromkeys(union.names, True)  # the parameters sampled, frozen or not
    args = check_arguments(
        {**_defaults(), **options, "model": model, "loss_fn": loss_fn, "params": everything}
    )
    if args["kernel"] is None or args["factors"] != (1.0,) or args["precision"] is not None:
        raise ValueError("estimate_llc_groups runs one step size on the vmap backend")
    if options.get("max_burnin") is not None:
        raise ValueError("estimate_llc_groups runs a fixed burn-in: no max_burnin")
    posterior = LocalPosterior.build(
        model, loss_fn, data, **{**args["posterior"], "selection": union}
    )
    kernel, budget = args["kernel"], args["budget"]
    step_size, calibration = options.get("step_size", "auto"), {}
    if step_size == "auto":
        cal = calibrate(posterior, kernel, budget, args["accuracy"])
        step_size, calibration = cal.step_size, cal.as_dict()
    rows = _row_masks(union, selections, budget.num_chains)
    batched = replace(posterior, mask=rows.to(posterior.flat.w_star), sampled=None)
    trace = batched.chains(
        kernel, step_size, budget.num_steps, budget.seed, rows.shape[0], budget.num_burnin
    )
    wall = time.perf_counter() - started
    c, out = budget.num_chains, {}
    for g, (name, sel) in enumerate(selections.items()):
        part = _rows(trace, g * c, (g + 1) * c)
        out[name] = _group_result(posterior, kernel, budget, part, sel, step_size, wall)
        out[name].diagnostics.calibration = calibration
    return out


def _group_result(posterior, kernel, budget, trace, selection, step_size, wall):
    """The :class:`LLCResult` of one group's rows of the batched trace."""
    losses, _, llc, diagnostics = read_window(posterior, trace, budget.num_burnin)
    diagnostics.engine = dict(trace.engine)
    record = selection.record()
    if trace.virial_terms is not None:
        diagnostics.virial, warning = virial_check(
            trace.virial_terms.numpy(),
            nbeta=posterior.nbeta,
            localization=posterior.localization,
            dim=record["total"],
        )
        if warning:
            diagnostics.warnings.append(warning)
    return LLCResult.of_vmap_chains(
        posterior,
        kernel,
        budget,
        llc,
        losses,
        step_size=step_size,
        diagnostics=diagnostics,
        wall_time_s=wall,
        sampled_weights=record,
    )


__all__ = ["estimate_llc_groups"]
