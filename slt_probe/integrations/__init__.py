"""The probe inside other people's training loops: PyTorch Lightning
(:mod:`slt_probe.integrations.lightning`), Hugging Face Transformers
(:mod:`slt_probe.integrations.transformers`), and the report-as-artifact step every probe with
``log_to`` sinks can end with (:func:`finish_probe`).

Importing this package needs neither Lightning nor Transformers: each is imported by its own
submodule (``pip install 'slt-probe[lightning]'`` / ``'slt-probe[transformers]'``).
"""

from slt_probe.integrations.common import finish_probe, write_probe_report

__all__ = ["finish_probe", "write_probe_report"]
