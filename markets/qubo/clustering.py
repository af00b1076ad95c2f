"""EV clustering for the EVA level of ``000_…``: spectral clustering (silhouette score reported) or one cluster per bus.

The paper groups 1000 EVs into 20 "spectral clusters" and reports a silhouette score of 0.55 but gives no feature
set. We cluster on standardised per-EV features that matter to the EVA and the DSO: the electrical position of the
EV's bus (its driving-point resistance to the substation, ``R_kk`` [pu]), the energy need [kWh], the charger
rating [kW] and the plug-in window (first and last slot). Spectral clustering (scikit-learn, RBF affinity on the
standardised features, ``random_state`` drawn from the caller's generator) partitions them; the silhouette score
is computed on the same standardised features (Euclidean), in [−1, 1].

``by-bus`` clustering puts the EVs of one bus into one cluster (silhouette reported on the same features when at
least 2 and at most ``n − 1`` clusters exist, else ``nan``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Clustering", "cluster_evs", "METHODS"]

METHODS = ("spectral", "by-bus")


@dataclass(frozen=True)
class Clustering:
    """A partition of EVs.

    Attributes:
        labels: cluster of each EV, ``0 … n_clusters − 1`` (shape (n_evs,)).
        n_clusters: number of non-empty clusters.
        silhouette: mean silhouette coefficient of the partition on the standardised features, in [−1, 1]
            (``nan`` when undefined: fewer than 2 clusters or every EV its own cluster).
        method: ``"spectral"`` or ``"by-bus"``.
    """

    labels: np.ndarray
    n_clusters: int
    silhouette: float
    method: str


def _features(
    bus_r_pu: np.ndarray, e_need_kwh: np.ndarray, p_max_kw: np.ndarray, start_slot: np.ndarray, end_slot: np.ndarray
) -> np.ndarray:
    x = np.column_stack([bus_r_pu, e_need_kwh, p_max_kw, start_slot, end_slot]).astype(float)
    sd = x.std(axis=0)
    return (x - x.mean(axis=0)) / np.where(sd > 1e-12, sd, 1.0)


def _relabel(labels: np.ndarray) -> np.ndarray:
    _, inv = np.unique(labels, return_inverse=True)
    return inv.astype(np.int64)


def _silhouette(x: np.ndarray, labels: np.ndarray) -> float:
    k = len(np.unique(labels))
    if k < 2 or k > len(labels) - 1:
        return float("nan")
    from sklearn.metrics import silhouette_score

    return float(silhouette_score(x, labels, metric="euclidean"))


def cluster_evs(
    method: str,
    n_clusters: int,
    *,
    bus: np.ndarray,
    bus_r_pu: np.ndarray,
    e_need_kwh: np.ndarray,
    p_max_kw: np.ndarray,
    start_slot: np.ndarray,
    end_slot: np.ndarray,
    rng: np.random.Generator,
) -> Clustering:
    """Partition EVs into clusters.

    Args:
        method: ``"spectral"`` or ``"by-bus"``.
        n_clusters: wanted clusters (spectral; capped at the number of distinct feature rows).
        bus: bus of each EV [pandapower index].
        bus_r_pu: driving-point resistance of each EV's bus to the substation [pu].
        e_need_kwh: energy need of each EV [kWh].
        p_max_kw: charger rating of each EV [kW].
        start_slot: first slot of each EV's window.
        end_slot: one past its last slot.
        rng: generator for the spectral embedding's k-means (from the run's solver stream).

    Returns:
        The partition with its silhouette score.
    """
    n = len(bus)
    if n == 0:
        return Clustering(np.zeros(0, np.int64), 0, float("nan"), method)
    x = _features(bus_r_pu, e_need_kwh, p_max_kw, start_slot, end_slot)
    if method == "by-bus":
        labels = _relabel(np.asarray(bus))
    elif method == "spectral":
        distinct = len(np.unique(np.round(x, 9), axis=0))
        k = int(min(n_clusters, distinct))
        if k <= 1:
            labels = np.zeros(n, np.int64)
        else:
            import warnings

            from sklearn.cluster import SpectralClustering

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "graph is not fully connected" on tiny or duplicate-heavy inputs
                sc = SpectralClustering(
                    n_clusters=k,
                    affinity="rbf",
                    gamma=1.0,
                    assign_labels="kmeans",
                    random_state=int(rng.integers(0, 2**31 - 1)),
                    n_init=4,
                )
                labels = _relabel(sc.fit_predict(x))
    else:
        raise ValueError(f"clustering: must be one of {', '.join(METHODS)}; got {method!r}")
    return Clustering(labels, int(labels.max()) + 1, _silhouette(x, labels), method)
