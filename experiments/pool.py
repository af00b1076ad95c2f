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

from experiments.replication import Task, failed_row, run_replication


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
    """Dask preload of `LocalCluster` workers (run in each worker's main thread): ignore SIGINT, as above, and log
    only errors.

    Covers workers that a nanny restarts after a death, which `_children_ignore_sigint` cannot reach. A worker
    whose connection closes while the study stops (Ctrl-C) logs it at INFO with a traceback on the user's terminal.
    """
    import logging

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.getLogger("distributed").setLevel(logging.ERROR)


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


def _execute_pool(
    tasks: list[Task], on_result: Callable[..., None], *, workers: int, notice: Notice, max_attempts: int
) -> None:
    """K spawned worker processes, each fed one task at a time over its own pipe.

    Not `concurrent.futures.ProcessPoolExecutor`: there one dead worker breaks the whole pool (BrokenProcessPool)
    and nobody knows which task killed it. Here the parent knows which task each worker runs, so a dead worker's
    task is re-queued (or, at its ``max_attempts``-th death, stored as failed) and a new worker replaces it.
    """
    import multiprocessing as mp
    from multiprocessing.connection import wait

    # "spawn": a fresh interpreter per worker (forking a process that holds BLAS/numba threads is unsafe);
    # passed per pool, never set globally.
    ctx = mp.get_context("spawn")
    queue = collections.deque(tasks)
    deaths: collections.Counter[tuple[int, int]] = collections.Counter()
    pool: list[_Worker] = []
    parent = os.getpid()

    def start() -> _Worker:
        ours, theirs = ctx.Pipe(duplex=True)
        proc = ctx.Process(target=_pool_worker, args=(theirs, parent), name="evgrid-worker", daemon=True)
        with _children_ignore_sigint():
            proc.start()
        theirs.close()
        return _Worker(proc, ours)

    def busy() -> int:
        return sum(w.task is not None for w in pool)

    clean = False
    try:
        pool += [start() for _ in range(min(workers, len(queue)))]
        while queue or busy():
            for w in pool:
                if w.task is None and queue:
                    w.task = queue.popleft()
                    try:
                        w.conn.send(w.task)
                    except OSError:  # it died: seen through its sentinel below
                        pass
            ready = set(wait([w.conn for w in pool if w.task is not None] + [w.proc.sentinel for w in pool]))
            for w in list(pool):
                if w.task is not None and w.conn in ready:
                    try:
                        row, series = w.conn.recv()
                    except (EOFError, OSError):  # died mid-task: handled as a death below
                        pass
                    else:
                        w.task = None
                        on_result(row, series)
                if w.proc.sentinel not in ready:
                    continue
                w.proc.join()
                w.conn.close()
                pool.remove(w)
                cause = _death(w.proc.exitcode)
                if w.task is not None:
                    _handle_death(w.task, w.proc.pid, cause, deaths, queue, on_result, notice, max_attempts)
                if len(pool) < min(workers, len(queue) + busy()):
                    pool.append(start())
        clean = True
    finally:
        _shutdown(pool, clean)


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
