"""Running replications on local worker processes: the pool, worker death and parent-death handling, SIGINT."""

from __future__ import annotations

import collections
import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from experiments.replication import MAX_ATTEMPTS, Task, failed_row, import_frozen, run_replication


def default_workers() -> int:
    """Worker processes sized to the machine (the CPUs this process may use)."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except AttributeError:  # pragma: no cover - not Linux
        return max(os.cpu_count() or 1, 1)


Notice = Callable[[str], None]


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------- process pool
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


PARENT_POLL_S = 0.5


def _watch_parent(parent_pid: int) -> None:
    """End this process when ``parent_pid`` is no longer its parent (the parent died, however it died).

    Linux: the kernel sends SIGKILL at the parent's death (PR_SET_PDEATHSIG); everywhere: a daemon thread polls
    ``os.getppid()`` (a dead parent's children are re-parented) as a fallback.
    """
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError):  # no libc prctl: the thread below still works
            pass
    if os.getppid() != parent_pid:  # died before the watch was set
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(PARENT_POLL_S)
            if os.getppid() != parent_pid:
                os._exit(1)

    threading.Thread(target=watch, name="evgrid-parent-watch", daemon=True).start()


def _pool_worker(conn: Any, parent_pid: int) -> None:
    """A pool worker: run the tasks the parent sends, one at a time, until it sends None or goes away."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: it stops the workers
    _watch_parent(parent_pid)
    import_frozen()  # imports before the first task, the garbage collector paused; then they are frozen
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):
            return
        if task is None:
            return
        conn.send(run_replication(task))


@contextlib.contextmanager
def _children_ignore_sigint() -> Iterator[None]:
    """Processes started inside ignore SIGINT from their first instruction on.

    A terminal's Ctrl-C reaches the whole process group; the parent handles it and stops its workers, which
    must not die on their own with a KeyboardInterrupt traceback each (even in the middle of their imports).
    An ignored signal stays ignored across exec (a handler does not), and Python then leaves SIGINT alone. Only
    the main thread may change a disposition; from another thread this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


def dask_setup(worker: Any) -> None:
    """Dask preload of `LocalCluster` workers (run in each worker's main thread): ignore SIGINT, as above, log only
    errors, and import the simulation stack frozen (`import_frozen`).

    Covers workers that a nanny restarts after a death, which `_children_ignore_sigint` cannot reach. A worker
    whose connection closes while the study stops (Ctrl-C) logs it at INFO with a traceback on the user's terminal.
    """
    import logging

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.getLogger("distributed").setLevel(logging.ERROR)
    import_frozen()  # as a pool worker does; before the worker registers with the scheduler


@dataclass
class _Worker:
    proc: Any
    conn: Any
    task: Task | None = None


def _death(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            return signal.Signals(-exitcode).name
        except ValueError:
            return f"signal {-exitcode}"
    return f"exit code {exitcode}"


class WorkerPool:
    """K spawned worker processes, each fed one task at a time over its own pipe; reusable for several `run`s.

    Not `concurrent.futures.ProcessPoolExecutor`: there one dead worker breaks the whole pool (BrokenProcessPool)
    and nobody knows which task killed it. Here the parent knows which task each worker runs, so a dead worker's
    task is re-queued (or, at its ``max_attempts``-th death, stored as failed) and a new worker replaces it.
    Reuse lets a caller (bench/bench_montecarlo.py) warm the workers up (imports, grid cache, numba kernels) with
    one `run` before it starts its clock. Leaving the ``with`` block on an exception kills the workers at once.
    """

    def __init__(self, workers: int, *, notice: Notice = _stderr, max_attempts: int = MAX_ATTEMPTS) -> None:
        import multiprocessing as mp

        # "spawn": a fresh interpreter per worker (forking a process that holds BLAS/numba threads is unsafe);
        # passed per pool, never set globally.
        self._ctx = mp.get_context("spawn")
        self.workers = workers
        self.notice = notice
        self.max_attempts = max_attempts
        self._pool: list[_Worker] = []
        self._parent = os.getpid()

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        self.close(clean=exc_type is None)

    def pids(self) -> list[int]:
        """Process ids of the live workers (e.g. to read their CPU time)."""
        return [w.proc.pid for w in self._pool]

    def _start(self) -> _Worker:
        ours, theirs = self._ctx.Pipe(duplex=True)
        proc = self._ctx.Process(target=_pool_worker, args=(theirs, self._parent), name="evgrid-worker", daemon=True)
        with _children_ignore_sigint():
            proc.start()
        theirs.close()
        return _Worker(proc, ours)

    def run(self, tasks: list[Task], on_result: Callable[..., None]) -> None:
        """Run ``tasks``, handing each result to ``on_result`` as it arrives. An exception (from ``on_result``, or
        a KeyboardInterrupt) kills the workers at once and propagates."""
        try:
            self._run(collections.deque(tasks), on_result)
        except BaseException:
            self.close(clean=False)
            raise

    def _run(self, queue: collections.deque[Task], on_result: Callable[..., None]) -> None:
        from multiprocessing.connection import wait

        pool = self._pool
        deaths: collections.Counter[tuple[int, int]] = collections.Counter()

        def busy() -> int:
            return sum(w.task is not None for w in pool)

        def feed(w: _Worker) -> None:
            if w.task is None and queue:
                w.task = queue.popleft()
                try:
                    w.conn.send(w.task)
                except OSError:  # it died: seen through its sentinel
                    pass

        while len(pool) < min(self.workers, len(queue)):
            pool.append(self._start())
        while queue or busy():
            for w in pool:
                feed(w)
            ready = set(wait([w.conn for w in pool if w.task is not None] + [w.proc.sentinel for w in pool]))
            for w in list(pool):
                if w.task is not None and w.conn in ready:
                    try:
                        row, series = w.conn.recv()
                    except (EOFError, OSError):  # died mid-task: handled as a death below
                        pass
                    else:
                        w.task = None
                        feed(w)  # its next task first: the worker computes while the parent stores this result
                        on_result(row, series)
                if w.proc.sentinel not in ready:
                    continue
                w.proc.join()
                w.conn.close()
                pool.remove(w)
                cause = _death(w.proc.exitcode)
                if w.task is not None:
                    _handle_death(w.task, w.proc.pid, cause, deaths, queue, on_result, self.notice, self.max_attempts)
                if len(pool) < min(self.workers, len(queue) + busy()):
                    pool.append(self._start())

    def close(self, clean: bool = True) -> None:
        """Stop the workers (see `_shutdown`); the pool may start new ones in a later `run`."""
        pool, self._pool = self._pool, []
        _shutdown(pool, clean)


def _execute_pool(
    tasks: list[Task], on_result: Callable[..., None], *, workers: int, notice: Notice, max_attempts: int
) -> None:
    """`WorkerPool` for one run: its workers are stopped at the end, killed at once on an exception."""
    with WorkerPool(workers, notice=notice, max_attempts=max_attempts) as pool:
        pool.run(tasks, on_result)


def _handle_death(
    task: Task,
    pid: int | None,
    cause: str,
    deaths: collections.Counter[tuple[int, int]],
    queue: collections.deque[Task],
    on_result: Callable[..., None],
    notice: Notice,
    max_attempts: int,
) -> None:
    """A worker died running ``task``: re-queue it first in line, or at its ``max_attempts``-th death store it as a
    failed row."""
    key = (task.point, task.rep)
    deaths[key] += 1
    if deaths[key] >= max_attempts:
        notice(
            f"warning: point {key[0]} rep {key[1]} killed its worker {deaths[key]} times "
            f"(last: {cause}); stored as failed"
        )
        on_result(
            failed_row(
                task,
                f"WorkerDied: the worker process died {deaths[key]} times while running this "
                f"replication (last: {cause})",
            ),
            {},
        )
    else:
        notice(
            f"warning: worker process {pid} died ({cause}) while running point {key[0]} "
            f"rep {key[1]}; a new worker runs it again (attempt {deaths[key] + 1} of {max_attempts})"
        )
        queue.appendleft(task)


def _shutdown(pool: list[_Worker], clean: bool) -> None:
    """Stop the workers: after a clean run each gets the stop message and up to 5 s; interrupted or failed, they are
    killed at once (queued tasks are dropped with them)."""
    for w in pool:
        if clean:
            try:
                w.conn.send(None)
            except OSError:
                pass
        else:  # interrupted or failed: queued tasks are dropped with the workers, at once
            w.proc.kill()
    for w in pool:
        w.proc.join(timeout=5 if clean else None)
        if w.proc.exitcode is None:
            w.proc.kill()
            w.proc.join()
        w.conn.close()
