"""A plain multilayer perceptron: Linear → activation → … → Linear (no activation at the end).

Omnigrok's MNIST model is ``MLP([784, 200, 200, 10])`` with ReLU (Liu, Michaud, Tegmark 2023).
Inputs of any shape are flattened after the batch dimension, so 28×28 images work as well.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU, "silu": nn.SiLU}


class MLP(nn.Module):
    def __init__(
        self, widths: Sequence[int] = (784, 200, 200, 10), activation: str = "relu", bias=True
    ):
        super().__init__()
        widths = [int(w) for w in widths]
        if len(widths) < 2 or min(widths) < 1:
            raise ValueError(
                f"MLP widths must be >= 2 positive sizes (input … output), got {widths}"
            )
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"MLP activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}"
            )
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
            layers.append(nn.Linear(a, b, bias=bias))
            if i < len(widths) - 2:
                layers.append(ACTIVATIONS[activation]())
        self.net = nn.Sequential(*layers)
        self.widths = widths

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.flatten(1))

    def as_sequential(self) -> nn.Sequential:
        """The same function as one nn.Sequential over these parameters (lets the LLC sampler
        batch chains by hand; see slt_probe.sampling.stacked)."""
        return nn.Sequential(nn.Flatten(), *self.net)
