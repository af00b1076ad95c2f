"""`evgrid dash`: watch a co-simulation live in the browser (a Solara page).

The page builds a `sim.model.CoSimulation` from the chosen scenario, mechanism, fleet size, seed and attack switch,
and advances it market step by market step (`CoSimulation.advance`) while it draws, after every step:

* the feeder as a radial graph: buses and lines coloured on one scale, the share of their limit in use
  (bus: voltage drop below 1 pu as a share of the allowed drop ``1 − v_min``, or rise above as a share of
  ``v_max − 1``; line: loading as a share of ``max_line_loading_percent``), stations with ports drawn as squares
  sized by their queue;
* price [$/MWh], EV load, non-EV load and losses [kW] over the day; EVs waiting and the mean wait [min];
* with an attack on: the attacked steps shaded, and the detector's statistic (largest CUSUM over stations, and
  the χ² statistic of state estimation when it runs) beside its alarm threshold;
* a KPI panel of the run so far.

Changing a control rebuilds the model at step 0; Step / Run / Pause / Reset drive it. Nothing here needs a D-Wave
token: QUBO mechanisms run on their default (simulated-annealing) sampler unless the scenario configures one.

Mesa's own ``SolaraViz`` is not used: its controller re-instantiates a model as ``type(model)(**params)`` with a Mesa
``Scenario`` object, which does not fit a model built from a validated evgrid `Scenario`, and its module needs
altair. The page uses Solara directly, the same stack SolaraViz is built on.

Started by ``evgrid dash [SCENARIO] [--port N]``, which serves this module with ``solara run``; the scenario and
``--set`` overrides reach the page through the environment variables ``EVGRID_DASH_SCENARIO`` and
``EVGRID_DASH_SET`` (a JSON list of ``key=value`` strings).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, cast

import matplotlib

matplotlib.use("Agg")

import numpy as np
import reacton.core
import solara

from experiments.dash_figures import (
    detector_figure,
    feeder_figure,
    load_figure,
    price_figure,
    queue_figure,
)
from markets.base import available
from sim.scenario import Scenario, apply_overrides, list_scenarios, read_toml, resolve_path, validate

ENV_SCENARIO = "EVGRID_DASH_SCENARIO"
ENV_SET = "EVGRID_DASH_SET"
RENDER_WAIT_S = 10.0  # longest wait for another thread's render before a frame redraws anyway [s]
FRAME_MIN_S = 0.25  # shortest frame while running [s]: a frame steps the model once, then redraws the page

# The attack the switch adds to a scenario that has none: stations report 100 % more committed EV load than they
# have, at 30 % of the stations, from 4 h to 12 h into the run; the DSO's report monitor (CUSUM) watches for it.
DEFAULT_ATTACK: dict[str, Any] = {
    "label": "dash: station-report inflation",
    "kind": "station-inflation",
    "share": 0.3,
    "magnitude": 1.0,
    "start_h": 4.0,
    "end_h": 12.0,
}


@dataclass(frozen=True)
class DashParams:
    """What the page's controls choose."""

    scenario: str
    mechanism: str
    n_evs: int
    seed: int
    attack: bool


def base_data(scenario: str, overrides: list[str] | None = None) -> dict[str, Any]:
    """The scenario's raw mapping with the command line's ``--set`` overrides applied."""
    data = read_toml(resolve_path(scenario))
    return apply_overrides(data, overrides) if overrides else data


def default_params(scenario: str, overrides: list[str] | None = None) -> DashParams:
    """The controls' starting values: the (overridden) scenario's own."""
    sc = validate(base_data(scenario, overrides))
    return DashParams(
        scenario=scenario, mechanism=sc.market.mechanism, n_evs=sc.fleet.n_evs, seed=sc.seed, attack=bool(sc.attacks)
    )


def _default_attack(mechanism: str) -> dict[str, Any]:
    """`DEFAULT_ATTACK`, or for a mechanism that never reads station reports (an attack on them would be refused as
    inert) the same window on the EVs' state-of-charge reports, which every mechanism reads."""
    from markets.base import get

    if "committed_station_kw" in get(mechanism)().needs:
        return dict(DEFAULT_ATTACK)
    return {**DEFAULT_ATTACK, "label": "dash: EV SOC falsification", "kind": "soc-falsification", "magnitude": -0.5}


def build_scenario(p: DashParams, overrides: list[str] | None = None) -> Scenario:
    """The validated scenario the controls describe (raises `ScenarioError` on a bad combination).

    ``attack`` on keeps the scenario's attacks, or adds `DEFAULT_ATTACK` with the report monitor when it has none;
    off removes every attack (detection stays as the scenario has it).
    """
    data = base_data(p.scenario, overrides)
    data.setdefault("market", {})["mechanism"] = p.mechanism
    data.setdefault("fleet", {})["n_evs"] = int(p.n_evs)
    data["seed"] = int(p.seed)
    if not p.attack:
        data["attacks"] = []
    elif not data.get("attacks"):
        data["attacks"] = [_default_attack(p.mechanism)]
        data.setdefault("detection", {})["enabled"] = True
    return validate(data)


def feeder_layout(net: Any) -> tuple[np.ndarray, np.ndarray]:
    """Radial drawing coordinates of every bus: x = hops from the slack bus, y = branch row.

    The tree is the breadth-first tree of in-service lines from the external grid; at each bus the child with the
    deepest subtree continues on the parent's row, so the main feeder is one straight line and laterals hang below.
    Buses not reached (isolated) sit at x = −1.
    """
    n = len(net.bus)
    pos = {b: i for i, b in enumerate(net.bus.index)}
    lines = net.line[net.line["in_service"].astype(bool)]
    adj: list[list[int]] = [[] for _ in range(n)]
    for f, t in zip(lines["from_bus"], lines["to_bus"]):
        adj[pos[f]].append(pos[t])
        adj[pos[t]].append(pos[f])
    for tr in ("trafo",):
        if tr in net and len(net[tr]):
            for f, t in zip(net[tr]["hv_bus"], net[tr]["lv_bus"]):
                adj[pos[f]].append(pos[t])
                adj[pos[t]].append(pos[f])
    root = pos[int(net.ext_grid["bus"].iloc[0])] if len(net.ext_grid) else 0
    parent = np.full(n, -1)
    depth = np.full(n, -1)
    order = [root]
    depth[root] = 0
    for b in order:  # breadth-first
        for c in sorted(adj[b]):
            if depth[c] < 0:
                depth[c], parent[c] = depth[b] + 1, b
                order.append(c)
    children: list[list[int]] = [[] for _ in range(n)]
    for b in order[1:]:
        children[parent[b]].append(b)
    height = np.zeros(n)
    for b in reversed(order):
        height[b] = 1 + max((height[c] for c in children[b]), default=0)
    x = depth.astype(float)
    y = np.zeros(n)
    row = [0.0]

    def place(b: int, r: float) -> None:
        y[b] = r
        kids = sorted(children[b], key=lambda c: -height[c])
        for i, c in enumerate(kids):
            if i == 0:
                place(c, r)
            else:
                row[0] += 1
                place(c, row[0])

    import sys

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 4 * n + 100))
    place(root, 0.0)
    return x, -y


class Live:
    """One model being watched: the `CoSimulation`, and what the page records beside its recorder."""

    def __init__(self, params: DashParams, overrides: list[str] | None = None) -> None:
        from sim.model import CoSimulation

        self.params = params
        self.scenario = build_scenario(params, overrides)
        t0 = time.perf_counter()
        self.model = CoSimulation(self.scenario)
        self.build_s = time.perf_counter() - t0
        self.lock = threading.Lock()
        m = self.model
        self.x, self.y = feeder_layout(m.network.net)
        self.cusum_max = np.full(m.n_steps, np.nan)  # largest CUSUM over stations after each step [-]
        self.step_s = 0.0
        self.closed = False

    @property
    def steps(self) -> int:
        return int(self.model.steps)

    @property
    def done(self) -> bool:
        return self.steps >= self.model.n_steps

    def step(self, n: int = 1) -> int:
        """Advance ``n`` market steps (thread-safe); returns the steps done."""
        with self.lock:
            m = self.model
            if self.closed:
                return self.steps
            t0 = time.perf_counter()
            while self.steps < m.n_steps and n > 0:
                m.advance(1)
                if m.monitor is not None:
                    self.cusum_max[self.steps - 1] = float(m.monitor.cusum.max()) if len(m.monitor.cusum) else 0.0
                n -= 1
            self.step_s += time.perf_counter() - t0
            return self.steps

    def close(self) -> None:
        """Release the model (waits for a step in progress); later `step` calls do nothing."""
        with self.lock:
            if not self.closed:
                self.closed = True
                self.model.close()

    # ------------------------------------------------------------------ data so far
    def hours(self) -> np.ndarray:
        """Time axis of every step: hours on the clock from the start's midnight (may pass 24)."""
        m = self.model
        return m.spec.time.start_h + m.t_min / 60.0

    def attacked(self) -> np.ndarray:
        """Steps in which any channel was falsified (so far)."""
        m = self.model
        out = np.zeros(m.n_steps, bool)
        for labels in m.taps.labels.values():
            for k, hit in labels:
                out[k] |= bool(hit)
        return out

    def kpis(self) -> list[tuple[str, str, str]]:
        """(key, label, formatted value) of the run so far."""
        m, k = self.model, self.steps
        c = m.recorder.cols
        dt_h = m.dt_min / 60.0
        out: list[tuple[str, str, str]] = []
        if k == 0:
            return [("steps", "steps done", f"0 / {m.n_steps}")]
        total = c["base_load_kw"][:k] + c["ev_load_kw"][:k]
        f = m.fleet
        arrived = f.arrival_min <= m.env.now
        wait = m.wait_min()[arrived] if len(f) else np.zeros(0)
        out += [
            ("steps", "steps done", f"{k} / {m.n_steps}"),
            ("peak_load_kw", "peak load [kW]", f"{total.max():,.0f}"),
            ("ev_energy_kwh", "EV energy [kWh]", f"{c['ev_load_kw'][:k].sum() * dt_h:,.0f}"),
            ("energy_losses_kwh", "energy losses [kWh]", f"{c['losses_kw'][:k].sum() * dt_h:,.1f}"),
            ("mean_price_usd_per_mwh", "mean price [$/MWh]", f"{c['price_usd_per_mwh'][:k].mean():.2f}"),
            ("vmin_pu", "Vmin [pu]", f"{c['vmin_pu'][:k].min():.4f}"),
            ("max_line_loading_percent", "max line loading [%]", f"{c['max_line_loading_percent'][:k].max():.1f}"),
            ("ev_curtailed_kwh", "EV energy curtailed [kWh]", f"{c['ev_curtailed_kw'][:k].sum() * dt_h:,.1f}"),
            ("ev_cost_usd", "EV users paid [$]", f"{f.cost_usd.sum():,.0f}"),
            (
                "plugged_waiting",
                "EVs plugged / waiting",
                f"{int(c['n_plugged'][k - 1])} / {int(c['n_waiting'][k - 1])}",
            ),
            ("mean_wait_min", "mean wait [min]", f"{np.nanmean(wait):.1f}" if np.isfinite(wait).any() else "–"),
        ]
        if m.attacker is not None or m.monitor is not None:
            out.append(("attack_steps", "attacked steps", f"{int(self.attacked()[:k].sum())}"))
        if m.monitor is not None:
            out.append(
                ("flagged_stations", "stations flagged", f"{int(m.monitor.flagged.sum())} / {len(m.monitor.flagged)}")
            )
        if m.estimator is not None:
            out.append(("se_alarm_steps", "χ² alarms [steps]", f"{int(m.se_flag[:k].sum())}"))
        return out

    def clock(self) -> str:
        """ "step k / N · hh:mm" of the last step done."""
        m, k = self.model, self.steps
        h = (m.spec.time.start_h + max(k - 1, 0) * m.dt_min / 60.0) % 24
        when = f"{int(h):02d}:{int(round((h % 1) * 60)) % 60:02d}" if k else "not started"
        return f"step {k} / {m.n_steps} · {when}"


# ------------------------------------------------------------------ the page
def _env_params() -> tuple[DashParams, list[str]]:
    scenario = os.environ.get(ENV_SCENARIO, "default")
    overrides = list(json.loads(os.environ.get(ENV_SET, "[]")))
    return default_params(scenario, overrides), overrides


def _wait_for_other_render(rc: Any) -> None:
    """Wait (bounded) until a render running in another thread, e.g. a click handler's, has finished.

    A state change made while another thread renders is left to that thread, which then renders again; a run
    that kept changing state during those renders would keep a click handler's thread rendering (and its
    updates and the next clicks waiting) until the run ends. Reacton has no public call for this; its render
    context's ``thread_lock`` is the lock a render holds, so a short acquire/release waits for it.
    """
    lock = getattr(rc, "thread_lock", None)
    if lock is not None and lock.acquire(timeout=RENDER_WAIT_S):
        lock.release()


def _kpi_html(live: Live | None) -> str:
    if live is None:
        return ""
    rows = "".join(
        f'<tr data-kpi="{key}"><td style="padding:1px 8px 1px 0;color:#555">{label}</td>'
        f'<td class="kpi-value" style="text-align:right;font-variant-numeric:tabular-nums"><b>{value}</b></td></tr>'
        for key, label, value in live.kpis()
    )
    return f'<table style="font-size:13px;border-collapse:collapse">{rows}</table>'


@solara.component
def Page() -> None:
    start, overrides = solara.use_memo(_env_params, [])
    params = solara.use_reactive(start)
    live: solara.Reactive[Live | None] = solara.use_reactive(cast(Live | None, None))
    error = solara.use_reactive("")
    tick = solara.use_reactive(0)
    playing = solara.use_reactive(False)
    runner = solara.use_ref(cast(threading.Event | None, None))  # the running frame loop's stop signal
    rc = reacton.core.get_render_context(required=False)

    def build() -> None:
        stop = runner.current
        runner.current = None
        if stop is not None:
            stop.set()
        playing.set(False)
        try:
            new = Live(params.value, overrides)
        except Exception as err:  # bad combination of controls: say so on the page, keep the old model
            error.set(f"{type(err).__name__}: {err}".replace("\n", "; "))
            return
        old = live.value
        if old is not None:
            old.close()
        error.set("")
        live.set(new)
        tick.set(tick.value + 1)

    solara.use_effect(build, [params.value])

    def set_param(**kw: Any) -> None:
        params.set(replace(params.value, **kw))

    def step() -> None:
        if live.value is not None:
            live.value.step(1)
            tick.set(tick.value + 1)

    start_play, stop_play = _use_player(live, tick, playing, runner, rc)

    lv = live.value
    p = params.value
    scen = list_scenarios()
    if p.scenario not in scen:
        scen = [p.scenario, *scen]
    solara.Title("evgrid dash")
    with solara.Sidebar():
        RunCard(p, scen, set_param, lv, playing.value, step, start_play, stop_play, build)
        with solara.Card("KPIs so far"):
            solara.HTML(tag="div", unsafe_innerHTML=_kpi_html(lv), classes=["evgrid-kpis"])
    if error.value:
        solara.Error(error.value)
    if lv is None:
        solara.Info("building the model …")
        return
    solara.HTML(
        tag="div",
        classes=["evgrid-clock"],
        attributes={"data-step": str(lv.steps)},
        unsafe_innerHTML=f"<b>{lv.scenario.name}</b> · {lv.scenario.market.mechanism} · "
        f"{lv.scenario.fleet.n_evs} EVs · seed {lv.scenario.seed}"
        f"{' · attack on' if lv.model.attacker is not None else ''} · "
        f"<span class='evgrid-step'>{lv.clock()}</span>",
    )
    deps = [tick.value, lv]
    Figures(lv, deps)


def _use_player(
    live: solara.Reactive[Live | None],
    tick: solara.Reactive[int],
    playing: solara.Reactive[bool],
    runner: Any,
    rc: Any,
) -> tuple[Callable[[], None], Callable[[], None]]:
    """Hook: the Run/Pause pair ``(start_play, stop_play)`` of `Page`; a runner thread steps ``live`` frame by
    frame (`FRAME_MIN_S`) and bumps ``tick``; ``runner`` holds its stop signal, set on unmount too."""

    def stop_play() -> None:
        """Pause: the runner stops before its next step (at most one step and one redraw away)."""
        stop = runner.current
        runner.current = None
        if stop is not None:
            stop.set()
        playing.set(False)

    def start_play() -> None:
        lv = live.value
        if lv is None or lv.done or runner.current is not None:
            return
        stop = threading.Event()
        runner.current = stop
        # started from the click handler, not from a render: the handler returns at once, and every redraw of
        # the run happens in the runner thread (see `play`); Solara's patched Thread carries the session along
        threading.Thread(target=play, args=(lv, stop), daemon=True, name="evgrid-dash-run").start()

    def play(lv: Live, stop: threading.Event) -> None:
        """Advance the model and redraw, frame by frame, until the end, Pause, Reset or a control change.

        A frame advances one market step and bumps ``tick``, and lasts at least `FRAME_MIN_S`. The state change renders the page synchronously in this thread, so the next frame starts only
        after the page has been redrawn: the frame rate is bounded by the drawing, and no other thread is left
        re-rendering a stream of changes (which, in the click handler's thread, holds back both the page's
        updates and the Pause click until the run ends).
        """
        try:
            playing.set(True)
            while not stop.is_set() and not lv.done and not lv.closed:
                t0 = time.perf_counter()
                lv.step(1)
                _wait_for_other_render(rc)
                tick.set(tick.value + 1)
                stop.wait(max(FRAME_MIN_S - (time.perf_counter() - t0), 0.0))
        finally:
            if runner.current is stop:
                runner.current = None
                playing.set(False)

    def cleanup_play() -> Callable[[], None]:
        def stop_on_unmount() -> None:
            if runner.current is not None:
                runner.current.set()

        return stop_on_unmount

    solara.use_effect(cleanup_play, [])
    return start_play, stop_play


@solara.component
def RunCard(
    p: DashParams,
    scen: list[str],
    set_param: Callable[..., None],
    lv: Live | None,
    playing: bool,
    step: Callable[[], None],
    start_play: Callable[[], None],
    stop_play: Callable[[], None],
    build: Callable[[], None],
) -> None:
    """The sidebar's "Run" card: scenario, mechanism, fleet size, seed and attack controls; Step, Run/Pause, Reset."""
    with solara.Card("Run"):
        solara.Select(label="scenario", values=scen, value=p.scenario, on_value=lambda v: set_param(scenario=v))
        solara.Text("mechanism")
        solara.ToggleButtonsSingle(
            value=p.mechanism,
            values=available(),
            on_value=lambda v: set_param(mechanism=v),
            dense=True,
            classes=["evgrid-mechanism"],
            style={"flex-wrap": "wrap"},
        )
        solara.InputInt("fleet size [EVs]", value=p.n_evs, on_value=lambda v: set_param(n_evs=max(int(v or 0), 0)))
        solara.InputInt("seed", value=p.seed, on_value=lambda v: set_param(seed=max(int(v or 0), 0)))
        solara.Checkbox(label="attack on", value=p.attack, on_value=lambda v: set_param(attack=bool(v)))
        with solara.Row():
            solara.Button("Step", on_click=step, color="primary", disabled=lv is None or lv.done or playing)
            solara.Button(
                "Pause" if playing else "Run",
                color="primary",
                on_click=stop_play if playing else start_play,
                disabled=lv is None or lv.done,
            )
            solara.Button("Reset", on_click=build)


@solara.component
def Figures(lv: Live, deps: list[Any]) -> None:
    """The page's two columns of figures (feeder and queues; price, load and, with an attack, the detector)."""
    with solara.Columns([1, 1]):
        with solara.Column():
            with solara.Div(classes=["evgrid-feeder"]):
                solara.FigureMatplotlib(feeder_figure(lv), dependencies=deps, format="png", dpi=110)
            with solara.Div(classes=["evgrid-queues"]):
                solara.FigureMatplotlib(queue_figure(lv), dependencies=deps, format="png", dpi=100)
        with solara.Column():
            with solara.Div(classes=["evgrid-price"]):
                solara.FigureMatplotlib(price_figure(lv), dependencies=deps, format="png", dpi=100)
            with solara.Div(classes=["evgrid-load"]):
                solara.FigureMatplotlib(load_figure(lv), dependencies=deps, format="png", dpi=100)
            det = detector_figure(lv)
            if det is not None:
                with solara.Div(classes=["evgrid-detector"]):
                    solara.FigureMatplotlib(det, dependencies=deps, format="png", dpi=100)
