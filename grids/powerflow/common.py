"""What both power-flow engines share: the result and error types, the pandapower kernel cache, input checks, and
the compiled pandapower model of a net."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandapower as pp

# pandapower imports its power-flow kernel modules (pf.makeYbus_numba, pf.create_jacobian_numba, ...) with itself
import pandapower.pf.run_newton_raphson_pf  # noqa: F401  (make sure the kernels are loaded before patching)
import scipy.sparse as sp
from pandapower.auxiliary import pandapowerNet


def _cache_pandapower_kernels() -> int:
    """Let numba cache pandapower's JIT kernels on disk; returns how many kernels were switched to caching.

    pandapower declares its power-flow kernels (``makeYbus_numba.gen_Ybus``, the Jacobian and branch-flow
    kernels, the bus-fusion helpers of ``build_bus``) with ``cache=False``, so every process compiled them again
    on its first ``pp.runpp`` — about 10 s of CPU (20 s wall on a busy machine) before the first step of every
    run. Switching their dispatchers to numba's file cache is what ``cache=True`` would have done: the same
    machine code, loaded from ``__pycache__`` next to pandapower's sources (or numba's per-user cache directory
    when that is read-only), so results are bit-identical and only the first process on an installation pays
    the compilation. Where numba cannot cache (no writable location) the kernel is left as it was.
    """
    import sys

    try:
        from numba.core.caching import NullCache
        from numba.core.dispatcher import Dispatcher
    except ImportError:  # pragma: no cover - numba is a pinned dependency; pandapower then runs without it
        return 0
    n = 0
    for name, module in list(sys.modules.items()):
        if not (name == "pandapower" or name.startswith("pandapower.")) or module is None:
            continue
        for obj in list(vars(module).values()):
            if (
                isinstance(obj, Dispatcher)
                and isinstance(getattr(obj, "_cache", None), NullCache)
                and getattr(obj.py_func, "__module__", "").startswith("pandapower")
            ):
                try:
                    obj.enable_caching()
                    n += 1
                except Exception:  # noqa: BLE001 - numba raises RuntimeError (no cache locator) and others
                    pass
    return n


PANDAPOWER_KERNELS_CACHED: int = _cache_pandapower_kernels()


ENGINES: tuple[str, ...] = ("fast", "pandapower")


#: Values of :attr:`PowerFlowResult.method`, in the order the fast engine tries them.
METHODS: tuple[str, ...] = ("fast", "fast-retry", "pandapower", "failed")


#: Plausible band of bus voltage magnitudes [pu] of a converged solution (second guard beside the branch test,
#: see :meth:`FastPowerFlow.solve`): no operable point of a real network lies outside it.
VM_PLAUSIBLE_PU: tuple[float, float] = (0.3, 2.0)


_SQRT3 = float(np.sqrt(3.0))


# Elements whose power the caller supplies through the load arrays.
_CALLER_ELEMENTS: tuple[str, ...] = ("load", "sgen", "storage")


@dataclass(frozen=True)
class PowerFlowResult:
    """Result of one AC power flow.

    All per-bus arrays follow ``net.bus.index`` order, per-line arrays ``net.line`` order and per-trafo arrays
    ``net.trafo`` order. Buses that pandapower removes from the calculation (out of service or isolated) are
    NaN in ``vm_pu``/``va_degree`` (as in ``net.res_bus``). Out-of-service lines/trafos report 0.

    Attributes:
        converged: whether the Newton–Raphson mismatch fell below the tolerance.
        iterations: Newton–Raphson iterations (Jacobian solves) performed.
        vm_pu: bus voltage magnitudes [pu], shape (n_bus,).
        va_degree: bus voltage angles [degree], shape (n_bus,).
        line_loading_percent: max(i_from, i_to) / (max_i_ka * df * parallel) * 100 [%], shape (n_line,);
            identical to ``net.res_line.loading_percent`` (inf where ``max_i_ka * df * parallel == 0``).
        line_p_from_mw: active power into the line at its from bus [MW], shape (n_line,).
        line_q_from_mvar: reactive power into the line at its from bus [Mvar], shape (n_line,).
        line_pl_mw: active losses of each line [MW], shape (n_line,).
        trafo_loading_percent: ``net.res_trafo.loading_percent`` [%], shape (n_trafo,) (empty without trafos).
        losses_mw: total active losses of all AC branches (lines, trafos, trafo3w, impedances, impedance
            switches) [MW].
        ext_grid_p_mw: active power injected by all slack elements (ext_grids, and gens with ``slack=True``),
            positive = import from upstream [MW].
        ext_grid_q_mvar: reactive power injected by all slack elements [Mvar].
        method: how the result was obtained (one of :data:`METHODS`): ``"fast"`` (Newton–Raphson from the warm
            start or the caller's ``v0``), ``"fast-retry"`` (the same after a rejected or failed first attempt,
            from the no-load or a flat start), ``"pandapower"`` (``pp.runpp`` found the start point, the fast
            engine confirmed it; also every converged result of :class:`PandapowerPowerFlow`) or ``"failed"``
            (``converged`` is False: no physical solution was found, the arrays are not an operating point).
    """

    converged: bool
    iterations: int
    vm_pu: np.ndarray
    va_degree: np.ndarray
    line_loading_percent: np.ndarray
    line_p_from_mw: np.ndarray
    line_q_from_mvar: np.ndarray
    line_pl_mw: np.ndarray
    trafo_loading_percent: np.ndarray
    losses_mw: float
    ext_grid_p_mw: float
    ext_grid_q_mvar: float
    method: str = "fast"


class PowerFlowError(RuntimeError):
    """Bad input to a power-flow engine (wrong shape, NaN/inf). Non-convergence is not an error."""


def bus_net_load(net: pandapowerNet) -> tuple[np.ndarray, np.ndarray]:
    """Aggregate the net's own loads, sgens and storages into per-bus net-load arrays.

    Handy to feed an engine with the static loads of a pandapower net (in-service elements only,
    ``scaling`` applied, sgens counted negative, storage in load convention as in pandapower).

    Args:
        net: pandapower network.

    Returns:
        ``(p_mw, q_mvar)``: net load per bus in ``net.bus.index`` order [MW], [Mvar].
    """
    pos = {b: i for i, b in enumerate(net.bus.index)}
    p = np.zeros(len(net.bus))
    q = np.zeros(len(net.bus))
    for element, sign in (("load", 1.0), ("sgen", -1.0), ("storage", 1.0)):
        df = net[element]
        if not len(df):
            continue
        df = df[df["in_service"].astype(bool)]
        idx = np.array([pos[b] for b in df["bus"]], dtype=np.int64)
        scaling = df["scaling"].to_numpy(float) if "scaling" in df else np.ones(len(df))
        np.add.at(p, idx, sign * df["p_mw"].to_numpy(float) * scaling)
        np.add.at(q, idx, sign * df["q_mvar"].to_numpy(float) * scaling)
    return p, q


def _check_loads(p_load_mw: Any, q_load_mvar: Any, n_bus: int) -> tuple[np.ndarray, np.ndarray]:
    """Validate and convert the per-bus load arrays (raises :class:`PowerFlowError`)."""
    out = []
    for name, a in (("p_load_mw", p_load_mw), ("q_load_mvar", q_load_mvar)):
        try:
            arr = np.asarray(a, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise PowerFlowError(f"{name} must be a numeric array of shape ({n_bus},): {exc}") from exc
        if arr.shape != (n_bus,):
            raise PowerFlowError(f"{name} must have shape ({n_bus},) (one entry per bus of net.bus), got {arr.shape}")
        if not np.isfinite(arr).all():
            bad = np.flatnonzero(~np.isfinite(arr))[:5].tolist()
            raise PowerFlowError(f"{name} contains NaN/inf at bus positions {bad}")
        out.append(arr)
    return out[0], out[1]


def _check_v0(v0: Any, n_bus: int, used: np.ndarray) -> np.ndarray:
    """Validate and convert an initial voltage vector (complex [pu], net.bus order).

    Entries of buses outside the calculation (``used`` False: out of service or isolated) are ignored and may
    be NaN, so that the voltages of a previous result can be passed back unchanged.
    """
    try:
        arr = np.asarray(v0, dtype=np.complex128)
    except (TypeError, ValueError) as exc:
        raise PowerFlowError(f"v0 must be a complex array of shape ({n_bus},): {exc}") from exc
    if arr.shape != (n_bus,):
        raise PowerFlowError(f"v0 must have shape ({n_bus},) (one entry per bus of net.bus), got {arr.shape}")
    bad = used & ~(np.isfinite(arr) & (arr != 0))
    if bad.any():
        raise PowerFlowError(f"v0 contains NaN/inf/zero at bus positions {np.flatnonzero(bad)[:5].tolist()}")
    return arr


def _perm_swaps(perm: np.ndarray) -> int:
    """Number of transpositions (mod 2 is what counts) that make up a permutation: n − number of cycles.

    Cycles are found by pointer jumping: after r rounds each entry holds the smallest index among the next 2^r of
    its cycle, so ⌈log2 n⌉ vectorised rounds label every cycle by its smallest member (5× the old Python loop).
    """
    perm = np.asarray(perm, dtype=np.int64)
    n = len(perm)
    label, p = np.arange(n), perm
    for _ in range(int(np.ceil(np.log2(max(n, 2))))):
        label = np.minimum(label, label[p])
        p = p[p]
    return n - int(np.count_nonzero(label == np.arange(n)))


def compile_run(net: pandapowerNet, **runpp_kw: Any) -> tuple[pandapowerNet, bool]:
    """Deep-copy ``net``, switch off the caller-supplied elements and run pandapower once.

    Returns:
        The private copy (with ``_ppc``/``_pd2ppc_lookups`` filled) and whether that run converged.
    """
    net_c = copy.deepcopy(net)
    for element in _CALLER_ELEMENTS:
        if element in net_c and len(net_c[element]):
            net_c[element]["in_service"] = False
    try:
        pp.runpp(net_c, **runpp_kw)
        return net_c, True
    except pp.LoadflowNotConverged:
        ppc = getattr(net_c, "_ppc", None)
        if not ppc or "internal" not in ppc or ppc["internal"].get("Ybus") is None:
            raise
        return net_c, False


def _split_branch_admittance(Yb: sp.coo_matrix, fb: np.ndarray, tb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split branch rows of ``Yf``/``Yt`` into their from-bus and to-bus coefficients."""
    nbr = len(fb)
    a_f = np.zeros(nbr, dtype=np.complex128)
    a_t = np.zeros(nbr, dtype=np.complex128)
    row = Yb.row.astype(np.int64)
    col = Yb.col.astype(np.int64)
    at_f = col == fb[row]
    np.add.at(a_f, row[at_f], Yb.data[at_f])
    at_t = ~at_f & (col == tb[row])
    np.add.at(a_t, row[at_t], Yb.data[at_t])
    if np.any(~at_f & ~at_t):
        raise RuntimeError("unexpected entry in pandapower's branch admittance matrix")
    return a_f, a_t


def _branch_map(
    rng: tuple[int, int] | None, branch_is: np.ndarray, ppci_row: np.ndarray, n_elem: int
) -> tuple[np.ndarray, np.ndarray, bool]:
    """Map an element table (net.line/net.trafo) onto internal branch rows.

    Returns:
        (element positions in service, their internal branch rows, all-in-service flag).
    """
    if rng is None or n_elem == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), n_elem == 0
    f, t = rng
    if t - f != n_elem:
        raise RuntimeError("pandapower branch lookup does not match the element table length")
    k = np.arange(f, t)
    on = branch_is[k]
    pos = np.flatnonzero(on)
    return pos, ppci_row[k[on]], bool(on.all())
