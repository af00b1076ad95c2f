"""Per-EV set-points over time, kept for each EV only around its stay.

The aggregator stores every EV's active (and, when a market sets them, reactive) power per market step. Dense
(EVs × steps) that costs 16 bytes per EV and step of the whole run: a year of 1 000 EVs a day at 15 min is 190 GiB.
Every read and write for EV ``i`` falls inside ``[a_i, a_i + width)`` (``a_i`` its arrival step): a clearing at step
``k`` (``a_i ≤ k ≤`` departure) covers at most ``max(look-ahead, longest stay)`` steps, and old schedules are cleared
no further than they were written. So a ring of ``width = 2 × longest stay + reach + 1`` columns per EV (reach: the
longer of the look-ahead and the day-ahead request), column
``t`` at ``t mod width``, holds exactly what the dense matrix would: the same values, read back bit for bit. Runs no
longer than ``width`` steps (every day-long run) keep the dense matrix itself.

A ring row is needed only while its EV's window is open, so EVs whose windows do not overlap share a row: a year of
365 000 sessions keeps as many rows as windows overlap at once (a few thousand), not one per session (3.7 GiB for
the two arrays of that year). A row is zeroed when the next EV takes it, at that EV's first access.
"""

from __future__ import annotations

import numpy as np

from markets.compiled import njit_cached


@njit_cached
def add_rows_at(
    out: np.ndarray, target: np.ndarray, rows: np.ndarray, src: np.ndarray, col0: int, row_of: np.ndarray
) -> None:
    """``out[target[r]] += src[row_of[r], col0:col0 + out.shape[1]]`` for ``r`` in ``rows``, in that order, with the
    columns of ``src`` taken modulo its width (a ring; ``col0`` already reduced, ``out.shape[1] <= width``).

    The same additions in the same order as ``np.add.at(out, target[rows], src[rows, col0:])`` on the dense matrix
    (so bit-identical), without copying the selected rows first: per step that copy was the size of the whole
    plugged fleet times the horizon.
    """
    m = out.shape[1]
    w = src.shape[1]
    for r in rows:
        t = target[r]
        s = row_of[r]
        for j in range(m):
            c = col0 + j
            if c >= w:
                c -= w
            out[t, j] += src[s, c]


def ring_width(arrival_min: np.ndarray, departure_min: np.ndarray, dt_min: float, reach: int) -> int:
    """Columns a ring needs: twice the longest stay [steps] plus the longest request [steps] plus one."""
    if not len(arrival_min):
        return 1
    first = np.floor(arrival_min / dt_min)
    last = np.ceil(departure_min / dt_min - 1e-9)
    return int(2 * (np.max(last - first) + 1) + reach + 1)


def shared_rows(start_step: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Rows for windows ``[start_step[i], start_step[i] + width)`` such that no two overlapping windows share one.

    All windows have the same length, so in order of start the ``j``-th window can take the row of the ``(j − R)``-th,
    ``R`` the most windows open at one step: that one closed before the ``j``-th opened (otherwise ``R + 1`` windows
    would be open at ``start_step`` of the ``j``-th).

    Returns:
        (row of each EV, its turn on that row (0, 1, … in order of start), number of rows ``R``).
    """
    n = len(start_step)
    if not n:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), 0
    order = np.argsort(start_step, kind="stable")
    s = np.asarray(start_step, np.int64)[order]
    rank = np.arange(n)
    n_rows = int((rank - np.searchsorted(s, s - width + 1, side="left") + 1).max())
    row_of, turn = np.empty(n, np.int64), np.empty(n, np.int64)
    row_of[order], turn[order] = rank % n_rows, rank // n_rows
    return row_of, turn, n_rows


def machine_memory_bytes() -> int:
    """Physical memory of this machine [bytes]."""
    import os

    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check_memory(n_evs: int, columns: int, memory_bytes: int | None = None) -> None:
    """Refuse set-points (two arrays of ``n_evs × columns`` floats) that need more than half of ``memory_bytes``
    (default: this machine's memory), with one line instead of a `MemoryError` or swapping later.

    Raises:
        sim.scenario.ScenarioError: naming the fields to change.
    """
    from sim.scenario import ScenarioError

    need = 16.0 * n_evs * columns
    have = memory_bytes if memory_bytes is not None else machine_memory_bytes()
    if need > have / 2:
        raise ScenarioError(
            f"fleet.n_evs x time.horizon_h: the set-points of {n_evs:,} EVs over {columns:,} steps each need "
            f"{need / 2**30:,.1f} GiB, more than half of this machine's {have / 2**30:,.1f} GiB; lower fleet.n_evs, "
            "shorten time.horizon_h or the longest stay, or lengthen time.dt_min"
        )


class Setpoints:
    """Set-points [kW or kVAr] of ``n_evs`` EVs over ``n_steps`` steps in ``min(width, n_steps)`` columns.

    Every access for EV ``i`` must lie in its window ``[start_step[i], start_step[i] + width)``; given
    ``start_step``, a ring keeps a row per open window (see `shared_rows`), not per EV.

    Attributes:
        data: the storage, (rows, columns); the dense matrix itself when ``columns == n_steps``.
    """

    def __init__(self, n_evs: int, n_steps: int, width: int, start_step: np.ndarray | None = None) -> None:
        self.n_steps = n_steps
        self.width = max(min(width if n_evs else n_steps, n_steps), 1)  # no EVs: nothing to save, no window to keep
        self.row_of = np.arange(n_evs)
        self._turn: np.ndarray | None = None
        n_rows = n_evs
        if start_step is not None and self.ring:
            self.row_of, self._turn, n_rows = shared_rows(np.asarray(start_step), self.width)
            self._owner = np.full(n_rows, -1, np.int64)  # turn of the EV whose values a row holds
        self.data = np.zeros((n_rows, self.width))

    def _rows(self, idx: np.ndarray) -> np.ndarray:
        """Storage rows of EVs ``idx``; a row still holding an earlier EV's window is zeroed for its new EV."""
        idx = np.asarray(idx, np.int64)
        rows = self.row_of[idx]
        if self._turn is not None and len(idx):
            turn, held = self._turn[idx], self._owner[rows]
            if (held > turn).any():  # an EV read or written after its window closed: a caller's bug, not data
                i = int(idx[np.argmax(held > turn)])
                raise RuntimeError(f"set-points of EV {i} accessed after its window of {self.width} steps")
            new = held < turn
            if new.any():
                self.data[rows[new]] = 0.0
                self._owner[rows[new]] = turn[new]
        return rows

    @property
    def ring(self) -> bool:
        return self.width < self.n_steps

    def _cols(self, k: int, n: int) -> slice | np.ndarray:
        """Storage columns of steps ``k … k+n−1`` (a slice where they do not wrap)."""
        if n > self.width:  # the ring would fold the span onto itself
            raise ValueError(f"set-points over {n} steps at once; they keep {self.width} per EV")
        c0 = k % self.width
        if c0 + n <= self.width:
            return slice(c0, c0 + n)
        return (c0 + np.arange(n)) % self.width

    def at(self, idx: np.ndarray, k: int) -> np.ndarray:
        """Set-points of EVs ``idx`` at step ``k`` (a copy)."""
        return self.data[self._rows(idx), k % self.width]

    def window(self, idx: np.ndarray, k: int, n: int) -> np.ndarray:
        """Set-points of EVs ``idx`` for steps ``k … k+n−1`` (cut at the end of the run), shape (len(idx), n)."""
        n = max(min(n, self.n_steps - k), 0)
        cols = self._cols(k, n)
        rows = self._rows(idx)
        if isinstance(cols, slice):
            return self.data[rows, cols]
        return self.data[rows[:, None], cols[None, :]]

    def write(self, idx: np.ndarray, k: int, values: np.ndarray) -> None:
        """Set EVs ``idx`` for steps ``k … k+n−1`` to ``values``, shape (len(idx), n)."""
        self._write(idx, k, values.shape[1], values)

    def clear(self, idx: np.ndarray, lo: int, hi: int) -> None:
        """Zero EVs ``idx`` for steps ``lo … hi−1`` (nothing when ``hi <= lo``)."""
        if hi > lo:
            self._write(idx, lo, hi - lo, 0.0)

    def _write(self, idx: np.ndarray, k: int, n: int, values: np.ndarray | float) -> None:
        cols = self._cols(k, n)
        rows = self._rows(idx)
        if isinstance(cols, slice):
            self.data[rows, cols] = values
        else:
            self.data[rows[:, None], cols[None, :]] = values

    def add_rows(self, out: np.ndarray, target: np.ndarray, rows: np.ndarray, k: int) -> None:
        """``out[target[r]] += self[r, k : k + out.shape[1]]`` for ``r`` in ``rows`` (see `add_rows_at`)."""
        self._rows(rows)
        add_rows_at(out, target, rows, self.data, k % self.width, self.row_of)

    def dense(self) -> np.ndarray:
        """The (n_evs, n_steps) matrix: the storage itself, for runs that keep it (`ring` False).

        Raises:
            ValueError: a ring keeps only each EV's window; read it with `window`.
        """
        if self.ring:
            raise ValueError(f"set-points of a {self.n_steps}-step run are kept per EV window; use window()")
        return self.data
