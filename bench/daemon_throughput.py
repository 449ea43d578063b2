#!/usr/bin/env python3
"""Does training through the daemon cost throughput? Same file, same config, same steps:

(a) through the daemon: the file is dropped into inbox/ and trained by the warm trainer child
    (step-boundary control polling, status heartbeats, pipe messages all active);
(b) baseline, same invocation: the engine's own command line (``core/train.py``) in a fresh
    process, no daemon, writing its status keys to a status file of its own as it would anyway.
Throughput = non-padding tokens / seconds of ``trainer.train()`` (the job's ``metrics.train_seconds``;
``tokens / duration`` when absent), best of ``--repeats`` runs each, interleaved to share the
machine's noise. Target: ratio (a)/(b) >= 0.95.

    .venv/bin/python bench/daemon_throughput.py [--steps 80] [--batch 8] [--repeats 3]
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from daemon_common import (REPO, child_ready, drop, make_base, records, result, start_daemon, stop_daemon,  # noqa: E402
                           wait_for, write_file)


def tps(res: dict) -> float:
    secs = (res.get("metrics") or {}).get("train_seconds") or res.get("duration_s")
    return res["tokens"] / secs


def engine_run(base: Path, data: Path, model: str, steps: int, batch: int, i: int) -> float:
    out = base.parent / f"engine-run-{i}"
    cmd = [sys.executable, str(REPO / "core" / "train.py"), "--dataset", str(data), "--model", model,
           "--output", str(out), "--max-steps", str(steps), "--base-dir", str(base),
           "--status-file", str(base / "status" / "engine_bench.json"),
           "--set", f"training.per_device_batch_size={batch}", "--set", "training.save_steps=1000000",
           "--set", "training.eval_steps=0", "--set", "training.logging_steps=5"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-2000:])
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    shutil.rmtree(out, ignore_errors=True)
    return tps(res)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=80)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    base = make_base({"training": {"max_steps": a.steps, "per_device_batch_size": a.batch,
                                   "save_steps": 1000000, "eval_steps": 0, "logging_steps": 5}})
    cfg = json.loads((base / "config.json").read_text())
    model = cfg["model"]["model_path"]
    recs = records(a.steps * a.batch, seed=7)
    data = base.parent / "same.jsonl"
    write_file(data, recs)
    daemon_tps: list[float] = []
    engine_tps: list[float] = []
    proc = start_daemon(base)
    try:
        wait_for(lambda: child_ready(base), 300, "warm child ready")
        for i in range(a.repeats):
            engine_tps.append(engine_run(base, data, model, a.steps, a.batch, i))
            print(f"  engine run {i}: {engine_tps[-1]:.0f} tokens/s", flush=True)
            # The daemon's lineage moves on after each file; reset it so both start from the base model.
            shutil.rmtree(base / "models" / "current_model", ignore_errors=True)
            name = f"same-{i}.jsonl"
            drop(base, name, recs)
            res = wait_for(lambda: result(base, name), 900, f"{name} trained", interval=0.2)
            daemon_tps.append(tps(res))
            print(f"  daemon run {i}: {daemon_tps[-1]:.0f} tokens/s", flush=True)
            wait_for(lambda: child_ready(base), 300, "warm child ready again")
    finally:
        stop_daemon(proc)
        shutil.rmtree(base.parent, ignore_errors=True)
    d, e = max(daemon_tps), max(engine_tps)
    print(f"daemon_throughput: daemon {d:.0f} tokens/s vs engine CLI {e:.0f} tokens/s "
          f"({a.steps} steps x batch {a.batch}, best of {a.repeats}); ratio {d / e:.3f}; "
          f"target >= 0.95: {'PASS' if d / e >= 0.95 else 'FAIL'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
