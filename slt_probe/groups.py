"""Weight groups for the weight-restricted LLC, so that nobody writes masks by hand.

Each helper returns ``{group name: selection}``; a selection is what ``estimate_llc(params=...)``
takes (a list of parameter names, a ``{name: bool mask}`` dict or a callable), and the dict is
what ``LLCProbe(groups=...)`` takes to track every group through training:

    probe = LLCProbe(loss_fn, data, groups=slt_probe.groups.attention_heads(model))

- :func:`layers`: one group per module that owns parameters (``"blocks.0.mlp.0"``: its weight
  and bias);
- :func:`attention_heads`: one group per head of every attention module — the rows of W_Q, W_K,
  W_V and the columns of W_O that belong to head h (and the head's entries of the input
  projection bias). Works on ``nn.MultiheadAttention`` (hence ``nn.TransformerEncoderLayer``,
  ``nn.TransformerDecoderLayer``) and on modules with a fused ``qkv`` Linear, an ``out`` Linear
  and ``n_heads`` (the transformer in the project's ``models/transformer.py``);
- :func:`neurons`: blocks of a Linear layer's output units (their incoming weights and bias).

The weight-restricted LLC of a group V samples only V, with every other weight at w*:
λ̂_V = nβ·(E[L_n] − L_n(w*)), n and nβ those of the whole data set
(:mod:`slt_probe.estimators.selection`). Only torch is needed here.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["attention_heads", "layers", "neurons"]


def layers(model: nn.Module) -> dict[str, list[str]]:
    """``{module name: [its own parameters' names]}`` for every module owning parameters
    directly (the root, if it owns any, is ``"<root>"``), in the model's order.

    >>> model = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
    >>> layers(model)
    {'0': ['0.weight', '0.bias'], '2': ['2.weight', '2.bias']}
    """
    out: dict[str, list[str]] = {}
    for path, module in model.named_modules():
        own = [name for name, _ in module.named_parameters(recurse=False)]
        if own:
            prefix = f"{path}." if path else ""
            out[path or "<root>"] = [prefix + name for name in own]
    return out


def _rows(shape, blocks: Sequence[slice], dim: int = 0) -> torch.Tensor:
    mask = torch.zeros(shape, dtype=torch.bool)
    for block in blocks:
        if dim == 0:
            mask[block] = True
        else:
            mask[:, block] = True
    return mask


def _multihead(path: str, attn: nn.MultiheadAttention) -> dict[str, dict[str, torch.Tensor]]:
    """Head h of an ``nn.MultiheadAttention``: rows h·d_h … (h+1)·d_h of W_Q, W_K, W_V (fused in
    ``in_proj_weight`` or separate ``q/k/v_proj_weight``), the same entries of ``in_proj_bias``
    and those columns of ``out_proj.weight``."""
    e, heads = attn.embed_dim, attn.num_heads
    dh = e // heads
    prefix = f"{path}." if path else ""
    out = {}
    for h in range(heads):
        own = slice(h * dh, (h + 1) * dh)
        qkv = [slice(j * e + h * dh, j * e + (h + 1) * dh) for j in range(3)]
        sel: dict[str, torch.Tensor] = {}
        if attn.in_proj_weight is not None:
            sel[prefix + "in_proj_weight"] = _rows(attn.in_proj_weight.shape, qkv)
        else:
            for name in ("q_proj_weight", "k_proj_weight", "v_proj_weight"):
                sel[prefix + name] = _rows(getattr(attn, name).shape, [own])
        if attn.in_proj_bias is not None:
            sel[prefix + "in_proj_bias"] = _rows(attn.in_proj_bias.shape, qkv)
        sel[prefix + "out_proj.weight"] = _rows(attn.out_proj.weight.shape, [own], dim=1)
        out[f"{path or '<root>'}.head{h}"] = sel
    return out


def _fused(path: str, attn: nn.Module) -> dict[str, dict[str, torch.Tensor]]:
    """Head h of an attention module with a fused ``qkv`` Linear (rows [Q; K; V]), an ``out``
    Linear and ``n_heads`` (``models/transformer.py``): rows of Q, K, V and columns of W_O."""
    qkv, wo, heads = attn.qkv, attn.out, int(attn.n_heads)
    d = wo.weight.shape[1]
    dh = d // heads
    prefix = f"{path}." if path else ""
    out = {}
    for h in range(heads):
        own = slice(h * dh, (h + 1) * dh)
        rows = [slice(j * d + h * dh, j * d + (h + 1) * dh) for j in range(3)]
        sel = {prefix + "qkv.weight": _rows(qkv.weight.shape, rows)}
        if qkv.bias is not None:
            sel[prefix + "qkv.bias"] = _rows(qkv.bias.shape, rows)
        sel[prefix + "out.weight"] = _rows(wo.weight.shape, [own], dim=1)
        out[f"{path or '<root>'}.head{h}"] = sel
    return out


def _is_fused(module: nn.Module) -> bool:
    qkv, wo = getattr(module, "qkv", None), getattr(module, "out", None)
    return (
        isinstance(qkv, nn.Linear)
        and isinstance(wo, nn.Linear)
        and isinstance(getattr(module, "n_heads", None), int)
        and qkv.weight.shape[0] == 3 * wo.weight.shape[1]
    )


def attention_heads(model: nn.Module) -> dict[str, dict[str, torch.Tensor]]:
    """``{"<attention module>.head<h>": {name: bool mask}}`` for every head of every attention
    module of ``model`` (see module docstring). A ``ValueError`` when the model has none.

    >>> layer = nn.TransformerEncoderLayer(d_model=8, nhead=2, dim_feedforward=16)
    >>> heads = attention_heads(layer)
    >>> sorted(heads)
    ['self_attn.head0', 'self_attn.head1']
    >>> head1 = heads["self_attn.head1"]
    >>> int(head1["self_attn.in_proj_weight"].sum())  # its Q, K and V rows: 3 × 4 rows × 8
    96
    """
    out: dict[str, dict[str, torch.Tensor]] = {}
    for path, module in model.named_modules():
        if isinstance(module, nn.MultiheadAttention):
            out.update(_multihead(path, module))
        elif _is_fused(module):
            out.update(_fused(path, module))
    if not out:
        raise ValueError(
            "attention_heads: the model has no nn.MultiheadAttention and no attention module with "
            "a fused `qkv` Linear, an `out` Linear and `n_heads`"
        )
    return out


def neurons(
    layer: nn.Linear, blocks: int | Sequence[Sequence[int]] = 1, *, model: nn.Module | None = None
) -> dict[str, object]:
    """Blocks of output units (neurons) of the Linear ``layer``: each group samples those rows
    of its weight and entries of its bias. ``blocks``: how many equal contiguous blocks, or the
    lists of unit indices. Without ``model`` a selection is a callable that recognises the
    layer's own parameters (so it works in any model holding the layer) and the groups are
    named ``neurons[lo:hi]``; with ``model`` they are ``{name: mask}`` dicts named
    ``"<layer name>.neurons[lo:hi]"``.

    >>> fc = nn.Linear(4, 6)
    >>> sorted(neurons(fc, blocks=3))
    ['neurons[0:2]', 'neurons[2:4]', 'neurons[4:6]']
    """
    if not isinstance(layer, nn.Linear):
        raise TypeError(f"neurons: layer must be an nn.Linear, got {type(layer).__name__}")
    units = layer.weight.shape[0]
    if isinstance(blocks, int):
        if not 1 <= blocks <= units:
            raise ValueError(f"neurons: blocks must be in 1..{units}, got {blocks}")
        bounds = [round(i * units / blocks) for i in range(blocks + 1)]
        index_sets = [list(range(lo, hi)) for lo, hi in zip(bounds[:-1], bounds[1:])]
    else:
        index_sets = [sorted(int(i) for i in block) for block in blocks]
        if not index_sets or any(not s or s[0] < 0 or s[-1] >= units for s in index_sets):
            raise ValueError(f"neurons: every block needs unit indices in 0..{units - 1}")
    path = _name_of(model, layer) if model is not None else None
    out: dict[str, object] = {}
    for index in index_sets:
        label = f"neurons[{index[0]}:{index[-1] + 1}]" if _contiguous(index) else f"neurons{index}"
        masks = {"weight": _rows(layer.weight.shape, [index])}
        if layer.bias is not None:
            masks["bias"] = _rows(layer.bias.shape, [index])
        if path is None:
            out[label] = _selector(layer, masks)
        else:
            prefix = f"{path}." if path else ""
            out[prefix + label] = {prefix + k: m for k, m in masks.items()}
    return out


def _contiguous(index: list[int]) -> bool:
    return index == list(range(index[0], index[-1] + 1))


def _name_of(model: nn.Module, layer: nn.Module) -> str:
    for path, module in model.named_modules():
        if module is layer:
            return path
    raise ValueError("neurons: the layer is not a module of the model")


def _selector(layer: nn.Linear, masks: dict[str, torch.Tensor]):
    own = {id(getattr(layer, k)): m for k, m in masks.items()}

    def select(name: str, param: torch.Tensor):
        return own.get(id(param), False)

    return select
