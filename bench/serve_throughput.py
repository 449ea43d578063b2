#!/usr/bin/env python3
"""Serving throughput: our server vs ``transformers serve``, same tiny model, prompts, device, dtype
and load, measured in this one invocation.

Servers, started one at a time with the same environment (``OMP_NUM_THREADS=--threads``):

  ours       our server (``inference/cli.py --model ... --device D``)
  hf         ``transformers serve MODEL --device D --dtype T`` (its default, no batching)
  hf_cb      ``transformers serve ... --continuous-batching`` (its paged-attention batching)

D is ``--device`` resolved once (``foundation.device``); T is the dtype our server reports in
``/models/info`` for that device, so both sides run the same numerics. Each server gets ``--warm``
untimed concurrent requests first, then for each concurrency in ``--clients`` (default 16 and 64)
every client sends ``--requests`` chat completions back to back (greedy, ``max_tokens``).
Throughput = completion tokens per wall-clock second, counted the same way for every server (the
reply text re-tokenized with the model's tokenizer, since servers differ on whether a final EOS
counts in ``usage``); latency =
seconds per request (p50, p95). Prints every side and the ratios ours/hf and ours/hf_cb per
concurrency; also ours with one client (``--sequential-requests``) as the no-batching reference.

Exits non-zero, printing no ratio, when ``transformers serve`` cannot start or any request fails.

    .venv/bin/python bench/serve_throughput.py [--clients 16,64] [--requests 2] [--max-tokens 32] [--threads 1]
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


class BenchError(RuntimeError):
    """A server did not start or a request failed: no honest ratio can be printed."""


def prompts(n: int) -> list[list[dict]]:
    out = []
    for i in range(n):
        k = 3 + (i * 7) % 25
        out.append([{"role": "user", "content": f"Repeat #{i}: " + " ".join(WORDS[(i + j) % len(WORDS)]
                                                                             for j in range(k))}])
    return out


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


async def load(url: str, model: str, clients: int, per_client: int, max_tokens: int, count=None) -> dict:
    """``clients`` concurrent clients, ``per_client`` requests each. Raises BenchError on any failure."""
    import httpx
    ps = prompts(clients * per_client)
    tokens = 0
    latencies: list[float] = []
    errors: list[str] = []

    async def client(c: int, http: httpx.AsyncClient) -> None:
        nonlocal tokens
        for k in range(per_client):
            body = {"model": model, "messages": ps[c * per_client + k], "max_tokens": max_tokens, "temperature": 0}
            t = time.perf_counter()
            try:
                r = await http.post(url + "/v1/chat/completions", json=body)
            except httpx.HTTPError as e:
                errors.append(f"{type(e).__name__}: {e}")
                continue
            latencies.append(time.perf_counter() - t)
            if r.status_code != 200:
                errors.append(f"HTTP {r.status_code}: {r.text[:300]}")
                continue
            reply = r.json()
            tokens += count(reply["choices"][0]["message"]["content"] or "") if count else \
                reply["usage"]["completion_tokens"]

    async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=clients + 4)) as http:
        t0 = time.perf_counter()
        await asyncio.gather(*[client(c, http) for c in range(clients)])
        wall = time.perf_counter() - t0
    if errors:
        raise BenchError(f"{len(errors)} of {clients * per_client} requests to {url} failed; first: {errors[0]}")
    if tokens == 0:
        raise BenchError(f"{url} answered {clients * per_client} requests with no completion tokens")
    return {"tokens": tokens, "wall": wall, "tok_s": tokens / wall, "requests": clients * per_client,
            "p50": pct(latencies, 0.5), "p95": pct(latencies, 0.95)}


def wait_health(url: str, proc: subprocess.Popen, log: Path, timeout: float = 300) -> None:
    import httpx
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"exited with {proc.returncode} before answering /health:\n"
                             f"{log.read_text(errors='replace')[-2000:]}")
        try:
            if httpx.get(url + "/health", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise BenchError(f"no healthy /health on {url} after {timeout:.0f}s:\n{log.read_text(errors='replace')[-2000:]}")


def model_id(url: str) -> str:
    import httpx
    return httpx.get(url + "/v1/models", timeout=30).json()["data"][0]["id"]


def measure(name: str, url: str, a: argparse.Namespace, levels: list[int]) -> dict[str, dict]:
    mid = model_id(url)
    asyncio.run(load(url, mid, a.warm, 1, a.max_tokens, a.count))  # warm-up: untimed
    out = {}
    for c in levels:
        out[f"{name}@{c}"] = r = asyncio.run(load(url, mid, c, a.requests, a.max_tokens, a.count))
        print(f"  {name}@{c} done: {r['tok_s']:.1f} tok/s", flush=True)
    return out


def run_hf(model_dir: Path, cb: bool, device: str, dtype: str, env: dict, a: argparse.Namespace, tmp: Path,
           levels: list[int]) -> dict[str, dict]:
    exe = Path(sys.executable).with_name("transformers")
    if not exe.exists():
        raise BenchError(f"the transformers CLI is not installed next to {sys.executable}")
    name = "hf_cb" if cb else "hf"
    port = free_port()
    cmd = [str(exe), "serve", str(model_dir), "--host", "127.0.0.1", "--port", str(port), "--device", device,
           "--dtype", dtype, "--log-level", "warning"] + (["--continuous-batching"] if cb else [])
    log_path = tmp / f"{name}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            url = f"http://127.0.0.1:{port}"
            try:
                wait_health(url, proc, log_path)
            except BenchError as e:
                raise BenchError(f"`{' '.join(cmd)}` could not start: {e}") from None
            return measure(name, url, a, levels)
        finally:
            stop_process_group(proc, 20)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", default="16,64", help="comma-separated concurrencies")
    ap.add_argument("--requests", type=int, default=2, help="requests per client")
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--warm", type=int, default=4, help="untimed concurrent requests per server first")
    ap.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS for every server")
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda (resolved once, used by all servers)")
    ap.add_argument("--model", default=None, help="model folder (default: build the tiny model)")
    ap.add_argument("--sequential-requests", type=int, default=8, help="ours with one client (0: skip)")
    a = ap.parse_args()
    from foundation.device import resolve_device
    levels = [int(x) for x in a.clients.split(",") if x.strip()]
    device = resolve_device(a.device)
    tmp = Path(tempfile.mkdtemp(prefix="serve-bench-"))
    try:
        if a.model:
            model_dir = Path(a.model).resolve()
        else:
            from tools.models.make_tiny_model import build
            model_dir = build(tmp / "tiny-qwen3", seed=0)
        from transformers import AutoTokenizer
        tok = AutoTokenizer.from_pretrained(model_dir)
        a.count = lambda text: len(tok(text, add_special_tokens=False)["input_ids"])
        env = {**os.environ, "OMP_NUM_THREADS": str(a.threads), "TOKENIZERS_PARALLELISM": "false",
               "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        results: dict[str, dict] = {}
        base = make_base_dir(tmp / "base", model_dir)
        with ServerProcess(base, "--model", str(model_dir), "--threads", str(a.threads), "--device", device,
                           env={"OMP_NUM_THREADS": str(a.threads)}) as srv:
            try:
                srv.wait_ready(timeout=300)
            except (RuntimeError, TimeoutError) as e:
                raise BenchError(f"our server could not start: {e}") from None
            import httpx
            info = httpx.get(srv.url + "/models/info", timeout=30).json()
            dtype = info["dtype"]
            if info["device"] != device:
                raise BenchError(f"our server runs on {info['device']}, asked for {device}")
            print(f"serve_throughput: device={device} dtype={dtype} clients={levels} requests/client={a.requests} "
                  f"max_tokens={a.max_tokens} threads={a.threads} cpus={os.cpu_count()}", flush=True)
            results.update(measure("ours", srv.url, a, levels))
            if a.sequential_requests:
                results["ours@1"] = asyncio.run(load(srv.url, model_id(srv.url), 1, a.sequential_requests,
                                                     a.max_tokens, a.count))
        for cb in (False, True):
            results.update(run_hf(model_dir, cb, device, dtype, env, a, tmp, levels))
    except BenchError as e:
        print(f"serve_throughput FAILED (no ratio printed): {e}", flush=True)
        return 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for name, r in results.items():
        print(f"  {name:9s} {r['tok_s']:8.1f} completion tok/s  p50 {r['p50']:.2f}s  p95 {r['p95']:.2f}s  "
              f"({r['tokens']} tokens, {r['requests']} requests, {r['wall']:.2f}s)")
    for c in levels:
        ours = results[f"ours@{c}"]
        for hf in ("hf", "hf_cb"):
            other = results[f"{hf}@{c}"]
            print(f"ratio @{c} clients ours/{hf}: tokens/s {ours['tok_s'] / other['tok_s']:.2f}x, "
                  f"p50 latency {ours['p50'] / other['p50']:.2f}x, p95 latency {ours['p95'] / other['p95']:.2f}x")
        if "ours@1" in results:
            print(f"ratio @{c} clients ours/ours@1 (batching gain): tokens/s "
                  f"{ours['tok_s'] / results['ours@1']['tok_s']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
