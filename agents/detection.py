"""DSO-side plausibility checks on station reports, with a CUSUM per station, and mitigation.

Each step, a station's report for that step (the EV load it says is committed there) is compared with the
power the DSO then meters at the station. The residual ``r = (reported − metered) / scale`` feeds a one-sided
CUSUM ``S ← max(0, S + r − k)``; ``S > h`` raises an alarm and the station is flagged for the rest of the run.
A report above the station's physical limit (its cap, or ports × the largest charger in the fleet) is flagged at
once. Mitigation ``"forecast"``: a flagged station's reports are replaced by the aggregator's own schedule for it.
Only inflation is tested (one-sided): under-reporting lowers prices, which is not the threat studied here.
"""

from __future__ import annotations

import numpy as np

from sim.scenario import DetectionSpec


class ReportMonitor:
    """Screens station reports before the market sees them (see module docstring)."""

    def __init__(self, spec: DetectionSpec, ports: np.ndarray, cap_kw: np.ndarray, max_charger_kw: float) -> None:
        self.spec = spec
        self.limit_kw = np.minimum(cap_kw, ports * max_charger_kw)
        n = len(ports)
        self.cusum = np.zeros(n)
        self.flagged = np.zeros(n, bool)
        self.flag_step = np.full(n, -1)
        self._reported_now: dict[int, np.ndarray] = {}

    def screen(self, reports: np.ndarray, own_kw: np.ndarray, k: int) -> np.ndarray:
        """Reports the market may use at step ``k``: flag implausible ones, replace flagged stations' rows."""
        self._reported_now[k] = reports[:, 0].copy() if reports.shape[1] else np.zeros(len(reports))
        over = np.any(reports > self.limit_kw[:, None] + 1e-6, axis=1)
        self._flag(over, k)
        if self.spec.mitigation == "forecast" and self.flagged.any():
            reports = reports.copy()
            reports[self.flagged] = own_kw[self.flagged]
        return reports

    def meter(self, station_kw: np.ndarray, k: int) -> None:
        """Compare step ``k``'s reports with the metered station power and update the CUSUMs."""
        reported = self._reported_now.pop(k, None)
        if reported is None:
            return
        r = (reported - station_kw) / self.spec.scale_kw
        self.cusum = np.maximum(0.0, self.cusum + r - self.spec.cusum_k)
        self._flag(self.cusum > self.spec.cusum_h, k)

    def _flag(self, mask: np.ndarray, k: int) -> None:
        new = mask & ~self.flagged
        self.flag_step[new] = k
        self.flagged |= mask
