"""The reference engine: pandapower's own ``runpp`` on a private copy of the net, same interface as the fast one."""

from __future__ import annotations

import copy

import numpy as np
import pandapower as pp
from pandapower.auxiliary import pandapowerNet
from pandapower.pypower.idx_brch import PF, PT

from grids.powerflow.common import _CALLER_ELEMENTS, PowerFlowError, PowerFlowResult, _check_loads, _check_v0


class PandapowerPowerFlow:
    """Reference engine: same interface as :class:`FastPowerFlow`, calls ``pp.runpp`` on a private deep copy.

    The copy has ``net.load``/``net.sgen``/``net.storage`` switched off and one constant-power load per bus
    that carries the caller's arrays. ``pp.runpp`` is called with its defaults except the tolerance (converted
    from MVA to pandapower's per-unit criterion), ``max_iteration`` and ``trafo_loading``.
    A non-converged run returns ``converged=False`` with NaN results (pandapower provides none).
    """

    def __init__(
        self, net: pandapowerNet, *, tol_mva: float = 1e-9, max_iter: int = 30, trafo_loading: str = "current"
    ) -> None:
        """Prepare the private copy.

        Args:
            net: pandapower network (not modified).
            tol_mva: convergence tolerance on the largest bus power mismatch [MVA].
            max_iter: maximum number of Newton–Raphson iterations.
            trafo_loading: ``"current"`` or ``"power"``, passed to ``pp.runpp``.
        """
        if not (tol_mva > 0 and np.isfinite(tol_mva)):
            raise ValueError(f"tol_mva must be a positive finite number, got {tol_mva!r}")
        if int(max_iter) < 1:
            raise ValueError(f"max_iter must be >= 1, got {max_iter!r}")
        if trafo_loading not in ("current", "power"):
            raise ValueError(f"trafo_loading must be 'current' or 'power', got {trafo_loading!r}")
        net_c = copy.deepcopy(net)
        for element in _CALLER_ELEMENTS:
            if element in net_c and len(net_c[element]):
                net_c[element]["in_service"] = False
        buses = net_c.bus.index.to_numpy()
        self._load_idx = pp.create_loads(
            net_c, buses=buses, p_mw=np.zeros(len(buses)), q_mvar=np.zeros(len(buses)), name="evgrid_net_load"
        )
        self._net = net_c
        self._n_bus = len(buses)
        self._runpp_kw = dict(
            tolerance_mva=tol_mva / float(net_c.sn_mva), max_iteration=int(max_iter), trafo_loading=trafo_loading
        )

    @property
    def n_bus(self) -> int:
        """Number of buses of the net (length of the load arrays)."""
        return self._n_bus

    def reset_warm_start(self) -> None:
        """No-op (every run starts from pandapower's ``init="auto"``); present for interface symmetry."""

    def solve(
        self,
        p_load_mw: np.ndarray,
        q_load_mvar: np.ndarray,
        *,
        v0: np.ndarray | None = None,
        init: str | None = None,
    ) -> PowerFlowResult:
        """Solve one load snapshot with ``pp.runpp``.

        Args:
            p_load_mw: net active load per bus in ``net.bus.index`` order [MW].
            q_load_mvar: net reactive load per bus [Mvar].
            v0: optional complex start voltages [pu] (``init_vm_pu``/``init_va_degree``); default: pandapower's
                ``init="auto"``.
            init: pandapower's ``init`` (``"dc"``, ``"flat"``, ...) when ``v0`` is not given.

        Returns:
            The power-flow result.

        Raises:
            PowerFlowError: wrong shape or non-finite values in the inputs.
        """
        p, q = _check_loads(p_load_mw, q_load_mvar, self._n_bus)
        net = self._net
        net.load.loc[self._load_idx, "p_mw"] = p
        net.load.loc[self._load_idx, "q_mvar"] = q
        kw = dict(self._runpp_kw)
        if v0 is not None:
            vin = _check_v0(v0, self._n_bus, self._net.bus["in_service"].to_numpy(bool))
            vin = np.where(np.isfinite(vin) & (vin != 0), vin, 1.0 + 0.0j)
            kw.update(init_vm_pu=np.abs(vin), init_va_degree=np.angle(vin, deg=True))
        elif init is not None:
            kw["init"] = init
        try:
            pp.runpp(net, **kw)
            converged = True
        except pp.LoadflowNotConverged:
            converged = False
        n_line, n_trafo = len(net.line), len(net.trafo)
        if not converged:
            nan = np.nan
            return PowerFlowResult(
                False,
                int(net._ppc.get("iterations", 0) or 0) if net._ppc else 0,
                np.full(self._n_bus, nan),
                np.full(self._n_bus, nan),
                np.full(n_line, nan),
                np.full(n_line, nan),
                np.full(n_line, nan),
                np.full(n_line, nan),
                np.full(n_trafo, nan),
                nan,
                nan,
                nan,
                "failed",
            )
        branch = net._ppc["branch"]
        losses = float(np.nansum(np.real(branch[:, PF]) + np.real(branch[:, PT])))
        return PowerFlowResult(
            converged=True,
            iterations=int(net._ppc.get("iterations", 0)),
            vm_pu=net.res_bus["vm_pu"].to_numpy(float).copy(),
            va_degree=net.res_bus["va_degree"].to_numpy(float).copy(),
            line_loading_percent=net.res_line["loading_percent"].to_numpy(float).copy(),
            line_p_from_mw=net.res_line["p_from_mw"].to_numpy(float).copy(),
            line_q_from_mvar=net.res_line["q_from_mvar"].to_numpy(float).copy(),
            line_pl_mw=net.res_line["pl_mw"].to_numpy(float).copy(),
            trafo_loading_percent=(net.res_trafo["loading_percent"].to_numpy(float).copy() if n_trafo else np.zeros(0)),
            losses_mw=losses,
            ext_grid_p_mw=float(net.res_ext_grid["p_mw"].sum()),
            ext_grid_q_mvar=float(net.res_ext_grid["q_mvar"].sum()),
            method="pandapower",
        )

    def solve_batch(self, p_load_mw: np.ndarray, q_load_mvar: np.ndarray) -> list[PowerFlowResult]:
        """Solve a sequence of snapshots (shape (n_snap, n_bus)) one by one."""
        P = np.asarray(p_load_mw, dtype=np.float64)
        Q = np.asarray(q_load_mvar, dtype=np.float64)
        for name, a in (("p_load_mw", P), ("q_load_mvar", Q)):
            if a.ndim != 2 or a.shape[1] != self._n_bus:
                raise PowerFlowError(f"{name} must have shape (n_snap, {self._n_bus}), got {a.shape}")
        return [self.solve(P[k], Q[k]) for k in range(P.shape[0])]
