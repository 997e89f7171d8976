"""Gaussian noise for the chains' steps, one ``[C, d]`` draw per step, reproducible by seed."""

from __future__ import annotations

import torch


class NoiseStream:
    """Noise tensors of shape ``[C, d]``, one per step, from generators seeded by ``seed``.

    Each step draws ξ_t ~ N(0, I). With ``leimkuhler_matthews`` a step's noise is instead
    (ξ_t + ξ_{t+1})/2 (ξ_0 drawn at construction): two buffers take turns, the fresh draw goes
    into one and the other, still holding the previous draw, becomes the average in place, so
    the scheme costs one extra pass per step and no copy.

    On CPU ``randn`` is a single-threaded pass, a sizeable share of a large model's step. Large
    draws (``split``) therefore give every chain its
    own generator, so that blocks of chains can be drawn on different threads
    (:mod:`slt_probe.sampling.groups`); the numbers depend only on the seed and the shape, never
    on how the chains are grouped. Otherwise one generator draws the whole tensor in one call.

    ``spans`` (one list of column ranges ``(a, b)`` per chain, or ``None``): chains that sample
    only some coordinates (weight-restricted rows of whole tensors, :mod:`.restricted`) draw
    only those, row by row, and keep 0 elsewhere: the noise is then already masked, at the cost
    of the coordinates sampled rather than of the whole row.
    """

    def __init__(
        self,
        shape,
        seed: int,
        *,
        device,
        dtype,
        split: bool = False,
        leimkuhler_matthews=False,
        spans: list[list[tuple[int, int]]] | None = None,
    ):
        self.shape, self.device, self.dtype = tuple(shape), torch.device(device), dtype
        self.spans = spans
        chains = self.shape[0]
        root = torch.Generator().manual_seed(seed)
        seeds = [int(s) for s in torch.randint(2**62, (chains if split else 1,), generator=root)]
        self.generators = [torch.Generator(device=self.device).manual_seed(s) for s in seeds]
        # buffers overwritten by every draw: a fresh [C, d] tensor per step costs page faults
        # on CPU (glibc returns large freed blocks to the OS)
        empty = torch.empty if spans is None else torch.zeros
        self._buffers = [empty(self.shape, device=self.device, dtype=dtype)]
        self.leimkuhler_matthews = leimkuhler_matthews
        if leimkuhler_matthews:
            self._buffers.append(torch.zeros_like(self._buffers[0]))
            self._fill(self._buffers[1], 0, chains)  # ξ_0
        self._parity = [0] * chains  # per chain: which buffer the next fresh draw goes into

    def _fill(self, buffer: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
        out = buffer[lo:hi]
        if self.spans is not None:
            for c in range(lo, hi):
                generator = self.generators[c if len(self.generators) > 1 else 0]
                for a, b in self.spans[c if len(self.spans) > 1 else 0]:
                    buffer[c, a:b].normal_(generator=generator)
            return out
        if len(self.generators) == 1:
            if (lo, hi) != (0, self.shape[0]):
                raise ValueError("a NoiseStream without split draws all chains at once")
            return out.normal_(generator=self.generators[0])
        for c in range(lo, hi):
            buffer[c].normal_(generator=self.generators[c])
        return out

    def draw(self, lo: int, hi: int) -> torch.Tensor:
        """This step's noise for chains ``[lo, hi)`` (rows of a shared buffer: consume it before
        the next draw of these chains). Without ``split`` only the whole range can be drawn."""
        if not self.leimkuhler_matthews:
            return self._fill(self._buffers[0], lo, hi)
        parity = self._parity[lo]
        fresh = self._fill(self._buffers[parity], lo, hi)  # ξ_{t+1}
        previous = self._buffers[1 - parity][lo:hi]  # ξ_t, no longer needed after this step
        for c in range(lo, hi):
            self._parity[c] = 1 - parity
        return previous.lerp_(fresh, 0.5)

    def next(self) -> torch.Tensor:
        """The next draw for every chain."""
        return self.draw(0, self.shape[0])
