"""The noise-free truth of a simulated scan, for the report: a thin re-export of pipeline.recording.truth.

The functions live in :mod:`pipeline.recording.truth` (the 'neural-truth' target uses them too); here they raise
the report's :class:`~pipeline.report.stats.ReportInputError` instead of ``TruthError``, so the report's callers
catch one error family.
"""

from __future__ import annotations

import functools

from pipeline.recording import truth as _truth
from pipeline.recording.truth import SOURCE_PATTERN

from .stats import ReportInputError

__all__ = ["SOURCE_PATTERN", "parse_simulator_source", "simulator_truth"]


def _as_report_error(function):
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        except _truth.TruthError as err:
            raise ReportInputError(str(err)) from err
    return wrapper


parse_simulator_source = _as_report_error(_truth.parse_simulator_source)
simulator_truth = _as_report_error(_truth.simulator_truth)
