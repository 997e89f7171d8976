"""``slt-probe bench integrations``: its page names the machine and the ratios; a tiny real run
(slow) measures the callback's cost against the probe's own time."""

import pytest

from slt_probe.bench import pages


def _payload():
    return {
        "steps": 400, "schedule": [0, 100, 200, 300, 400], "repeats": 3,
        "probe_options": {"num_chains": 2},
        "wall_s": {"loop": 2.0, "loop_probe": 12.0, "lightning": 3.0, "lightning_callback": 13.1},
        "probe_time_s": {"loop_probe": 10.0, "lightning_callback": 10.0},
        "loop_cost_over_probe_time": 1.0, "callback_cost_over_probe_time": 1.01,
        "callback_cost_over_loop_cost": 1.01,
    }  # fmt: skip


def test_integrations_page_names_cpu_and_ratios():
    text = pages.integrations_page(_payload(), "slt-probe bench integrations --markdown")
    assert f"| CPU | {pages.cpu_model()}" in text
    assert "| Lightning: (fit + callback − fit) / probe time | 1.01 |" in text
    assert "| Lightning fit + LLCCallback (submodule='net') | 13.1 | 10 |" in text
    assert "Small settings" not in text
    assert "Small settings" in pages.integrations_page(_payload(), "x", small=True)


@pytest.mark.slow
def test_tiny_integrations_benchmark_runs():
    pytest.importorskip("lightning")
    from slt_probe.bench.integrations import compare

    out = compare(steps=20, points=2, repeats=1, num_chains=2, num_draws=20, num_burnin=20,
                  hessian=False)  # fmt: skip
    assert out["schedule"] == [0, 20]
    assert out["probe_time_s"]["lightning_callback"] > 0
    assert 0.5 < out["callback_cost_over_probe_time"] < 2.0
