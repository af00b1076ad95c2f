"""What the DSO measures: :class:`MeasurementSet` (measured buses and lines, measurement accuracies)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pandapower.auxiliary import pandapowerNet

from grids.estimation.errors import EstimationError

__all__ = ["MeasurementSet"]


@dataclass(frozen=True)
class MeasurementSet:
    """Which quantities the DSO measures, and how accurately.

    Attributes:
        v_buses: pandapower bus indices with a voltage-magnitude measurement.
        inj_buses: pandapower bus indices with a net P and Q injection measurement.
        flow_lines: pandapower line indices with P and Q flow measurements at the from-bus end.
        sigma_v_pu: standard deviation of a voltage-magnitude measurement [pu]. Default 0.004 pu (0.4 %), the
            usual figure for SCADA voltage channels in state-estimation studies.
        sigma_p_mw: standard deviation of an active-power injection or flow measurement [MW]. Default 0.005 MW
            (5 kW: about 2–8 % of a case33bw bus load, i.e. metered/aggregated feeder data, not pseudo-measurements).
        sigma_q_mvar: standard deviation of a reactive-power injection or flow measurement [MVAr]. Default 0.005.
    """

    v_buses: np.ndarray
    inj_buses: np.ndarray
    flow_lines: np.ndarray
    sigma_v_pu: float = 0.004
    sigma_p_mw: float = 0.005
    sigma_q_mvar: float = 0.005

    def __post_init__(self) -> None:
        for name in ("v_buses", "inj_buses", "flow_lines"):
            a = np.asarray(getattr(self, name))
            if a.size == 0:
                a = np.zeros(0, dtype=np.int64)
            if a.ndim != 1 or not np.issubdtype(a.dtype, np.integer):
                raise EstimationError(f"MeasurementSet.{name} must be a 1-D integer array, got {a!r}")
            if len(np.unique(a)) != len(a):
                raise EstimationError(f"MeasurementSet.{name} has duplicate entries: {a.tolist()}")
            a = a.astype(np.int64)
            a.setflags(write=False)
            object.__setattr__(self, name, a)
        for name in ("sigma_v_pu", "sigma_p_mw", "sigma_q_mvar"):
            s = getattr(self, name)
            if not (np.isfinite(s) and s > 0):
                raise EstimationError(f"MeasurementSet.{name} must be a positive finite number, got {s!r}")
            object.__setattr__(self, name, float(s))

    @property
    def n_meas(self) -> int:
        """Number of scalar measurements m = n_v + 2 n_inj + 2 n_flow."""
        return len(self.v_buses) + 2 * len(self.inj_buses) + 2 * len(self.flow_lines)

    @property
    def sigma(self) -> np.ndarray:
        """Standard deviation of every measurement, in measurement order [pu | MW | MVAr], shape (m,)."""
        ni, nf = len(self.inj_buses), len(self.flow_lines)
        return np.concatenate(
            [
                np.full(len(self.v_buses), self.sigma_v_pu),
                np.full(ni, self.sigma_p_mw),
                np.full(ni, self.sigma_q_mvar),
                np.full(nf, self.sigma_p_mw),
                np.full(nf, self.sigma_q_mvar),
            ]
        )

    @property
    def labels(self) -> list[str]:
        """Human-readable name of every measurement, in measurement order (``"P inj bus 7"``, …)."""
        return (
            [f"V bus {b}" for b in self.v_buses]
            + [f"P inj bus {b}" for b in self.inj_buses]
            + [f"Q inj bus {b}" for b in self.inj_buses]
            + [f"P flow line {k}" for k in self.flow_lines]
            + [f"Q flow line {k}" for k in self.flow_lines]
        )

    @classmethod
    def default(cls, net: pandapowerNet, **sigmas: float) -> MeasurementSet:
        """A redundant measurement set that makes any connected network observable.

        Built on the network as pandapower computes it (switch states respected, buses fused by closed bus-bus
        switches counted once, out-of-service and isolated buses left out), one *node* per bus of that model:

        * ``P``/``Q`` injections at every node (substation: the ext_grid's import; a node of fused buses is
          measured once, at its lowest bus index) — with one |V| per island this alone makes the network
          observable (the power-flow equations), whatever the topology, transformers or voltage levels;
        * ``|V|`` at the substation (ext_grid buses) and at every feeder end (nodes with one branch);
        * ``P``/``Q`` flows on the main trunk (the lines of the longest path, in branches, from a substation) and
          on the first line of every lateral leaving it; lines with an open switch carry no flow and are skipped.

        On case33bw: 5 V + 66 injection + 40 flow = 111 measurements for 65 states (χ² with 46 degrees of
        freedom). A meshed net gets its BFS spanning tree's longest path as the "trunk".

        Args:
            net: pandapower network.
            **sigmas: ``sigma_v_pu``, ``sigma_p_mw``, ``sigma_q_mvar`` overrides.

        Returns:
            The measurement set.

        Raises:
            EstimationError: no in-service ext_grid in the calculation.
        """
        from grids.powerflow import compile_run  # the estimator's own model of the net

        net_c, _ = compile_run(net, max_iteration=50)
        internal = net_c._ppc["internal"]
        nb = int(internal["bus"].shape[0])
        lookup = np.asarray(net_c._pd2ppc_lookups["bus"], dtype=np.int64)
        node_of: dict[int, int] = {}  # pandapower bus -> internal node
        for b in net_c.bus.index.to_numpy(np.int64):
            if 0 <= b < len(lookup) and 0 <= lookup[b] < nb:
                node_of[int(b)] = int(lookup[b])
        rep: dict[int, int] = {}  # internal node -> its lowest pandapower bus
        for b, i in sorted(node_of.items()):
            rep.setdefault(i, b)
        slack_nodes = {int(i) for i in np.asarray(internal["ref"], dtype=np.int64) if int(i) in rep}
        if not slack_nodes:
            raise EstimationError("MeasurementSet.default: the net has no in-service ext_grid (no substation)")
        adj = _node_adjacency(net_c, internal, rep)
        # BFS spanning tree from the substation(s)
        parent: dict[int, tuple[int, int]] = {}
        depth = {i: 0 for i in slack_nodes}
        queue = sorted(slack_nodes)
        for i in queue:
            for nb_, k in adj[i]:
                if nb_ not in depth:
                    depth[nb_] = depth[i] + 1
                    parent[nb_] = (i, k)
                    queue.append(nb_)
        far = max(depth, key=lambda i: (depth[i], -rep[i]))
        trunk = [far]
        trunk_lines: list[int] = []
        while trunk[-1] in parent:
            p, k = parent[trunk[-1]]
            if k >= 0:
                trunk_lines.append(k)
            trunk.append(p)
        on_trunk = set(trunk)
        heads = [k for i, (p, k) in parent.items() if p in on_trunk and i not in on_trunk and k >= 0]
        ends = [i for i in rep if len(adj[i]) == 1 and i not in slack_nodes]
        v_buses = np.array(sorted(rep[i] for i in slack_nodes | set(ends)), dtype=np.int64)
        inj_buses = np.array(sorted(rep.values()), dtype=np.int64)
        flow_lines = np.array(sorted(set(trunk_lines) | set(heads)), dtype=np.int64)
        return cls(v_buses=v_buses, inj_buses=inj_buses, flow_lines=flow_lines, **sigmas)


def _node_adjacency(net_c: pandapowerNet, internal: dict, rep: dict[int, int]) -> dict[int, list[tuple[int, int]]]:
    """Neighbours of each measured internal node, as (node, line index) pairs (-1: trafo, impedance, ...)."""
    # branches between measured nodes, labelled with their line index (-1: trafo, impedance, ...)
    branch = internal["branch"]
    branch_is = np.asarray(internal["branch_is"], dtype=bool)
    line_of_row = np.full(int(branch_is.sum()), -1, dtype=np.int64)
    rng_line = net_c._pd2ppc_lookups["branch"].get("line")
    if rng_line is not None:
        ppci_row = np.cumsum(branch_is) - 1
        for p, k in enumerate(net_c.line.index):
            j = rng_line[0] + p
            if branch_is[j]:
                line_of_row[ppci_row[j]] = int(k)
    adj: dict[int, list[tuple[int, int]]] = {i: [] for i in rep}
    for row, (f, t) in enumerate(np.real(branch[:, :2]).astype(np.int64)):
        if int(f) in rep and int(t) in rep and f != t:
            adj[int(f)].append((int(t), int(line_of_row[row])))
            adj[int(t)].append((int(f), int(line_of_row[row])))
    return adj
