"""Plots of a run and of a comparison, drawn from real co-simulation runs (small: 30 EVs, hourly steps).

Each figure is captured just before it is saved (`experiments.plotting.common._save` is wrapped) so the tests check what is
drawn — the demand line is the recorder's ``total_load_kw``, the heat map is the bus table's ``vm_pu``, the title
names the real minimum — and every PNG is decoded and must show a drawing, not a blank canvas.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest

import experiments.plotting.common as plots
from experiments.plots import COMPARISON_FILES, RUN_FILES, plot_comparison, plot_run
from sim.model import CoSimulation
from sim.scenario import load_scenario

PNG = b"\x89PNG\r\n\x1a\n"
SMALL = ["fleet.n_evs=30", "time.dt_min=60", "time.horizon_h=24"]


def _run(overrides: list[str], seed: int = 3) -> Any:
    return CoSimulation(load_scenario("default", SMALL + overrides, seed)).run()


@pytest.fixture(scope="module")
def runs() -> dict[str, Any]:
    """Real runs (the first pays the warm-up; each further run takes < 2 s)."""
    return {
        "default": _run([]),
        "no EVs": _run(["fleet.n_evs=0"]),
        "uncontrolled": _run(["market.mechanism='uncontrolled'"]),
        "multi-day": _run(["time.horizon_h=72", "grid.bus_numbering='pandapower'"]),
    }


def _view(result: Any, **tables: Any) -> SimpleNamespace:
    """The run with some of its (real) tables replaced or removed (None)."""
    t = dict(result.tables)
    for k, v in tables.items():
        if v is None:
            t.pop(k, None)
        else:
            t[k] = v
    return SimpleNamespace(tables=t, kpis=result.kpis, scenario=result.scenario)


@pytest.fixture
def figures(monkeypatch: pytest.MonkeyPatch) -> dict[str, dict[str, Any]]:
    """file name → what the figure holds at save time: lines by label, images, titles, tick labels."""
    seen: dict[str, dict[str, Any]] = {}
    save = plots._save

    def capture(fig, path: Path) -> Path:
        lines, images, titles, ticks, colls, bars, texts, clims = {}, [], [], [], {}, {}, [], []
        for ax in fig.axes:
            for ln in ax.get_lines():
                lines.setdefault(ln.get_label(), (np.asarray(ln.get_xdata(), float), np.asarray(ln.get_ydata(), float)))
            images += [np.ma.getdata(im.get_array()) for im in ax.get_images()]
            clims += [im.get_clim() for im in ax.get_images()]
            titles.append(ax.get_title())
            ticks += [t.get_text() for t in ax.get_xticklabels() + ax.get_yticklabels()]
            colls.update({col.get_label(): col for col in ax.collections})
            bars.update({b.get_label(): b for b in ax.containers})
            texts += [t.get_text() for t in ax.texts]
        seen[Path(path).name] = {
            "lines": lines,
            "images": images,
            "clims": clims,
            "title": "\n".join(titles),
            "ticks": ticks,
            "collections": colls,
            "bars": bars,
            "texts": texts,
        }
        return save(fig, path)

    monkeypatch.setattr(plots, "_save", capture)
    return seen


def _check_png(p: Path) -> None:
    """A PNG of a real drawing: right header, decodes, ≥ 400 × 300 px, and ≥ 2 % of its pixels are not background."""
    import matplotlib.image as mpimg

    assert p.is_file(), p
    assert p.read_bytes()[:8] == PNG, p
    img = mpimg.imread(p)[..., :3]
    h, w = img.shape[:2]
    assert w >= 400 and h >= 300, (p, img.shape)
    ink = np.any(np.abs(img - img[0, 0]) > 0.05, axis=-1).mean()
    assert ink > 0.02, (p, ink)


def _steps(result: Any) -> pd.DataFrame:
    return result.tables["steps"].sort_values("step")


def _step_line(figure: dict[str, Any], prefix: str) -> np.ndarray:
    """y values of the step line whose label starts with ``prefix``, without the repeated last point."""
    match = [v for k, v in figure["lines"].items() if k.startswith(prefix)]
    assert len(match) == 1, (prefix, list(figure["lines"]))
    return match[0][1][:-1]


def test_plot_run_draws_the_recorded_run(tmp_path: Path, runs: dict[str, Any], figures: dict) -> None:
    r = runs["default"]
    paths = plot_run(r, tmp_path / "plots", strict=True)
    assert sorted(p.name for p in paths) == sorted(RUN_FILES)
    for name in RUN_FILES:
        _check_png(tmp_path / "plots" / name)
    s = _steps(r)
    # load profile: the black demand line is the recorder's total load, step by step, and the title its peak
    lp = figures["load_profile.png"]
    np.testing.assert_allclose(_step_line(lp, "total demand"), s.total_load_kw, rtol=0, atol=1e-9)
    assert f"peak demand {s.total_load_kw.max():,.0f} kW" in lp["title"]
    # price / EV load: the price line is the cleared price of every step
    np.testing.assert_allclose(_step_line(figures["price_ev_load.png"], "price"), s.price_usd_per_mwh, atol=1e-9)
    # heat map: the image is bus × step of the bus table's vm_pu, and the title names the real minimum by its
    # pandapower index (every output does, whatever numbering the scenario was written in)
    bus = r.tables["bus"]
    vm = bus.pivot(index="step", columns="bus", values="vm_pu").sort_index().sort_index(axis=1)
    hm = figures["voltage_heatmap.png"]
    assert len(hm["images"]) == 1
    np.testing.assert_allclose(hm["images"][0], vm.to_numpy().T, atol=1e-12)
    worst, best = bus.loc[bus.vm_pu.idxmin()], bus.loc[bus.vm_pu.idxmax()]
    assert f"Vmin {worst.vm_pu:.3f} pu (bus {int(worst.bus)})" in hm["title"]
    assert f"Vmax {best.vm_pu:.3f} pu (bus {int(best.bus)})" in hm["title"]
    # colour limits from the data (a 0.90…1.05 band fixed in advance washed a 0.92…1.00 feeder out)
    lo, hi = hm["clims"][0]
    span = vm.to_numpy().max() - vm.to_numpy().min()
    assert vm.to_numpy().min() - 0.05 * span <= lo <= vm.to_numpy().min()
    assert vm.to_numpy().max() <= hi <= vm.to_numpy().max() + 0.05 * span


@pytest.mark.slow
def test_plot_run_multi_day_and_pandapower_numbering(tmp_path: Path, runs: dict[str, Any], figures: dict) -> None:
    r = runs["multi-day"]
    assert r.scenario.grid.bus_numbering == "pandapower"
    paths = plot_run(r, tmp_path, strict=True)
    assert sorted(p.name for p in paths) == sorted(RUN_FILES)
    s = _steps(r)
    assert len(s) == 72
    np.testing.assert_allclose(_step_line(figures["load_profile.png"], "total demand"), s.total_load_kw, atol=1e-9)
    hm = figures["voltage_heatmap.png"]
    assert any("day 3" in t for t in hm["ticks"]), hm["ticks"]  # a 3-day time axis
    bus = r.tables["bus"]
    worst = bus.loc[bus.vm_pu.idxmin()]
    assert f"(bus {int(worst.bus)})," in hm["title"]  # 0-based: pandapower numbering
    assert "0" in hm["ticks"] and "33" not in hm["ticks"]


def test_plot_run_without_evs_and_bus_table(tmp_path: Path, runs: dict[str, Any], figures: dict) -> None:
    r = runs["no EVs"]
    assert r.tables["evs"].empty and np.all(r.tables["steps"].ev_load_kw == 0)
    paths = plot_run(_view(r, bus=None), tmp_path, strict=True)
    names = {p.name for p in paths}
    assert names == set(RUN_FILES) - {
        "voltage_heatmap.png",
        "voltage_profile.png",
        "fulfilment.png",
        "network_map.png",
        "sessions.png",
        "soc.png",
    }
    for p in paths:
        _check_png(p)
    lp = figures["load_profile.png"]
    assert "EV share of energy 0.0%" in lp["title"]
    assert not any(k.startswith("EV load") for k in lp["lines"])
    # nobody waited: the stations plot falls back to queue length over time
    assert (tmp_path / "stations.png").is_file()


def test_plot_run_minimal_tables(tmp_path: Path, runs: dict[str, Any]) -> None:
    r = runs["default"]
    only = SimpleNamespace(
        tables={"steps": r.tables["steps"], "line": r.tables["line"].iloc[:0]}, kpis=r.kpis, scenario=r.scenario
    )
    paths = plot_run(only, tmp_path, strict=True)
    assert {p.name for p in paths} == {"load_profile.png", "price_ev_load.png"}
    for p in paths:
        _check_png(p)


def test_plot_run_never_raises_when_not_strict(tmp_path: Path, runs: dict[str, Any]) -> None:
    r = runs["default"]
    broken = _view(r, bus=r.tables["bus"].drop(columns="vm_pu"))  # broken table: warned and skipped
    with pytest.warns(RuntimeWarning) as caught:
        paths = plot_run(broken, tmp_path)
    messages = " ".join(str(w.message) for w in caught)
    assert all(f in messages for f in ("voltage_heatmap.png", "voltage_profile.png", "network_map.png"))
    assert {p.name for p in paths} == set(RUN_FILES) - {"voltage_heatmap.png", "voltage_profile.png", "network_map.png"}
    with pytest.raises(KeyError):
        plot_run(broken, tmp_path / "strict", strict=True)


def test_plot_comparison(tmp_path: Path, runs: dict[str, Any], figures: dict) -> None:
    frames = {"no EVs": runs["no EVs"], "uncontrolled": runs["uncontrolled"], "elasticity-dr": runs["default"]}
    paths = plot_comparison(frames, tmp_path / "cmp", strict=True)
    assert sorted(p.name for p in paths) == sorted(COMPARISON_FILES)
    for p in paths:
        _check_png(p)
    load, volt = figures["comparison_load.png"], figures["comparison_voltage.png"]
    for label, r in frames.items():  # one line per run, carrying that run's own series
        s = _steps(r)
        np.testing.assert_allclose(_step_line(load, f"{label} ("), s.total_load_kw, atol=1e-9)
        np.testing.assert_allclose(_step_line(volt, f"{label} ("), s.vmin_pu, atol=1e-12)
        assert f"{label} (peak {s.total_load_kw.max():,.0f} kW)" in load["lines"]
        # Vmax beside Vmin: the dotted upper line is the run's highest bus voltage per step, and the legend says both
        np.testing.assert_allclose(volt["lines"][f"_{label}"][1][:-1], s.vmax_pu, atol=1e-12)
        assert f"{label} (min {s.vmin_pu.min():.3f} pu, max {s.vmax_pu.max():.3f} pu)" in volt["lines"]
    # the runs differ (uncontrolled EVs raise the evening peak over no EVs), so a plot that drew one run three
    # times would fail above
    assert runs["uncontrolled"].tables["steps"].total_load_kw.max() > runs["no EVs"].tables["steps"].total_load_kw.max()
    assert plot_comparison({}, tmp_path / "empty") == []


# ------------------------------------------------------------------------------------------ network, sessions
def _net(result: Any) -> Any:
    from sim.model import compiled_grid

    return compiled_grid(result.scenario.grid)[0].net


@pytest.mark.slow
def test_network_map_colours_the_worst_bus_and_the_peak_loading(tmp_path: Path, runs: dict, figures: dict) -> None:
    r = runs["default"]
    # push one far bus above the band for two steps: the worst voltage of that bus is then its maximum
    bus = r.tables["bus"].copy()
    hot = int(bus.bus.max())
    sel = (bus.bus == hot) & bus.step.isin([2, 3])
    bus.loc[sel, "vm_pu"] = 1.081
    plot_run(_view(r, bus=bus), tmp_path, strict=True)
    fig = figures["network_map.png"]
    buses = fig["collections"]["buses (colour: worst voltage)"]
    vm = bus.pivot(index="step", columns="bus", values="vm_pu").sort_index(axis=1)
    vmin, vmax = vm.min().to_numpy(), vm.max().to_numpy()
    want = np.where(np.abs(vmax - 1) > np.abs(vmin - 1), vmax, vmin)  # per bus, farthest from 1 pu
    np.testing.assert_allclose(np.ma.getdata(buses.get_array()), want, atol=1e-12)
    assert np.ma.getdata(buses.get_array())[list(vm.columns).index(hot)] == pytest.approx(1.081)
    # the annotated worst bus is the hot one, and the title reports the overvoltage it causes
    assert any(t.startswith(f"bus {hot}: 1.081 pu") for t in fig["texts"]), fig["texts"]
    assert f"Vmax 1.081 pu (bus {hot})" in fig["title"]
    assert f"{2 * r.scenario.time.dt_min:,.0f} bus·min above" in fig["title"]
    # lines in service: coloured by each line's peak loading, in the network's line order
    lines = fig["collections"]["line (colour: peak loading)"]
    peak = r.tables["line"].groupby("line")["loading_percent"].max()
    np.testing.assert_allclose(
        np.ma.getdata(lines.get_array()), peak.reindex(_net(r).line.index[_net(r).line.in_service]), atol=1e-12
    )
    # stations: one marker per bus with a station
    st = fig["collections"][next(k for k in fig["collections"] if k.startswith("charging stations"))]
    assert len(st.get_offsets()) == r.tables["stations"].bus.nunique()


@pytest.mark.slow
def test_voltage_profile_follows_the_feeder_branches(tmp_path: Path, runs: dict, figures: dict) -> None:
    import networkx as nx
    import pandapower.topology as top

    r = runs["default"]
    plot_run(r, tmp_path, strict=True)
    net = _net(r)
    dist = nx.single_source_dijkstra_path_length(top.create_nxgraph(net), int(net.ext_grid.bus.iloc[0]))
    mean = r.tables["bus"].groupby("bus")["vm_pu"].mean()
    segs = figures["voltage_profile.png"]["collections"]["mean"].get_segments()
    assert len(segs) == len(net.bus) - 1  # one per branch of the radial feeder
    joined = {(a, b) for a, b in zip(net.line.from_bus, net.line.to_bus)}
    for (x0, y0), (x1, y1) in segs:  # each segment joins two buses that a line joins, at their distances
        a = next(b for b in mean.index if abs(dist[b] - x0) < 1e-9 and abs(mean[b] - y0) < 1e-12)
        b = next(b for b in mean.index if abs(dist[b] - x1) < 1e-9 and abs(mean[b] - y1) < 1e-12)
        assert (a, b) in joined or (b, a) in joined, (a, b)


@pytest.mark.slow
def test_sessions_gantt_has_one_bar_per_session(tmp_path: Path, runs: dict, figures: dict) -> None:
    r = runs["uncontrolled"]
    plot_run(r, tmp_path, strict=True)
    evs = r.tables["evs"]
    horizon_h = r.scenario.time.horizon_h
    plugged = evs[np.isfinite(evs.plugin_min) & (evs.arrival_min / 60 < horizon_h)]
    label = f"plugged in ({len(plugged)} sessions)"
    bars = figures["sessions.png"]["bars"][label]
    assert len(bars.patches) == len(plugged) > 0
    got = sorted((round(p.get_x(), 9), round(p.get_x() + p.get_width(), 9)) for p in bars.patches)
    end = np.minimum(np.nan_to_num(plugged.unplug_min, nan=np.inf) / 60, horizon_h)
    assert got == sorted(zip(np.round(plugged.plugin_min / 60, 9), np.round(end, 9)))
    # bars in one lane never overlap (a lane is a port in use)
    by_y: dict[float, list] = {}
    for p in bars.patches:
        by_y.setdefault(round(p.get_y(), 6), []).append((p.get_x(), p.get_x() + p.get_width()))
    for spans in by_y.values():
        spans.sort()
        assert all(b0 >= a1 - 1e-9 for (_, a1), (b0, _) in zip(spans, spans[1:]))


# ------------------------------------------------------------------------------------------ formats
@pytest.mark.slow
def test_svg_and_pdf_beside_png(tmp_path: Path, runs: dict) -> None:
    import xml.etree.ElementTree as ET

    r = runs["default"]
    paths = plot_run(r, tmp_path / "a", strict=True, formats=["png", "svg"])
    assert len(paths) == 2 * len(RUN_FILES)
    for name in RUN_FILES:
        svg = (tmp_path / "a" / name).with_suffix(".svg")
        root = ET.parse(svg).getroot()
        assert root.tag.endswith("svg") and len(list(root.iter())) > 100, svg
    # the scenario's outputs.format is the default
    sc = r.scenario.model_copy(update={"outputs": r.scenario.outputs.model_copy(update={"format": ["pdf"]})})
    paths = plot_run(SimpleNamespace(tables=r.tables, kpis=r.kpis, scenario=sc), tmp_path / "b", strict=True)
    assert {p.suffix for p in paths} == {".pdf"} and len(paths) == len(RUN_FILES)
    assert all(p.read_bytes()[:5] == b"%PDF-" for p in paths)
    comp = plot_comparison({"x": r}, tmp_path / "c", formats=["svg"])
    assert sorted(p.name for p in comp) == ["comparison_load.svg", "comparison_voltage.svg"]


def test_unknown_format_is_one_line_at_validation() -> None:
    from sim.scenario import ScenarioError

    with pytest.raises(ScenarioError) as err:
        load_scenario("default", ['outputs.format=["png", "jpg"]'])
    assert "outputs.format" in str(err.value) and "'svg'" in str(err.value) and "\n" not in str(err.value)


# ------------------------------------------------------------------------------------------ console, KPIs
def test_kpis_without_evs_are_nan_and_print_n_a(runs: dict, capsys: pytest.CaptureFixture) -> None:
    from experiments.console import print_kpis

    k = runs["no EVs"].kpis
    assert k["n_evs"] == 0
    for name in ("energy_fulfilment", "user_price_usd_per_kwh", "share_evs_at_target"):
        assert np.isnan(k[name]), name
    print_kpis(k)
    out = capsys.readouterr().out
    for label in ("energy fulfilment", "user price [$/kWh]"):
        row = next(line for line in out.splitlines() if label in line)
        assert "n/a" in row and "0.000" not in row and "1.000" not in row, row
    # Vmax and the over/undervoltage split are shown beside Vmin
    assert "Vmax [pu]" in out and "overvoltage [bus·min]" in out and "undervoltage [bus·min]" in out
    d = runs["default"].kpis
    assert d["overvoltage_bus_minutes"] + d["undervoltage_bus_minutes"] == d["voltage_violation_bus_minutes"]


def test_console_tables_wrap_long_labels_within_the_width(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    from experiments.console import make_table, show

    monkeypatch.setenv("COLUMNS", "80")
    # one word of 80 characters: rich's default cuts it to 'market.params.elasticity-dr.participati…'
    label = "market.params.elasticity-dr.participation=0.6,fleet.groups.0.share=0.25,mechanism=x"
    t = make_table("sweep", [("point", "left"), ("KPI", "left"), ("mean", "right")])
    t.add_row(label, "peak_load_kw", "4,210")
    show(t)
    out = capsys.readouterr().out
    assert max(len(line) for line in out.splitlines()) <= 80
    assert "…" not in out
    cells = "".join(  # the label folded over several lines, every character kept
        line.split("│")[1].strip() for line in out.splitlines() if line.startswith("│")
    )
    assert cells.replace(" ", "") == label.replace(" ", "")


def test_numbers_are_formatted_sensibly() -> None:
    from experiments.console import fmt_number, fmt_value

    assert fmt_number(2.051e-16) == "0"  # a zero difference in floating point
    assert fmt_number(float("nan")) == fmt_value("{:.3f}", float("nan")) == "n/a"
    assert fmt_number(0.0123456) == "0.01235"
    assert fmt_number(123456.7) == "123,457"
    assert fmt_value("{:d}", 3.0) == "3"


def test_compare_table_prints_a_zero_gap_as_zero(tmp_path: Path) -> None:
    from experiments.compare import COLUMNS, write

    row = {k: 1.0 for k in COLUMNS}
    table = pd.DataFrame([{"mechanism": "milp", **row, "market_gap": 2.051e-16, "vmax_pu": float("nan")}])
    md = (write(table, tmp_path) / "compare.md").read_text()
    assert "e-16" not in md and "| 0 |" in md and "| n/a |" in md
    assert "shown as 0" in md  # the tolerance is stated
    assert "Vmax [pu]" in md and "overvoltage" in md


def test_eho_weight_pareto_labels_and_colour_bar_do_not_overlap(tmp_path: Path) -> None:
    import matplotlib.pyplot as plt

    from experiments.eho_paper import TABLE9
    from experiments.eho_paper.plots import _weight_pareto

    rng = np.random.default_rng(0)
    rows = [
        {
            "weights": ":".join(f"{a:g}" for a in w),
            "method": m,
            "dr_revenue_usd": rev * (1 + 0.05 * rng.normal()),
            "load_variance_kw2": var * (1 + 0.05 * rng.normal()),
            "wait_mean_h": wait * (1 + 0.1 * rng.normal()),
            "paper_dr_benefit_usd": rev,
            "paper_grid_stress_kw2": var,
            "paper_wait_h": wait,
        }
        for w, rev, var, wait, _ in TABLE9
        for m in ("eho", "de")
    ]
    kept: list[Any] = []
    keep = SimpleNamespace(
        subplots=lambda *a, **k: kept.append(plt.subplots(*a, **k)) or kept[-1], close=lambda f: None
    )
    _weight_pareto(keep, tmp_path, pd.DataFrame(rows))
    fig, axes = kept[0]
    try:
        assert (tmp_path / "weight_pareto.png").is_file()
        renderer = fig.canvas.get_renderer()
        panels = [ax.get_window_extent(renderer) for ax in axes]
        bar = next(a for a in fig.axes if a not in list(axes)).get_window_extent(renderer)
        assert not any(bar.overlaps(p) for p in panels)  # the colour bar has its own space
        for ax in axes:
            boxes = [t.get_window_extent(renderer) for t in ax.texts]
            assert boxes, "no weight labels"
            assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1 :])
        # one colour scale for both methods and panels: every scatter shares the same limits
        clims = {c.get_clim() for ax in axes for c in ax.collections if c.get_array() is not None}
        assert len(clims) == 1
    finally:
        plt.close(fig)


def test_network_layout_without_geodata_is_a_tree_from_the_slack() -> None:
    import pandapower.networks as pn

    from experiments.plotting.network import layout, topology

    net = pn.case33bw()
    net.bus["geo"] = None
    topo = topology(net)
    pos, where = layout(net, topo)
    assert where == "radial layout from the slack" and set(pos) == set(net.bus.index)
    assert pos[0][0] == 0 and all(pos[b][0] == topo.hops[b] for b in topo.buses)
    for b, p in topo.parent.items():  # a parent sits one column left of each child, within its children's span
        kids = [k for k, q in topo.parent.items() if q == p]
        assert pos[p][0] == pos[b][0] - 1
        assert min(pos[k][1] for k in kids) <= pos[p][1] <= max(pos[k][1] for k in kids)
    assert topo.n_mesh == 0 and len(topo.parent) == len(net.bus) - 1  # 5 open tie lines are out of service


def test_save_figure_writes_every_current_format(tmp_path: Path) -> None:
    """The paper runners' figures (EHO, ROC) go through save_figure, so outputs.format reaches them too."""
    from matplotlib import pyplot as plt

    from experiments.plotting.common import formats, save_figure

    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    with formats(["png", "svg", "pdf"]):
        files = save_figure(fig, tmp_path / "f.png", dpi=50)
    plt.close(fig)
    assert [f.name for f in files] == ["f.png", "f.svg", "f.pdf"] and all(f.stat().st_size > 0 for f in files)
    assert (tmp_path / "f.pdf").read_bytes().startswith(b"%PDF-")


def _days_of_steps(days: int) -> SimpleNamespace:
    """A result with only a steps table: ``days`` days of 15-min steps from noon, a daily load shape, a known peak."""
    n = days * 96
    t_h = np.arange(n) * 0.25
    tod = (12.0 + t_h) % 24.0
    base = 3000.0 + 1000.0 * np.sin(np.pi * tod / 24.0)
    ev = np.where((tod > 18) | (tod < 6), 500.0, 50.0)
    steps = pd.DataFrame(
        {"step": np.arange(n), "t_min": t_h * 60, "time_h": t_h, "tod_h": tod, "base_load_kw": base,
         "ev_load_kw": ev, "total_load_kw": base + ev, "vmin_pu": 0.96 - 1e-5 * ev, "vmax_pu": 1.04 + 1e-5 * base}
    )  # fmt: skip
    return SimpleNamespace(tables={"steps": steps}, kpis={}, scenario=None)


def test_runs_longer_than_a_week_get_the_long_horizon_plots(tmp_path: Path) -> None:
    """Past LONG_DAYS the step-by-step load, price and session plots give way to the daily envelope, the calendar
    of daily peak and voltage minimum, and duration curves; a week or less keeps the step-by-step ones."""
    from experiments.plotting.long import LONG_PLOTS, SHORT_ONLY

    long = {p.name for p in plot_run(_days_of_steps(10), tmp_path / "long", strict=True)}
    assert set(LONG_PLOTS) <= long and not set(SHORT_ONLY) & long
    week = {p.name for p in plot_run(_days_of_steps(7), tmp_path / "week", strict=True)}
    assert "load_profile.png" in week and not set(LONG_PLOTS) & week
