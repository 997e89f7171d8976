"""The kernels sample the right stationary distribution on a Gaussian target, and the driver
reports divergence per chain instead of averaging it away."""

import math
from dataclasses import replace
from threading import Lock

import numpy as np
import pytest
import torch
from torch import nn

from slt_probe.sampling.driver import NoiseStream, run_chains
from slt_probe.sampling.functional import FlatModel
from slt_probe.sampling.kernel import Kernel, Potential, standard_normal
from slt_probe.sampling.kernels import KERNELS, kernel_options, make_kernel
from slt_probe.sampling.sgld import SGLD


def _gaussian_chain(sampler, eps, a, steps=6000, chains=64, grad_noise=0.0, tell=False, **opts):
    """Sample U(w) = a/2·‖w‖² (nβ = a, L = ‖w‖²/2, γ = 0) and return the draws' variance.

    The noise comes as the driver gives it (Leimkuhler–Matthews pairs when the kernel asks).
    ``grad_noise``: variance of a white noise added to ∇L (what a minibatch gradient brings),
    told to the kernel as ``gradient_noise_var`` when ``tell``."""
    d = 4
    var = torch.full((d,), grad_noise) if tell else None
    potential = Potential(nbeta=a, localization=0.0, center=torch.zeros(d), gradient_noise_var=var)
    kernel = make_kernel(sampler, **opts)
    gen = torch.Generator().manual_seed(0)
    lm = kernel.leimkuhler_matthews
    stream = NoiseStream((chains, d), 1, device="cpu", dtype=torch.float32, leimkuhler_matthews=lm)
    state = kernel.init(torch.zeros(chains, d), potential, eps)
    draws = []
    for t in range(steps):
        g = state.position.clone()  # ∇L = w
        if grad_noise:
            g += math.sqrt(grad_noise) * standard_normal(g, gen)
        state = kernel.step(state, g, stream.next())
        if t >= steps // 2:
            draws.append(state.position.clone())
    return torch.stack(draws).var().item()


def test_euler_maruyama_sgld_stationary_variance_matches_discretisation_formula():
    a, eps = 100.0, 0.01  # ε·a = 1: variance 1/(a(1 − εa/4)) = 1/75
    var = _gaussian_chain("sgld", eps, a, noise="independent")
    assert var == pytest.approx(1.0 / (a * (1 - eps * a / 4)), rel=0.05)


@pytest.mark.parametrize("eps_a", [1.0, 2.0])
def test_leimkuhler_matthews_sgld_is_exact_on_a_gaussian(eps_a):
    # Euler–Maruyama would give +33 % at ε·a = 1 and +100 % at ε·a = 2
    a = 100.0
    var = _gaussian_chain("sgld", eps_a / a, a)
    assert var == pytest.approx(1.0 / a, rel=0.05)


def test_minibatch_noise_correction_restores_the_target_variance():
    # White gradient noise of variance v adds (ε/2)²·nβ²·v per step: here f = (ε/4)·nβ²·v is half
    # the injected ε. Exact stationary variances (ε·a = 0.2, q = 1 − εa/4):
    # Euler–Maruyama (1 + f)/(a·q) uncorrected, 1/(a·q) corrected; Leimkuhler–Matthews corrected
    # (1 − f + f/q)/a, the second-order remainder of the correction.
    a, eps, f = 100.0, 0.002, 0.5
    v, q = f / (eps / 4 * a**2), 1 - eps * a / 4
    hot = _gaussian_chain("sgld", eps, a, grad_noise=v, noise="independent")
    assert hot == pytest.approx((1 + f) / (a * q), rel=0.05)
    euler = _gaussian_chain("sgld", eps, a, grad_noise=v, tell=True, noise="independent")
    assert euler == pytest.approx(1 / (a * q), rel=0.05)
    lm = _gaussian_chain("sgld", eps, a, grad_noise=v, tell=True)
    assert lm == pytest.approx((1 - f + f / q) / a, rel=0.05)
    potential = Potential(a, 0.0, torch.zeros(4), gradient_noise_var=torch.full((4,), v))
    assert make_kernel("sgld").minibatch_noise(potential, eps)["mean_fraction"] == pytest.approx(f)
    too_noisy = replace(potential, gradient_noise_var=torch.tensor([v, 3 * v, 0.0, 0.0]))
    kernel = make_kernel("sgld")  # f = 1.5 > 1 in one coordinate: noise there is 0
    assert kernel.minibatch_noise(too_noisy, eps)["clamped_coordinates"] == 1
    state = kernel.init(torch.zeros(2, 4), too_noisy, eps)
    assert state.noise_scale.tolist() == pytest.approx([math.sqrt(0.5), 0.0, 1.0, 1.0])
    off = make_kernel("sgld", minibatch_correction=False)
    assert off.init(torch.zeros(2, 4), too_noisy, eps).noise_scale is None


def test_euler_maruyama_sgld_small_step_reaches_exact_variance():
    a, eps = 10.0, 0.002
    var = _gaussian_chain("sgld", eps, a, noise="independent")
    assert var == pytest.approx(1.0 / a, rel=0.05)


def test_sgnht_samples_the_target_variance():
    a, h = 10.0, 0.03
    var = _gaussian_chain("sgnht", h, a, steps=8000, diffusion=0.5)
    assert var == pytest.approx(1.0 / a, rel=0.1)


@pytest.mark.parametrize("h2a", [1.0, 2.0])
def test_baoab_positions_are_exact_on_a_gaussian(h2a):
    # BAOAB's configurational distribution is exact for quadratic U at every stable h (h²a < 4)
    a = 100.0
    var = _gaussian_chain("baoab", math.sqrt(h2a / a), a, friction=5.0)
    assert var == pytest.approx(1.0 / a, rel=0.05)


def _baoab_exact_variance(a, h, g, v, sigma):
    """Stationary Var(w) of BAOAB on U = a/2·w² (nβ = a) with white gradient noise of variance
    v and O-step noise scale σ: the recursion is linear in (w, p), so the covariance solves a
    discrete Lyapunov equation."""
    from scipy.linalg import solve_discrete_lyapunov

    c = math.exp(-g * h)
    s = math.sqrt(1 - c * c) * sigma
    kick = np.array([[1.0, 0.0], [-h * a, 1.0]])  # p ← p − h·a·(w + δ)
    drift = np.array([[1.0, h / 2], [0.0, 1.0]])
    damp = np.array([[1.0, 0.0], [0.0, c]])
    m = drift @ damp @ drift @ kick
    noise = np.column_stack(
        [drift @ damp @ drift @ np.array([0.0, -h * a]), drift @ np.array([0.0, s])]
    )
    cov = solve_discrete_lyapunov(m, noise @ np.diag([v, 1.0]) @ noise.T)
    return float(cov[0, 0])


def test_baoab_minibatch_noise_correction_removes_most_of_the_heating():
    # the kick h·nβ·∇L_m brings h²·nβ²·v into p each step; here 40 % of the O step's 1 − c²
    a, h, g = 100.0, 0.05, 5.0
    c2 = math.exp(-2 * g * h)
    v = 0.4 * (1 - c2) / (h * h * a * a)
    hot = _gaussian_chain("baoab", h, a, grad_noise=v, friction=g)
    corrected = _gaussian_chain("baoab", h, a, grad_noise=v, tell=True, friction=g)
    exact_hot = _baoab_exact_variance(a, h, g, v, 1.0)
    exact_corrected = _baoab_exact_variance(a, h, g, v, math.sqrt(0.6))
    assert hot == pytest.approx(exact_hot, rel=0.05)
    assert corrected == pytest.approx(exact_corrected, rel=0.05)
    assert exact_hot * a > 1.3  # 40 % more heat, uncorrected
    assert abs(exact_corrected * a - 1) < 0.25 * abs(exact_hot * a - 1)
    assert _baoab_exact_variance(a, h, g, 0.0, 1.0) == pytest.approx(1 / a, rel=1e-9)
    potential = Potential(a, 0.0, torch.zeros(4), gradient_noise_var=torch.full((4,), v))
    report = make_kernel("baoab", friction=g).minibatch_noise(potential, h)
    assert report["mean_fraction"] == pytest.approx(0.4)


def test_baoab_friction_defaults_to_critical_damping_of_the_localisation():
    kernel = make_kernel("baoab")
    assert kernel.friction_for(Potential(1.0, 4.0, torch.zeros(2))) == pytest.approx(4.0)
    assert kernel.friction_for(Potential(1.0, 0.0, torch.zeros(2))) == pytest.approx(0.2)
    with pytest.raises(ValueError, match="BAOAB friction must be a positive number"):
        make_kernel("baoab", friction=-1.0)


def test_rmsprop_sgld_samples_the_target_variance():
    a = 10.0
    var = _gaussian_chain("rmsprop_sgld", 0.005, a, steps=8000, delta=0.1)
    assert var == pytest.approx(1.0 / a, rel=0.1)


def test_rmsprop_sgld_leimkuhler_matthews_noise_removes_the_discretisation_bias():
    # at equilibrium V ≈ a (|∇U|² = a²·Var w), so G ≈ 1/(√a + δ) ≈ 0.30 and ε·G·a ≈ 0.9:
    # Euler–Maruyama's variance is 1/(a(1 − εGa/4)), about +29 %
    a, eps = 10.0, 0.3
    euler = _gaussian_chain("rmsprop_sgld", eps, a, steps=8000, delta=0.1, noise="independent")
    lm = _gaussian_chain("rmsprop_sgld", eps, a, steps=8000, delta=0.1)
    assert euler * a > 1.15
    assert lm == pytest.approx(1.0 / a, rel=0.05)


def test_rmsprop_sgld_minibatch_noise_correction_restores_the_target_variance():
    # gradient noise v = 0.5 with nβ = a = 10: V ≈ a + nβ²·v = 60, G ≈ 0.127, and the noise
    # the gradient brings is (ε/4)·G·nβ²·v ≈ 16 % of the injected ε·G
    a, eps, v = 10.0, 0.1, 0.5
    opts = dict(steps=8000, delta=0.1, grad_noise=v)
    hot = _gaussian_chain("rmsprop_sgld", eps, a, **opts)
    corrected = _gaussian_chain("rmsprop_sgld", eps, a, tell=True, **opts)
    assert hot * a > 1.1
    assert corrected == pytest.approx(1.0 / a, rel=0.05)
    potential = Potential(a, 0.0, torch.zeros(3), gradient_noise_var=torch.tensor([v, v, 0]))
    report = make_kernel("rmsprop_sgld", delta=0.1).minibatch_noise(potential, eps)
    at_w_star = (eps / 4) * a**2 * v / (a * math.sqrt(v) + 0.1)  # at G = 1/(nβ√v + δ)
    assert report["mean_fraction"] == pytest.approx(2 * at_w_star / 3)
    assert report["clamped_coordinates"] == 0
    with pytest.raises(ValueError, match="RMSProp-SGLD noise must be one of"):
        make_kernel("rmsprop_sgld", noise="euler")


def test_rmsprop_sgld_holds_its_preconditioner_after_the_burnin():
    potential = Potential(1.0, 0.0, torch.zeros(3))
    for adapt_in_draws, held in ((False, True), (True, False)):
        kernel = make_kernel("rmsprop_sgld", adapt_in_draws=adapt_in_draws)
        state = kernel.init(torch.zeros(2, 3), potential, 0.01)
        for g in (1.0, 2.0):
            state = kernel.step(state, torch.full((2, 3), g), torch.zeros(2, 3))
        state = kernel.end_burnin(state)  # the burn-in's end lives in the state
        assert state.adapting == adapt_in_draws
        before = state.second_moment.clone()
        state = kernel.step(state, torch.full((2, 3), 5.0), torch.zeros(2, 3))
        assert torch.equal(state.second_moment, before) == held
        fresh = kernel.init(torch.zeros(2, 3), potential, 0.01)
        assert fresh.second_moment is None and fresh.adapting


def test_driver_ends_the_burnin_at_its_step_between_chunks():
    class Counting(SGLD):
        def __init__(self):
            super().__init__()
            self.steps, self.ended_at = 0, []

        def step(self, state, grad_loss, noise):
            self.steps += 1
            return super().step(state, grad_loss, noise)

        def end_burnin(self, state):
            self.ended_at.append(self.steps)
            return state

    flat = FlatModel(nn.Linear(2, 1), lambda out, y: ((out - y) ** 2).mean())
    x, y = torch.randn(64, 2), torch.randn(64, 1)
    potential = Potential(nbeta=10.0, localization=1.0, center=flat.w_star)
    for burnin, ended in ((30, [30]), (0, []), (60, [])):
        kernel = Counting()
        gen = torch.Generator().manual_seed(0)
        kw = dict(num_chains=2, num_steps=60 if burnin else 40, batch_size=16, generator=gen)
        run_chains(kernel, potential, 1e-3, flat, x, y, burnin_steps=burnin, **kw)
        assert kernel.ended_at == ended and kernel.steps == kw["num_steps"]


@pytest.mark.parametrize("bad", [0.0, -1e-3, float("nan"), float("inf"), True])
def test_non_positive_step_size_is_refused(bad):
    flat = FlatModel(nn.Linear(2, 1), lambda out, y: ((out - y) ** 2).mean())
    potential = Potential(nbeta=1.0, localization=0.0, center=flat.w_star)
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(8, 2), torch.randn(8, 1)
    with pytest.raises(ValueError, match="step_size must be a positive finite number"):
        run_chains(
            make_kernel("sgld"),
            potential,
            bad,
            flat,
            x,
            y,
            num_chains=1,
            num_steps=2,
            batch_size=8,
            generator=gen,
        )


def test_unknown_sampler_and_options_are_named():
    with pytest.raises(ValueError, match="sampler must be one of"):
        make_kernel("hmc")
    with pytest.raises(ValueError, match=r"\['alfa'\] are not options of 'rmsprop_sgld'"):
        make_kernel("rmsprop_sgld", alfa=0.9)
    assert set(kernel_options("sgld")) == {"noise", "minibatch_correction"}


class Quartic(nn.Module):
    """f(x) = w·x with loss (w·x)⁴ – curvature grows as w², so a chain started far out is unstable."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return self.w * x


def _sample(flat, x, y, sampler="sgld", *, step_size, nbeta, localization, seed=0, **kwargs):
    """``run_chains`` of ``sampler`` around the model's own w*, minibatches seeded by ``seed``."""
    potential = Potential(nbeta=nbeta, localization=localization, center=flat.w_star)
    return run_chains(
        make_kernel(sampler),
        potential,
        step_size,
        flat,
        x,
        y,
        generator=torch.Generator().manual_seed(seed),
        **kwargs,
    )


def test_driver_reports_the_diverging_chain_only():
    model = Quartic()
    flat = FlatModel(model, lambda out, y: (out**4).mean())
    x = torch.ones(16, 1)
    y = torch.zeros(16, 1)
    init = torch.tensor([[0.0], [0.1], [30.0], [-0.1]])  # chain 2 sits where 4·nβ·12w² ≫ 4/ε
    trace = _sample(
        flat,
        x,
        y,
        step_size=1e-3,
        nbeta=10.0,
        localization=0.0,
        num_chains=4,
        num_steps=100,
        batch_size=16,
        init_position=init,
        divergence_threshold=1e6,
    )
    assert trace.diverged_at.tolist()[2] >= 0
    assert [trace.diverged_at[i].item() for i in (0, 1, 3)] == [-1, -1, -1]
    assert torch.isfinite(trace.losses[[0, 1, 3]]).all()
    assert torch.isnan(trace.losses[2, -1])
    assert math.isfinite(float(trace.final_position[2]))


def test_noise_stream_depends_on_seed_and_shape_only():
    from slt_probe.sampling.driver import NoiseStream

    shape = (4, 5000)
    whole = NoiseStream(shape, 7, device="cpu", dtype=torch.float32, split=True)
    blocks = NoiseStream(shape, 7, device="cpu", dtype=torch.float32, split=True)
    for _ in range(2):  # drawing by blocks of chains gives the numbers of one draw
        first = whole.next().clone()
        by_blocks = torch.cat([blocks.draw(0, 1).clone(), blocks.draw(1, 4).clone()])
        assert torch.equal(first, by_blocks)
    assert not torch.equal(first, NoiseStream(shape, 8, device="cpu", dtype=torch.float32).next())
    # chains are independent standard normals
    assert abs(float(first.mean())) < 0.03 and float(first.std()) == pytest.approx(1.0, abs=0.02)
    assert abs(float(torch.corrcoef(first[:2])[0, 1])) < 0.05
    small = NoiseStream((4, 10), 7, device="cpu", dtype=torch.float64)
    assert len(small.generators) == 1 and small.next().dtype == torch.float64
    with pytest.raises(ValueError, match="without split draws all chains at once"):
        small.draw(0, 2)


def test_leimkuhler_matthews_noise_averages_consecutive_draws():
    shape = (4, 20000)
    iid = NoiseStream(shape, 3, device="cpu", dtype=torch.float64, split=True)
    lm = NoiseStream(
        shape, 3, device="cpu", dtype=torch.float64, split=True, leimkuhler_matthews=True
    )
    xi = [iid.next().clone() for _ in range(4)]  # the same generators: ξ_0 … ξ_3
    steps = [torch.cat([lm.draw(0, 1).clone(), lm.draw(1, 4).clone()]) for _ in range(3)]
    for t, z in enumerate(steps):
        assert torch.allclose(z, (xi[t] + xi[t + 1]) / 2)
    assert float(steps[0].var()) == pytest.approx(0.5, rel=0.02)  # cov(z_t, z_t+1) = 1/4
    assert float((steps[0] * steps[1]).mean()) == pytest.approx(0.25, abs=0.01)
    assert abs(float((steps[0] * steps[2]).mean())) < 0.01


def test_chain_groups_give_the_chains_of_one_block():
    """Splitting a large step over threads by chain changes nothing but the arithmetic order,
    and the thread count is restored afterwards."""
    from slt_probe.sampling import groups

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(64, 300), nn.ReLU(), nn.Linear(300, 256), nn.ReLU(), nn.Linear(256, 4)
    )
    flat = FlatModel(model, nn.MSELoss())
    assert groups.splittable(torch.device("cpu"), 3, flat.dim)  # 3 × 97.6k ≥ GROUPS_MIN
    x, y = torch.randn(512, 64), torch.randn(512, 4)
    traces = {}
    threads = torch.get_num_threads()
    try:
        for name, count in (("one block", 1), ("blocks", 2)):
            torch.set_num_threads(count)
            assert groups.num_groups(torch.device("cpu"), 3, flat.dim) == count
            for sampler in ("sgld", "sgnht", "rmsprop_sgld", "baoab"):
                traces[name, sampler] = _sample(
                    flat,
                    x,
                    y,
                    sampler,
                    step_size=1e-4,
                    nbeta=50.0,
                    localization=1.0,
                    num_chains=3,
                    num_steps=30,
                    batch_size=32,
                    paired_reference=True,
                )
                assert torch.get_num_threads() == count  # restored after the blocks
    finally:
        torch.set_num_threads(threads)
    assert groups.num_groups(torch.device("cpu"), 1, 10**6) == 1  # one chain: nothing to split
    assert groups.num_groups(torch.device("cpu"), 8, 100) == 1  # small: Python-bound, no threads
    for sampler in ("sgld", "sgnht", "rmsprop_sgld", "baoab"):
        one, split = traces["one block", sampler], traces["blocks", sampler]
        assert torch.allclose(one.losses, split.losses, rtol=1e-4)
        assert torch.allclose(one.final_position, split.final_position, rtol=1e-4, atol=1e-6)
        assert torch.equal(one.reference_losses, split.reference_losses)


def _paired_trace(loss_fn, per_example_available: bool):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 4))
    flat = FlatModel(model, loss_fn)
    x = torch.randn(64, 3)
    y = torch.randint(4, (64,))
    assert (flat.per_example_losses(flat.w_star, x, y) is not None) == per_example_available
    trace = _sample(
        flat,
        x,
        y,
        step_size=1e-3,
        nbeta=10.0,
        localization=1.0,
        seed=1,
        num_chains=3,
        num_steps=20,
        batch_size=8,
        shared_batch=False,
        paired_reference=True,
    )
    # replay the minibatches: the reference must be L_m(w*) on each chain's own batch
    gen = torch.Generator().manual_seed(1)
    torch.randint(2**62, (1,), generator=gen)  # the noise seed run_chains draws first
    expected = torch.empty(3, 20)
    for t in range(20):
        idx = torch.randint(64, (3, 8), generator=gen)
        for c in range(3):
            expected[c, t] = flat.loss(flat.w_star, x[idx[c]], y[idx[c]])
    assert torch.allclose(trace.reference_losses, expected, rtol=1e-5, atol=1e-6)


def test_paired_reference_from_per_example_losses_equals_the_forward_pass():
    _paired_trace(nn.CrossEntropyLoss(), per_example_available=True)


def test_class_weighted_loss_is_not_taken_for_a_mean_of_examples():
    weighted = nn.CrossEntropyLoss(weight=torch.tensor([1.0, 5.0, 0.2, 3.0]))
    _paired_trace(weighted, per_example_available=False)


def test_only_the_transform_free_gradient_runs_on_threads(monkeypatch):
    """torch.func transforms running on several threads at once corrupted each other's results
    (the vmap path on two blocks gave traces that differed from one block from step 1), so a
    model that needs vmap runs as one block; a Linear stack is split."""
    from models.transformer import Transformer
    from slt_probe.sampling import driver

    blocks = []

    class Recorder(driver.ChainGroups):
        def __init__(self, num_chains, groups):
            super().__init__(num_chains, groups)
            blocks.append(len(self.blocks))

    monkeypatch.setattr(driver, "ChainGroups", Recorder)
    torch.manual_seed(0)
    transformer = Transformer(vocab_size=12, num_classes=11, d_model=128, d_mlp=512).eval()
    mlp = nn.Sequential(
        nn.Linear(64, 300), nn.ReLU(), nn.Linear(300, 256), nn.ReLU(), nn.Linear(256, 11)
    )
    g = torch.Generator().manual_seed(0)
    tokens = torch.cat([torch.randint(11, (256, 2), generator=g), torch.full((256, 1), 11)], 1)
    labels = (tokens[:, 0] + tokens[:, 1]) % 11
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        for model, x in ((transformer, tokens), (mlp, torch.randn(256, 64, generator=g))):
            flat = FlatModel(model, nn.CrossEntropyLoss())
            assert driver.splittable(torch.device("cpu"), 4, flat.dim)
            trace = _sample(
                flat,
                x,
                labels,
                step_size=1e-5,
                nbeta=50.0,
                localization=1.0,
                num_chains=4,
                num_steps=5,
                batch_size=64,
            )
            assert torch.isfinite(trace.losses).all()
    finally:
        torch.set_num_threads(threads)
    assert blocks == [1, 2]


def test_chain_blocks_share_the_threads_out_and_give_them_back():
    from slt_probe.sampling.groups import ChainGroups

    threads = torch.get_num_threads()
    seen = {}
    try:
        torch.set_num_threads(4)
        runner = ChainGroups(num_chains=5, groups=2)
        assert runner.blocks == [(0, 2), (2, 5)]  # contiguous, near-equal blocks
        runner.run(lambda lo, hi: seen.__setitem__(lo, torch.get_num_threads()))
        runner.close()
        assert seen == {0: 2, 2: 2}  # 4 threads shared out over 2 blocks
        assert torch.get_num_threads() == 4
        with pytest.raises(RuntimeError, match="boom"):
            failing = ChainGroups(num_chains=2, groups=2)
            try:
                failing.run(
                    lambda lo, hi: (_ for _ in ()).throw(RuntimeError("boom")) if lo else None
                )
            finally:
                failing.close()
        assert torch.get_num_threads() == 4
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("name", sorted(KERNELS))
def test_every_kernel_keeps_the_contract(name):
    """One behavioural contract, every registered kernel: options round-trip through the
    registry; init/step keep shapes and step only the rows given; every hook answers; a reset
    puts dead chains back at w* with a finite state; the stiffness inverts the auto step rule;
    one step from w* with zero noise moves against the gradient."""
    kernel = make_kernel(name)
    assert isinstance(kernel, Kernel) and kernel.name == name
    assert set(kernel.options()) == set(kernel_options(name))
    assert make_kernel(name, **kernel.options()).options() == kernel.options()
    d, center = 5, torch.linspace(-1, 1, 5)
    potential = Potential(nbeta=10.0, localization=1.0, center=center)
    state = kernel.init(center.expand(4, d).clone(), potential, 1e-3)
    grad = torch.ones(4, d)
    # blocks of rows step on their own, as the driver's threads do, each writing its rows only;
    # every block's rows are taken before any block writes (the driver's rule: a field a kernel
    # creates on its first step must not appear, unfilled, to a block still starting)
    blocks = ((1, 3), (0, 1), (3, 4))
    parts = {lo: state.rows(lo, hi) for lo, hi in blocks}
    for lo, hi in blocks:
        untouched = state.position[hi:].clone()
        part = kernel.step(parts[lo], grad[lo:hi], torch.zeros(hi - lo, d))
        state.write_rows(part, lo, hi, Lock())
        assert state.position.shape == (4, d)
        assert torch.equal(state.position[hi:], untouched)
    assert (state.position < center).all()  # downhill along ∇L = 1
    state = kernel.end_burnin(state)
    state.position[2] = float("nan")
    state = kernel.reset(state, torch.tensor([False, False, True, False]), center)
    assert torch.equal(state.position[2], center)
    state = kernel.step(state, grad, torch.randn(4, d))
    assert torch.isfinite(state.position).all()
    assert isinstance(kernel.leimkuhler_matthews, bool)
    assert set(kernel.minibatch_noise(potential, 1e-3)) >= {"mean_fraction", "clamped_coordinates"}
    for a, accuracy in ((1e4, 0.1), (3.0, 0.5)):
        assert kernel.stiffness(kernel.auto_step_size(a, accuracy), a) == pytest.approx(accuracy)
    assert kernel.stiffness(1e-3, 4e3) > kernel.stiffness(1e-3, 1e3)  # stiffer where a is larger


def test_the_kernel_protocol_doctest_runs():
    import doctest

    from slt_probe.sampling import kernel as kernel_module

    assert doctest.testmod(kernel_module).failed == 0
