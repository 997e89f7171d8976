"""slt_probe.groups: layers, attention heads and neuron blocks as selections."""

from __future__ import annotations

import doctest
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import slt_probe.groups as groups
from slt_probe import estimate_llc
from slt_probe.estimators.selection import resolve_groups, resolve_params

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from models.transformer import Transformer  # noqa: E402


def test_docstring_examples_run():
    assert doctest.testmod(groups).failed == 0


def test_layers_of_an_mlp_and_a_transformer():
    model = Transformer(vocab_size=7, num_classes=5, d_model=8, n_heads=2, d_mlp=16)
    got = groups.layers(model)
    assert got["<root>"] == ["pos"]
    assert got["blocks.0.attn.qkv"] == ["blocks.0.attn.qkv.weight"]
    assert got["blocks.0.mlp.0"] == ["blocks.0.mlp.0.weight", "blocks.0.mlp.0.bias"]
    total = sum(resolve_groups(model, got)[k].record()["total"] for k in got)
    assert total == sum(p.numel() for p in model.parameters())


def _selected_total(model, heads):
    return sum(resolve_params(model, sel).record()["total"] for sel in heads.values())


def test_heads_of_nn_multihead_attention_partition_its_projections():
    attn = nn.MultiheadAttention(embed_dim=12, num_heads=3)
    heads = groups.attention_heads(attn)
    assert sorted(heads) == ["<root>.head0", "<root>.head1", "<root>.head2"]
    h1 = heads["<root>.head1"]
    rows = torch.nonzero(h1["in_proj_weight"][:, 0]).flatten().tolist()
    assert rows == [4, 5, 6, 7, 16, 17, 18, 19, 28, 29, 30, 31]  # Q, K, V rows of head 1
    cols = torch.nonzero(h1["out_proj.weight"][0]).flatten().tolist()
    assert cols == [4, 5, 6, 7]
    # heads are disjoint and cover every projection weight and the input bias
    stacked = torch.stack([h["in_proj_weight"] for h in heads.values()]).sum(0)
    assert torch.equal(stacked, torch.ones(36, 12, dtype=torch.long))
    assert _selected_total(attn, heads) == 36 * 12 + 36 + 12 * 12


def test_heads_of_separate_projections_and_an_encoder_layer():
    attn = nn.MultiheadAttention(embed_dim=8, num_heads=2, kdim=5, vdim=6)
    heads = groups.attention_heads(attn)
    assert heads["<root>.head0"]["k_proj_weight"].shape == (8, 5)
    assert int(heads["<root>.head0"]["v_proj_weight"].sum()) == 4 * 6
    layer = nn.TransformerEncoderLayer(d_model=8, nhead=4, dim_feedforward=16)
    heads = groups.attention_heads(layer)
    assert len(heads) == 4
    assert int(heads["self_attn.head3"]["self_attn.in_proj_weight"].sum()) == 3 * 2 * 8


def test_heads_of_the_project_transformer_match_its_forward_pass():
    torch.manual_seed(0)
    model = Transformer(vocab_size=7, num_classes=5, d_model=8, n_heads=4, d_mlp=16)
    heads = groups.attention_heads(model)
    assert sorted(heads) == [f"blocks.0.attn.head{h}" for h in range(4)]
    # zeroing head 2's weights changes only what head 2 computes: its value rows and the
    # columns of W_O that read them; the other heads' Q/K/V rows are untouched
    mask = heads["blocks.0.attn.head2"]["blocks.0.attn.qkv.weight"]
    assert torch.nonzero(mask[:, 0]).flatten().tolist() == [4, 5, 12, 13, 20, 21]
    x = torch.randint(0, 7, (32, 3))
    x[:, -1] = 6
    before = model(x)
    with torch.no_grad():
        model.blocks[0].attn.out.weight[:, 4:6] = 0  # drop head 2's output alone
    after = model(x)
    assert not torch.allclose(before, after)
    assert _selected_total(model, heads) == 3 * 8 * 8 + 8 * 8


def test_neurons_by_callable_and_by_name():
    model = nn.Sequential(nn.Linear(3, 6), nn.ReLU(), nn.Linear(6, 1))
    by_callable = groups.neurons(model[0], blocks=3)
    sel = resolve_params(model, by_callable["neurons[2:4]"])
    assert sel.record() == {"names": {"0.weight": 6, "0.bias": 2}, "total": 8}
    by_name = groups.neurons(model[0], blocks=[[0, 5]], model=model)
    assert list(by_name) == ["0.neurons[0, 5]"]
    assert resolve_params(model, by_name["0.neurons[0, 5]"]).record()["total"] == 8
    with pytest.raises(ValueError, match="blocks must be in 1..6"):
        groups.neurons(model[0], blocks=7)
    with pytest.raises(ValueError, match="no nn.MultiheadAttention"):
        groups.attention_heads(model)


def test_one_head_can_be_estimated():
    torch.manual_seed(0)
    model = Transformer(vocab_size=7, num_classes=5, d_model=8, n_heads=2, d_mlp=16)
    x = torch.randint(0, 6, (200, 3))
    x[:, -1] = 6
    y = torch.randint(0, 5, (200,))
    head = groups.attention_heads(model)["blocks.0.attn.head1"]
    res = estimate_llc(
        model,
        nn.functional.cross_entropy,
        (x, y),
        params=head,
        num_chains=2,
        num_draws=30,
        num_burnin=20,
        step_size=1e-4,
    )
    assert res.sampled_weights["total"] == 3 * 4 * 8 + 8 * 4
    assert np.isfinite(res.llc_mean)
