"""Fast AC power flow compiled once from a pandapower network.

A simulation step loop must not call :func:`pandapower.runpp` (≈20 ms per call, mostly pandas bookkeeping).
:class:`FastPowerFlow` runs pandapower *once* at construction to obtain its internal matrices (``Ybus``, ``Yf``,
``Yt``, bus types, set-points) and then solves each load snapshot with a Newton–Raphson loop on plain numpy
arrays::

    pf = make_engine(net)                       # "fast" (default) or "pandapower" (reference)
    res = pf.solve(p_load_mw, q_load_mvar)      # arrays in net.bus.index order
    res.vm_pu, res.line_loading_percent, res.losses_mw

pandapower stays the model of record: :class:`PandapowerPowerFlow` has the same interface and calls ``pp.runpp``
on a private copy of the net; the tests check that both agree.

Input convention: ``p_load_mw[i]`` / ``q_load_mvar[i]`` is the TOTAL net load at the i-th bus of ``net.bus.index``
(positive = consumption, negative = net injection). Both engines ignore ``net.load``, ``net.sgen`` and
``net.storage`` (the caller supplies all of that through the arrays, see :func:`bus_net_load`). Everything else
pandapower puts into its internal model is honoured: ``net.ext_grid`` (slack: vm_pu, va_degree), ``net.gen``
(PV buses: p_mw and vm_pu set-points), lines, trafos, trafo3w, impedances, shunts, switches (bus fusion, open
line switches), wards (their constant PQ part is a fixed injection).

Limitations of the fast engine (documented deviations from a full ``runpp``):

* reactive-power limits of ``net.gen`` are not enforced (a gen stays a PV bus whatever its Q) – this is also
  pandapower's default (``enforce_q_lims=False``);
* no distributed slack, no voltage-dependent loads (the caller's loads are constant power), no controllers,
  no temperature-dependent line resistance; the network topology/parameters are frozen at construction
  (build a new engine after switching actions or tap changes).

Tolerance: ``tol_mva`` is a true power mismatch in MVA (``max |ΔS| * baseMVA``). Note that pandapower's own
``tolerance_mva`` is compared against the *per-unit* mismatch; the reference engine converts accordingly.
"""

from __future__ import annotations

from grids.powerflow.common import (
    ENGINES,
    METHODS,
    VM_PLAUSIBLE_PU,
    PowerFlowError,
    PowerFlowResult,
    bus_net_load,
)
from grids.powerflow.common import PANDAPOWER_KERNELS_CACHED as PANDAPOWER_KERNELS_CACHED
from grids.powerflow.common import _cache_pandapower_kernels as _cache_pandapower_kernels
from grids.powerflow.common import compile_run as compile_run
from grids.powerflow.factory import make_engine
from grids.powerflow.fast import FastPowerFlow
from grids.powerflow.reference import PandapowerPowerFlow

__all__ = [
    "PowerFlowResult",
    "PowerFlowError",
    "FastPowerFlow",
    "PandapowerPowerFlow",
    "make_engine",
    "bus_net_load",
    "ENGINES",
    "METHODS",
    "VM_PLAUSIBLE_PU",
]
