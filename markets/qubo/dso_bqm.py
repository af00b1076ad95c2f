"""The DSO level's QUBO: the binary quadratic model of one slot, or of a window of slots, of a
:class:`~markets.qubo.dso.DSOInstance`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import dimod
import numpy as np
import scipy.sparse as sp

from markets.qubo import encoding

if TYPE_CHECKING:  # the instance type only annotates here (dso imports this module)
    from markets.qubo.dso import DSOInstance


ROWS = ("td", "pf", "v")


def build_bqm(
    inst: DSOInstance, weight_factor: float = 2.0, slack_bits: int | None = None, duals: np.ndarray | None = None
) -> tuple[dimod.BinaryQuadraticModel, dict[str, Any]]:
    """The DSO QUBO over all slots (independent blocks, one per slot).

    Variable layout per slot: level bits of the ``U + G`` integers, then the slack bits of each enabled row.
    Each row is penalised as an augmented Lagrangian ``λ·r + w·r²`` with ``r = a·x − s − lo``. ``duals`` (T, R)
    are the rows' LP duals (∂cost/∂bound, HiGHS sign convention); ``λ = −dual`` prices a unit of the row at its
    marginal value, so the quadratic weight only has to beat what remains: ``w = weight_factor`` × the largest
    |reduced level cost| per MW-equivalent of the slot ÷ the median level step of the slot [$/MW²]. Without
    duals ``λ = 0`` and the raw level costs set ``w``.
    Returns the BQM and a layout dict (``level_index`` (T, U+G, bits), ``components`` per slot, ``weights``).
    """
    t, nv = inst.n_slots, inst.n_units + inst.n_dgs
    k = inst.levels
    e = encoding.binary(k)
    coef = e.coefficients.astype(float)
    nb = e.n_bits
    sb = inst.bits + 2 if slack_bits is None else int(slack_bits)
    es = encoding.binary((1 << sb) - 1)
    scoef = es.coefficients.astype(float)
    a, lo, hi, enabled, equality = _anchored_rows(inst)
    lin_cost = inst.level_cost()  # (T, nv)
    # index layout
    per_slot = nv * nb + int(enabled.sum(axis=1).max(initial=0)) * es.n_bits
    level_index = np.zeros((t, nv, nb), np.int64)
    lin_all, rows_all, cols_all, vals_all = [], [], [], []
    offset = inst.constant_cost()
    weights = np.zeros((t, len(ROWS)))
    components = []
    start = 0
    a_rows, a_cols, a_vals, r_b, r_w = [], [], [], [], []
    n_rows = 0
    for s in range(t):  # one block per slot; the arithmetic inside is vectorised
        idx = start + np.arange(nv * nb).reshape(nv, nb)
        level_index[s] = idx
        lin = np.zeros(per_slot)
        lin[: nv * nb] = (lin_cost[s][:, None] * coef[None, :]).reshape(-1)
        rs = np.flatnonzero(enabled[s] | equality[s])
        nsl = 0
        mult = np.zeros(len(ROWS)) if duals is None else -np.asarray(duals[s], float)
        scale, typical = _slot_scale(lin_cost[s], a[s], mult, rs)
        for r in rs:
            w = weight_factor * scale / typical
            weights[s, r] = w
            cols = idx.reshape(-1)
            vals = (a[s, r][:, None] * coef[None, :]).reshape(-1)
            if enabled[s, r]:
                sidx = start + nv * nb + nsl * es.n_bits + np.arange(es.n_bits)
                nsl += 1
                sstep = (hi[s, r] - lo[s, r]) / es.upper
                cols = np.concatenate([cols, sidx])
                vals = np.concatenate([vals, -sstep * scoef])
            # multiplier term λ·(a·x − s − lo): linear in the bits
            np.add.at(lin, cols - start, mult[r] * vals)
            offset -= mult[r] * lo[s, r]
            keep = vals != 0
            a_rows.append(np.full(keep.sum(), n_rows))
            a_cols.append(cols[keep])
            a_vals.append(vals[keep])
            r_b.append(lo[s, r])
            r_w.append(w)
            n_rows += 1
        used = nv * nb + nsl * es.n_bits
        lin_all.append(lin[:used])
        components.append(start + np.arange(used))
        start += used
    n = start
    lin = np.concatenate(lin_all) if lin_all else np.zeros(0)
    if n_rows:
        lin, (q_row, q_col, q_val), off_rows = _row_penalties(lin, a_rows, a_cols, a_vals, r_b, r_w, n_rows, n)
        rows_all.append(q_row)
        cols_all.append(q_col)
        vals_all.append(q_val)
        offset += off_rows
    bqm = _bqm_from_parts(lin, rows_all, cols_all, vals_all, offset)
    return bqm, {"level_index": level_index, "components": components, "weights": weights, "n_vars": n, "coef": coef}


def _anchored_rows(inst: DSOInstance) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:meth:`DSOInstance.rows` with upper-bound-only rows anchored below; also which rows get a slack (enabled)
    and which are equalities, each (T, R)."""
    a, lo, hi = inst.rows()
    # a row with only an upper bound (e.g. the power factor when the feeder exports Q) is anchored at the least
    # activity any assignment reaches, so its slack spans [amin, hi]
    amin = np.minimum(a, 0).sum(axis=2) * inst.levels
    amax = np.maximum(a, 0).sum(axis=2) * inst.levels
    lo = np.where(~np.isfinite(lo) & (hi < amax - 1e-12), np.minimum(amin, hi), lo)
    enabled = np.isfinite(lo) & (hi > lo + 1e-12)
    equality = np.isfinite(lo) & ~enabled  # lo == hi: no slack needed
    return a, lo, hi, enabled, equality


def _slot_scale(lin_cost: np.ndarray, a: np.ndarray, mult: np.ndarray, rs: np.ndarray) -> tuple[float, float]:
    """One slot's price scale [$ per MW-eq]: the largest reduced level price per MW-equivalent (at least 5 % of the
    raw one), and the median positive row coefficient [MW-eq per level] (``lin_cost`` (nv,), ``a`` (R, nv))."""
    reduced = lin_cost + (mult[rs, None] * a[rs]).sum(axis=0)  # $ per level after the multipliers
    price_per_mw = np.abs(reduced) / np.maximum(np.abs(a).max(axis=0), 1e-12)
    raw = np.abs(lin_cost) / np.maximum(np.abs(a).max(axis=0), 1e-12)
    scale = max(float(price_per_mw.max(initial=0.0)), 0.05 * float(raw.max(initial=0.0)), 1e-6)
    positive = np.abs(a)[a > 1e-12]
    typical = float(np.median(positive)) if positive.size else 1.0
    return scale, typical


def _row_penalties(
    lin: np.ndarray,
    a_rows: list[np.ndarray],
    a_cols: list[np.ndarray],
    a_vals: list[np.ndarray],
    r_b: list[float],
    r_w: list[float],
    n_rows: int,
    n: int,
) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray, np.ndarray], float]:
    """The quadratic penalties ``Σ w·(A x − b)²`` of the rows (sparse ``A`` in triplets) over ``n`` bits.

    Returns:
        ``lin`` plus their linear part, their couplings (row, col, value; upper triangle), their constant.
    """
    amat = sp.csr_matrix((np.concatenate(a_vals), (np.concatenate(a_rows), np.concatenate(a_cols))), shape=(n_rows, n))
    b_rows = np.asarray(r_b)
    w_rows = np.asarray(r_w)
    m = (amat.T @ sp.diags(w_rows) @ amat).tocoo()
    lin = lin + m.diagonal() - 2.0 * np.asarray(amat.T @ (w_rows * b_rows)).ravel()
    upper = m.row < m.col
    return lin, (m.row[upper], m.col[upper], 2.0 * m.data[upper]), float(np.sum(w_rows * b_rows * b_rows))


def _bqm_from_parts(
    lin: np.ndarray, rows_all: list[np.ndarray], cols_all: list[np.ndarray], vals_all: list[np.ndarray], offset: float
) -> dimod.BinaryQuadraticModel:
    """The binary BQM of linear biases ``lin``, couplings in triplet chunks and constant ``offset``."""
    q_rows = np.concatenate(rows_all) if rows_all else np.zeros(0, np.int64)
    q_cols = np.concatenate(cols_all) if cols_all else np.zeros(0, np.int64)
    q_vals = np.concatenate(vals_all) if vals_all else np.zeros(0)
    bqm = dimod.BinaryQuadraticModel.from_numpy_vectors(lin, (q_rows, q_cols, q_vals), offset, dimod.BINARY)
    return bqm


def build_window_bqm(
    inst: DSOInstance,
    lo: np.ndarray,
    step: int,
    width: int,
    duals: np.ndarray | None,
    weight_factor: float = 2.0,
    active: np.ndarray | None = None,
    slack_bits_max: int = 48,
    elastic_usd_per_mw: float | None = None,
    side: np.ndarray | None = None,
    normalise: bool = False,
    tighten: float = 0.5,
) -> tuple[dimod.BinaryQuadraticModel, dict[str, Any]]:
    """The DSO QUBO on the grid ``x[t,v] = lo[t,v] + step · Σ_j y[t,v,j]`` (``j < width``, levels ≤ ``K``).

    *Unary levels.* The DSO objective is linear in every level, so each bit of an integer costs the same
    increment ``c[t,v]·step`` and each row sees the same coefficient ``a[t,r,v]·step``: the QUBO energy of any
    pattern depends only on the number of set bits, which is decoded as the level. This is eva's domain-wall
    encoding with its chain penalty dropped — for a linear cost every unordered pattern already has the exact
    energy of its level, so the chain only removes degenerate patterns; without it any single flip is a
    one-level move. Bits that would pass ``K`` are not created.

    *Rows inside the window*: see :func:`_window_rows`.

    Returns the BQM and a layout dict (``owner`` (n_level_bits,) flat index ``t·(U+G)+v`` of each level bit,
    ``components`` per slot, ``n_vars``).
    """
    t, nv = inst.n_slots, inst.n_units + inst.n_dgs
    k = inst.levels
    lo = np.asarray(lo, np.int64)
    if elastic_usd_per_mw is None:
        elastic_usd_per_mw = _elastic_price(inst)
    n_valid = np.clip((k - lo) // step, 0, width)  # (T, nv) bits that stay ≤ K
    a, r_lo, r_hi = inst.rows()
    cost = inst.level_cost()  # (T, nv) $ per level
    lin_all: list[np.ndarray] = []
    q_r: list[np.ndarray] = []
    q_c: list[np.ndarray] = []
    q_v: list[np.ndarray] = []
    owner_all: list[np.ndarray] = []
    level_bits: list[np.ndarray] = []
    components: list[np.ndarray] = []
    offset = 0.0 if normalise else inst.constant_cost() + float(np.sum(cost * lo))
    block_scale: list[float] = []
    start = 0
    mult_all = np.zeros((t, len(ROWS))) if duals is None else -np.asarray(duals, float)
    for s in range(t):  # one block per slot; the arithmetic inside is vectorised
        own = np.repeat(np.arange(nv), n_valid[s])  # integer of each level bit
        nb = own.size
        lin = cost[s, own] * step
        rows_cols, rows_vals, rows_b, rows_w, rows_m, n_sl = _window_rows(
            (a[s], r_lo[s], r_hi[s], cost[s], mult_all[s]),
            lo[s],
            n_valid[s],
            own,
            lin,
            None if active is None else active[s],
            None if side is None else side[s],
            (step, width, weight_factor, elastic_usd_per_mw, tighten, slack_bits_max),
        )
        n_blk = nb + n_sl
        lin, blk_r, blk_c, blk_v, off_s, sc = _block_terms(
            lin, n_sl, rows_cols, rows_vals, rows_b, rows_w, rows_m, start, normalise
        )
        q_r += blk_r
        q_c += blk_c
        q_v += [v / sc for v in blk_v]
        offset += off_s / sc if normalise else off_s
        block_scale.append(sc)
        lin_all.append(lin)
        owner_all.append(s * nv + own)
        level_bits.append(start + np.arange(nb))
        components.append(start + np.arange(n_blk))
        start += n_blk
    lin = np.concatenate(lin_all) if lin_all else np.zeros(0)
    bqm = _bqm_from_parts(lin, q_r, q_c, q_v, offset)
    return bqm, _window_layout(owner_all, level_bits, components, start, block_scale)


def _window_layout(
    owner_all: list[np.ndarray],
    level_bits: list[np.ndarray],
    components: list[np.ndarray],
    n_vars: int,
    block_scale: list[float],
) -> dict[str, Any]:
    """:func:`build_window_bqm`'s layout dict from its per-slot pieces."""
    return {
        "owner": np.concatenate(owner_all) if owner_all else np.zeros(0, np.int64),
        "level_bits": np.concatenate(level_bits) if level_bits else np.zeros(0, np.int64),
        "components": components,
        "n_vars": n_vars,
        "block_scale": np.asarray(block_scale),
    }


def _window_range(
    a_s: np.ndarray, r_lo_s: np.ndarray, r_hi_s: np.ndarray, lo_s: np.ndarray, n_valid_s: np.ndarray, step: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One slot's rows relative to the window's base activity: bounds ``lo_rel``, ``hi_rel`` and the least and
    most activity ``amin``, ``amax`` the window's bits can add [MW-eq], each (R,)."""
    # rows: window activity range
    base_act = a_s @ lo_s.astype(float)  # (R,)
    amin = step * (np.minimum(a_s, 0.0) * n_valid_s).sum(axis=1)
    amax = step * (np.maximum(a_s, 0.0) * n_valid_s).sum(axis=1)
    lo_rel, hi_rel = r_lo_s - base_act, r_hi_s - base_act
    return lo_rel, hi_rel, amin, amax


def _window_scale(cost: np.ndarray, a: np.ndarray, mult: np.ndarray) -> tuple[float, float]:
    """One slot's price scale [$ per MW-eq] (largest reduced level price per MW-equivalent, at least 5 % of the
    raw one) and median row coefficient [MW-eq per level]; ``cost`` (nv,) $ per level, ``a`` (R, nv)."""
    reduced = cost + mult @ a
    colmax = np.maximum(np.abs(a).max(axis=0), 1e-12)
    scale = max(
        float((np.abs(reduced) / colmax).max(initial=0.0)),
        0.05 * float((np.abs(cost) / colmax).max(initial=0.0)),
        1e-6,
    )
    positive = np.abs(a)[np.abs(a) > 1e-12]
    typical = float(np.median(positive)) if positive.size else 1.0
    return scale, typical


def _window_rows(
    slot: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    lo_s: np.ndarray,
    n_valid_s: np.ndarray,
    own: np.ndarray,
    lin: np.ndarray,
    active_s: np.ndarray | None,
    side_s: np.ndarray | None,
    settings: tuple[int, int, float, float, float, int],
) -> tuple[list[np.ndarray], list[np.ndarray], list[float], list[float], list[float], int]:
    """One slot's penalised rows inside the window of :func:`build_window_bqm`: for each, the bits it covers
    (level bits, then slack bits numbered after the ``own.size`` level bits), their coefficients [MW-eq], the
    target ``b``, the weight and the multiplier. A row the window cannot meet is priced into ``lin`` (changed in
    place) instead.

    *Rows inside the window.* Only ``active`` rows (R,) of the slot are penalised (None: all; :func:`solve` activates the
    rows the LP relaxation binds and those a read has violated — lazily, as cutting planes), and only the part
    of ``[lo, hi]`` the window can reach: a row every window assignment meets is dropped; otherwise
    ``r = a·x − s − L'`` with a unary slack ``s`` on the row's smallest move ``σ`` (so a one-level move is
    matched by a flip of a slack bit, not a carry through binary slack bits), ``L' = max(lo, window min)``,
    covering ``[0, H' − L']`` (``H' = min(hi, window max)``) up to ``slack_bits_max`` bits, anchored at the
    binding bound (upper if the multiplier is positive or ``side`` (R,) of the slot says +1, else lower) — a binding
    row's optimum sits within a few moves of its bound, and beyond the slack's reach feasible points pay a
    penalty the cost already disfavours. A row the window cannot meet is priced linearly at
    ``elastic_usd_per_mw`` (as in :func:`reference`; its residual keeps one sign, so that is exact). Each row is an augmented
    Lagrangian ``λ·r + w·r²`` with ``λ = −dual`` (LP relaxation) and ``w = weight_factor`` × the slot's largest
    reduced price per MW-equivalent ÷ (median row coefficient × ``step``) [$/MW²]: one typical move off the row
    costs ``weight_factor`` × the cost of that move, on every grid.

    Returns:
        The rows' bits, coefficients, targets, weights, multipliers, and the number of slack bits.
    """
    rows_cols, rows_vals, rows_b, rows_w, rows_m = [], [], [], [], []
    a_s, r_lo_s, r_hi_s, cost_s, mult = slot  # (R, nv), (R,), (R,), (nv,) $ per level, (R,)
    step, width, weight_factor, elastic_usd_per_mw, tighten, slack_bits_max = settings
    lo_rel, hi_rel, amin, amax = _window_range(a_s, r_lo_s, r_hi_s, lo_s, n_valid_s, step)
    scale, typical = _window_scale(cost_s, a_s, mult)
    w_row = weight_factor * scale / (typical * step)
    nb = own.size
    n_sl = 0
    for r in range(len(ROWS)):
        if active_s is not None and not active_s[r]:
            continue
        if lo_rel[r] <= amin[r] + 1e-12 and hi_rel[r] >= amax[r] - 1e-12:
            continue  # disabled (lo = −inf, hi = inf), or met by every assignment of the window
        coef = a_s[r, own] * step
        low, high = max(lo_rel[r], amin[r]), min(hi_rel[r], amax[r])
        cols, vals = np.arange(nb), coef
        if high < low - 1e-12:  # the window cannot meet the row: get as close as it can, at the elastic price
            # r = a·x − b keeps one sign over the whole window, so a linear term is the exact elastic cost
            sign = 1.0 if lo_rel[r] > amax[r] else -1.0  # +: below lo (pull up), −: above hi (pull down)
            lin -= sign * elastic_usd_per_mw * coef
            continue
        else:
            # a real bound is tightened by ``tighten`` × the row's smallest move: the penalty is symmetric
            # around its target, the row is not, so a read a fraction of a level past the bound must cost more
            # than one a fraction inside it
            moves = np.abs(coef[np.abs(coef) > 1e-12])
            d = tighten * float(moves.min()) if moves.size else 0.0
            bottom = low + (d if lo_rel[r] > amin[r] + 1e-12 else 0.0)
            top = high - (d if hi_rel[r] < amax[r] - 1e-12 else 0.0)
            if top < bottom:
                bottom = top = 0.5 * (low + high)
            b = bottom
            span = top - bottom
            sizes = _slack_sizes(moves, span, width, slack_bits_max)
            upper = mult[r] > 0 if mult[r] != 0 else (side_s is not None and side_s[r] > 0)
            if upper and sizes.sum() < span - 1e-12:  # the slack reaches down from the binding upper bound
                b = top - float(sizes.sum())
            if sizes.size:
                cols = np.concatenate([cols, nb + n_sl + np.arange(sizes.size)])
                vals = np.concatenate([vals, -sizes])
                n_sl += sizes.size
        rows_cols.append(cols)
        rows_vals.append(vals)
        rows_b.append(b)
        rows_w.append(w_row)
        rows_m.append(mult[r])
    return rows_cols, rows_vals, rows_b, rows_w, rows_m, n_sl


def _block_terms(
    lin: np.ndarray,
    n_sl: int,
    rows_cols: list[np.ndarray],
    rows_vals: list[np.ndarray],
    rows_b: list[float],
    rows_w: list[float],
    rows_m: list[float],
    start: int,
    normalise: bool,
) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray], list[np.ndarray], float, float]:
    """One slot's block: its rows' augmented Lagrangians expanded onto the level bits (linear ``lin``) and
    ``n_sl`` slack bits, the block starting at variable ``start``.

    Returns:
        Linear biases (divided by the block scale), couplings (row, col, value chunks; not yet divided), the
        constant (not yet divided) and the block scale (1 unless ``normalise``).
    """
    lin = np.concatenate([lin, np.zeros(n_sl)])
    blk_r, blk_c, blk_v = [], [], []
    off_s = 0.0
    for cols, vals, b, w, m in zip(rows_cols, rows_vals, rows_b, rows_w, rows_m):
        # w·(v·z − b)² + m·(v·z − b), z binary: z_i² = z_i
        lin[cols] += w * vals * vals - 2.0 * w * b * vals + m * vals
        off_s += w * b * b - m * b
        iu, ju = np.triu_indices(len(cols), 1)
        blk_r.append(start + cols[iu])
        blk_c.append(start + cols[ju])
        blk_v.append(2.0 * w * vals[iu] * vals[ju])
    sc = 1.0
    if normalise:
        sc = max(
            float(np.abs(lin).max(initial=0.0)),
            max((float(np.abs(v).max(initial=0.0)) for v in blk_v), default=0.0),
            1e-12,
        )
    lin /= sc
    return lin, blk_r, blk_c, blk_v, off_s, sc


def _slack_sizes(moves: np.ndarray, span: float, width: int, max_bits: int) -> np.ndarray:
    """Slack bit sizes [MW-eq] for a row whose level bits move its activity by ``moves``: for each distinct move
    size, largest first, up to ``width`` bits of exactly that size (so a one-level move of any unit is matched by
    one slack flip), then bits of the smallest move to fill ``span`` — never more than ``span`` in total (the
    slack must not hide a breach of the other bound) nor more than ``max_bits`` bits."""
    if moves.size == 0 or span <= 1e-12:
        return np.zeros(0)
    distinct = np.unique(np.round(moves, 12))[::-1]
    out: list[float] = []
    total = 0.0
    for size in distinct:
        n = int(min(width, np.floor((span - total) / size + 1e-9), max_bits - len(out)))
        out += [float(size)] * max(n, 0)
        total += max(n, 0) * size
    fine = float(distinct[-1])
    n = int(min(np.ceil((span - total) / fine - 1e-9), max_bits - len(out)))
    if n > 0:  # the last bits share what is left, so the total stays ≤ span
        rest = span - total
        out += [min(fine, rest / n)] * n
    return np.asarray(out)


def _elastic_price(inst: DSOInstance) -> float:
    """Price [$ per MW-equivalent] of a row's violation: 1e3 × the largest level price per MW (at least 1e3)."""
    cost = inst.level_cost().reshape(-1)
    steps = inst.steps.reshape(-1)
    return 1e3 * max(float(np.max(np.abs(cost) / np.maximum(steps, 1e-12), initial=1.0)), 1.0)
