"""Which weights an estimate samples: ``estimate_llc(params=...)``, the weight-restricted LLC.

The weight-restricted LLC on a set of weights V samples only the weights in V from

    p(w_V) ∝ exp(−nβ·L_n(w) − (γ/2)·‖w_V − w*_V‖²),   every other weight held at w*,

and is λ̂_V = nβ·(E[L_n(w)] − L_n(w*)), with n and nβ those of the whole data set (Wang et al.
2024, arXiv 2410.02984). ``params`` selects V, independently of ``requires_grad`` (a frozen
model can still be probed):

- ``None``: every trainable parameter (the unrestricted LLC);
- a list of parameter names or glob patterns over ``model.named_parameters()`` (whole tensors);
- a dict ``{name: bool tensor of that parameter's shape}`` selecting entries;
- a callable ``(name, param) -> bool | bool tensor``.

A name or pattern matching nothing, a mask of the wrong shape or dtype and an empty selection
are each a ``ValueError`` naming it. A selection of exactly every trainable parameter is the
unrestricted posterior: :func:`resolve_params` returns ``None`` for it, so the estimate is the
same, bit for bit, as with ``params=None``. :mod:`slt_probe.groups` builds selections (layers,
attention heads, neuron blocks) so that nobody writes masks by hand.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class Selection:
    """The weights V of a restricted estimate: the parameters touched (in the order of
    ``model.named_parameters()``) and, per parameter, a bool mask of its entries or ``None`` for
    the whole tensor."""

    names: tuple[str, ...]
    masks: dict[str, torch.Tensor | None]
    sizes: dict[str, int]

    def counts(self) -> dict[str, int]:
        """Sampled weights per parameter."""
        return {
            k: self.sizes[k] if self.masks[k] is None else int(self.masks[k].sum())
            for k in self.names
        }

    def record(self) -> dict:
        """What the result stores: ``{"names": {name: count}, "total": count}``."""
        counts = self.counts()
        return {"names": counts, "total": int(sum(counts.values()))}

    def flat_mask(self, names=None) -> torch.Tensor | None:
        """The 0/1 mask over the flat vector of ``names`` (default: this selection's parameters;
        names outside it get 0), or ``None`` when it selects every entry of them."""
        names = self.names if names is None else tuple(names)
        if names == self.names and all(self.masks[k] is None for k in names):
            return None
        pieces = []
        for k in names:
            if k not in self.masks:
                pieces.append(torch.zeros(self.sizes[k], dtype=torch.bool))
            elif self.masks[k] is None:
                pieces.append(torch.ones(self.sizes[k], dtype=torch.bool))
            else:
                pieces.append(self.masks[k].reshape(-1).cpu())
        return torch.cat(pieces)


def _patterns(model: nn.Module, patterns, field: str) -> dict[str, torch.Tensor | bool]:
    names = [k for k, _ in model.named_parameters()]
    chosen: dict[str, torch.Tensor | bool] = {}
    for i, pattern in enumerate(patterns):
        if not isinstance(pattern, str):
            raise TypeError(
                f"{field}[{i}] must be a parameter name or glob pattern, got {pattern!r}"
            )
        hits = [k for k in names if k == pattern or fnmatch.fnmatchcase(k, pattern)]
        if not hits:
            raise ValueError(
                f"{field}: {pattern!r} matches no parameter of the model "
                f"(its parameters: {', '.join(names[:12])}{', …' if len(names) > 12 else ''})"
            )
        chosen.update(dict.fromkeys(hits, True))
    return chosen


def _entry(field: str, name: str, param: torch.Tensor, value) -> torch.Tensor | bool:
    """A selection of one parameter: ``True``/``False`` or a bool tensor of its shape."""
    if isinstance(value, bool):
        return value
    if not isinstance(value, torch.Tensor):
        raise ValueError(
            f"{field}[{name!r}] must be a bool tensor of shape {tuple(param.shape)} (or a bool), "
            f"got {type(value).__name__}"
        )
    if value.dtype != torch.bool:
        raise ValueError(
            f"{field}[{name!r}]: the mask must have dtype torch.bool, got {value.dtype}"
        )
    if tuple(value.shape) != tuple(param.shape):
        raise ValueError(
            f"{field}[{name!r}]: the mask has shape {tuple(value.shape)} but the parameter has "
            f"shape {tuple(param.shape)}"
        )
    return value.detach().cpu()


def _chosen(model: nn.Module, params, field: str) -> dict[str, torch.Tensor | bool]:
    """``params`` as {name: True or bool mask} (see module docstring)."""
    named = dict(model.named_parameters())
    if isinstance(params, str):
        params = [params]
    if isinstance(params, (list, tuple)):
        return _patterns(model, params, field)
    if isinstance(params, Mapping):
        out = {}
        for name, value in params.items():
            if name not in named:
                raise ValueError(f"{field}: {name!r} is not a parameter of the model")
            out[name] = _entry(field, name, named[name], value)
        return out
    if callable(params):
        return {name: _entry(field, name, p, params(name, p)) for name, p in named.items()}
    raise TypeError(
        f"{field} must be None, a list of parameter names or glob patterns, a dict of bool "
        f"masks or a callable (name, param) -> bool | mask, got {type(params).__name__}"
    )


def resolve_params(model: nn.Module, params, field: str = "params") -> Selection | None:
    """The :class:`Selection` ``params`` makes on ``model`` (see module docstring), or ``None``
    for the unrestricted posterior (``params=None`` or exactly every trainable parameter)."""
    if params is None:
        return None
    named = dict(model.named_parameters())
    chosen = _chosen(model, params, field)
    masks: dict[str, torch.Tensor | None] = {}
    for name in named:  # model order
        value = chosen.get(name, False)
        if value is True or (isinstance(value, torch.Tensor) and bool(value.all())):
            masks[name] = None
        elif isinstance(value, torch.Tensor) and bool(value.any()):
            masks[name] = value
    if not masks:
        raise ValueError(f"{field} selects no weights: nothing to sample")
    for name in masks:
        p = named[name]
        if not p.is_floating_point():
            raise ValueError(
                f"{field}: parameter {name!r} has dtype {p.dtype}; it must be floating"
            )
        if not bool(torch.isfinite(p.detach()).all()):
            raise ValueError(f"{field}: parameter {name!r} contains NaN or inf: w* must be finite")
    trainable = [k for k, p in named.items() if p.requires_grad]
    if list(masks) == trainable and all(m is None for m in masks.values()):
        return None
    sizes = {k: p.numel() for k, p in named.items()}
    return Selection(tuple(masks), masks, sizes)


def check_params_type(field: str, value):
    """The check of ``params`` that needs no model (the probe and run spec tables use it)."""
    if value is None or isinstance(value, (str, Mapping)) or callable(value):
        return value
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return value
    raise TypeError(
        f"{field} must be None, a list of parameter names or glob patterns, a dict of bool masks "
        f"or a callable, got {value!r}"
    )


def resolve_groups(
    model: nn.Module, groups: Mapping[str, object], field: str = "groups"
) -> dict[str, Selection]:
    """Every group's selection (``{name: params}``, e.g. from :mod:`slt_probe.groups`), each
    checked as ``params`` is; a group selecting every trainable parameter becomes a selection
    of all of them (so it can share a batched run with the others)."""
    if not isinstance(groups, Mapping) or not groups:
        raise ValueError(f"{field} must be a non-empty dict {{group name: selection}}")
    out = {}
    for name, params in groups.items():
        if not isinstance(name, str):
            raise TypeError(f"{field}: group names must be strings, got {name!r}")
        if params is None:
            raise ValueError(f"{field}[{name!r}] is None: a group needs a selection")
        selection = resolve_params(model, params, f"{field}[{name!r}]")
        if selection is None:
            named = dict(model.named_parameters())
            everything = tuple(k for k, p in named.items() if p.requires_grad)
            sizes = {k: p.numel() for k, p in named.items()}
            selection = Selection(everything, dict.fromkeys(everything), sizes)
        out[name] = selection
    return out
