"""`slt-probe bench speed` end to end at toy size: every workload and column is there and the
figures are finite (no wall times are asserted)."""

import json
import math

from slt_probe.cli import main


def test_bench_speed_writes_every_row_and_ratio(tmp_path, capsys):
    run_dir = tmp_path / "grok"
    run_dir.mkdir()
    (run_dir / "summary.json").write_text(
        json.dumps(
            {"status": "complete", "wall_time_s": 200.0, "probe_time_s": 60.0,
             "probe_overhead_fraction": 0.3}
        )
    )  # fmt: skip
    out = tmp_path / "speed.json"
    argv = ["bench", "speed", "--chains", "1", "2", "--steps", "8", "--repeats", "2"]
    argv += ["--json", str(out)]
    assert main(argv + ["--probe-run", str(run_dir)]) == 0
    payload = json.loads(out.read_text())
    rows = payload["rows"]
    names = {r["workload"] for r in rows}
    assert len(names) == 3 and any("mlp" in n for n in names)
    assert sorted(r["chains"] for r in rows) == [1, 1, 1, 2, 2, 2]
    assert all(r["repeats"] == 2 for r in rows)  # medians of two interleaved runs
    for r in rows:
        keys = ("vmap", "vmap_corrected", "devinterp", "devinterp_loop", "vmap_vs_devinterp")
        keys += ("vmap_bf16",)
        for key in keys + ("devinterp_loop_bf16", "bf16_vmap_vs_devinterp_loop_bf16"):
            assert math.isfinite(r[key]) and r[key] > 0, (r["workload"], key)
        # Linear stacks (DLN, MLP) are compared with and without the hand-batched path
        assert ("vmap_generic" in r) == ("transformer" not in r["workload"])
    peaks = payload["matmul_gflops"]
    assert peaks["torch_mm"] > 0 and payload["matmul_peak_gflops"] == max(peaks.values())
    assert ("onednn" in peaks) == payload["onednn"]["enabled"] and payload["onednn"]["reason"]
    assert payload["probe_share"]["fraction"] == 0.3
    assert (
        payload["time_to_5pct_stderr"]["llc_stderr"] <= 0.05 * payload["time_to_5pct_stderr"]["llc"]
        or payload["time_to_5pct_stderr"]["draws"] >= 64_000
    )
    assert "probe share of the default grokking run" in capsys.readouterr().out


def test_bench_accuracy_over_seeds_and_in_lau_form(tmp_path, capsys, monkeypatch):
    from slt_probe.bench import accuracy
    from slt_probe.truth.cases import regular_case

    # two tiny regular cases per seed keep this fast; the real table is `bench accuracy`
    def tiny(quick=False, seed=0):
        return [regular_case(1, 1, n=500, seed=seed), regular_case(3, 1, n=500, seed=seed)], []

    monkeypatch.setattr(accuracy, "benchmark_cases", tiny)
    out = tmp_path / "acc.json"
    argv = ["bench", "accuracy", "--quick", "--seeds", "0", "1", "--json", str(out)]
    assert main(argv) == 0
    payload = json.loads(out.read_text())
    assert payload["seeds"] == [0, 1]
    assert [r["seed"] for r in payload["rows"]] == [0, 0, 1, 1]
    assert len(payload["per_seed"]) == 2 and len(payload["median_abs_rel_error_per_seed"]) == 2
    assert set(payload["order_preserved_seeds"]) <= {0, 1}
    assert payload["worst_abs_rel_error"] == max(abs(r["rel_error"]) for r in payload["rows"])
    assert "sampler_options" not in payload["estimator"]
    assert main(argv[:2] + ["--quick", "--lau-sgld", "--json", str(out)]) == 0
    lau = json.loads(out.read_text())
    assert lau["estimator"]["sampler_options"] == {"noise": "independent"}
    assert lau["estimator"]["minibatch_correction"] is False
    assert "seeds" not in lau and lau["seed"] == 0
    argv = ["bench", "accuracy", "--sampler", "rmsprop_sgld", "--num-chains", "2", "--num-burnin"]
    assert main(argv + ["300", "--num-draws", "200", "--json", str(out)]) == 0
    rms = json.loads(out.read_text())
    assert rms["estimator"] == {
        "sampler": "rmsprop_sgld",
        "num_chains": 2,
        "num_burnin": 300,
        "num_draws": 200,
    }
    assert all(abs(r["rel_error"]) < 0.25 for r in rms["rows"])
