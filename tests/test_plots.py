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
        lines, images, titles, ticks = {}, [], [], []
        for ax in fig.axes:
            for ln in ax.get_lines():
                lines.setdefault(ln.get_label(), (np.asarray(ln.get_xdata(), float), np.asarray(ln.get_ydata(), float)))
            images += [np.ma.getdata(im.get_array()) for im in ax.get_images()]
            titles.append(ax.get_title())
            ticks += [t.get_text() for t in ax.get_xticklabels() + ax.get_yticklabels()]
        seen[Path(path).name] = {"lines": lines, "images": images, "title": "\n".join(titles), "ticks": ticks}
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
    worst = bus.loc[bus.vm_pu.idxmin()]
    assert f"min {worst.vm_pu:.3f} pu at bus {int(worst.bus)}," in hm["title"]


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
    assert f"at bus {int(worst.bus)}," in hm["title"]  # 0-based: pandapower numbering
    assert "0" in hm["ticks"] and "33" not in hm["ticks"]


def test_plot_run_without_evs_and_bus_table(tmp_path: Path, runs: dict[str, Any], figures: dict) -> None:
    r = runs["no EVs"]
    assert r.tables["evs"].empty and np.all(r.tables["steps"].ev_load_kw == 0)
    paths = plot_run(_view(r, bus=None), tmp_path, strict=True)
    names = {p.name for p in paths}
    assert names == set(RUN_FILES) - {"voltage_heatmap.png", "voltage_profile.png", "fulfilment.png"}
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
    assert "voltage_heatmap.png" in messages and "voltage_profile.png" in messages
    assert {p.name for p in paths} == set(RUN_FILES) - {"voltage_heatmap.png", "voltage_profile.png"}
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
    # the runs differ (uncontrolled EVs raise the evening peak over no EVs), so a plot that drew one run three
    # times would fail above
    assert runs["uncontrolled"].tables["steps"].total_load_kw.max() > runs["no EVs"].tables["steps"].total_load_kw.max()
    assert plot_comparison({}, tmp_path / "empty") == []
