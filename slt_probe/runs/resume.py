"""What makes a run resumable: the random state a checkpoint carries, and the checks before a
run directory is (re)used.

A resumed run must continue the run its directory holds, so the resolved spec's run-defining
parts (:data:`RUN_DEFINING`) must equal config.json's, read back through the same validation
(defaults added since it was written are filled in, so an older run directory still compares
equal). A directory without a checkpoint holds no work (a run killed before its step-0
checkpoint, e.g. during its step-0 probe): ``resume`` restarts it from step 0.
"""

from __future__ import annotations

import random
from collections.abc import Mapping

import torch

from slt_probe.files import json_clean
from slt_probe.runs.rundir import RunDir, RunDirError
from slt_probe.runs.schema import SpecError
from slt_probe.runs.spec import validate

#: Keys of the resolved spec that must match when resuming (the rest is bookkeeping).
RUN_DEFINING = ("seed", "model", "data", "train", "probe")


def rng_state() -> dict:
    """torch's and Python's random state, in types ``torch.load(weights_only=True)`` accepts."""
    version, internal, gauss = random.getstate()
    return {"torch": torch.get_rng_state(), "python": [version, list(internal), gauss]}


def set_rng_state(state: Mapping) -> None:
    if "torch" in state:
        torch.set_rng_state(state["torch"])
    if "python" in state:
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))


def differences(a: Mapping, b: Mapping, prefix: str = "") -> list[str]:
    """``"key: a -> b"`` for every (nested) key whose values differ."""
    out = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, Mapping) and isinstance(vb, Mapping):
            out += differences(va, vb, f"{prefix}{k}.")
        elif va != vb:
            out.append(f"{prefix}{k}: {va!r} -> {vb!r}")
    return out


def _stored_spec(rd: RunDir) -> dict:
    stored = rd.read_config()
    raw = {k: stored[k] for k in (*RUN_DEFINING, "name") if k in stored}
    try:
        return {**stored, **validate(raw)}
    except SpecError as exc:
        raise RunDirError(
            f"cannot resume {rd.path}: its config.json is not a valid spec ({exc})"
        ) from None


def check_start(rd: RunDir, config: dict, resume: bool) -> None:
    """Raise unless ``config`` may be written to ``rd`` (call it holding ``rd``'s lock).

    Without ``resume`` the directory must be new or empty (FileExistsError). With it, a
    config.json there must be readable (RunDirError) and define the same run (SpecError listing
    the differences); ``config["versions"]`` then becomes the stored ones, which the numbers
    were computed with."""
    if not resume:
        if rd.is_started():
            raise FileExistsError(
                f"run directory {rd.path} already exists: pass --resume to continue it, or "
                "choose another --name/--out"
            )
        return
    if not rd.config.exists():
        return
    stored = _stored_spec(rd)
    diff = differences(
        {k: stored.get(k) for k in RUN_DEFINING}, json_clean({k: config[k] for k in RUN_DEFINING})
    )
    if diff:
        raise SpecError(
            f"cannot resume {rd.path}: the spec differs from its config.json ({'; '.join(diff)})"
        )
    config["versions"] = stored.get("versions", config["versions"])
