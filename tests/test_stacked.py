"""The hand-batched Linear-stack gradient equals the general vmap path, and qualifies only the
models it can run."""

import pytest
import torch
from torch import nn

from models.mlp import MLP
from slt_probe.sampling import onednn
from slt_probe.sampling.functional import FlatModel
from slt_probe.sampling.stacked import make_per_chain_grad_and_loss, stacked_layers, use_onednn


def _both(model, loss_fn, shared, x, y, chains=3):
    flat = FlatModel(model, loss_fn)
    slow = FlatModel(model, loss_fn, fast_path=False)
    gen = torch.Generator().manual_seed(0)
    w = flat.w_star + 0.1 * torch.randn(chains, flat.dim, generator=gen, dtype=flat.dtype)
    g1, l1 = flat.batched_grad_and_loss(shared)(w, x, y)
    g2, l2 = slow.batched_grad_and_loss(shared)(w, x, y)
    return (g1, l1), (g2, l2)


CASES = {
    "dln": (
        lambda: nn.Sequential(nn.Linear(5, 4, bias=False), nn.Linear(4, 3, bias=False)),
        (5,),
        3,
    ),
    "flatten_tanh": (
        lambda: nn.Sequential(nn.Flatten(), nn.Linear(6, 7), nn.Tanh(), nn.Linear(7, 2)),
        (2, 3),
        2,
    ),
    "mlp_gelu": (lambda: MLP([6, 8, 8, 2], activation="gelu"), (2, 3), 2),
}


@pytest.mark.parametrize("shared", [True, False])
@pytest.mark.parametrize("case", sorted(CASES))
def test_fast_path_matches_vmap(case, shared):
    make, in_shape, out_dim = CASES[case]
    torch.manual_seed(0)
    model = make().double()
    lead = (16,) if shared else (3, 16)  # per-chain minibatches carry a chain axis
    x = torch.randn(*lead, *in_shape, dtype=torch.float64)
    y = torch.randn(*lead, out_dim, dtype=torch.float64)
    names = [k for k, _ in model.named_parameters()]
    assert stacked_layers(model, names) is not None
    (g1, l1), (g2, l2) = _both(model, nn.MSELoss(), shared, x, y)
    assert g1.shape == g2.shape == (3, sum(p.numel() for p in model.parameters()))
    assert l1.shape == (3,)
    torch.testing.assert_close(l1, l2, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(g1, g2, rtol=1e-9, atol=1e-12)


def test_models_outside_the_fast_path_fall_back():
    class Custom(nn.Module):  # its own forward: must not be treated as a stack
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(3, 3)

        def forward(self, x):
            return self.a(x) * 2

    names = lambda m: [k for k, p in m.named_parameters() if p.requires_grad]  # noqa: E731
    assert stacked_layers(Custom(), names(Custom())) is None
    drop = nn.Sequential(nn.Linear(3, 3), nn.Dropout(0.1), nn.Linear(3, 1))
    assert stacked_layers(drop, names(drop)) is None
    frozen = nn.Sequential(nn.Linear(3, 3), nn.ReLU(), nn.Linear(3, 1))
    frozen[0].weight.requires_grad_(False)
    assert stacked_layers(frozen, names(frozen)) is None
    # Linear over a sequence axis ([B, S, F] inputs) is refused at call time, then vmap runs it
    seq = nn.Sequential(nn.Linear(4, 2)).double()
    x, y = torch.randn(8, 5, 4).double(), torch.randn(8, 5, 2).double()
    (g1, l1), (g2, l2) = _both(seq, nn.MSELoss(), True, x, y)
    torch.testing.assert_close(g1, g2)


@pytest.mark.parametrize("shared", [True, False])
def test_chain_loss_lean_call_equals_torch_func_vmap(shared):
    from slt_probe.sampling.stacked import ChainLoss

    torch.manual_seed(0)
    out = torch.randn(4, 16, 3, dtype=torch.float64, requires_grad=True)
    y = torch.randint(3, (16,) if shared else (4, 16))
    for loss_fn in (nn.CrossEntropyLoss(), lambda o, t: 0.5 * ((o - t[..., None]) ** 2).mean()):
        chain = ChainLoss(loss_fn, shared)
        value = chain(out, y)
        assert chain.lean is not None  # the check passed and the lean call is in use
        (grad,) = torch.autograd.grad(value.sum(), out)
        ys = [y] * 4 if shared else list(y)
        looped = torch.stack([loss_fn(o, t) for o, t in zip(out, ys)])
        (grad_looped,) = torch.autograd.grad(looped.sum(), out)
        torch.testing.assert_close(value, looped)
        torch.testing.assert_close(grad, grad_looped)


def test_chain_loss_falls_back_when_the_lean_call_fails(monkeypatch):
    from slt_probe.sampling.stacked import ChainLoss

    chain = ChainLoss(nn.MSELoss(), True)

    def broken(*args):
        raise RuntimeError("private functorch API changed")

    monkeypatch.setattr(chain, "_lean", broken)
    out, y = torch.randn(3, 8, 2), torch.randn(8, 2)
    value = chain(out, y)
    assert chain.checked and chain.lean is None
    torch.testing.assert_close(value, torch.stack([nn.MSELoss()(o, y) for o in out]))


def _wide_mlp(bias=True):
    # 160·128 = 20,480 weights: above ONEDNN_MIN_WEIGHTS, so that layer takes oneDNN's products
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Flatten(), nn.Linear(160, 128, bias=bias), nn.ReLU(), nn.Linear(128, 3, bias=bias)
    )


needs_onednn = pytest.mark.skipif(
    onednn._op() is None or not torch.backends.mkldnn.is_available(),
    reason="this torch build has no oneDNN linear",
)


@needs_onednn
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shared", [True, False])
def test_onednn_chain_by_chain_gradient_matches_vmap(shared, bias):
    model = _wide_mlp(bias)
    lead = (32,) if shared else (3, 32)
    x, y = torch.randn(*lead, 8, 20), torch.randn(*lead, 3)
    flat = FlatModel(model, nn.MSELoss())
    names = [k for k, _ in model.named_parameters()]
    per_chain = make_per_chain_grad_and_loss(
        stacked_layers(model, names), flat.numels, flat.shapes, nn.MSELoss(), shared
    )
    gen = torch.Generator().manual_seed(0)
    w = flat.w_star + 0.1 * torch.randn(3, flat.dim, generator=gen)
    out = torch.full_like(w, float("nan"))
    g1, l1 = per_chain(w, x, y, out=out)
    assert g1 is out  # written into the caller's buffer
    g2, l2 = FlatModel(model, nn.MSELoss(), fast_path=False).batched_grad_and_loss(shared)(w, x, y)
    torch.testing.assert_close(l1, l2, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(g1, g2, rtol=1e-4, atol=1e-5)


def test_onednn_is_used_only_for_large_float32_layers_on_cpu(monkeypatch):
    monkeypatch.setattr(onednn, "enabled", lambda: True)
    wide, small = _wide_mlp(), CASES["mlp_gelu"][0]()
    for model, expected in ((wide, True), (small, False)):
        names = [k for k, _ in model.named_parameters()]
        shapes = [p.shape for p in model.parameters()]
        w = torch.zeros(2, sum(p.numel() for p in model.parameters()))
        plan = stacked_layers(model, names)
        assert use_onednn(plan, shapes, w, None) is expected
    plan = stacked_layers(wide, [k for k, _ in wide.named_parameters()])
    shapes = [p.shape for p in wide.parameters()]
    w = torch.zeros(2, 20_483)
    assert not use_onednn(plan, shapes, w.double(), None)  # float64: the BLAS
    assert not use_onednn(plan, shapes, w, torch.bfloat16)  # bf16 bmm's already run on oneDNN
    monkeypatch.setattr(onednn, "enabled", lambda: False)
    assert not use_onednn(plan, shapes, w, None)


@needs_onednn
def test_onednn_verdict_follows_the_environment(monkeypatch):
    try:
        monkeypatch.setenv("SLT_PROBE_ONEDNN", "0")
        onednn._verdict.cache_clear()
        assert not onednn.enabled() and "SLT_PROBE_ONEDNN=0" in onednn.reason()
        monkeypatch.setenv("SLT_PROBE_ONEDNN", "1")
        onednn._verdict.cache_clear()
        assert onednn.enabled() and "forced" in onednn.reason()
    finally:
        onednn._verdict.cache_clear()


def test_onednn_verdict_without_the_op(monkeypatch):
    monkeypatch.delenv("SLT_PROBE_ONEDNN", raising=False)
    monkeypatch.setattr(onednn, "_op", lambda: None)
    try:
        onednn._verdict.cache_clear()
        assert not onednn.enabled() and "no oneDNN linear" in onednn.reason()
    finally:
        onednn._verdict.cache_clear()


def test_estimates_say_which_gradient_path_ran(monkeypatch):
    from slt_probe import estimate_llc

    model = _wide_mlp()
    x, y = torch.randn(64, 8, 20), torch.randn(64, 3)
    kw = dict(step_size=1e-4, num_chains=2, num_draws=8, num_burnin=0)
    monkeypatch.setattr(onednn, "enabled", lambda: True)
    engine = estimate_llc(model, nn.MSELoss(), (x, y), **kw).diagnostics.engine
    assert engine["gradient"] == "Linear stack, chain by chain, float32 products through oneDNN"
    assert engine["chain_blocks"] == 1  # 2 chains × 20k parameters: too small to split
    monkeypatch.setattr(onednn, "enabled", lambda: False)
    engine = estimate_llc(model, nn.MSELoss(), (x, y), **kw).diagnostics.engine
    assert engine["gradient"] == "Linear stack, batched over chains (bmm)"
    engine = estimate_llc(model, nn.MSELoss(), (x, y), fast_path=False, **kw).diagnostics.engine
    assert engine["gradient"] == "torch.func vmap"
