"""The run directory (the contract reports and studies read):

    runs/<name>/config.json            resolved spec + seed, versions, spec_path, name
    runs/<name>/metrics.jsonl          one row per evaluation step (append-only)
    runs/<name>/llc.jsonl              one row per probe point (written by LLCProbe)
    runs/<name>/llc_groups.jsonl       one row per (probe point, group): per-head/layer/class λ̂
    runs/<name>/checkpoints/step_00001234.pt
    runs/<name>/summary.json           "partial" while running, "complete" at the end
    runs/<name>/llc_posthoc.jsonl      rows of ``slt-probe llc`` (λ̂ again at the checkpoints)
    runs/<name>/.lock                  held (fcntl.flock) by the one process writing the folder

A run directory holds data only: JSON, JSON lines and ``torch.save`` checkpoints of tensors and
plain values, loaded with ``torch.load(..., weights_only=True)``. Nothing in it is executed or
imported; the model class named in config.json is built only if the user allows it
(:mod:`slt_probe.runs.arch`).

Every file is written so that a SIGKILL at any moment leaves it readable: JSON files and
checkpoints are written to a temporary name, fsynced and renamed over the old one (atomic on
POSIX); JSONL rows are single appended lines, flushed and fsynced (a torn last line is skipped
by ``read_jsonl``).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import torch

from slt_probe.files import (
    append_jsonl,
    atomic_write_bytes,
    json_clean,
    read_jsonl,
    truncate_jsonl,
    write_json,
)

CHECKPOINT_RE = re.compile(r"^step_(\d{8,})\.pt$")
LOCK_FILE = ".lock"


class RunDirError(RuntimeError):
    """A run directory cannot be used as asked (unreadable checkpoints or config.json, a failed
    checkpoint write); the message names the files and says what was left untouched."""


class RunDir:
    """Paths and atomic I/O of one run directory."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.config = self.path / "config.json"
        self.metrics = self.path / "metrics.jsonl"
        self.llc = self.path / "llc.jsonl"
        self.llc_groups = self.path / "llc_groups.jsonl"
        self.summary = self.path / "summary.json"
        self.checkpoints = self.path / "checkpoints"

    def is_started(self) -> bool:
        """Whether the folder holds anything but its lock file."""
        return self.path.is_dir() and any(p.name != LOCK_FILE for p in self.path.iterdir())

    def has_checkpoint(self) -> bool:
        """Whether any checkpoint file is there (readable or not). A run directory without one
        (a run killed before its step-0 checkpoint, e.g. during its step-0 probe) holds no work
        that a restart from step 0 would lose."""
        return bool(self.list_checkpoints())

    def create(self) -> None:
        self.checkpoints.mkdir(parents=True, exist_ok=True)
        # leftovers of a checkpoint write interrupted by a kill
        for tmp in self.checkpoints.glob(".step_*.tmp"):
            tmp.unlink(missing_ok=True)

    # JSON / JSONL
    def write_config(self, config: dict) -> None:
        write_json(self.config, config)

    def read_config(self) -> dict:
        """config.json as a dict; a RunDirError naming the file if it is missing or not a JSON
        object."""
        try:
            config = json.loads(self.config.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise RunDirError(f"{self.path} is not a run directory (no config.json)") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise RunDirError(f"{self.config} cannot be read: {exc}") from None
        if not isinstance(config, dict):
            raise RunDirError(f"{self.config} must hold a JSON object, got {type(config).__name__}")
        return config

    def write_summary(self, summary: dict) -> None:
        write_json(self.summary, summary)

    def read_summary(self) -> dict | None:
        if not self.summary.exists():
            return None
        return json.loads(self.summary.read_text(encoding="utf-8"))

    def append_metrics(self, row: dict) -> None:
        append_jsonl(self.metrics, json_clean(row))

    def metrics_rows(self) -> list[dict]:
        return list(read_jsonl(self.metrics)) if self.metrics.exists() else []

    def llc_rows(self) -> list[dict]:
        return list(read_jsonl(self.llc)) if self.llc.exists() else []

    def group_rows(self) -> list[dict]:
        return list(read_jsonl(self.llc_groups)) if self.llc_groups.exists() else []

    def truncate(self, max_step: int) -> None:
        """Drop metric and λ̂ rows after ``max_step`` (work lost with the process)."""
        for path in (self.metrics, self.llc, self.llc_groups):
            if path.exists():
                truncate_jsonl(path, max_step)

    def clear_logs(self) -> None:
        for path in (self.metrics, self.llc, self.llc_groups, self.summary):
            path.unlink(missing_ok=True)

    # checkpoints
    def checkpoint_path(self, step: int) -> Path:
        return self.checkpoints / f"step_{int(step):08d}.pt"

    def list_checkpoints(self) -> list[tuple[int, Path]]:
        if not self.checkpoints.is_dir():
            return []
        out = []
        for p in self.checkpoints.iterdir():
            m = CHECKPOINT_RE.match(p.name)
            if m:
                out.append((int(m.group(1)), p))
        return sorted(out)

    def save_checkpoint(self, step: int, payload: dict) -> Path:
        """Write the checkpoint of ``step`` atomically; a failed write (a full disk) raises a
        RunDirError and leaves the earlier checkpoints as they were."""
        path = self.checkpoint_path(step)
        try:
            atomic_write_bytes(path, lambda fh: torch.save(payload, fh))
        except (OSError, RuntimeError) as exc:  # torch.save wraps write errors in RuntimeError
            kept = [p.name for _, p in self.list_checkpoints() if p != path]
            raise RunDirError(
                f"cannot write checkpoint {path} ({exc}); is the disk full? The earlier "
                f"checkpoints are intact ({', '.join(kept) or 'none'}): free space and resume"
            ) from exc
        return path

    def load_latest_checkpoint(self) -> dict | None:
        """The newest checkpoint that loads (``weights_only=True``); None when there is none.

        An unreadable newer checkpoint is reported on stderr and the next older one is used;
        when every checkpoint is unreadable a RunDirError lists them, so that a resume never
        silently restarts from step 0 (which would clear the logs)."""
        failed = []
        for _step, path in reversed(self.list_checkpoints()):
            try:
                ckpt = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as exc:  # a truncated file, a disk error, a non-checkpoint
                failed.append(f"{path.name}: {type(exc).__name__}: {str(exc)[:200]}")
                continue
            for line in failed:
                print(f"slt-probe: unreadable checkpoint skipped ({line})", file=sys.stderr)
            return ckpt
        if failed:
            raise RunDirError(
                f"cannot resume {self.path}: none of its {len(failed)} checkpoint(s) could be "
                f"read ({'; '.join(failed)}). Nothing was changed. Restore them, or move "
                f"{self.checkpoints} away to restart from step 0."
            )
        return None

    def prune_checkpoints(self, keep: int, protect: set[int] = frozenset()) -> None:
        """Keep the newest ``keep`` checkpoints (0 = keep all) plus the steps in ``protect``."""
        if keep <= 0:
            return
        ckpts = self.list_checkpoints()
        for step, path in ckpts[:-keep]:
            if step not in protect:
                path.unlink(missing_ok=True)
