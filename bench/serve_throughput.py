#!/usr/bin/env python3
"""Serving throughput: our server vs ``transformers serve``, same tiny model, same prompts, same load.

Measured in this one invocation, one server at a time, every server started with the same
environment (``OMP_NUM_THREADS=--threads``):

  ours/concurrent   our server, ``--clients`` concurrent clients (continuous batching)
  ours/sequential   our server, one client: the same requests answered one at a time
  hf/plain          ``transformers serve`` (transformers' OpenAI-compatible server), concurrent clients
  hf/cb             ``transformers serve --continuous-batching``, concurrent clients

Each client sends ``--requests`` chat completions back to back (greedy, ``max_tokens``). Throughput
is completion tokens (from each response's ``usage``) per wall-clock second. Prints the ratios
ours/best-of-hf (target >= 1.0, aim 1.5) and ours/sequential (target >= 4).

    .venv/bin/python bench/serve_throughput.py [--clients 16] [--requests 4] [--max-tokens 64] [--threads 1]
"""
from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.helpers.inference_server import ServerProcess, free_port, make_base_dir, stop_process_group  # noqa: E402

WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()


def prompts(n: int) -> list[list[dict]]:
    out = []
    for i in range(n):
        k = 3 + (i * 7) % 25
        out.append([{"role": "user", "content": f"Repeat #{i}: " + " ".join(WORDS[(i + j) % len(WORDS)]
                                                                             for j in range(k))}])
    return out


async def load(url: str, model: str, clients: int, per_client: int, max_tokens: int) -> dict:
    import httpx
    ps = prompts(clients * per_client)
    tokens = 0
    latencies: list[float] = []
    errors = 0

    async def client(c: int, http: httpx.AsyncClient) -> None:
        nonlocal tokens, errors
        for k in range(per_client):
            body = {"model": model, "messages": ps[c * per_client + k], "max_tokens": max_tokens,
                    "temperature": 0}
            t = time.perf_counter()
            r = await http.post(url + "/v1/chat/completions", json=body)
            latencies.append(time.perf_counter() - t)
            if r.status_code != 200:
                errors += 1
                continue
            tokens += r.json()["usage"]["completion_tokens"]

    async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=clients + 4)) as http:
        t0 = time.perf_counter()
        await asyncio.gather(*[client(c, http) for c in range(clients)])
        wall = time.perf_counter() - t0
    latencies.sort()
    return {"tokens": tokens, "wall": wall, "tok_s": tokens / wall if wall else 0.0, "errors": errors,
            "requests": clients * per_client, "p50": latencies[len(latencies) // 2] if latencies else 0.0}


def warm(url: str, model: str, n: int = 3) -> None:
    asyncio.run(load(url, model, n, 1, 8))


def wait_health(url: str, proc: subprocess.Popen, timeout: float = 300) -> None:
    import httpx
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            if httpx.get(url + "/health", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(url)


def stop(proc: subprocess.Popen) -> None:
    stop_process_group(proc, 20)


def run_hf(model_dir: Path, cb: bool, env: dict, a: argparse.Namespace, log_dir: Path) -> dict | None:
    exe = Path(sys.executable).with_name("transformers")
    if not exe.exists():
        print("transformers CLI not found next to the interpreter; skipping hf", flush=True)
        return None
    port = free_port()
    cmd = [str(exe), "serve", str(model_dir), "--host", "127.0.0.1", "--port", str(port), "--device", "cpu",
           "--log-level", "error"] + (["--continuous-batching"] if cb else [])
    log = open(log_dir / f"hf-{'cb' if cb else 'plain'}.log", "wb")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_health(url, proc)
        warm(url, str(model_dir), n=a.clients)
        return asyncio.run(load(url, str(model_dir), a.clients, a.requests, a.max_tokens))
    except Exception as e:  # noqa: BLE001 - report and carry on with the other mode
        print(f"hf/{'cb' if cb else 'plain'} failed: {type(e).__name__}: {e}", flush=True)
        return None
    finally:
        stop(proc)
        log.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--requests", type=int, default=4, help="requests per client")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS for every server")
    ap.add_argument("--model", default=None, help="model folder (default: build the tiny model)")
    ap.add_argument("--sequential-requests", type=int, default=16)
    ap.add_argument("--skip-hf", action="store_true")
    a = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="serve-bench-"))
    try:
        if a.model:
            model_dir = Path(a.model).resolve()
        else:
            from tools.models.make_tiny_model import build
            model_dir = build(tmp / "tiny-qwen3", seed=0)
        env = {**os.environ, "OMP_NUM_THREADS": str(a.threads), "TOKENIZERS_PARALLELISM": "false",
               "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        results: dict[str, dict] = {}
        base = make_base_dir(tmp / "base", model_dir)
        with ServerProcess(base, "--model", str(model_dir), "--threads", str(a.threads),
                           env={"OMP_NUM_THREADS": str(a.threads)}) as srv:
            srv.wait_ready(timeout=300)
            warm(srv.url, "tiny-qwen3", n=a.clients)
            results["ours/concurrent"] = asyncio.run(load(srv.url, "tiny-qwen3", a.clients, a.requests, a.max_tokens))
            results["ours/sequential"] = asyncio.run(load(srv.url, "tiny-qwen3", 1, a.sequential_requests,
                                                          a.max_tokens))
        if not a.skip_hf:
            for cb in (False, True):
                r = run_hf(model_dir, cb, env, a, tmp)
                if r is not None:
                    results["hf/cb" if cb else "hf/plain"] = r
        print(f"serve_throughput: clients={a.clients} requests/client={a.requests} max_tokens={a.max_tokens} "
              f"threads={a.threads} cpus={os.cpu_count()}")
        for name, r in results.items():
            print(f"  {name:16s} {r['tok_s']:8.1f} completion tok/s  ({r['tokens']} tokens in {r['wall']:.2f}s, "
                  f"{r['requests']} requests, p50 latency {r['p50']:.2f}s, errors {r['errors']})")
        ours = results["ours/concurrent"]["tok_s"]
        seq = results["ours/sequential"]["tok_s"]
        print(f"ratio ours/sequential = {ours / seq:.2f}x (target >= 4) {'PASS' if ours / seq >= 4 else 'FAIL'}")
        hf = [(k, v["tok_s"]) for k, v in results.items() if k.startswith("hf/")]
        if hf:
            best_name, best = max(hf, key=lambda t: t[1])
            ratio = ours / best if best else float("inf")
            print(f"ratio ours/{best_name} (faster transformers serve mode) = {ratio:.2f}x "
                  f"(target >= 1.0, aim 1.5) {'PASS' if ratio >= 1.0 else 'FAIL'}")
        return 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
