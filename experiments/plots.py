"""Plots of one run (`plot_run`) and of several runs side by side (`plot_comparison`).

The code lives in `experiments.plotting` (`run`, `evs`, `network`, `comparison`, `common`); this module keeps the
public names where callers import them.
"""

from __future__ import annotations

from experiments.plotting.common import DPI, FORMATS, _Clock, _mark_failed, _pyplot, formats
from experiments.plotting.comparison import COMPARISON_FILES, plot_comparison
from experiments.plotting.run import RUN_FILES, RUN_PLOTS, plot_run

__all__ = [
    "COMPARISON_FILES",
    "DPI",
    "FORMATS",
    "RUN_FILES",
    "RUN_PLOTS",
    "_Clock",
    "_mark_failed",
    "_pyplot",
    "formats",
    "plot_comparison",
    "plot_run",
]
