"""estimate_llc on bad input (issue 19's matrix, the estimator's rows): every case is a
ValueError or TypeError raised by slt_probe whose message names the argument or the problem,
before any sampling, and the model is left as it was."""

import math
import re

import pytest
import torch
from torch import nn

from slt_probe import estimate_llc


def half_sq(out, y):
    return 0.5 * ((out - y) ** 2).sum(-1).mean()


def _data(n=64, d=3, out=1):
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, d, generator=g), torch.randn(n, out, generator=g)


def _model():
    torch.manual_seed(0)
    return nn.Linear(3, 1)


def _nan_weight():
    m = _model()
    with torch.no_grad():
        m.weight[0, 0] = math.nan
    return m


def _frozen():
    m = _model()
    for p in m.parameters():
        p.requires_grad_(False)
    return m


X, Y = _data()
NUMERIC = [
    # (argument, bad value, exception type, text)
    ("num_chains", True, TypeError, "num_chains must be an integer, got True"),
    ("num_chains", 0, ValueError, "num_chains must be >= 1, got 0"),
    ("num_chains", 2.5, ValueError, "num_chains must be an integer, got 2.5"),
    ("num_draws", -1, ValueError, "num_draws must be >= 1, got -1"),
    ("num_burnin", math.nan, ValueError, "num_burnin must be an integer, got nan"),
    ("batch_size", 0, ValueError, "batch_size must be >= 1, got 0"),
    ("batch_size", False, TypeError, "batch_size must be an integer, got False"),
    ("seed", 1.5, ValueError, "seed must be an integer"),
    ("localization", math.nan, ValueError, "localization must be a finite number"),
    ("localization", -1.0, ValueError, "localization must be >= 0"),
    ("localization", math.inf, ValueError, "localization must be a finite number"),
    ("localization", True, TypeError, "localization must be a number, got True"),
    ("nbeta", math.inf, ValueError, "nbeta must be a finite number"),
    ("nbeta", 0.0, ValueError, "nbeta must be > 0"),
    ("nbeta", -5.0, ValueError, "nbeta must be > 0"),
    ("accuracy", 0.0, ValueError, "accuracy must be > 0"),
    ("accuracy", -0.1, ValueError, "accuracy must be > 0"),
    ("accuracy", math.nan, ValueError, "accuracy must be a finite number"),
    ("step_size", 0.0, ValueError, "step_size must be a positive finite number, got 0.0"),
    ("step_size", math.inf, ValueError, "step_size must be a positive finite number, got inf"),
    ("step_size", True, TypeError, "step_size must be a number or 'auto', got True"),
    ("step_size", "fast", ValueError, "step_size must be a positive number or 'auto'"),
    ("sampler", "nuts", ValueError, "sampler must be one of"),
    ("backend", "jax", ValueError, "backend must be one of"),
    ("extrapolate", [1.0], ValueError, "extrapolate must be true, false or a list of >= 2"),
    ("extrapolate", [1.0, -0.5], ValueError, "extrapolate[1] must be > 0"),
    ("paired", "yes", TypeError, "paired must be true or false"),
    ("minibatch_correction", 1, TypeError, "minibatch_correction must be true or false"),
    ("sampler_options", {"alfa": 0.5}, ValueError, "not options of 'sgld'"),
    ("sampler_options", {"noise": "euler"}, ValueError, "SGLD noise must be one of"),
    ("sampler_options", "noise", TypeError, "sampler_options must be a table"),
    ("target_rse", -0.1, ValueError, "target_rse must be > 0"),
    ("max_steps", 0, ValueError, "max_steps must be >= 1"),
]


@pytest.mark.parametrize("arg,value,exc,text", NUMERIC, ids=[f"{a}={v!r}" for a, v, *_ in NUMERIC])
def test_bad_argument_is_named(arg, value, exc, text):
    model = _model()
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(exc, match=_escape(text)):
        estimate_llc(model, half_sq, (X, Y), **{"num_draws": 5, "num_burnin": 0, arg: value})
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


DATA = [
    ("Y (n,) against an (n, 1) output", _model, (X, Y[:, 0]), ValueError, "data Y has shape (64,)"),
    ("integer X into a Linear", _model, (X.long(), Y), ValueError, "forward pass fails on data X"),
    ("NaN in X", _model, (torch.where(X > 1, math.nan, X), Y), ValueError, "data X contains NaN"),
    ("inf in Y", _model, (X, Y.clone().fill_(math.inf)), ValueError, "data Y contains NaN or inf"),
    ("empty data", _model, (X[:0], Y[:0]), ValueError, "data is empty"),
    ("mismatched lengths", _model, (X, Y[:10]), ValueError, "X has 64 examples but Y has 10"),
    ("not tensors", _model, "data.csv", TypeError, "data must be (X, Y)"),
    ("NaN weight", _nan_weight, (X, Y), ValueError, "parameter 'weight' contains NaN"),
    ("frozen model", _frozen, (X, Y), ValueError, "no trainable parameters"),
    ("not a module", lambda: lambda x: x, (X, Y), TypeError, "model must be a torch.nn.Module"),
    (
        "dropout in train mode",
        lambda: nn.Sequential(nn.Linear(3, 1), nn.Dropout(0.1)),
        (X, Y),
        ValueError,
        "is in train mode",
    ),
]


@pytest.mark.parametrize("name,make,data,exc,text", DATA, ids=[d[0] for d in DATA])
def test_bad_data_or_model_is_named(name, make, data, exc, text):
    with pytest.raises(exc, match=_escape(text)):
        estimate_llc(make(), half_sq, data, num_draws=5, num_burnin=0)


def test_non_scalar_and_nan_losses_are_named():
    with pytest.raises(ValueError, match="loss_fn must return a scalar"):
        estimate_llc(_model(), lambda o, y: (o - y) ** 2, (X, Y), num_draws=5)
    with pytest.raises(ValueError, match="the loss at w\\* is nan"):
        estimate_llc(_model(), lambda o, y: (o - y).sum() * math.nan, (X, Y), num_draws=5)
    with pytest.raises(TypeError, match="loss_fn must be callable"):
        estimate_llc(_model(), "mse", (X, Y), num_draws=5)


def test_minibatch_correction_given_twice_with_different_values():
    with pytest.raises(ValueError, match="minibatch_correction is given twice"):
        estimate_llc(_model(), half_sq, (X, Y), sampler_options={"minibatch_correction": False})


def _escape(text: str) -> str:
    return re.escape(text)
