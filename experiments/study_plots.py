"""Plots of a stored study: Monte Carlo convergence, sweep responses, one-at-a-time tornados, two-parameter heatmaps.

The code lives in `experiments.plotting` (`study`, `study_factors`, `study_common`); this module keeps the public
names where callers import them.
"""

from __future__ import annotations

from experiments.plotting.study import plot_convergence, plot_response, plot_study
from experiments.plotting.study_common import (
    DEFAULT_HEADLINE,
    KPI_PREFIX,
    MAX_PANELS,
    PARAM_PREFIX,
    _fmt,
    _kpi_label,
    _param_label,
    _safe,
    _short,
)
from experiments.plotting.study_factors import plot_heatmap, plot_tornado

__all__ = [
    "DEFAULT_HEADLINE",
    "KPI_PREFIX",
    "MAX_PANELS",
    "PARAM_PREFIX",
    "_fmt",
    "_kpi_label",
    "_param_label",
    "_safe",
    "_short",
    "plot_convergence",
    "plot_heatmap",
    "plot_response",
    "plot_study",
    "plot_tornado",
]
