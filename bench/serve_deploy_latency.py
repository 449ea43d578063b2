#!/usr/bin/env python3
"""Checkpoint-to-serving latency: from a new complete checkpoint to ``/models/info`` reporting it.

Runs the real pieces as separate processes, as in production: the inference server
(``inference/cli.py``) and the deployment orchestrator daemon (``deployment_orchestrator.py run``).
Then, ``--n`` times: writes a new checkpoint the way the trainer does (model files in a temp folder,
renamed to ``models/checkpoints/<job>/step-XXXXXXXX/``, checkpoint_info.json complete), and for
strategy ``best_ranked`` immediately puts it on top of ``status/model_comparisons.json`` (standing in
for the evaluator); the clock stops when ``/models/info`` reports the new global step.

Prints median / p90 / max seconds per strategy and the ratio to the target (median <= 10 s) and
to the old design (up to 15 minutes).

    .venv/bin/python bench/serve_deploy_latency.py [--n 5] [--strategies newest,best_ranked]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.helpers.inference_server import REPO, ServerProcess, stop_process_group, make_base_dir, make_checkpoint, write_rankings  # noqa: E402

TARGET_S = 10.0
OLD_DESIGN_S = 15 * 60.0


def start_orchestrator(base: Path, url: str) -> subprocess.Popen:
    log = open(base / "logs" / "orchestrator.log", "ab")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.Popen([sys.executable, str(REPO / "monitoring" / "deployment_orchestrator.py"), "run",
                             "--base-dir", str(base), "--server-url", url], cwd=str(REPO), env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def stop(proc: subprocess.Popen) -> None:
    stop_process_group(proc, 30)


def measure(strategy: str, model_dir: Path, root: Path, n: int, poll: float, timeout: float) -> list[float]:
    import httpx
    base = make_base_dir(root / strategy, model_dir,
                         {"deployment": {"strategy": strategy, "poll_interval": poll, "interval": 30}})
    times: list[float] = []
    with ServerProcess(base) as srv:
        srv.wait_ready(timeout=300)
        orch = start_orchestrator(base, srv.url)
        try:
            time.sleep(1.0)
            ranked: list[tuple[Path, float]] = []
            for i in range(n):
                step = (i + 1) * 100
                ckpt = make_checkpoint(model_dir, base, "bench-job", step, noise=0.01, seed=step)
                t0 = time.monotonic()  # the checkpoint folder is complete (renamed into place) now
                if strategy == "best_ranked":
                    ranked.append((ckpt, float(i)))
                    write_rankings(base, ranked)
                while True:
                    if orch.poll() is not None:
                        raise RuntimeError(f"orchestrator exited: {(base / 'logs' / 'orchestrator.log').read_text()[-2000:]}")
                    info = httpx.get(srv.url + "/models/info", timeout=30).json()
                    if info.get("global_step") == step:
                        break
                    if time.monotonic() - t0 > timeout:
                        raise TimeoutError(f"step {step} not served after {timeout}s")
                    time.sleep(0.02)
                times.append(time.monotonic() - t0)
            deadline = time.monotonic() + timeout
            while True:  # the history entry is written after the smoke completion that follows the swap
                status = json.loads((base / "status" / "deployment_status.json").read_text())
                outcomes = [h["outcome"] for h in status["history"]]
                if outcomes.count("deployed") >= n or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            if outcomes.count("deployed") < n:
                raise RuntimeError(f"expected {n} deployments, history says {outcomes}")
        finally:
            stop(orch)
    return times


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=5)
    ap.add_argument("--strategies", default="newest,best_ranked")
    ap.add_argument("--poll-interval", type=float, default=0.5, help="deployment.poll_interval (the default)")
    ap.add_argument("--timeout", type=float, default=120.0)
    ap.add_argument("--model", default=None, help="model folder (default: build the tiny model)")
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="deploy-bench-"))
    try:
        if a.model:
            model_dir = Path(a.model).resolve()
        else:
            from tools.models.make_tiny_model import build
            model_dir = build(tmp / "tiny-qwen3", seed=0)
        ok = True
        for strategy in a.strategies.split(","):
            times = measure(strategy.strip(), model_dir, tmp, a.n, a.poll_interval, a.timeout)
            med = statistics.median(times)
            p90 = sorted(times)[min(len(times) - 1, int(round(0.9 * (len(times) - 1))))]
            ok &= med <= TARGET_S
            print(f"deploy_latency strategy={strategy} n={len(times)} median={med:.2f}s p90={p90:.2f}s "
                  f"max={max(times):.2f}s runs=[{', '.join(f'{t:.2f}' for t in times)}]")
            print(f"  ratio target/median = {TARGET_S / med:.1f}x (median <= {TARGET_S:.0f}s: "
                  f"{'PASS' if med <= TARGET_S else 'FAIL'}); old design (15 min)/median = {OLD_DESIGN_S / med:.0f}x")
        return 0 if ok else 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
