#!/usr/bin/env python3
"""CPU used by an idle training daemon (empty inbox), its warm trainer child included.

(a) the daemon as configured by default (inotify observer, heartbeat every 2 s, queue rescan
    every second);
(b) baseline, same invocation: the same daemon with the polling observer
    (``daemon.use_polling_observer=true``), i.e. what it costs without inotify.
CPU = user+system seconds of the daemon and its children (psutil) over ``--seconds`` of wall
time, after the warm child has finished its imports. Target: (a) < 1% of one core.

    .venv/bin/python bench/daemon_idle_cpu.py [--seconds 30]
"""
from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from daemon_common import child_ready, make_base, set_config, start_daemon, stop_daemon, wait_for  # noqa: E402


def cpu_of(pid: int) -> float:
    import psutil
    p = psutil.Process(pid)
    total = 0.0
    for proc in [p, *p.children(recursive=True)]:
        try:
            t = proc.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def child_cpu(base: Path) -> tuple[int | None, float]:
    import psutil
    try:
        pid = int((base / ".pids" / "trainer_child.pid").read_text())
        t = psutil.Process(pid).cpu_times()
        return pid, t.user + t.system
    except (FileNotFoundError, ValueError, psutil.NoSuchProcess):
        return None, 0.0


def measure(base: Path, seconds: float) -> float:
    proc = start_daemon(base)
    try:
        wait_for(lambda: child_ready(base), 300, "warm child ready")
        time.sleep(1.0)
        c_pid, c0 = child_cpu(base)
        d0 = cpu_of(proc.pid)
        t0 = time.monotonic()
        time.sleep(seconds)
        d1 = cpu_of(proc.pid)
        _, c1 = child_cpu(base)
        wall = time.monotonic() - t0
    finally:
        stop_daemon(proc)
    # the child runs in its own session, so it is counted separately
    return 100.0 * ((d1 - d0) + (c1 - c0)) / wall


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=30.0)
    a = ap.parse_args()
    base = make_base()
    try:
        inotify = measure(base, a.seconds)
        set_config(base, "daemon", use_polling_observer=True)
        polling = measure(base, a.seconds)
    finally:
        shutil.rmtree(base.parent, ignore_errors=True)
    print(f"daemon_idle_cpu: inotify {inotify:.2f}% of one core over {a.seconds:.0f} s (daemon + warm child); "
          f"polling-observer baseline {polling:.2f}%; ratio {inotify / polling if polling else float('nan'):.2f}; "
          f"target < 1%: {'PASS' if inotify < 1.0 else 'FAIL'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
