"""The DLN ladder (slt_probe.truth.ladder) and `slt-probe bench scale` (slt_probe.bench.scale)."""

from __future__ import annotations

import json

import pytest
import torch

from slt_probe.bench import scale
from slt_probe.cli import main
from slt_probe.truth.formulas import dln_llc, dln_num_params
from slt_probe.truth.ladder import (
    RANK_TOL,
    RUNGS,
    LadderShape,
    _curvature_bound,
    _NormBounds,
    ladder_case,
    ladder_cases,
    layer_spectra,
    moment_loss,
    second_moments,
)


def test_rungs_have_the_advertised_sizes_and_ranks():
    for rung, shapes in RUNGS.items():
        assert len(shapes) >= 2
        assert {len(s.widths) - 1 for s in shapes} <= {3, 4}
        for s in shapes:
            assert 0.7 * rung <= dln_num_params(s.widths) <= 1.3 * rung, s
            assert 1 <= s.r < min(s.widths), s
            assert dln_llc(s.widths, s.r)[0] < dln_num_params(s.widths) / 2  # singular


def test_moment_loss_is_the_full_batch_loss():
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(500, 4, generator=gen), torch.randn(500, 3, generator=gen)
    mats = [
        torch.randn(5, 4, generator=gen, dtype=torch.float64),
        torch.randn(3, 5, generator=gen, dtype=torch.float64),
    ]
    direct = 0.5 * ((x.double() @ mats[0].T @ mats[1].T - y.double()) ** 2).sum(1).mean()
    assert float(moment_loss(mats, second_moments(x, y, chunk=128))) == pytest.approx(
        float(direct), rel=1e-10
    )


def test_trained_case_sits_on_the_rank_r_stratum():
    shape = RUNGS[1_000][1]
    case = ladder_case(shape, n=20_000, seed=0)
    lam, mult = dln_llc(shape.widths, shape.r)
    assert (case.true_llc, case.multiplicity, case.d) == (lam, mult, shape.d)
    assert case.info["layer_ranks"] == [shape.r] * (len(shape.widths) - 1)
    # the untrained remainder is far below the posterior's scale and the rank cut
    assert case.info["residual_singular_value"] < 0.1 * case.info["posterior_scale"]
    assert case.info["residual_singular_value"] < RANK_TOL
    assert case.grad_norm < 1e-4  # float32 rounding of a float64 critical point
    assert case.data[0].dtype == torch.float32 and case.data[0].shape == (20_000, shape.widths[0])
    assert case.info["final_loss"] < case.info["initial_loss"]


def test_norm_bounds_stay_above_the_exact_norms_and_refresh_rarely():
    gen = torch.Generator().manual_seed(3)
    mats = [torch.randn(40, 30, generator=gen, dtype=torch.float64) for _ in range(3)]
    slack = 0.01
    bounds = _NormBounds(mats, slack=slack)
    bounds.current()
    assert bounds.refreshes == 3  # the first call computes every exact norm
    for _ in range(200):
        for w in mats:  # small steps, as in training near convergence
            w.add_(torch.randn(w.shape, generator=gen, dtype=torch.float64), alpha=1e-3)
        upper = bounds.current()
        exact = [float(torch.linalg.matrix_norm(w, 2)) for w in mats]
        for u, e in zip(upper, exact):
            # an upper bound, and within the slack: u ≤ ‖W₀‖ + 2‖W − W₀‖_F, ‖W₀‖ ≤ e/(1 − slack)
            assert e <= u <= e * (1 + 2 * slack / (1 - slack))
    # a refresh when the displacement reaches 1 % of a norm ≈ 12, i.e. after ≈ (0.12/0.035)² ≈ 12
    # of these steps: a few refreshes per layer, not one per step
    assert 3 * 5 < bounds.refreshes < 3 * 40


def test_curvature_bound_is_the_product_formula():
    # L = 3 layers of norms 1, 2, 3 and ‖Σ_xx‖ = 0.5: 2·0.5·(4·9 + 1·9 + 1·4)
    assert _curvature_bound([1.0, 2.0, 3.0], 0.5) == pytest.approx(49.0)


def test_layer_spectra_counts_ranks():
    a = torch.diag(torch.tensor([1.0, 0.5, 1e-3, 0.0]))
    out = layer_spectra([a])
    assert out["layer_ranks"] == [2] and out["residual_singular_value"] == pytest.approx(1e-3)


def test_bad_rung_and_shapes_are_named():
    with pytest.raises(ValueError, match="rung must be one of"):
        next(ladder_cases(500))
    with pytest.raises(ValueError, match="L >= 3 layers"):
        ladder_case(LadderShape((4, 3, 4), 1), n=100)
    with pytest.raises(ValueError, match="n \\(number of samples\\)"):
        ladder_case(RUNGS[1_000][0], n=5)


def test_bench_scale_writes_table_json_and_figure(tmp_path):
    rc = main(
        [
            "bench",
            "scale",
            "--rungs",
            "1000",
            "--cases",
            "1",
            "--n",
            "20000",
            "--num-burnin",
            "100",
            "--num-draws",
            "100",
            "--scale-out",
            str(tmp_path),
            "--markdown",
            str(tmp_path / "page.md"),
        ]
    )
    assert rc in (0, 1)  # 1: the short chains miss the criteria, reported not raised
    payload = json.loads((tmp_path / "scale.json").read_text())
    (row,) = payload["rows"]
    assert row["case"] == RUNGS[1_000][0].name and row["d"] == 1200 and row["n"] == 20000
    assert row["chain_steps_per_s"] > 0 and row["peak_rss_mib"] > 0 and 0 < row["peak_fraction"]
    assert row["ratio"] == pytest.approx(row["llc_hat"] / row["llc"])
    assert payload["rungs"][0]["cases"] == 1
    assert (tmp_path / "scale.png").stat().st_size > 1000
    assert "λ̂/λ − 1" in (tmp_path / "scale.md").read_text()
    assert "Generated by `slt-probe bench scale" in (tmp_path / "page.md").read_text()
    assert "](page.png)" in (tmp_path / "page.md").read_text()
    assert (tmp_path / "page.png").stat().st_size > 1000


def test_rung_summary_median_and_criteria():
    rows = [{"rung": 1000, "rel_error": e, "seconds": 1.0, "ok": True} for e in (0.01, -0.03, 0.2)]
    (s,) = scale.rung_summary(rows)
    assert s["median_abs_error"] == pytest.approx(0.03) and s["worst_abs_error"] == 0.2
    assert s["all_ok"] is True  # each row's own ok is what flags a miss; the median here passes
    rows[2]["ok"] = False
    assert scale.rung_summary(rows)[0]["all_ok"] is False


@pytest.mark.slow
@pytest.mark.parametrize("rung", [1_000, 10_000])
def test_ladder_rung_is_accurate(rung):
    """The issue's criterion on the 10³ and 10⁴ rungs with estimate_llc's defaults."""
    rows = scale.run_ladder([rung], progress=lambda s: None)
    for row in rows:
        assert abs(row["rel_error"]) <= scale.TOLERANCE, row
        assert row["r_hat"] <= 1.1 and not row["warnings"], row
        assert row["rel_stderr"] <= 0.03, row
    assert scale.rung_summary(rows)[0]["median_abs_error"] <= scale.TOLERANCE / 2


def test_validate_scale_is_bench_scale(tmp_path, monkeypatch):
    seen = {}

    def fake_ladder(error):
        def run_ladder(rungs, **kw):
            seen.update(rungs=rungs, **kw)
            row = {
                "rung": 1000,
                "case": "c",
                "d": 1000,
                "llc": 10.0,
                "stderr": 0.1,
                "llc_hat": 10 * (1 + error),
                "ratio": 1 + error,
                "rel_error": error,
                "warnings": [],
                "seconds": 1.0,
                "ok": True,
            }
            return [row]

        return run_ladder

    monkeypatch.setattr("slt_probe.bench.speed.matmul_peaks", lambda: {"peak": 1e9})
    argv = [
        "validate",
        "--scale",
        "--rungs",
        "1000",
        "--scale-out",
        str(tmp_path),
        "--num-draws",
        "7",
    ]
    monkeypatch.setattr(scale, "run_ladder", fake_ladder(0.02))
    assert main(argv) == 0
    assert seen["rungs"] == [1000] and seen["num_draws"] == 7 and seen["peak_flops"] == 1e9
    assert json.loads((tmp_path / "scale.json").read_text())["rows"][0]["case"] == "c"
    monkeypatch.setattr(scale, "run_ladder", fake_ladder(0.08))
    assert main(argv) == 1  # the rung's median error, 8 %, is above the 5 %
