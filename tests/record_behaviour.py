"""Record λ̂ per chain on every ``slt-probe bench accuracy`` case for three samplers and a few
estimator settings (fixed seeds, short chains), to check that a refactor preserves behaviour.

    python tests/record_behaviour.py        # rewrites tests/data/behaviour_record.json

The recording is what ``tests/test_behaviour_record.py`` compares against; re-record only when
a change of numbers is intended, and say so in the commit.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from slt_probe.bench.accuracy import benchmark_cases
from slt_probe.estimators.llc import estimate_llc

RECORD = Path(__file__).parent / "data" / "behaviour_record.json"
BUDGET = {"num_chains": 2, "num_burnin": 150, "num_draws": 150, "seed": 3}
#: (label, estimate_llc keywords): the three samplers, plus the paths that change the recipe
SETTINGS = [
    ("sgld", {"sampler": "sgld"}),
    ("sgnht", {"sampler": "sgnht"}),
    ("rmsprop_sgld", {"sampler": "rmsprop_sgld"}),
    ("sgld_extrapolate", {"sampler": "sgld", "extrapolate": True}),
    (
        "sgld_lau",
        {
            "sampler": "sgld",
            "sampler_options": {"noise": "independent"},
            "minibatch_correction": False,
            "paired": False,
            "batch_size": 64,
        },
    ),
]


def cases():
    criterion, extra = benchmark_cases(seed=0)
    return criterion + extra


def record_one(case, kwargs) -> dict:
    res = estimate_llc(case.model, case.loss_fn, case.data, **BUDGET, **kwargs)
    return {
        "llc_per_chain": [float(v) for v in res.llc_per_chain],
        "step_size": float(res.step_size),
    }


def main() -> None:
    out = {}
    for case in cases():
        for label, kwargs in SETTINGS:
            out[f"{case.name}|{label}"] = record_one(case, kwargs)
            print(case.name, label, out[f"{case.name}|{label}"], flush=True)
    RECORD.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {RECORD}", file=sys.stderr)


if __name__ == "__main__":
    main()
