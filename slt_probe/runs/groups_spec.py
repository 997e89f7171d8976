"""A run spec's ``[probe.groups]`` and ``[probe.data_groups]`` as the probe's ``groups`` and
``data_groups``.

    [probe.groups]
    heads = true                       # every attention head (slt_probe.groups.attention_heads)
    layers = true                      # every module owning parameters (slt_probe.groups.layers)
    neurons = { "blocks.0.mlp.0" = 8 } # that Linear layer's units in 8 blocks

    [probe.data_groups]
    classes = [0, 3]                   # the training examples of each class (true: every class)
    operand_blocks = 4                 # modular data: the pairs split by a's range, 4 groups

Weight groups are evaluated on the model at each probe point (the same selections every time);
data groups are fixed subsets of the training set.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

import slt_probe.groups as weight_groups
from slt_probe.runs.data import RunData
from slt_probe.runs.schema import SpecError


def make_groups(spec: Mapping):
    """``model -> {name: selection}`` for ``[probe.groups]``, or ``None`` when it asks for none."""
    if not any(spec.get(k) for k in ("heads", "layers", "neurons")):
        return None

    def groups(model: nn.Module) -> dict:
        out: dict = {}
        if spec.get("heads"):
            out.update(weight_groups.attention_heads(model))
        if spec.get("layers"):
            out.update(weight_groups.layers(model))
        modules = dict(model.named_modules())
        for name, blocks in (spec.get("neurons") or {}).items():
            if name not in modules:
                raise SpecError(f"probe.groups.neurons: the model has no module {name!r}")
            out.update(weight_groups.neurons(modules[name], blocks, model=model))
        return out

    return groups


def make_data_groups(spec: Mapping, data: RunData) -> dict | None:
    """``{name: (X, Y)}`` subsets of the training set for ``[probe.data_groups]``."""
    x, y = data.x_train, data.y_train
    out: dict = {}
    classes = spec.get("classes")
    if classes:
        if data.num_classes is None:
            raise SpecError("probe.data_groups.classes needs classification data")
        labels = range(data.num_classes) if classes is True else classes
        for label in labels:
            keep = y == int(label)
            if int(keep.sum()) < 2:
                raise SpecError(f"probe.data_groups.classes: class {label} has < 2 examples")
            out[f"class {label}"] = (x[keep], y[keep])
    blocks = spec.get("operand_blocks")
    if blocks:
        if x.dtype != torch.long or x.dim() != 2:
            raise SpecError("probe.data_groups.operand_blocks needs modular (token) data")
        p = int(data.num_classes)
        bounds = [round(i * p / blocks) for i in range(blocks + 1)]
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            keep = (x[:, 0] >= lo) & (x[:, 0] < hi)
            out[f"a in [{lo}, {hi})"] = (x[keep], y[keep])
    return out or None
