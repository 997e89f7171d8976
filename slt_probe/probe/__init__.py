"""Track λ̂ during training: the probe, its schedules, transition detection, JSONL storage."""

from slt_probe.probe.probe import LLCProbe
from slt_probe.probe.schedules import make_schedule
from slt_probe.probe.transitions import Transition, detect_transition, summarise_transitions

__all__ = ["LLCProbe", "Transition", "detect_transition", "make_schedule", "summarise_transitions"]
