#!/usr/bin/env python3
"""What does the daemon cost per file? Same file, same config, same steps, measured in this one
invocation as wall-clock seconds of two subprocesses' work:

(a) daemon: from dropping the file into ``inbox/`` (an atomic rename) to the file reaching
    ``queue/recently_completed/``: detection, validation, the warm trainer child's model load,
    training, checkpoint, export, the ``models/current_model/`` swap and the model_db registry.
    The daemon is started (and its warm child made ready) once beforehand: a service's start-up
    is not part of a file's cost.
(b) baseline: ``core/train.py`` (the engine's own command line) on the same file with the same
    config.json and ``--max-steps``, from process start to exit (interpreter start, imports, model
    load, training, checkpoint, export).

Runs interleave (train.py, daemon, train.py, ...) ``--repeats`` times so the machine's noise hits
both alike. Prints every run, the median and spread (min-max) of each side and the overhead ratio
daemon/train.py of the medians (< 1 means the daemon is faster per file, e.g. thanks to its warm child).

    .venv/bin/python bench/daemon_throughput.py [--steps 20] [--batch 8] [--repeats 3]
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from daemon_common import (REPO, child_ready, drop, make_base, records, result, start_daemon,  # noqa: E402
                           stop_daemon, wait_for, write_file)


def train_seconds(res: dict) -> float:
    return float((res.get("metrics") or {}).get("train_seconds") or "nan")


def train_cli_run(base: Path, data: Path, steps: int, i: int) -> tuple[float, float]:
    """(wall seconds, seconds inside trainer.train()) of ``core/train.py`` on ``data`` with the base
    dir's config.json."""
    out = base.parent / f"train-cli-run-{i}"
    cmd = [sys.executable, str(REPO / "core" / "train.py"), "--dataset", str(data), "--output", str(out),
           "--max-steps", str(steps), "--base-dir", str(base),
           "--status-file", str(base.parent / f"train-cli-status-{i}.json")]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"core/train.py exited with {proc.returncode}:\n{proc.stderr[-2000:]}")
    shutil.rmtree(out, ignore_errors=True)
    res = json.loads(proc.stdout.strip().splitlines()[-1])  # the job result, the CLI's last line
    if res.get("steps") != steps:
        raise RuntimeError(f"core/train.py ran steps={res.get('steps')}, expected {steps}")
    return wall, train_seconds(res)


def daemon_run(base: Path, recs: list[dict], steps: int, i: int, timeout: float) -> tuple[float, float]:
    """(wall seconds from the drop into inbox/ to the file in queue/recently_completed/, seconds
    inside trainer.train())."""
    name = f"same-{i}.jsonl"
    done = base / "queue" / "recently_completed" / name
    failed = base / "queue" / "failed" / name
    t0 = drop(base, name, recs)

    def finished() -> bool:
        if failed.exists():
            raise RuntimeError(f"{name} failed: {(failed.parent / (name[:-6] + '.error.json')).read_text()[:2000]}")
        return done.exists()

    wait_for(finished, timeout, f"{name} in queue/recently_completed/", interval=0.02)
    wall = time.time() - t0
    res = result(base, name) or {}
    if res.get("steps") != steps:  # the file must really have been trained, step for step
        raise RuntimeError(f"{name} completed with steps={res.get('steps')}, expected {steps}")
    return wall, train_seconds(res)


def spread(xs: list[float]) -> str:
    return f"median={statistics.median(xs):.2f}s [{min(xs):.2f}-{max(xs):.2f}]"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds per run before failing")
    a = ap.parse_args()
    base = make_base({"training": {"max_steps": a.steps, "per_device_batch_size": a.batch, "logging_steps": 5}})
    recs = records(a.steps * a.batch, seed=7)
    data = base.parent / "same.jsonl"
    write_file(data, recs)
    daemon_s: list[tuple[float, float]] = []
    cli_s: list[tuple[float, float]] = []
    print(f"daemon_throughput: {a.steps} steps x batch {a.batch}, {len(recs)} examples, {a.repeats} repeats", flush=True)
    proc = start_daemon(base)
    try:
        wait_for(lambda: child_ready(base), 300, "warm child ready")
        for i in range(a.repeats):
            cli_s.append(train_cli_run(base, data, a.steps, i))
            print(f"  run {i} core/train.py {cli_s[-1][0]:.2f}s (train() {cli_s[-1][1]:.2f}s)", flush=True)
            daemon_s.append(daemon_run(base, recs, a.steps, i, a.timeout))
            print(f"  run {i} daemon        {daemon_s[-1][0]:.2f}s (train() {daemon_s[-1][1]:.2f}s)", flush=True)
            wait_for(lambda: child_ready(base), 300, "warm child ready again")  # untimed
    except (RuntimeError, TimeoutError) as e:
        print(f"daemon_throughput FAILED: {e}", flush=True)
        return 1
    finally:
        stop_daemon(proc)
        shutil.rmtree(base.parent, ignore_errors=True)
    d, c = statistics.median(x[0] for x in daemon_s), statistics.median(x[0] for x in cli_s)
    print(f"daemon (drop -> recently_completed) {spread([x[0] for x in daemon_s])}; "
          f"of which train() median={statistics.median(x[1] for x in daemon_s):.2f}s")
    print(f"core/train.py (process start -> exit) {spread([x[0] for x in cli_s])}; "
          f"of which train() median={statistics.median(x[1] for x in cli_s):.2f}s")
    print(f"overhead ratio daemon/train.py = {d / c:.2f} (medians; {a.steps} steps x batch {a.batch})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
