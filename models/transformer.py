"""A small decoder-style transformer for modular arithmetic (``a op b = c mod p``).

Input: token ids ``[a, b, =]`` (shape batch × 3, the ``=`` token is id ``vocab_size − 1``).
Output: logits over the ``num_classes`` residues, read off the last position.

    h   = E[x] + P                                  token embedding + learned positions
    h  += Attn(h)   per layer                        causal multi-head self-attention
    h  += W_out·ReLU(W_in·h)                         MLP block
    y   = U·LN(h)[:, −1]                             unembedding (optional final LayerNorm)

The last block only computes the last position (the only one read out).

Attention is written out (q·kᵀ/√d_head, mask, softmax, ·v) instead of using
``nn.MultiheadAttention``/SDPA: those have no fast ``torch.func.vmap`` batching rule on CPU,
and the LLC sampler runs every chain through ``vmap(functional_call(...))``.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class Attention(nn.Module):
    def __init__(self, d_model: int, n_heads: int, seq_len: int):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        self.n_heads, self.d_head = n_heads, d_model // n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.out = nn.Linear(d_model, d_model, bias=False)
        # A buffer, not a parameter: the causal mask is not sampled.
        self.register_buffer("mask", torch.tril(torch.ones(seq_len, seq_len, dtype=torch.bool)))

    def forward(self, h: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        """Attention output for every position, or (``last_only``) for the last one only
        (shape b × 1 × d): the last position may attend to all, so no mask is needed."""
        b, t, d = h.shape
        q, k, v = self.qkv(h).split(d, dim=-1)
        if last_only:
            q = q[:, -1:]
        tq = q.shape[1]
        # (b, t, d) → (b, heads, t, d_head)
        q = q.reshape(b, tq, self.n_heads, self.d_head).transpose(1, 2)
        k, v = (z.reshape(b, t, self.n_heads, self.d_head).transpose(1, 2) for z in (k, v))
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.d_head)
        if not last_only:
            scores = scores.masked_fill(~self.mask[:t, :t], float("-inf"))
        mixed = torch.softmax(scores, dim=-1) @ v
        return self.out(mixed.transpose(1, 2).reshape(b, tq, d))


class Block(nn.Module):
    def __init__(self, d_model: int, n_heads: int, d_mlp: int, seq_len: int):
        super().__init__()
        self.attn = Attention(d_model, n_heads, seq_len)
        self.mlp = nn.Sequential(nn.Linear(d_model, d_mlp), nn.ReLU(), nn.Linear(d_mlp, d_model))

    def forward(self, h: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        if last_only:
            h = h[:, -1:] + self.attn(h, last_only=True)
        else:
            h = h + self.attn(h)
        return h + self.mlp(h)


class Transformer(nn.Module):
    def __init__(
        self,
        vocab_size: int = 54,
        num_classes: int | None = None,
        d_model: int = 128,
        n_heads: int = 4,
        d_mlp: int = 512,
        n_layers: int = 1,
        seq_len: int = 3,
        final_norm: bool = False,
    ):
        super().__init__()
        for name, v in (
            ("vocab_size", vocab_size),
            ("d_model", d_model),
            ("n_heads", n_heads),
            ("d_mlp", d_mlp),
            ("n_layers", n_layers),
            ("seq_len", seq_len),
        ):
            if int(v) != v or v < 1:
                raise ValueError(f"Transformer {name} must be a positive integer, got {v}")
        num_classes = vocab_size - 1 if num_classes is None else num_classes
        self.embed = nn.Embedding(vocab_size, d_model)
        # N(0, 1/d) like the positions: nn.Embedding's N(0, 1) makes the residual stream √d too big.
        nn.init.normal_(self.embed.weight, std=1 / math.sqrt(d_model))
        self.pos = nn.Parameter(torch.randn(seq_len, d_model) / math.sqrt(d_model))
        self.blocks = nn.ModuleList(
            Block(d_model, n_heads, d_mlp, seq_len) for _ in range(n_layers)
        )
        self.norm = nn.LayerNorm(d_model) if final_norm else nn.Identity()
        self.unembed = nn.Linear(d_model, num_classes, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x) + self.pos[: x.shape[1]]
        # Only the last position is read out, so the last block computes that position alone
        # (same output, ~1/seq_len of the block's cost).
        for i, block in enumerate(self.blocks):
            h = block(h, last_only=i == len(self.blocks) - 1)
        return self.unembed(self.norm(h[:, -1]))
