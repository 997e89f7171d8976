"""A bias-free deep linear network f(x) = W_L ⋯ W_2 W_1 x.

``DLN([H_0, H_1, …, H_L])`` has L layers, W_l of shape H_l × H_{l−1}; its learning coefficient
for a teacher of end-to-end rank r is known in closed form (Aoyagi 2024, see
``slt_probe.truth.formulas.dln_llc``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class DLN(nn.Module):
    def __init__(self, widths: Sequence[int] = (10, 8, 8, 10)):
        super().__init__()
        widths = [int(w) for w in widths]
        if len(widths) < 2 or min(widths) < 1:
            raise ValueError(
                f"DLN widths must be >= 2 positive sizes (input … output), got {widths}"
            )
        self.layers = nn.Sequential(
            *(nn.Linear(a, b, bias=False) for a, b in zip(widths[:-1], widths[1:]))
        )
        self.widths = widths

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)

    def as_sequential(self) -> nn.Sequential:
        """This network as an nn.Sequential (the LLC sampler's hand-batched path)."""
        return self.layers
