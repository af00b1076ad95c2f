"""Study plots (convergence, response, tornado, heatmap, plot_study) on small synthetic study frames."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from experiments.study_plots import (
    _kpi_label,
    _param_label,
    _safe,
    _short,
    plot_convergence,
    plot_heatmap,
    plot_response,
    plot_study,
    plot_tornado,
)

PNG = b"\x89PNG\r\n\x1a\n"
KPIS = ["peak_load_kw", "energy_losses_kwh", "vdi_pu"]
DR_MAX = "market.params.elasticity-dr.dr_max"


def make_reps(points: list[dict], n: int, *, seed: int = 0, fail: set[tuple[int, int]] = frozenset()) -> pd.DataFrame:
    """Replications of the given points (dicts of params, plus an optional 'label'); KPIs depend on the params."""
    rng = np.random.default_rng(seed)
    rows = []
    for i, p in enumerate(points):
        params = {k: v for k, v in p.items() if k != "label"}
        eff = sum(float(v) for v in params.values() if isinstance(v, (int, float)))
        eff += sum(0.3 for v in params.values() if isinstance(v, str) and v != "uncontrolled")
        for r in range(n):
            row = {"point": i, "rep": r, "status": "ok"}
            row.update({f"param.{k}": v for k, v in params.items()})
            row["kpi.peak_load_kw"] = 4000.0 * (1 - 0.2 * eff) + rng.normal(0, 120)
            row["kpi.energy_losses_kwh"] = 2100.0 * (1 - 0.1 * eff) + rng.normal(0, 60)
            row["kpi.vdi_pu"] = 0.045 * (1 - 0.15 * eff) + rng.normal(0, 0.002)
            if (i, r) in fail:
                row["status"] = "failed"
                for k in KPIS:
                    row[f"kpi.{k}"] = np.nan
            rows.append(row)
    return pd.DataFrame(rows)


def summarize(reps: pd.DataFrame, labels: dict[int, str]) -> pd.DataFrame:
    """Per (point, KPI): n, n_failed, mean, std, mcse and the 95 % t-CI of the mean."""
    params = [c for c in reps.columns if c.startswith("param.")]
    kpis = [c for c in reps.columns if c.startswith("kpi.")]
    rows = []
    for point, g in reps.groupby("point"):
        ok = g[g["status"] == "ok"]
        for c in kpis:
            x = ok[c].dropna().to_numpy(float)
            n = len(x)
            m = x.mean() if n else np.nan
            s = x.std(ddof=1) if n > 1 else np.nan
            h = stats.t.ppf(0.975, n - 1) * s / np.sqrt(n) if n > 1 else np.nan
            rows.append(
                {
                    "point": point,
                    "label": labels.get(point, ""),
                    **{p: g[p].iloc[0] for p in params},
                    "kpi": c[4:],
                    "n": n,
                    "n_failed": int((g["status"] != "ok").sum()),
                    "mean": m,
                    "std": s,
                    "mcse": s / np.sqrt(n) if n > 1 else np.nan,
                    "ci_low": m - h,
                    "ci_high": m + h,
                }
            )
    return pd.DataFrame(rows)


def study(points: list[dict], n: int, **kw) -> tuple[pd.DataFrame, pd.DataFrame]:
    reps = make_reps(points, n, **kw)
    labels = {i: p.get("label") or ", ".join(f"{k}={v}" for k, v in p.items()) for i, p in enumerate(points)}
    return reps, summarize(reps, labels)


def assert_pngs(paths: list[Path], names: list[str]) -> None:
    assert sorted(p.name for p in paths) == sorted(names)
    for p in paths:
        assert p.is_file() and p.stat().st_size > 5000, p
        assert p.read_bytes()[:8] == PNG


@pytest.fixture(autouse=True)
def _no_open_figures():
    yield
    import matplotlib.pyplot as plt

    assert plt.get_fignums() == []


def test_montecarlo_convergence(tmp_path):
    reps, summary = study([{"label": "scenario"}], 40)
    paths = plot_study(reps, summary, {"kind": "montecarlo", "headline_kpis": KPIS}, tmp_path)
    assert_pngs(paths, ["convergence.png"])
    # kpi names with prefix, unknown KPIs skipped, another point → nothing
    assert_pngs(plot_convergence(reps, ["kpi.vdi_pu", "nope"], tmp_path / "b"), ["convergence.png"])
    assert plot_convergence(reps, KPIS, tmp_path / "c", point=7) == []


@pytest.mark.slow
def test_montecarlo_with_failed_reps(tmp_path):
    reps, summary = study([{"label": "scenario"}], 30, fail={(0, 3), (0, 11), (0, 12)})
    assert summary["n"].eq(27).all() and summary["n_failed"].eq(3).all()
    assert_pngs(plot_convergence(reps, KPIS, tmp_path), ["convergence.png"])
    # default headline KPIs: only those present
    assert_pngs(plot_study(reps, summary, {"kind": "montecarlo"}, tmp_path / "s"), ["convergence.png"])


def test_one_param_sweep_with_baseline(tmp_path):
    points = [{"dr.participation": v} for v in (0.0, 0.2, 0.4, 0.6)]
    points.append({"label": "baseline", "ev.n": 0.0, "market.mechanism": "uncontrolled"})
    reps, summary = study(points, 12, fail={(1, 0), (1, 5)})
    paths = plot_study(reps, summary, {"kind": "sweep", "headline_kpis": KPIS}, tmp_path)
    assert_pngs(paths, ["response_dr.participation.png"])


@pytest.mark.slow
def test_two_param_factorial(tmp_path):
    points = [{DR_MAX: a, "dr.participation": b} for a, b in itertools.product((0.1, 0.2, 0.3), (0.0, 0.2, 0.4, 0.6))]
    reps, summary = study(points, 8)
    paths = plot_study(reps, summary, {"kind": "sweep", "headline_kpis": KPIS + ["missing_kpi"]}, tmp_path)
    assert_pngs(
        paths,
        ["response_elasticity-dr.dr_max.png", "response_dr.participation.png"] + [f"heatmap_{k}.png" for k in KPIS],
    )
    assert_pngs(
        plot_heatmap(summary, DR_MAX, "param.dr.participation", "kpi.vdi_pu", tmp_path / "h"), ["heatmap_vdi_pu.png"]
    )
    assert plot_heatmap(summary, DR_MAX, DR_MAX, "vdi_pu", tmp_path / "h2") == []


@pytest.mark.slow
def test_three_param_sweep_and_string_values(tmp_path):
    points = [
        {"a.x": a, "b.y": b, "market.mechanism": m}
        for a, b, m in itertools.product((1.0, 2.0), (0.5, 1.0, 1.5), ("uncontrolled", "elasticity-dr"))
    ]
    reps, summary = study(points, 5)
    paths = plot_study(reps, summary, {"kind": "sweep", "headline_kpis": KPIS}, tmp_path)
    assert_pngs(paths, ["response_a.x.png", "response_b.y.png", "response_market.mechanism.png"])


@pytest.mark.slow
def test_oat(tmp_path):
    points = (
        [{"label": "baseline"}]
        + [{"dr.participation": v} for v in (0.0, 0.3, 0.6)]
        + [{DR_MAX: v} for v in (0.1, 0.2, 0.4)]
    )
    reps, summary = study(points, 10)
    paths = plot_study(reps, summary, {"kind": "oat", "headline_kpis": KPIS}, tmp_path)
    assert_pngs(
        paths,
        [f"tornado_{k}.png" for k in KPIS] + ["response_dr.participation.png", "response_elasticity-dr.dr_max.png"],
    )
    # without a baseline point the tornado falls back to the mean of all points
    no_base = summary[summary["label"] != "baseline"]
    assert_pngs(plot_tornado(no_base, "peak_load_kw", tmp_path / "nb"), ["tornado_peak_load_kw.png"])


@pytest.mark.parametrize("frame", [pd.DataFrame(), None])
def test_empty_inputs(tmp_path, frame):
    assert plot_convergence(frame, KPIS, tmp_path) == []
    assert plot_response(frame, "dr.participation", KPIS, tmp_path) == []
    assert plot_tornado(frame, "peak_load_kw", tmp_path) == []
    assert plot_heatmap(frame, "a", "b", "peak_load_kw", tmp_path) == []
    for kind in ("montecarlo", "sweep", "oat"):
        assert plot_study(frame, frame, {"kind": kind}, tmp_path) == []
    assert list(tmp_path.iterdir()) == []


def test_missing_param_or_kpi(tmp_path):
    reps, summary = study([{"dr.participation": v} for v in (0.0, 0.5)], 4)
    assert plot_response(summary, "nope", KPIS, tmp_path) == []
    assert plot_response(summary, "dr.participation", ["nope"], tmp_path) == []
    assert plot_tornado(summary, "nope", tmp_path) == []
    with pytest.warns(RuntimeWarning, match="unknown study kind"):
        assert plot_study(reps, summary, {"kind": "other"}, tmp_path) == []


def test_names():
    assert _short("param.market.params.elasticity-dr.dr_max") == "elasticity-dr.dr_max"
    assert _short("param.fleet.groups/0: x y.elasticity") == "groups_0_x_y.elasticity"
    assert _safe("a/b c:d") == "a_b_c_d"
    assert _kpi_label("peak_load_kw") == "peak load [kW]"
    assert _kpi_label("user_price_usd_per_kwh") == "user price [$/kWh]"
    assert _kpi_label("energy_fulfilment") == "energy fulfilment [-]"


# ------------------------------------------------------------------------------------------ honest drawings
@pytest.fixture
def drawn(monkeypatch: pytest.MonkeyPatch) -> dict[str, object]:
    """file name → the figure as it is saved (study plots save through `study_common._save`)."""
    import experiments.plotting.study as study_mod
    import experiments.plotting.study_factors as factors_mod

    seen: dict[str, object] = {}
    real = study_mod._save

    def capture(fig, path):
        fig.canvas.draw()  # tick labels and offsets exist only once drawn
        seen[Path(path).name] = {
            "offsets": [ax.yaxis.get_offset_text().get_text() for ax in fig.axes]
            + [ax.xaxis.get_offset_text().get_text() for ax in fig.axes],
            "xlabels": [ax.get_xlabel() for ax in fig.axes],
            "ylabels": [t.get_text() for ax in fig.axes for t in ax.get_yticklabels()],
            "clims": [im.get_clim() for ax in fig.axes for im in ax.get_images()],
        }
        return real(fig, path)

    monkeypatch.setattr(study_mod, "_save", capture)
    monkeypatch.setattr(factors_mod, "_save", capture)
    return seen


def test_response_has_plain_ticks_and_readable_labels(tmp_path, drawn):
    # voltages near 1.01 pu that differ in the fourth decimal: matplotlib's default shows "+1.01" and 1e-4 ticks
    points = [{"dr.participation": v} for v in (0.0, 0.2, 0.4)]
    reps, summary = study(points, 6)
    sel = summary.kpi == "vdi_pu"
    mean = 1.01 + 2e-5 * summary.loc[sel, "point"].to_numpy(float)
    summary.loc[sel, "mean"], summary.loc[sel, "ci_low"], summary.loc[sel, "ci_high"] = mean, mean - 1e-5, mean + 1e-5
    assert_pngs(plot_response(summary, "dr.participation", ["vdi_pu"], tmp_path), ["response_dr.participation.png"])
    fig = drawn["response_dr.participation.png"]
    assert all(o == "" for o in fig["offsets"]), fig["offsets"]
    assert fig["xlabels"] == ["share of customers in DR [-]"]
    assert _param_label("param.a.some_rate_kw") == "some rate [kW] (a.some_rate_kw)"


def test_oat_tornado_labels_parameters_readably(tmp_path, drawn):
    points = [{"label": "baseline"}] + [{"dr.participation": v} for v in (0.0, 0.6)] + [{DR_MAX: v} for v in (0.1, 0.4)]
    reps, summary = study(points, 6)
    plot_tornado(summary, "peak_load_kw", tmp_path)
    labels = drawn["tornado_peak_load_kw.png"]["ylabels"]
    assert set(labels) == {"share of customers in DR [-]", "largest DR share of a load [-]"}


def test_heatmap_colour_span_covers_the_confidence_intervals(tmp_path, drawn):
    # every cell the same KPI up to noise: the colours must not make noise inside the CI look like an effect
    points = [{"a.x": a, "b.y": b} for a, b in itertools.product((1.0, 2.0), (1.0, 2.0, 3.0))]
    reps, summary = study(points, 8)
    rows = summary[summary.kpi == "vdi_pu"]
    plot_heatmap(summary, "a.x", "b.y", "vdi_pu", tmp_path)
    lo, hi = drawn["heatmap_vdi_pu.png"]["clims"][0]
    assert lo == pytest.approx(rows.ci_low.min()) and hi == pytest.approx(rows.ci_high.max())
    assert hi - lo > rows["mean"].max() - rows["mean"].min()


def test_study_plots_in_the_scenario_formats(tmp_path):
    import xml.etree.ElementTree as ET

    reps, summary = study([{"dr.participation": v} for v in (0.0, 0.5)], 4)
    manifest = {"kind": "sweep", "headline_kpis": KPIS, "scenario_data": {"outputs": {"format": ["png", "svg"]}}}
    paths = plot_study(reps, summary, manifest, tmp_path)
    assert sorted(p.name for p in paths) == ["response_dr.participation.png", "response_dr.participation.svg"]
    assert ET.parse(tmp_path / "response_dr.participation.svg").getroot().tag.endswith("svg")
    pdf = plot_study(reps, summary, {"kind": "sweep", "headline_kpis": KPIS}, tmp_path / "p", formats=["pdf"])
    assert [p.suffix for p in pdf] == [".pdf"] and pdf[0].read_bytes()[:5] == b"%PDF-"


def test_points_study_draws_each_point_with_its_ci(tmp_path: Path) -> None:
    """kind = "points" (003-fdi) used to warn 'unknown study kind' and draw nothing."""
    import unittest.mock as mock
    import warnings as _w

    from matplotlib import pyplot as plt

    from experiments.plotting import study_points
    from experiments.study_plots import plot_study

    summary = pd.DataFrame(
        {
            "point": [0, 1, 2] * 2,
            "label": ["baseline", "inflation 5 %", "inflation 15 %"] * 2,
            "kpi": ["peak_load_kw"] * 3 + ["energy_losses_kwh"] * 3,
            "n": [20] * 6,
            "mean": [400.0, 410.0, 450.0, 90.0, 91.0, 95.0],
            "ci_low": [390.0, 400.0, 440.0, 88.0, 89.0, 93.0],
            "ci_high": [410.0, 420.0, 460.0, 92.0, 93.0, 97.0],
        }
    )
    seen: list[Any] = []
    real = study_points._save

    def keep(fig: Any, path: Path) -> Path:
        seen.append([[bar.get_width() for bar in ax.patches] for ax in fig.axes if ax.get_visible()])
        return real(fig, path)

    with _w.catch_warnings(), mock.patch.object(study_points, "_save", keep):
        _w.simplefilter("error")
        files = plot_study(pd.DataFrame(), summary, {"kind": "points"}, tmp_path, strict=True)
    plt.close("all")
    assert [f.name for f in files] == ["points.png"]
    assert seen == [[[400.0, 410.0, 450.0], [90.0, 91.0, 95.0]]]  # one figure, a panel per KPI, a bar per point
