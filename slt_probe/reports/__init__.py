"""Standalone HTML reports (seaborn figures inline, Jinja2 with autoescape) for runs and studies."""

from slt_probe.reports.run_report import write_run_report
from slt_probe.reports.study_report import write_study_report

__all__ = ["write_run_report", "write_study_report"]
