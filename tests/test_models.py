"""The model files in models/: shapes, the Omnigrok α scaling, vmap compatibility."""

import math

import pytest
import torch
from torch.func import functional_call, vmap

from slt_probe.probe import weight_norm
from slt_probe.runs.arch import resolve_arch
from slt_probe.runs.training import scale_init


def cls(name):
    return resolve_arch(name)  # slt_probe's own architectures need no allowance


def test_mlp_shapes_and_layers():
    model = cls("mlp:MLP")([784, 200, 200, 10])
    assert sum(p.numel() for p in model.parameters()) == 784 * 200 + 200 + 200 * 200 + 200 + 2010
    out = model(torch.rand(5, 28, 28))  # images are flattened
    assert out.shape == (5, 10)
    with pytest.raises(ValueError, match="activation"):
        cls("mlp:MLP")([4, 2], activation="bogus")


def test_dln_is_the_matrix_product():
    torch.manual_seed(0)
    model = cls("dln:DLN")([5, 4, 3, 2])
    x = torch.randn(7, 5)
    w1, w2, w3 = (layer.weight for layer in model.layers)
    torch.testing.assert_close(model(x), x @ (w3 @ w2 @ w1).T)
    assert all(layer.bias is None for layer in model.layers)


def test_init_scale_multiplies_every_parameter():
    torch.manual_seed(0)
    model = cls("mlp:MLP")([6, 5, 3])
    before = [p.detach().clone() for p in model.parameters()]
    norm = weight_norm(model)
    scale_init(model, 8.0)
    for b, p in zip(before, model.parameters()):
        torch.testing.assert_close(p.detach(), 8.0 * b)
    assert math.isclose(weight_norm(model), 8.0 * norm, rel_tol=1e-6)


def _transformer(p=7, **kw):
    torch.manual_seed(0)
    return cls("transformer:Transformer")(
        vocab_size=p + 1, num_classes=p, d_model=16, n_heads=2, d_mlp=32, **kw
    )


def test_transformer_reads_every_token_of_the_last_position():
    model = _transformer().eval()
    x = torch.tensor([[1, 2, 7], [3, 2, 7]])
    out = model(x)
    assert out.shape == (2, 7)
    # the first token changes the last position's output through attention
    assert not torch.allclose(out[0], out[1])


def test_transformer_attention_is_causal():
    model = _transformer().eval()
    h = torch.randn(1, 3, 16)
    h2 = h.clone()
    h2[0, 2] += 1.0  # change the last position only
    attn = model.blocks[0].attn
    a, b = attn(h), attn(h2)
    torch.testing.assert_close(a[0, :2], b[0, :2])  # earlier positions cannot see it
    assert not torch.allclose(a[0, 2], b[0, 2])


def test_transformer_under_vmap_functional_call_matches_a_loop():
    model = _transformer(n_layers=2).eval()
    params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = dict(model.named_buffers())
    chains = 3
    stacked = {k: v.unsqueeze(0) + 0.01 * torch.randn(chains, *v.shape) for k, v in params.items()}
    x = torch.randint(0, 7, (5, 3))
    y = torch.randint(0, 7, (5,))

    def loss(p):
        out = functional_call(model, (p, buffers), (x,))
        return torch.nn.functional.cross_entropy(out, y)

    batched = vmap(loss)(stacked)
    looped = torch.stack([loss({k: v[i] for k, v in stacked.items()}) for i in range(chains)])
    torch.testing.assert_close(batched, looped)
    grads = vmap(torch.func.grad(loss))(stacked)
    assert grads["embed.weight"].shape == (chains, 8, 16)


def test_transformer_last_position_shortcut_matches_the_full_computation():
    model = _transformer(n_layers=2).eval()
    x = torch.randint(0, 8, (6, 3))
    h = model.embed(x) + model.pos
    for block in model.blocks:  # every position through every block, then read the last
        h = block(h)
    torch.testing.assert_close(model(x), model.unembed(model.norm(h[:, -1])))
