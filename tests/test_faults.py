"""Fault injection: studies survive dead workers, a killed parent, Ctrl-C, a lost Dask worker, a full disk, two
writers, stale temporary files, foreign parts and symbolic links — and end with the store of an uninterrupted run.

Each case asserts that the final store equals an uninterrupted run's (same parts, bit-identical KPIs), that nothing
is lost or duplicated, and that no child process outlives the study. A tiny study (5 EVs, 2 h) keeps each
replication at ~40 ms; the hooks of `experiments.engine` (EVGRID_FAULT_*) slow replications down, trace which
process runs which replication, or make one kill its own worker.
"""

from __future__ import annotations

import errno
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import psutil
import pytest
from typer.testing import CliRunner

from experiments import store as store_mod
from experiments.cli import app
from experiments.engine import FAULT_ENV, FAULT_SLEEP_ENV, FAULT_TRACE_ENV, Point, Study, run_study
from experiments.report import report
from experiments.store import MANIFEST, Store, StoreError, StoreLockedError, StoreWriteError, part_name
from sim.scenario import load_scenario

ROOT = Path(__file__).resolve().parent.parent
TINY = ["fleet.n_evs=5", "time.horizon_h=2"]
SEED = 5
N_REF = 12
runner = CliRunner()


def tiny_study(n: int, seed: int = SEED) -> Study:
    sc = load_scenario("default", TINY, seed)
    return Study("montecarlo", sc, [Point(0, {}, "scenario")], n, sc.seed)


def values(df: pd.DataFrame) -> pd.DataFrame:
    """What must be bit-identical between runs: identity, status and every KPI except timings."""
    cols = [c for c in df.columns if c.startswith("kpi.") and not c.startswith("kpi.time_")]
    return df[["point", "rep", "status", "root_seed", "scenario_hash", *cols]].reset_index(drop=True)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    """An uninterrupted run in this process (replication seeds do not depend on n, workers or backend)."""
    store = Store(tmp_path_factory.mktemp("ref") / "s")
    assert run_study(tiny_study(N_REF), store) == {"ok": N_REF, "failed": 0, "skipped": 0}
    return values(store.load())


def assert_complete(root: Path, reference: pd.DataFrame, n: int, *, failed: frozenset[int] = frozenset()) -> None:
    """The store holds exactly reps 0..n-1, one verified part each, equal to the reference (bit for bit)."""
    store = Store(root)
    df = store.load()
    assert store.rejected == []
    assert sorted(p.name for p in store.parts_dir.iterdir()) == [part_name(0, r) for r in range(n)]
    assert df["rep"].tolist() == list(range(n)), "a replication is lost or duplicated"
    assert set(df.loc[df["status"] != "ok", "rep"]) == set(failed)
    ok = values(df[df["status"] == "ok"])
    want = reference[reference["rep"].isin(ok["rep"])].reset_index(drop=True)
    pd.testing.assert_frame_equal(ok, want, check_exact=True)
    assert not list(root.rglob(".tmp-*")), "a temporary file survived"


def trace_lines(path: Path) -> list[tuple[int, int, int]]:
    """(point, rep, pid) of every replication start."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        point, rep, pid = (int(x) for x in line.split())
        out.append((point, rep, pid))
    return out


def wait_for(cond: Callable[[], bool], timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        time.sleep(0.02)


def n_parts(root: Path) -> int:
    parts = root / "parts"
    return len(list(parts.glob("p*.parquet"))) if parts.is_dir() else 0


def new_children(before: set[int]) -> list[psutil.Process]:
    """Children of this process started since ``before``, except multiprocessing's resource tracker (one per
    process that uses spawn, living as long as that process: not an orphan of a study run in it)."""
    out = []
    for p in psutil.Process().children(recursive=True):
        try:
            if p.pid not in before and "resource_tracker" not in " ".join(p.cmdline()):
                out.append(p)
        except psutil.NoSuchProcess:
            pass
    return out


def assert_no_orphans(procs: list[psutil.Process], timeout_s: float = 5.0) -> float:
    """All ``procs`` end within ``timeout_s``; returns how long that took [s]."""
    t0 = time.monotonic()
    _, alive = psutil.wait_procs(procs, timeout=timeout_s)
    assert not alive, f"orphans: {[(p.pid, p.name()) for p in alive]}"
    return time.monotonic() - t0


def cli(out: Path, n: int, *extra: str) -> list[str]:
    sets = sum((["--set", s] for s in TINY), [])
    return [sys.executable, "-m", "experiments.cli", "montecarlo", "default", "-n", str(n), "--seed", str(SEED)] + [
        "-q",
        "--no-plots",
        *sets,
        "--out",
        str(out),
        *extra,
    ]


# ------------------------------------------------------------------------------------------- worker deaths
@pytest.mark.slow
def test_a_killed_worker_is_replaced_and_its_replication_run_again(
    tmp_path: Path, reference: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    trace = tmp_path / "trace"
    monkeypatch.setenv(FAULT_TRACE_ENV, str(trace))
    monkeypatch.setenv(FAULT_SLEEP_ENV, "0.2")
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    victim: list[int] = []

    def kill_the_worker_running_rep_2() -> None:
        wait_for(lambda: any(r == 2 for _, r, _ in trace_lines(trace)))
        pid = next(pid for _, r, pid in trace_lines(trace) if r == 2)
        victim.append(pid)
        os.kill(pid, signal.SIGKILL)

    killer = threading.Thread(target=kill_the_worker_running_rep_2, daemon=True)
    killer.start()
    notices: list[str] = []
    counts = run_study(tiny_study(6), Store(tmp_path / "s"), workers=2, notice=notices.append)
    killer.join(timeout=10)
    assert counts == {"ok": 6, "failed": 0, "skipped": 0}
    assert_complete(tmp_path / "s", reference, 6)
    starts = Counter(r for _, r, _ in trace_lines(trace))
    assert starts[2] == 2 and all(starts[r] == 1 for r in (0, 1, 3, 4, 5))  # only the lost one ran again
    assert [m for m in notices if "died" in m] == [
        f"warning: worker process {victim[0]} died (SIGKILL) while running point 0 rep 2; "
        "a new worker runs it again (attempt 2 of 3)"
    ]
    assert_no_orphans(new_children(before))


@pytest.mark.slow
def test_a_replication_that_kills_its_worker_three_times_is_stored_as_failed(
    tmp_path: Path, reference: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    trace = tmp_path / "trace"
    monkeypatch.setenv(FAULT_TRACE_ENV, str(trace))
    monkeypatch.setenv(FAULT_ENV, "kill@1")
    notices: list[str] = []
    counts = run_study(tiny_study(4), Store(tmp_path / "s"), workers=2, notice=notices.append)
    assert counts == {"ok": 3, "failed": 1, "skipped": 0}
    assert_complete(tmp_path / "s", reference, 4, failed=frozenset({1}))
    bad = Store(tmp_path / "s").load().set_index("rep").loc[1]
    assert bad["error"] == "WorkerDied: the worker process died 3 times while running this replication (last: SIGKILL)"
    assert Counter(r for _, r, _ in trace_lines(trace))[1] == 3
    assert notices[-1] == "warning: point 0 rep 1 killed its worker 3 times (last: SIGKILL); stored as failed"
    # once the cause is gone, --resume runs it again and the store is the uninterrupted run's
    monkeypatch.delenv(FAULT_ENV)
    assert run_study(tiny_study(4), Store(tmp_path / "s"), resume=True)["ok"] == 1
    assert_complete(tmp_path / "s", reference, 4)


# ------------------------------------------------------------------------------------------- parent and Ctrl-C
@pytest.mark.slow
@pytest.mark.parametrize("backend", [["--workers", "2"], ["--workers", "2", "--scheduler", "local"]], ids=str)
def test_a_killed_parent_leaves_no_orphan_and_resume_completes(
    tmp_path: Path, reference: pd.DataFrame, backend: list[str]
) -> None:
    out = tmp_path / "s"
    env = {**os.environ, FAULT_SLEEP_ENV: "0.3"}
    proc = subprocess.Popen(
        cli(out, N_REF, *backend), cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    wait_for(lambda: n_parts(out) >= 3)
    children = psutil.Process(proc.pid).children(recursive=True)
    assert len(children) >= 2  # the workers (and multiprocessing's resource tracker)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    took_s = assert_no_orphans(children, timeout_s=5.0)
    print(f"all {len(children)} children of the killed parent gone {took_s:.2f} s after its death")
    stored = n_parts(out)
    assert 3 <= stored < N_REF
    # what --resume does, in this process (the lock died with the parent; its workers hold no copy of it)
    counts = run_study(tiny_study(N_REF), Store(out), resume=True)
    assert counts == {"ok": N_REF - stored, "failed": 0, "skipped": stored}
    assert_complete(out, reference, N_REF)


@pytest.mark.slow
@pytest.mark.parametrize("backend", [["--workers", "2"], ["--workers", "2", "--scheduler", "local"]], ids=str)
def test_ctrl_c_stops_within_5_s_and_the_printed_command_resumes(
    tmp_path: Path, reference: pd.DataFrame, backend: list[str]
) -> None:
    out = tmp_path / "s"
    env = {**os.environ, FAULT_SLEEP_ENV: "0.3"}
    # a session of its own, so that SIGINT can go to the whole process group, as a terminal's Ctrl-C does
    proc = subprocess.Popen(
        cli(out, N_REF, *backend),
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    wait_for(lambda: n_parts(out) >= 3)
    children = psutil.Process(proc.pid).children(recursive=True)
    t0 = time.monotonic()
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    took_s = time.monotonic() - t0
    print(f"Ctrl-C to exit: {took_s:.2f} s")
    assert proc.returncode == 130 and took_s < 5.0
    lines = err.strip().splitlines()
    assert len(lines) == 1, err  # one line, no traceback from the parent or a worker
    stored = n_parts(out)
    prefix = f"interrupted: {stored} of {N_REF} replications stored in {out} ({stored} ok, 0 failed); resume with: "
    assert lines[0].startswith(prefix), lines[0]
    command = shlex.split(lines[0][len(prefix) :])
    assert command == ["evgrid", *cli(out, N_REF, *backend)[3:], "--resume"]  # the command typed
    assert_no_orphans(children)
    # run it (in this process, with one worker, to keep the suite quick: the store is the same whatever runs it)
    res = runner.invoke(app, [*command[1 : -1 - len(backend)], "--workers", "1", "--resume"])
    assert res.exit_code == 0, res.output
    assert f"{stored} already stored" in res.output
    assert_complete(out, reference, N_REF)


# ------------------------------------------------------------------------------------------- Dask
@pytest.mark.slow
def test_a_lost_dask_worker_costs_only_its_running_replication(
    tmp_path: Path, reference: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    trace = tmp_path / "trace"
    monkeypatch.setenv(FAULT_TRACE_ENV, str(trace))
    monkeypatch.setenv(FAULT_SLEEP_ENV, "0.3")
    root = tmp_path / "s"
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    stored_at_kill: set[int] = set()

    def kill_a_busy_worker() -> None:
        wait_for(lambda: n_parts(root) >= 4)
        stored_at_kill.update(int(p.name[7:13]) for p in (root / "parts").glob("p*.parquet"))
        running = [(r, pid) for _, r, pid in trace_lines(trace) if r not in stored_at_kill]
        os.kill(running[-1][1], signal.SIGKILL)

    killer = threading.Thread(target=kill_a_busy_worker, daemon=True)
    killer.start()
    n = 10
    counts = run_study(tiny_study(n), Store(root), workers=2, scheduler="local", notice=lambda _: None)
    killer.join(timeout=10)
    assert counts == {"ok": n, "failed": 0, "skipped": 0}
    assert_complete(root, reference, n)
    starts = Counter(r for _, r, _ in trace_lines(trace))
    assert stored_at_kill and all(starts[r] == 1 for r in stored_at_kill), "stored work was computed again"
    assert sum(starts.values()) <= n + 2, starts  # the killed worker's running task, and one not yet fetched
    assert_no_orphans(new_children(before))


@pytest.mark.slow
def test_a_replication_that_kills_its_dask_workers_is_stored_as_failed(
    tmp_path: Path, reference: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(FAULT_ENV, "kill@1")
    notices: list[str] = []
    counts = run_study(tiny_study(3), Store(tmp_path / "s"), workers=2, scheduler="local", notice=notices.append)
    assert counts == {"ok": 2, "failed": 1, "skipped": 0}
    assert_complete(tmp_path / "s", reference, 3, failed=frozenset({1}))
    assert Store(tmp_path / "s").load().set_index("rep").loc[1, "error"].startswith("WorkerDied: ")
    assert "warning: point 0 rep 1 killed its Dask workers; stored as failed" in notices


@pytest.mark.slow
def test_dask_says_when_no_worker_is_connected_and_goes_on_when_one_is(
    tmp_path: Path, reference: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    import logging

    from distributed import LocalCluster

    from experiments import engine

    monkeypatch.setattr(engine, "NO_WORKER_GRACE_S", 0.5)
    monkeypatch.setenv(FAULT_SLEEP_ENV, "1.0")  # the worker that joins must still be busy at the next poll
    cluster = LocalCluster(
        host="127.0.0.1", n_workers=0, threads_per_worker=1, dashboard_address=None, silence_logs=logging.ERROR
    )
    address = cluster.scheduler_address
    notices: list[str] = []

    def notice(msg: str) -> None:
        notices.append(msg)
        if msg.startswith("waiting for workers"):
            cluster.scale(1)

    fallback = threading.Timer(60.0, cluster.scale, args=(1,))  # without the notice: fail, do not hang
    fallback.start()
    try:
        counts = run_study(tiny_study(2), Store(tmp_path / "s"), scheduler=address, notice=notice)
    finally:
        fallback.cancel()
        cluster.close()
    assert counts == {"ok": 2, "failed": 0, "skipped": 0}
    assert notices == [
        f"waiting for workers: none is connected to the scheduler {address}; "
        "the study goes on when one connects (Ctrl-C stops it, --resume continues it)",
        "1 worker(s) connected; the study goes on",
    ]
    assert_complete(tmp_path / "s", reference, 2)


# ------------------------------------------------------------------------------------------- store
def test_a_full_disk_stops_with_one_line_and_resume_completes(
    tmp_path: Path, reference: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "s"
    real = store_mod._write_table
    calls = {"n": 0}

    def full_after_two(table: object, path: str) -> None:
        calls["n"] += 1
        if calls["n"] > 2:
            Path(path).write_bytes(b"PAR1 half a part")  # a partial write, then the disk is full
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(table, path)

    monkeypatch.setattr(store_mod, "_write_table", full_after_two)
    res = runner.invoke(
        app,
        ["montecarlo", "default", "-n", "5", "--seed", str(SEED), "-q", "--no-plots"]
        + sum((["--set", s] for s in TINY), [])
        + ["--workers", "1", "--out", str(root)],
    )
    assert res.exit_code == 1
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: cannot write {root / 'parts' / part_name(0, 2)}: ")
    assert "No space left on device" in lines[0] and "2 of 5 replications stored" in lines[0]
    assert lines[0].endswith("--resume")
    assert n_parts(root) == 2 and not list(root.rglob(".tmp-*"))
    # the manifest on a full disk: the old one stays, byte for byte, and the error is one line
    monkeypatch.setattr(store_mod, "_write_table", real)
    manifest = (root / MANIFEST).read_bytes()

    def no_space(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(store_mod.os, "fsync", no_space)
    with pytest.raises(StoreWriteError, match=r"cannot write .*manifest.json: No space left on device; .* unchanged"):
        run_study(tiny_study(6), Store(root), resume=True)  # n grows: the manifest is rewritten
    assert (root / MANIFEST).read_bytes() == manifest and not list(root.rglob(".tmp-*"))
    monkeypatch.undo()
    run_study(tiny_study(5), Store(root), resume=True)
    assert_complete(root, reference, 5)


def test_a_second_writer_gets_one_line_and_exit_2(tmp_path: Path, reference: pd.DataFrame) -> None:
    root = tmp_path / "s"
    first = Store(root)
    first.create(tiny_study(3).manifest(), resume=False)  # holds the lock, as a running study does
    try:
        res = runner.invoke(
            app,
            ["montecarlo", "default", "-n", "3", "--seed", str(SEED), "-q", "--no-plots", "--workers", "1"]
            + sum((["--set", s] for s in TINY), [])
            + ["--out", str(root), "--resume"],
        )
        assert res.exit_code == 2
        assert res.output.strip() == (
            f"error: {root}: another evgrid process (pid {os.getpid()}) is writing this study; "
            "wait for it to end or choose another --out"
        )
        with pytest.raises(StoreLockedError):
            run_study(tiny_study(3), Store(root), resume=True)
        assert n_parts(root) == 0, "the second writer ran replications"
    finally:
        first.unlock()
    run_study(tiny_study(3), Store(root), resume=True)  # the lock is free again
    assert_complete(root, reference, 3)


def test_resume_removes_stale_temp_files_and_reruns_foreign_parts(tmp_path: Path, reference: pd.DataFrame) -> None:
    root, other = tmp_path / "s", tmp_path / "other"
    run_study(tiny_study(4), Store(root))
    run_study(tiny_study(2, seed=SEED + 1), Store(other))
    parts = root / "parts"
    (parts / ".tmp-killed.parquet").write_bytes(b"")  # a writer killed mid-write
    (root / ".tmp-killed.json").write_bytes(b"")
    (other / "parts" / part_name(0, 1)).replace(parts / part_name(0, 1))  # another seed's part renamed into place
    (parts / part_name(0, 0)).write_bytes((parts / part_name(0, 3)).read_bytes())  # rep 3 posing as rep 0
    (parts / part_name(0, 2)).write_bytes(b"")  # a part truncated by a crash
    store = Store(root)
    assert store.done() == {(0, 3)}
    assert [r.split(":")[0] for r in store.rejected] == [f"parts/{part_name(0, r)}" for r in (0, 1, 2)]
    assert "study hash differs" in store.rejected[1] and "metadata rep 3, expected 0" in store.rejected[0]
    out = report(root, plots=False, print_tables=False)
    assert out["n_ok"] == 1 and len(out["rejected"]) == 3 and "Parts not counted" in (root / "summary.md").read_text()
    notices: list[str] = []
    counts = run_study(tiny_study(4), Store(root), resume=True, notice=notices.append)
    assert counts == {"ok": 3, "failed": 0, "skipped": 1}
    assert notices[0] == "removed 2 temporary file(s) left by an interrupted run"
    assert notices[1].startswith("warning: 3 stored part(s) do not belong to this study")
    assert_complete(root, reference, 4)


def test_nothing_is_written_through_a_symbolic_link(tmp_path: Path, reference: pd.DataFrame) -> None:
    root = tmp_path / "s"
    run_study(tiny_study(3), Store(root))
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (root / "summary.csv").symlink_to(victim)
    with pytest.raises(StoreError, match="summary.csv: is a symbolic link"):
        report(root, plots=False, print_tables=False)
    res = runner.invoke(app, ["report", str(root), "--no-plots"])
    assert res.exit_code == 2 and res.output.count("\n") == 1 and "symbolic link" in res.output
    (root / "summary.csv").unlink()
    (root / "plots").mkdir()
    (root / "plots" / "convergence.png").symlink_to(victim)
    with pytest.raises(StoreError, match="convergence.png: is a symbolic link"):
        report(root, plots=True, print_tables=False)
    (root / "plots" / "convergence.png").unlink()
    # a part that is a link is not counted, and rewriting it replaces the link instead of writing through it
    (root / "parts" / part_name(0, 1)).unlink()
    (root / "parts" / part_name(0, 1)).symlink_to(victim)
    assert Store(root).done() == {(0, 0), (0, 2)}
    run_study(tiny_study(3), Store(root), resume=True)
    assert victim.read_text() == "precious" and not (root / "parts" / part_name(0, 1)).is_symlink()
    assert_complete(root, reference, 3)
    # a linked parts/ folder is refused
    (root / "parts").rename(tmp_path / "elsewhere")
    (root / "parts").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(StoreError, match="parts: is a symbolic link"):
        run_study(tiny_study(3), Store(root), resume=True)


def test_resume_of_a_study_killed_before_its_manifest_was_written(tmp_path: Path, reference: pd.DataFrame) -> None:
    root = tmp_path / "s"
    root.mkdir()
    (root / ".lock").write_text("12345\n")  # what a writer killed right after taking the lock leaves
    (root / ".tmp-abcd.json").write_bytes(b"")
    assert run_study(tiny_study(2), Store(root), resume=True) == {"ok": 2, "failed": 0, "skipped": 0}
    assert_complete(root, reference, 2)
