"""(a) DLMPs from pandapower's AC OPF, one ``runopp`` per slot (market model: :mod:`grids.dlmp`)."""

from __future__ import annotations

import copy
import time
import warnings
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from grids.dlmp.common import ON_KW, DlmpInputs, FlexibleEV, dg_q_max_mw, failed_slot, frame, read_inputs
from grids.network import Network

__all__ = ["dlmp_acopf"]


class _OpfElements(NamedTuple):
    """Element indices of the OPF copy of the net that change or are read per slot."""

    load_idx: Any  # one fixed load per bus
    eg_cost: list[int]  # poly_cost rows of the ext_grids (the substation price)
    dg_idx: list[int]  # sgen per DG
    ren_idx: list[int]  # sgen per renewable
    ev_set: set[int]  # sgens of the flexible EV aggregates


def dlmp_acopf(
    network: Network,
    p_load_kw: Any,
    q_load_kvar: Any,
    *,
    price_usd_per_mwh: Any,
    q_price_usd_per_mvarh: Any = 0.0,
    renewable_kw: Any = None,
    ev: Sequence[FlexibleEV] | None = None,
    v_min_pu: float | None = None,
    v_max_pu: float | None = None,
    init: str = "pf",
) -> pd.DataFrame:
    """DLMPs from one pandapower AC OPF per slot (see the module docstring for the market model).

    ``net.load``, ``net.sgen`` and ``net.storage`` of the network are ignored (the arrays and ``network.ders``
    replace them); ``net.gen`` and its costs are kept (case118). The ext_grid's own cost is replaced by the price.

    Args:
        network: the grid (not modified).
        p_load_kw: fixed active load per bus [kW], shape (n_slots, n_bus) in ``net.bus`` order (1-D = one slot).
        q_load_kvar: fixed reactive load per bus [kVAr], same shape.
        price_usd_per_mwh: substation energy price per slot [$/MWh], scalar or shape (n_slots,).
        q_price_usd_per_mvarh: substation reactive price [$/MVArh], scalar or shape (n_slots,).
        renewable_kw: available output of each renewable (``network.renewables`` order) [kW], shape
            (n_slots, n_renewables); None = no renewable output (pass ``network.renewable_kw(tod_h)`` for the
            profiles).
        ev: flexible EV aggregates, the same in every slot.
        v_min_pu: lower voltage limit [pu]; None = ``network.v_min_pu``.
        v_max_pu: upper voltage limit [pu]; None = ``network.v_max_pu``.
        init: pandapower OPF initialisation (``"pf"``, ``"flat"``; ``"results"`` warm-starts from the
            previous slot).

    Returns:
        The tidy DLMP table (module docstring), ``method = "acopf"``.

    Raises:
        DLMPInputError: bad shapes, NaN, unknown EV bus, inconsistent EV box.
    """
    inp = read_inputs(
        network, p_load_kw, q_load_kvar, price_usd_per_mwh, q_price_usd_per_mvarh, renewable_kw, ev, v_min_pu, v_max_pu
    )
    net, el = _opf_net(network, inp)
    rows: list[dict[str, Any]] = []
    n_slots = inp.p_mw.shape[0]
    had_result = False
    for k in range(n_slots):
        _set_slot(net, inp, k, el)
        t0 = time.perf_counter()
        this_init = init if (init != "results" or had_result) else "pf"
        ok, msg = _run_opf(net, this_init)
        dt = time.perf_counter() - t0
        if not ok:
            rows += failed_slot("acopf", k, inp, msg or "AC OPF did not converge", seconds=dt)
            had_result = False
            continue
        had_result = True
        rows += _slot_rows(network, net, inp, k, el, dt)
    return frame(rows)


def _opf_base_net(network: Network, inp: DlmpInputs) -> tuple[Any, list[int]]:
    """A copy of the net without its loads, sgens and storage (and their costs), with the OPF's voltage, loading
    and substation limits, and a zero cost on every ext_grid (returned: those cost rows)."""
    import pandapower as pp

    net = copy.deepcopy(network.net)
    for element in ("load", "sgen", "storage"):
        if element in net and len(net[element]):
            net[element] = net[element].iloc[0:0]
            res = "res_" + element
            if res in net:
                net[res] = net[res].iloc[0:0]
    for table in ("poly_cost", "pwl_cost"):
        if table in net and len(net[table]):
            keep = ~net[table]["et"].isin(["ext_grid", "load", "sgen", "storage"])
            net[table] = net[table][keep]
    net.bus["min_vm_pu"] = inp.v_min
    net.bus["max_vm_pu"] = inp.v_max
    if len(net.line):
        net.line["max_loading_percent"] = float(network.max_line_loading_percent)
    if len(net.trafo):
        net.trafo["max_loading_percent"] = float(network.max_line_loading_percent)
    s_sub = float(network.substation_mva)
    # inf = substation_mva "network": the ext_grid keeps the file's own limits (pandapower's OPF needs finite bounds)
    if np.isfinite(s_sub):
        net.ext_grid["min_p_mw"], net.ext_grid["max_p_mw"] = -s_sub, s_sub
        net.ext_grid["min_q_mvar"], net.ext_grid["max_q_mvar"] = -s_sub, s_sub
    eg_cost = [pp.create_poly_cost(net, int(e), "ext_grid", cp1_eur_per_mw=0.0) for e in net.ext_grid.index]
    return net, eg_cost


def _opf_net(network: Network, inp: DlmpInputs) -> tuple[Any, _OpfElements]:
    """A copy of the net for the OPF: own loads, DGs, renewables and EVs as controllable sgens, limits, costs."""
    import pandapower as pp

    net, eg_cost = _opf_base_net(network, inp)
    load_idx = pp.create_loads(
        net,
        buses=inp.bus_index,
        p_mw=np.zeros(len(inp.bus_index)),
        q_mvar=np.zeros(len(inp.bus_index)),
        controllable=False,
    )
    dg_idx = []
    for d in network.dgs:
        qmax = dg_q_max_mw(d)
        s = pp.create_sgen(
            net,
            d.bus,
            p_mw=0.0,
            q_mvar=0.0,
            controllable=True,
            min_p_mw=0.0,
            max_p_mw=d.p_max_kw / 1e3,
            min_q_mvar=0.0,
            max_q_mvar=qmax,
            name=d.name,
        )
        pp.create_poly_cost(
            net, s, "sgen", cp1_eur_per_mw=d.cost_b, cp2_eur_per_mw2=d.cost_a, cq1_eur_per_mvar=d.q_cost_usd_per_mvarh
        )
        dg_idx.append(s)
    ren_idx = []
    for d in network.renewables:
        s = pp.create_sgen(
            net,
            d.bus,
            p_mw=0.0,
            q_mvar=0.0,
            controllable=True,
            min_p_mw=0.0,
            max_p_mw=0.0,
            min_q_mvar=0.0,
            max_q_mvar=0.0,
            name=d.name,
        )
        ren_idx.append(s)
    ev_idx = []
    for e in inp.evs:
        plo, phi, qlo, qhi = e.injection_box_mw()
        s = pp.create_sgen(
            net,
            e.bus,
            p_mw=float(np.clip(0.0, plo, phi)),
            q_mvar=float(np.clip(0.0, qlo, qhi)),
            controllable=True,
            min_p_mw=plo,
            max_p_mw=phi,
            min_q_mvar=qlo,
            max_q_mvar=qhi,
            name=e.name,
        )
        pp.create_poly_cost(net, s, "sgen", cp1_eur_per_mw=float(e.cost_usd_per_mwh))
        ev_idx.append(s)
    ev_set = set(ev_idx)
    return net, _OpfElements(load_idx, eg_cost, dg_idx, ren_idx, ev_set)


def _set_slot(net: Any, inp: DlmpInputs, k: int, el: _OpfElements) -> None:
    """Loads, renewable availability and substation prices of slot ``k``."""
    net.load.loc[el.load_idx, "p_mw"] = inp.p_mw[k]
    net.load.loc[el.load_idx, "q_mvar"] = inp.q_mvar[k]
    for j, s in enumerate(el.ren_idx):
        net.sgen.loc[s, "max_p_mw"] = inp.ren_mw[k, j]
        net.sgen.loc[s, "p_mw"] = inp.ren_mw[k, j]
    net.poly_cost.loc[el.eg_cost, "cp1_eur_per_mw"] = inp.price[k]
    net.poly_cost.loc[el.eg_cost, "cq1_eur_per_mvar"] = inp.q_price[k]


def _run_opf(net: Any, init: str) -> tuple[bool, str]:
    """One ``pandapower.runopp``; returns (converged, why not)."""
    import pandapower as pp

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pp.runopp(net, init=init, verbose=False)
        ok, msg = bool(net.OPF_converged), ""
    except pp.OPFNotConverged:
        ok, msg = False, "AC OPF did not converge (infeasible limits or numerical failure)"
    except Exception as err:  # pandapower raises several types for numerical trouble; report, don't abort
        ok, msg = False, f"AC OPF failed: {type(err).__name__}: {err}"
    return ok, msg


def _slot_rows(
    network: Network, net: Any, inp: DlmpInputs, k: int, el: _OpfElements, dt: float
) -> list[dict[str, Any]]:
    """Result rows of a converged slot: prices, voltages, dispatch per bus, slot totals."""
    ev_set, dg_idx = el.ev_set, el.dg_idx
    rb = net.res_bus
    rows: list[dict[str, Any]] = []
    gen_p = np.zeros(len(inp.bus_index))
    gen_q = np.zeros(len(inp.bus_index))
    ev_p = np.zeros(len(inp.bus_index))
    ev_q = np.zeros(len(inp.bus_index))
    for s, row in net.res_sgen.iterrows():
        i = inp.pos[int(net.sgen.at[s, "bus"])]
        if s in ev_set:
            ev_p[i] -= row.p_mw * 1e3
            ev_q[i] -= row.q_mvar * 1e3
        else:
            gen_p[i] += row.p_mw * 1e3
            gen_q[i] += row.q_mvar * 1e3
    if len(net.gen):
        for g, row in net.res_gen.iterrows():
            if bool(net.gen.at[g, "in_service"]):
                i = inp.pos[int(net.gen.at[g, "bus"])]
                gen_p[i] += row.p_mw * 1e3
                gen_q[i] += row.q_mvar * 1e3
    dg_p = np.array([net.res_sgen.at[s, "p_mw"] for s in dg_idx])
    no_load = sum(d.cost_c for d, p in zip(network.dgs, dg_p, strict=True) if p * 1e3 > ON_KW)
    losses = float(net.res_line.pl_mw.sum()) if len(net.line) else 0.0
    if len(net.trafo):
        losses += float(net.res_trafo.pl_mw.sum())
    slot = dict(
        converged=True,
        total_cost_usd_per_h=float(net.res_cost) + float(no_load),
        losses_kw=losses * 1e3,
        grid_p_kw=float(net.res_ext_grid.p_mw.sum()) * 1e3,
        grid_q_kvar=float(net.res_ext_grid.q_mvar.sum()) * 1e3,
        solve_time_s=dt,
        message="",
    )
    lam_p = rb["lam_p"].to_numpy(float)
    lam_q = rb["lam_q"].to_numpy(float)
    vm = rb["vm_pu"].to_numpy(float)
    for i, b in enumerate(inp.bus_index):
        rows.append(
            dict(
                method="acopf",
                slot=k,
                bus=int(b),
                lam_p_usd_per_mwh=lam_p[i],
                lam_q_usd_per_mvarh=lam_q[i],
                vm_pu=vm[i],
                gen_p_kw=gen_p[i],
                gen_q_kvar=gen_q[i],
                ev_p_kw=ev_p[i],
                ev_q_kvar=ev_q[i],
                **slot,
            )
        )
    return rows


class OpfDispatch:
    """The DSO's per-step DG dispatch by AC OPF (``grid.dispatch = "opf"``): one ``runopp`` per step, warm-started
    from the previous step's solution, on a copy of the net built once.

    The OPF minimises the substation energy at the step's price plus the DGs' quadratic costs (``A·P² + B·P``;
    reactive output priced at their ``q_cost``), subject to the network's voltage limits, line/transformer loading
    and substation rating; renewables may be curtailed below their availability (they cost nothing, so only where a
    limit binds). The fixed load is everything else at the bus — base load, EV charging and V2G discharge.

    Args:
        network: the grid (not modified).
    """

    def __init__(self, network: Network) -> None:
        self.network = network
        n_bus = len(network.net.bus)
        inp = read_inputs(network, np.zeros(n_bus), np.zeros(n_bus), 0.0, 0.0, None, None, None, None)
        self._bus_index = inp.bus_index
        self._net, self._el = _opf_net(network, inp)
        self._warm = False
        self.time_s = 0.0  # wall time in runopp [s]
        self.cpu_s = 0.0  # process CPU time in runopp [s]
        self.n_solved = 0
        self.n_failed = 0

    def solve(
        self,
        p_load_kw: np.ndarray,
        q_load_kvar: np.ndarray,
        price_usd_per_mwh: float,
        renewable_kw: np.ndarray,
        q_price_usd_per_mvarh: float = 0.0,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """(DG P [kW], DG Q [kVAr], renewable output [kW]) in ``network.dgs`` / ``network.renewables`` order, or None
        where the OPF does not converge (the caller falls back to merit order and records it). Reactive energy from
        the grid is priced at ``q_price_usd_per_mvarh``."""
        net, el = self._net, self._el
        net.load.loc[el.load_idx, "p_mw"] = np.asarray(p_load_kw, float) / 1e3
        net.load.loc[el.load_idx, "q_mvar"] = np.asarray(q_load_kvar, float) / 1e3
        for j, s in enumerate(el.ren_idx):
            net.sgen.loc[s, "max_p_mw"] = float(renewable_kw[j]) / 1e3
            net.sgen.loc[s, "p_mw"] = float(renewable_kw[j]) / 1e3
        net.poly_cost.loc[el.eg_cost, "cp1_eur_per_mw"] = float(price_usd_per_mwh)
        net.poly_cost.loc[el.eg_cost, "cq1_eur_per_mvar"] = float(q_price_usd_per_mvarh)
        t0, c0 = time.perf_counter(), time.process_time()
        ok, _ = _run_opf(net, "results" if self._warm else "pf")
        if not ok and self._warm:  # a stale warm start can fail where a fresh one converges
            ok, _ = _run_opf(net, "pf")
        self.time_s += time.perf_counter() - t0
        self.cpu_s += time.process_time() - c0
        self._warm = ok
        if not ok:
            self.n_failed += 1
            return None
        self.n_solved += 1
        sg = net.res_sgen
        dg_p = np.array([sg.at[s, "p_mw"] for s in el.dg_idx], float) * 1e3
        dg_q = np.array([sg.at[s, "q_mvar"] for s in el.dg_idx], float) * 1e3
        ren = np.array([sg.at[s, "p_mw"] for s in el.ren_idx], float) * 1e3
        off = dg_p <= ON_KW  # the interior point leaves a unit it would stop at a few watts: stopped (no no-load cost)
        return np.where(off, 0.0, dg_p), np.where(off, 0.0, dg_q), np.clip(ren, 0.0, np.asarray(renewable_kw, float))
