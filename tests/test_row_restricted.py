"""The row-restricted Linear-stack gradient (groups of whole tensors batched as rows) and the
noise drawn only on each row's sampled columns."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import slt_probe.groups
from slt_probe.estimators.grouped import _row_masks, _union, estimate_llc_groups
from slt_probe.estimators.selection import resolve_groups
from slt_probe.sampling.functional import FlatModel
from slt_probe.sampling.noise import NoiseStream
from slt_probe.sampling.restricted import whole_tensor_rows


def _mlp():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 6), nn.ReLU(), nn.Linear(6, 3))
    return model, torch.randn(40, 5), torch.randn(40, 3)


def _rows(model, groups, chains=2):
    selections = resolve_groups(model, groups)
    union = _union(model, selections)
    return union, _row_masks(union, selections, chains).float()


@pytest.mark.parametrize("shared", [True, False])
def test_row_restricted_gradient_is_the_masked_gradient(shared):
    """Each row's gradient is ∇L_m over its own tensors at its own position and exactly 0
    elsewhere; a block of rows (``first_row``) gets the same rows as the whole batch."""
    model, x, y = _mlp()
    union, mask = _rows(model, slt_probe.groups.layers(model))
    flat = FlatModel(model, nn.functional.mse_loss, names=union.names)
    w = flat.w_star + 0.1 * torch.randn(6, flat.dim) * mask
    xs, ys = (x, y) if shared else (x.expand(6, -1, -1), y.expand(6, -1, -1))
    fn = flat.row_restricted_grad_and_loss(mask, shared, xs, ys)
    assert fn.path == "Linear stack, row by row over each row's own tensors"
    grad, loss = fn(w, xs, ys)
    ref_grad, ref_loss = flat.batched_grad_and_loss(shared)(w, xs, ys)
    torch.testing.assert_close(grad, ref_grad * mask, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-6, atol=1e-7)
    assert torch.all(grad[mask == 0] == 0) and grad[mask == 1].abs().min() >= 0
    block = (xs, ys) if shared else (xs[3:], ys[3:])
    part, part_loss = fn(w[3:], *block, first_row=3)
    torch.testing.assert_close(part, grad[3:], rtol=0, atol=0)
    assert fn.spans == [[(0, 42)], [(0, 42)], [(42, 90)], [(42, 90)], [(90, 111)], [(90, 111)]]


def test_partial_tensors_and_other_models_keep_the_generic_path():
    """Neuron blocks (part of a tensor) and models that are not Linear stacks fall back."""
    model, x, y = _mlp()
    union, mask = _rows(model, slt_probe.groups.neurons(model[0], blocks=2))
    assert whole_tensor_rows(mask, [union.sizes[k] for k in union.names]) is None
    flat = FlatModel(model, nn.functional.mse_loss, names=union.names)
    assert flat.row_restricted_grad_and_loss(mask, True, x, y) is None
    attention = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True)
    union, mask = _rows(attention, slt_probe.groups.layers(attention))
    flat = FlatModel(attention, lambda out, t: out.square().mean(), names=union.names)
    xs = torch.randn(4, 3, 8)
    assert flat.row_restricted_grad_and_loss(mask, True, xs, xs) is None


def test_noise_spans_draw_only_the_sampled_columns():
    """With spans, a row's noise is N(0, 1) on its columns and 0 elsewhere, and blocks of
    rows draw what the whole batch draws (the numbers depend on the seed and spans alone)."""
    spans = [[(0, 3000)], [(3000, 5000), (6000, 8000)]]
    for lm in (False, True):
        options = dict(device="cpu", dtype=torch.float64, split=True, spans=spans)
        whole = NoiseStream((2, 8000), 5, leimkuhler_matthews=lm, **options)
        blocks = NoiseStream((2, 8000), 5, leimkuhler_matthews=lm, **options)
        for _ in range(3):
            a = whole.next().clone()
            b = torch.cat([blocks.draw(0, 1), blocks.draw(1, 2)])
            assert torch.equal(a, b)
        assert torch.all(a[0, 3000:] == 0) and torch.all(a[1, :3000] == 0)
        assert torch.all(a[1, 5000:6000] == 0) and bool((a[1, 6000:] != 0).all())
        expected = 0.5 if lm else 1.0  # the Leimkuhler-Matthews average halves the variance
        assert abs(float(a[0, :3000].var()) - expected) < 0.1
        assert abs(float(a[1, 3000:5000].var()) - expected) < 0.15


def test_batched_mlp_layers_take_the_row_path():
    """(That its λ̂ agree with each layer's own estimate: test_probe_groups.py.)"""
    model, x, _ = _mlp()
    data = (torch.randn(300, 5), torch.randn(300, 3))
    res = estimate_llc_groups(
        model,
        nn.functional.mse_loss,
        data,
        slt_probe.groups.layers(model),
        num_chains=2,
        num_draws=30,
        num_burnin=20,
        step_size=1e-4,
        batch_size=64,
    )
    assert {k: r.sampled_weights["total"] for k, r in res.items()} == {"0": 42, "2": 48, "4": 21}
    for r in res.values():
        assert r.diagnostics.engine["gradient"].startswith("Linear stack, row by row")
