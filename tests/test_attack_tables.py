"""The attack study's paper tables on stored replications (no simulation: hand-written replication tables)."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from experiments.attack_study import impact_row, peak_reduction

MANIFEST = {
    "points": [
        {"index": 0, "label": "baseline"},
        {"index": 1, "label": "attack"},
        {"index": 2, "label": "uncontrolled"},
    ]
}


def _reps(uncontrolled_ok: bool) -> pd.DataFrame:
    status = "ok" if uncontrolled_ok else "failed"
    return pd.DataFrame(
        {
            "point": [0, 1, 2, 0, 1, 2],
            "rep": [0, 0, 0, 1, 1, 1],
            "status": ["ok", "ok", status, "ok", "ok", status],
            "kpi.peak_load_kw": [100.0, 110.0, 125.0, 102.0, 111.0, 120.0],
        }
    )


def test_peak_reduction_is_per_replication_against_uncontrolled() -> None:
    pr = peak_reduction(_reps(True), 0, 2)
    assert list(pr.index) == [0, 1]
    assert pr.tolist() == pytest.approx([100.0 * (1 - 100 / 125), 100.0 * (1 - 102 / 120)])


def test_impact_row_without_successful_uncontrolled_replications_says_n_a() -> None:
    # the uncontrolled point failed in every replication: no peak reduction to compare, not a crash
    assert peak_reduction(_reps(False), 0, 2).empty
    row = impact_row(_reps(False), MANIFEST, 1, {})
    assert row["peak-reduction loss [pp]"] == "n/a"


def test_impact_row_peak_reduction_loss_is_paired_by_replication() -> None:
    row = impact_row(_reps(True), MANIFEST, 1, {})
    loss = [(1 - 100 / 125) * 100 - (1 - 110 / 125) * 100, (1 - 102 / 120) * 100 - (1 - 111 / 120) * 100]
    mean = sum(loss) / 2
    assert row["peak-reduction loss [pp]"].startswith(f"{mean:.2f} ± ")
    assert not math.isnan(mean)


def test_impact_row_needs_a_baseline_point() -> None:
    manifest = {"points": [p for p in MANIFEST["points"] if p["label"] != "baseline"]}
    with pytest.raises(ValueError, match="baseline"):
        impact_row(_reps(True), manifest, 1, {})
