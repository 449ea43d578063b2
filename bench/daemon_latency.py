#!/usr/bin/env python3
"""Drop-to-first-optimizer-step latency of the training daemon on the tiny model.

(a) warm: the daemon's trainer child has imported torch/transformers/the engine before the file
    arrives (the default). ``--drops`` files are dropped one after another into an idle daemon.
(b) baseline, same invocation: a cold child (``daemon.keep_warm_child=false``,
    ``child_max_jobs=1``): the process is started when the file arrives, as a plain
    spawn-per-job design would. (The old design also polled the inbox every 30 s, adding 15 s on
    average; that is not simulated.)

Latency = time the trainer's first optimizer step finished (``first_step_wall`` in the file's
``.result.json``, stamped by the child) minus the moment the file was renamed into ``inbox/``.
Target: warm median <= 3 s.

    .venv/bin/python bench/daemon_latency.py [--drops 5] [--cold-drops 2]
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from daemon_common import (child_ready, drop, make_base, records, result, set_config, start_daemon,  # noqa: E402
                           stop_daemon, wait_for)


def measure(base: Path, drops: int, tag: str, warm: bool) -> list[float]:
    proc = start_daemon(base)
    out = []
    try:
        wait_for(lambda: child_ready(base) if warm else ((base / ".pids" / "training_daemon.pid").exists()),
                 300, "daemon ready")
        for i in range(drops):
            name = f"{tag}-{i}.jsonl"
            t0 = drop(base, name, records(24, seed=100 + i))
            res = wait_for(lambda: result(base, name), 300, f"{name} trained", interval=0.1)
            lat = res["first_step_wall"] - t0
            out.append(lat)
            print(f"  {tag} drop {i}: {lat:.2f} s to first optimizer step "
                  f"(claim->step {res['first_step_latency_s']:.2f} s)", flush=True)
            if warm:
                wait_for(lambda: child_ready(base), 300, "warm child ready again")
    finally:
        stop_daemon(proc)
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--drops", type=int, default=5)
    ap.add_argument("--cold-drops", type=int, default=2)
    a = ap.parse_args()
    base = make_base()
    try:
        print("warm child (daemon default):")
        warm = measure(base, a.drops, "warm", warm=True)
        set_config(base, "daemon", keep_warm_child=False, child_max_jobs=1)
        print("baseline: cold child started on arrival:")
        cold = measure(base, a.cold_drops, "cold", warm=False)
    finally:
        shutil.rmtree(base.parent, ignore_errors=True)
    wm, cm = statistics.median(warm), statistics.median(cold)
    print(f"daemon_latency: warm median {wm:.2f} s over {len(warm)} drops (max {max(warm):.2f} s); "
          f"cold-child baseline median {cm:.2f} s; ratio warm/cold {wm / cm:.2f}; "
          f"target warm median <= 3 s: {'PASS' if wm <= 3.0 else 'FAIL'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
