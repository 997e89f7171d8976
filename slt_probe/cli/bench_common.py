"""Helpers every ``slt-probe bench`` command shares: the machine's description, printing and
writing a payload, the command line that produced a page."""

from __future__ import annotations

import json
import os
import platform
import shlex
from pathlib import Path

import pandas as pd
import torch

from slt_probe.bench import pages
from slt_probe.files import atomic_write_text


def _machine() -> dict:
    return {
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
        "cpu_model": pages.cpu_model(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }


def _emit(payload: dict, table, json_path: str | None) -> None:
    with pd.option_context("display.width", 200, "display.max_columns", 30):
        print(pd.DataFrame(table).round(3).to_string(index=False))
    summary = {k: v for k, v in payload.items() if k != "rows"}
    print(json.dumps(summary, indent=2, default=float))
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(json_path, json.dumps(payload, indent=2, default=float))
        print(f"wrote {json_path}")


def _command(args) -> str:
    return "slt-probe " + shlex.join(getattr(args, "argv", None) or ["bench", args.bench])
