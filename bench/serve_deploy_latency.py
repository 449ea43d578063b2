#!/usr/bin/env python3
"""Checkpoint-to-serving latency: from "checkpoint written" to "the server serves it".

Runs the real pieces as separate processes on the tiny model, as in production:
  * the inference server (``inference/cli.py``);
  * the automated testing daemon (``monitoring/automated_testing_daemon.py``): it scans for new
    checkpoints every ``evaluation.interval`` seconds, scores each on the fixed suite, then refreshes
    the regression monitor and the comparison ranking (``status/model_comparisons.json``) in the
    same process;
  * the deployment orchestrator (``monitoring/deployment_orchestrator.py run``).

``--n`` times: a new checkpoint is written the way the trainer writes one (model files in a temp
folder renamed to ``models/checkpoints/<job>/step-XXXXXXXX/``, checkpoint_info.json complete) and
the clock starts once it is in place. Stages timed from there: ``picked_up`` (the automated
testing status names it as being evaluated: the scan interval's share), ``ranked`` (evaluated, and
it tops ``model_comparisons.json``) and ``served`` (``/models/info`` reports its global step). Every checkpoint holds the same weights as the base
model, so the scores tie and the comparison's documented tie-break (newer global step first) puts
each new one on top; what is timed is the pipeline, not whether the model improved.

Strategies: ``best_ranked`` (the production default: the full path above) and ``newest`` (measured
in the same invocation as the reference: the orchestrator deploys the newest complete checkpoint
without waiting for any evaluation; no testing daemon runs). Prints the absolute seconds (median,
p90, max) of each stage and the ratio best_ranked/newest of the median served times, i.e. what
gating deployment on evaluation costs. Exits non-zero if any checkpoint is not served in
``--timeout`` seconds or a sidecar dies.

    .venv/bin/python bench/serve_deploy_latency.py [--n 3] [--strategies best_ranked,newest] [--max-items N]
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

from tests.helpers.inference_server import REPO, ServerProcess, make_base_dir, make_checkpoint, stop_process_group  # noqa: E402


def start(base: Path, script: str, *args: str) -> subprocess.Popen:
    log = open(base / "logs" / f"{Path(script).stem}.bench.log", "ab")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1"}
    return subprocess.Popen([sys.executable, str(REPO / "monitoring" / script), *args, "--base-dir", str(base)],
                            cwd=str(REPO), env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def read(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def tail(base: Path, script: str) -> str:
    p = base / "logs" / f"{Path(script).stem}.bench.log"
    return p.read_text(errors="replace")[-2000:] if p.exists() else ""


def measure(strategy: str, model_dir: Path, root: Path, a: argparse.Namespace) -> list[dict[str, float]]:
    """One stage-time dict per checkpoint (seconds after it was written)."""
    import httpx
    evaluation = {"device": "cpu"}
    if a.max_items:
        evaluation["max_items"] = a.max_items
    if a.eval_interval:
        evaluation["interval"] = a.eval_interval
    base = make_base_dir(root / strategy, model_dir, {"deployment": {"strategy": strategy}, "evaluation": evaluation})
    status = base / "status"
    runs: list[dict[str, float]] = []
    with ServerProcess(base) as srv:
        srv.wait_ready(timeout=300)
        sidecars = {"deployment_orchestrator.py": start(base, "deployment_orchestrator.py", "run",
                                                        "--server-url", srv.url)}
        if strategy == "best_ranked":
            sidecars["automated_testing_daemon.py"] = start(base, "automated_testing_daemon.py")
        try:
            # both sidecars up (status files written) before the first checkpoint
            deadline = time.monotonic() + 120
            while not (read(status / "deployment_status.json") and
                       (strategy != "best_ranked" or read(status / "automated_testing.json"))):
                check_alive(sidecars, base)
                if time.monotonic() > deadline:
                    raise RuntimeError("sidecars wrote no status in 120 s")
                time.sleep(0.1)
            for i in range(a.n):
                step = (i + 1) * 100
                make_checkpoint(model_dir, base, "bench-job", step)
                t0 = time.monotonic()  # the checkpoint folder is complete (renamed into place) now
                stages: dict[str, float] = {}
                while "served" not in stages:
                    now = time.monotonic() - t0
                    if strategy == "best_ranked":
                        tester = read(status / "automated_testing.json")
                        seen = {(tester.get(k) or {}).get("global_step") for k in ("current", "last_result")}
                        if "picked_up" not in stages and step in seen:
                            stages["picked_up"] = now
                        best = read(status / "model_comparisons.json").get("best") or {}
                        if "ranked" not in stages and best.get("global_step") == step:
                            stages["ranked"] = now
                    if httpx.get(srv.url + "/models/info", timeout=30).json().get("global_step") == step:
                        stages["served"] = time.monotonic() - t0
                        if strategy == "best_ranked":  # an earlier stage this poll missed ended by now
                            stages = {"picked_up": stages.get("picked_up", stages["served"]),
                                      "ranked": stages.get("ranked", stages["served"]), "served": stages["served"]}
                    check_alive(sidecars, base)
                    if now > a.timeout:
                        raise RuntimeError(f"step {step} not served after {a.timeout:.0f}s (stages so far: {stages}); "
                                           f"orchestrator log:\n{tail(base, 'deployment_orchestrator.py')}")
                    time.sleep(0.05)
                runs.append(stages)
                print(f"  {strategy} checkpoint {i + 1}/{a.n}: " +
                      " ".join(f"{k}={v:.2f}s" for k, v in stages.items()), flush=True)
        finally:
            for p in sidecars.values():
                stop_process_group(p, 30)
    return runs


def check_alive(sidecars: dict[str, subprocess.Popen], base: Path) -> None:
    for script, p in sidecars.items():
        if p.poll() is not None:
            raise RuntimeError(f"{script} exited with {p.returncode}:\n{tail(base, script)}")


def line(name: str, xs: list[float]) -> str:
    xs = sorted(xs)
    p90 = xs[min(len(xs) - 1, int(round(0.9 * (len(xs) - 1))))]
    return f"{name} median={statistics.median(xs):.2f}s p90={p90:.2f}s max={xs[-1]:.2f}s"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=3, help="checkpoints per strategy")
    ap.add_argument("--strategies", default="best_ranked,newest")
    ap.add_argument("--max-items", type=int, default=0, help="evaluation.max_items (0: the config default)")
    ap.add_argument("--eval-interval", type=float, default=0.0, help="evaluation.interval (0: the config default)")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per checkpoint before failing")
    ap.add_argument("--model", default=None, help="model folder (default: build the tiny model)")
    a = ap.parse_args()
    from trainer.config.loader import validate_dict
    defaults = validate_dict({})
    print(f"deploy_latency: n={a.n} evaluation.max_items={a.max_items or defaults.evaluation.max_items} "
          f"evaluation.interval={a.eval_interval or defaults.evaluation.interval}s "
          f"deployment.poll_interval={defaults.deployment.poll_interval}s cpus={os.cpu_count()}", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="deploy-bench-"))
    served: dict[str, float] = {}
    try:
        if a.model:
            model_dir = Path(a.model).resolve()
        else:
            from tools.models.make_tiny_model import build
            model_dir = build(tmp / "tiny-qwen3", seed=0)
        for strategy in [s.strip() for s in a.strategies.split(",") if s.strip()]:
            try:
                runs = measure(strategy, model_dir, tmp, a)
            except RuntimeError as e:
                print(f"deploy_latency strategy={strategy} FAILED: {e}", flush=True)
                return 1
            for stage in runs[0]:
                print(f"deploy_latency strategy={strategy} n={len(runs)} " + line(stage, [r[stage] for r in runs]))
            served[strategy] = statistics.median(r["served"] for r in runs)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if "best_ranked" in served and "newest" in served:
        print(f"ratio served median best_ranked/newest = {served['best_ranked'] / served['newest']:.1f}x "
              f"(the cost of gating deployment on evaluation and ranking)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
