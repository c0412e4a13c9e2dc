"""bench/controlplane tells the bench's own load from other work's: CPU used by its process
tree and by the control plane's components (their pid files) is its own; anything else is
other work (`other_cpu_pct`), which is what makes a ratio untrustworthy on a shared machine."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import bench.controlplane as bench

BURN = "import time\nt = time.process_time()\nwhile time.process_time() - t < {s}: pass\n"


def _detached_burner(seconds: float) -> int:
    """A process that busy-loops for `seconds` of CPU and is not this process's descendant
    (double fork: its parent exits, so it is re-parented away from our tree). Returns its pid."""
    code = ("import os, sys, subprocess\n"
            f"p = subprocess.Popen([sys.executable, '-c', {BURN.format(s=seconds)!r}], start_new_session=True,\n"
            "                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
            "print(p.pid, flush=True)\n")
    return int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _cpu_of(pid: int) -> float:
    return bench.proc_stats(pid)[1]


def test_a_child_of_the_bench_counts_as_its_own(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bench, "CLUSTER_RUN", tmp_path)
    before = bench.own_cpu_s()
    child = subprocess.Popen([sys.executable, "-c", BURN.format(s=0.6)])
    child.wait(30)
    # Reaped: its CPU is now in this process's cutime/cstime.
    assert bench.own_cpu_s() - before >= 0.5


def test_a_process_outside_the_tree_is_other_work_unless_the_cluster_owns_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bench, "CLUSTER_RUN", tmp_path)
    pid = _detached_burner(30.0)
    try:
        _measure(pid, tmp_path)
    finally:
        _kill(pid)


def _measure(pid: int, tmp_path: Path) -> None:
    before = bench.own_cpu_s()
    time.sleep(0.3)
    mid = _cpu_of(pid)
    assert mid > 0.1, "the burner did not run"
    assert bench.own_cpu_s() - before < mid / 2, "a process outside the bench's tree was counted as its own"
    # The same process named by a control-plane pid file is the bench's own.
    (tmp_path / "kube-apiserver.pid").write_text(f"{pid}\n")
    own0, cpu0 = bench.own_cpu_s(), _cpu_of(pid)
    time.sleep(0.3)
    own1, cpu1 = bench.own_cpu_s(), _cpu_of(pid)
    assert cpu1 - cpu0 > 0.1, "the burner did not run"
    assert own1 - own0 >= (cpu1 - cpu0) * 0.9, (own0, own1, cpu0, cpu1)


def test_the_sampler_reports_other_work_as_a_share_of_all_cores(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bench, "CLUSTER_RUN", tmp_path)
    monkeypatch.setattr(bench, "machine_busy_s", iter([100.0, 104.0]).__next__)
    monkeypatch.setattr(bench, "own_cpu_s", iter([10.0, 11.0]).__next__)
    monkeypatch.setattr(bench.os, "cpu_count", lambda: 2)
    clock = iter([0.0, 10.0])
    monkeypatch.setattr(bench.time, "monotonic", lambda: next(clock))
    with bench.LoadSampler() as load:
        pass
    # 4 busy s on the machine, 1 of them the bench's: 3 s of 2 cores x 10 s.
    assert load.other_cpu_pct == 15.0
