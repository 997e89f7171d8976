"""Track λ̂ during training: the probe, its schedules and options, transition detection."""

from slt_probe.probe.options import check_estimator_options, probe_estimator_defaults
from slt_probe.probe.probe import LLCProbe, weight_norm
from slt_probe.probe.schedules import make_schedule
from slt_probe.probe.transitions import Transition, detect_transition, summarise_transitions

__all__ = [
    "LLCProbe",
    "Transition",
    "check_estimator_options",
    "detect_transition",
    "make_schedule",
    "probe_estimator_defaults",
    "summarise_transitions",
    "weight_norm",
]
