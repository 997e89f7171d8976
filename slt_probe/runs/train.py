"""One training run from a spec, with the λ̂ probe attached, written to a run directory.

Step t means "after t optimizer updates". Every ``eval_every`` steps, at every probe point and at
the last step the model is evaluated on the full train and test sets (one metrics.jsonl row);
at probe points the LLCProbe then estimates λ̂ (one llc.jsonl row) and a checkpoint is saved.

Resumability: the minibatch of step t is a pure function of (seed, t)
(:class:`slt_probe.runs.training.Batches`), so after loading the last checkpoint (model,
optimizer, RNG, step c) and dropping the log rows after c, training continues exactly as if
never interrupted. A row is always appended before the checkpoint of its step is written, so
rows ≤ c are complete.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable

import torch
from tqdm.auto import tqdm

from slt_probe.files import json_clean
from slt_probe.probe import LLCProbe, make_schedule, summarise_transitions, weight_norm
from slt_probe.runs.arch import ArchAllowList
from slt_probe.runs.groups_spec import make_data_groups, make_groups
from slt_probe.runs.posthoc import probe_estimator_kwargs
from slt_probe.runs.resume import rng_state, set_rng_state
from slt_probe.runs.rundir import RunDir
from slt_probe.runs.training import Training

#: The metrics every evaluation gives the probe (declared to it up front).
PROBE_METRICS = ("test_acc", "train_acc", "train_loss", "test_loss")
#: Rewrite summary.json ("partial") at most this often, besides at every checkpoint.
SUMMARY_INTERVAL_S = 10.0


def _empty_transitions() -> dict:
    return {
        "test_acc": None,
        "llc": None,
        "hessian_eff_dim": None,
        "alignment": {"llc": None, "hessian_eff_dim": None},
    }


def compute_transitions(metrics_rows: list[dict], llc_rows: list[dict]) -> dict:
    """``slt_probe.probe.transitions.summarise_transitions`` (empty if it fails)."""
    try:
        return summarise_transitions(metrics_rows, llc_rows)
    except Exception as exc:  # a transition detector bug must not lose the run's summary
        print(f"slt-probe: transition detection failed: {exc!r}", file=sys.stderr)
        return _empty_transitions()


class Trainer:
    """Owns the model, optimizer, probe and run directory of one run."""

    def __init__(
        self,
        config: dict,
        run_dir: RunDir,
        *,
        resume: bool = False,
        on_eval: Callable[[int, dict], None] | None = None,
        progress: bool = True,
        allowed: ArchAllowList | None = None,
    ):
        self.config, self.rd, self.on_eval, self.progress = config, run_dir, on_eval, progress
        self.train_cfg, self.probe_cfg = config["train"], config["probe"]
        if self.train_cfg["threads"]:
            torch.set_num_threads(self.train_cfg["threads"])
        self.training = t = Training(config, allowed)
        self.data, self.model, self.loss_fn, self.optimizer = (
            t.data,
            t.model,
            t.loss_fn,
            t.optimizer,
        )
        self.n_params = sum(p.numel() for p in self.model.parameters())
        self.total = self.train_cfg["steps"]
        self.probe = None  # made in run(), after llc.jsonl is truncated/cleared (it reads it)
        self.resume = resume
        self.step = 0
        self.wall_before = 0.0  # wall and probe seconds of earlier (killed) processes
        self.probe_before = 0.0
        self.probe_time = 0.0
        self.last_metrics: dict = {}
        self.last_llc: float | None = None

    # --- setup -------------------------------------------------------------------------------

    def _make_probe(self) -> LLCProbe:
        p = self.probe_cfg
        # the steps themselves, so that a log/linear schedule can start after step 0
        schedule = make_schedule(p["schedule"], p["num_points"], self.total, start=p["start"])
        return LLCProbe(
            self.loss_fn,
            (self.data.x_train, self.data.y_train),
            schedule=schedule,
            num_points=p["num_points"],
            total_steps=self.total,
            run_dir=self.rd.path,
            hessian=p["hessian"],
            hessian_kwargs=p["hessian_kwargs"] or None,
            metrics=PROBE_METRICS,
            lock=False,  # run_spec holds the run directory's lock
            groups=make_groups(p["groups"]),
            data_groups=make_data_groups(p["data_groups"], self.data),
            **probe_estimator_kwargs(p),
        )

    # --- checkpoints -------------------------------------------------------------------------

    def save_checkpoint(self) -> None:
        payload = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "step": self.step,
            "rng": rng_state(),
            # plain JSON types only, so torch.load(weights_only=True) accepts it
            "config": json.loads(json.dumps(json_clean(self.config))),
            "wall_time_s": self.wall_time(),
            "probe_time_s": self.probe_before + self.probe_time,
        }
        self.rd.save_checkpoint(self.step, payload)
        keep = self.train_cfg["keep_checkpoints"]
        if keep:
            self.rd.prune_checkpoints(keep)

    def restore(self) -> bool:
        """Load the newest checkpoint; False when there is none (start from scratch)."""
        ckpt = self.rd.load_latest_checkpoint()
        if ckpt is None:
            return False
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        set_rng_state(ckpt.get("rng", {}))
        self.step = int(ckpt["step"])
        self.wall_before = float(ckpt.get("wall_time_s", 0.0))
        self.probe_before = float(ckpt.get("probe_time_s", 0.0))
        self.rd.truncate(self.step)
        rows = self.rd.metrics_rows()
        self.last_metrics = rows[-1] if rows else {}
        llc = self.rd.llc_rows()
        self.last_llc = llc[-1].get("llc_mean") if llc else None
        return True

    # --- bookkeeping -------------------------------------------------------------------------

    def wall_time(self) -> float:
        return self.wall_before + (time.perf_counter() - self.t0)

    def summary(self, status: str, *, transitions: bool = True, report: str | None = None) -> dict:
        metrics_rows, llc_rows = self.rd.metrics_rows(), self.rd.llc_rows()
        last = metrics_rows[-1] if metrics_rows else {}
        wall = self.wall_time()
        probe_time = self.probe_before + self.probe_time
        out = {
            "name": self.config["name"],
            "status": status,
            "steps_done": self.step,
            "total_steps": self.total,
            "final": {
                "train_acc": last.get("train_acc"),
                "test_acc": last.get("test_acc"),
                "train_loss": last.get("train_loss"),
                "test_loss": last.get("test_loss"),
                "llc_mean": llc_rows[-1].get("llc_mean") if llc_rows else None,
                "weight_norm": last.get("weight_norm"),
            },
            "n_params": self.n_params,
            "seed": self.config["seed"],
            "versions": self.config["versions"],
            "wall_time_s": wall,
            "probe_time_s": probe_time,
            "probe_overhead_fraction": probe_time / wall if wall > 0 else None,
            "transitions": (
                compute_transitions(metrics_rows, llc_rows) if transitions else _empty_transitions()
            ),
            "report": report,
        }
        if self.config.get("truth"):
            out["truth"] = self.config["truth"]
        return out

    def write_partial(self, transitions: bool = True) -> None:
        self.rd.write_summary(self.summary("partial", transitions=transitions))
        self._last_summary = time.perf_counter()

    # --- the loop ----------------------------------------------------------------------------

    def evaluate_and_probe(self, probe_due: bool) -> None:
        self.model.eval()
        row = {
            "step": self.step,
            **self.training.evaluate(),
            "weight_norm": weight_norm(self.model),
            "time_s": self.wall_time(),
        }
        self.rd.append_metrics(row)
        self.last_metrics = row
        if probe_due:
            t = time.perf_counter()
            user = {k: row[k] for k in PROBE_METRICS}
            llc_row = self.probe.step(self.step, self.model, **user)
            self.probe_time += time.perf_counter() - t
            if llc_row is not None:
                self.last_llc = llc_row.get("llc_mean")
        self.model.train()

    def _postfix(self) -> dict:
        m = self.last_metrics
        out = {}
        for key, label in (("train_acc", "train"), ("test_acc", "test")):
            if m.get(key) is not None:
                out[label] = f"{m[key]:.3f}"
        if self.last_llc is not None and math.isfinite(self.last_llc):
            out["llc"] = f"{self.last_llc:.1f}"
        return out

    def run(self) -> dict:
        self.t0 = time.perf_counter()
        self._last_summary = 0.0
        restored = self.resume and self.restore()
        if not restored:
            self.rd.clear_logs()
            self.rd.write_config(self.config)
        self.rd.create()
        if self.probe_cfg["enabled"]:
            self.probe = self._make_probe()
        bar = tqdm(
            total=self.total,
            initial=self.step,
            disable=not self.progress,
            desc=self.config["name"],
            dynamic_ncols=True,
            mininterval=1.0,
        )
        try:
            if not restored:  # step 0: the initialisation
                self._at_eval_point(force=True)
            self.model.train()
            while self.step < self.total:
                self.training.update(self.step)
                self.step += 1
                bar.update(1)
                if self._at_eval_point():
                    bar.set_postfix(self._postfix(), refresh=False)
        except BaseException:
            # a pruned/failed/interrupted run stays consistent: status "partial"
            bar.close()
            try:
                self.write_partial(transitions=False)
            except Exception:  # pragma: no cover - never mask the original error
                pass
            raise
        bar.close()
        return self.summary("complete")

    def _at_eval_point(self, force: bool = False) -> bool:
        step = self.step
        probe_due = self.probe is not None and self.probe.due(step)
        is_eval = force or step % self.train_cfg["eval_every"] == 0 or step == self.total
        if not (is_eval or probe_due):
            return False
        self.evaluate_and_probe(probe_due)
        every = self.train_cfg["checkpoint_every"]
        if (
            step == 0
            or step == self.total
            or (probe_due and self.train_cfg["checkpoint_at_probe"])
            or (every and step % every == 0)
        ):
            self.save_checkpoint()
            self.write_partial()
        elif time.perf_counter() - self._last_summary > SUMMARY_INTERVAL_S:
            self.write_partial(transitions=False)
        if self.on_eval is not None:
            self.on_eval(step, dict(self.last_metrics))
        return True
