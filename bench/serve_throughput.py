#!/usr/bin/env python3
"""Serving throughput: our server vs ``transformers serve``, same tiny model, prompts, device, dtype
and load, measured in this one invocation.

Servers, started one at a time with the same environment (``OMP_NUM_THREADS=--threads``):

  ours       our server (``inference/cli.py --model ... --device D --precision P``)
  hf         ``transformers serve MODEL --device D --dtype T`` (its default, no batching)
  hf_cb      ``transformers serve ... --continuous-batching`` (its paged-attention batching)

D is ``--device`` resolved once (``foundation.device``); P is ``--precision`` (default auto, as
``inference.precision``: bf16 on a CPU with native bf16); T is the dtype our server reports in
``/models/info``, so both sides run the same numerics, unless a server is named with a dtype
(``hf_cb:float32``): then that one runs in that dtype, and where several ``hf_cb`` variants run,
the ratio against the best of them in each round is printed too. The servers named in
``--servers`` are all started first (an idle one uses no CPU) and each gets ``--warm`` untimed
concurrent requests. Then for each concurrency in ``--clients`` (default 16 and 64), ``--rounds``
times, each server in turn (who goes first rotates per round, so a noisy minute on a shared machine
hits every side) has every client send ``--requests`` chat completions back to back (greedy,
``max_tokens``); each figure printed is the median over the rounds, and each ratio (of those
medians) is followed by the ratio in every round (ours against the other side measured right
before or after it) and their median.
Throughput = completion tokens per wall-clock second, counted the same way for every server (the
reply text re-tokenized with the model's tokenizer, since servers differ on whether a final EOS
counts in ``usage``); latency =
seconds per request (p50, p95). Prints every side and the ratios ours/hf and ours/hf_cb per
concurrency; also ours with one client (``--sequential-requests``) as the no-batching reference.

Exits non-zero, printing no ratio, when ``transformers serve`` cannot start or any request fails.

    .venv/bin/python bench/serve_throughput.py [--clients 16,64] [--requests 2] [--max-tokens 32] [--threads 1]
        [--servers ours,hf,hf_cb[,hf_cb:float32]] [--rounds 1] [--precision auto|fp32|bf16]
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
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


def warm(url: str, a: argparse.Namespace) -> str:
    """The server's model id, after ``--warm`` untimed concurrent requests."""
    mid = model_id(url)
    asyncio.run(load(url, mid, a.warm, 1, a.max_tokens, a.count))
    return mid


def start_hf(stack: contextlib.ExitStack, model_dir: Path, name: str, device: str, dtype: str, env: dict,
             tmp: Path, cb_share: int = 1) -> tuple[str, Path]:
    """Start ``transformers serve`` for server ``name`` (``hf``/``hf_cb``, optionally ``:dtype``;
    stopped when ``stack`` closes); returns its URL once healthy, and its log. ``cb_share``: how many
    continuous-batching servers run at once. Each sizes its paged KV cache to most of the free
    memory by default, so two of them got the second one OOM-killed here; with several, each gets
    ``--cb-max-memory-percent 0.8 / cb_share`` (still gigabytes of cache for this bench's load)."""
    exe = Path(sys.executable).with_name("transformers")
    if not exe.exists():
        raise BenchError(f"the transformers CLI is not installed next to {sys.executable}")
    kind, _, own_dtype = name.partition(":")
    cb, dtype = kind == "hf_cb", own_dtype or dtype
    port = free_port()
    cmd = [str(exe), "serve", str(model_dir), "--host", "127.0.0.1", "--port", str(port), "--device", device,
           "--dtype", dtype, "--log-level", "warning"] + (["--continuous-batching"] if cb else [])
    if cb and cb_share > 1:
        cmd += ["--cb-max-memory-percent", f"{0.8 / cb_share:.3f}"]
    log_path = tmp / f"{kind}-{dtype}.log"
    log = stack.enter_context(open(log_path, "wb"))
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    stack.callback(stop_process_group, proc, 20)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_health(url, proc, log_path)
    except BenchError as e:
        raise BenchError(f"`{' '.join(cmd)}` could not start: {e}") from None
    return url, log_path


def thread_cpu(pid: int) -> tuple[float, float]:
    """CPU seconds of process ``pid``: (its main thread, i.e. uvicorn's event loop; all its other
    threads), from /proc (0, 0 where there is none)."""
    ticks = os.sysconf("SC_CLK_TCK")
    main = rest = 0.0
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        cpu = (int(fields[11]) + int(fields[12])) / ticks  # utime + stime
        if task.name == str(pid):
            main += cpu
        else:
            rest += cpu
    return main, rest


def median(xs: list[float]) -> float:
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", default="16,64", help="comma-separated concurrencies")
    ap.add_argument("--requests", type=int, default=2, help="requests per client")
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--warm", type=int, default=4, help="untimed concurrent requests per server first")
    ap.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS for every server")
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda (resolved once, used by all servers)")
    ap.add_argument("--model", default=None, help="model folder (default: build the tiny model)")
    ap.add_argument("--servers", default="ours,hf,hf_cb",
                    help="which servers to measure (ours is always one); hf_cb:float32 names a dtype")
    ap.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"],
                    help="our server's --precision (the others follow its dtype unless named with one)")
    ap.add_argument("--rounds", type=int, default=1,
                    help="measurements per server and concurrency, the servers taking turns in each round")
    ap.add_argument("--sequential-requests", type=int, default=8, help="ours with one client (0: skip)")
    a = ap.parse_args()
    from foundation.device import resolve_device
    levels = [int(x) for x in a.clients.split(",") if x.strip()]
    names = ["ours"] + [n for n in dict.fromkeys(x.strip() for x in a.servers.split(","))
                        if n.partition(":")[0] in ("hf", "hf_cb")]
    device = resolve_device(a.device)
    tmp = Path(tempfile.mkdtemp(prefix="serve-bench-"))
    runs: dict[str, list[dict]] = {}
    cpu_ours = [0.0, 0.0, 0]  # our server's event-loop CPU, other threads' CPU, requests
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
        base = make_base_dir(tmp / "base", model_dir)
        with contextlib.ExitStack() as stack:
            srv = stack.enter_context(ServerProcess(base, "--model", str(model_dir), "--threads", str(a.threads),
                                                    "--device", device, "--precision", a.precision,
                                                    env={"OMP_NUM_THREADS": str(a.threads)}))
            try:
                srv.wait_ready(timeout=300)
            except (RuntimeError, TimeoutError) as e:
                raise BenchError(f"our server could not start: {e}") from None
            import httpx
            info = httpx.get(srv.url + "/models/info", timeout=30).json()
            dtype = info["dtype"]
            if info["device"] != device:
                raise BenchError(f"our server runs on {info['device']}, asked for {device}")
            urls, logs = {"ours": srv.url}, {"ours": srv.log_path}
            cb_share = sum(n.startswith("hf_cb") for n in names)
            for name in names[1:]:  # every server up (idle ones use no CPU) so that rounds can alternate
                urls[name], logs[name] = start_hf(stack, model_dir, name, device, dtype, env, tmp, cb_share)
            print(f"serve_throughput: device={device} dtype={dtype} clients={levels} requests/client={a.requests} "
                  f"max_tokens={a.max_tokens} threads={a.threads} rounds={a.rounds} servers={names} "
                  f"cpus={os.cpu_count()} packed_linears={info.get('packed_linears')}", flush=True)
            mids = {name: warm(url, a) for name, url in urls.items()}
            for c in levels:
                for r in range(a.rounds):
                    order = names[r % len(names):] + names[:r % len(names)]  # who goes first rotates
                    for name in order:
                        before = thread_cpu(srv.proc.pid)
                        try:
                            res = asyncio.run(load(urls[name], mids[name], c, a.requests, a.max_tokens, a.count))
                        except BenchError as e:  # say why: the server's own last words
                            tail = logs[name].read_text(errors="replace")[-3000:]
                            raise BenchError(f"{name}@{c} round {r + 1}: {e}\n--- {name}'s log ends with:\n{tail}") \
                                from None
                        runs.setdefault(f"{name}@{c}", []).append(res)
                        if name == "ours":
                            after = thread_cpu(srv.proc.pid)
                            cpu_ours[0] += after[0] - before[0]
                            cpu_ours[1] += after[1] - before[1]
                            cpu_ours[2] += res["requests"]
                        print(f"  round {r + 1} {name}@{c}: {res['tok_s']:.1f} tok/s", flush=True)
            if a.sequential_requests:
                runs["ours@1"] = [asyncio.run(load(srv.url, mids["ours"], 1, a.sequential_requests, a.max_tokens,
                                                   a.count))]
    except BenchError as e:
        print(f"serve_throughput FAILED (no ratio printed): {e}", flush=True)
        return 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    results = {k: {"tok_s": median([r["tok_s"] for r in v]), "p50": median([r["p50"] for r in v]),
                   "p95": median([r["p95"] for r in v]), "tokens": sum(r["tokens"] for r in v),
                   "requests": sum(r["requests"] for r in v), "wall": sum(r["wall"] for r in v), "n": len(v)}
               for k, v in runs.items()}
    for name, r in results.items():
        print(f"  {name:9s} {r['tok_s']:8.1f} completion tok/s  p50 {r['p50']:.2f}s  p95 {r['p95']:.2f}s  "
              f"({r['tokens']} tokens, {r['requests']} requests, {r['wall']:.2f}s; median of {r['n']})")
    if cpu_ours[2]:
        print(f"  ours server CPU per request: event loop {cpu_ours[0] / cpu_ours[2] * 1e3:.2f} ms, "
              f"decode and other threads {cpu_ours[1] / cpu_ours[2] * 1e3:.2f} ms", flush=True)
    for c in levels:
        ours = results[f"ours@{c}"]
        for hf in names[1:]:
            other = results[f"{hf}@{c}"]
            per_round = [o["tok_s"] / h["tok_s"] for o, h in zip(runs[f"ours@{c}"], runs[f"{hf}@{c}"])]
            print(f"ratio @{c} clients ours/{hf}: tokens/s {ours['tok_s'] / other['tok_s']:.2f}x "
                  f"(per round {' '.join(f'{x:.2f}' for x in per_round)}; median {median(per_round):.2f}x), "
                  f"p50 latency {ours['p50'] / other['p50']:.2f}x, p95 latency {ours['p95'] / other['p95']:.2f}x")
        cbs = [n for n in names if n.startswith("hf_cb")]
        if len(cbs) > 1:  # transformers serve at its best in each round, whichever dtype that was
            best = [max(runs[f"{n}@{c}"][r]["tok_s"] for n in cbs) for r in range(a.rounds)]
            per_round = [o["tok_s"] / b for o, b in zip(runs[f"ours@{c}"], best)]
            print(f"ratio @{c} clients ours/best of {','.join(cbs)} in each round: median {median(per_round):.2f}x "
                  f"(per round {' '.join(f'{x:.2f}' for x in per_round)})")
        if "ours@1" in results:
            print(f"ratio @{c} clients ours/ours@1 (batching gain): tokens/s "
                  f"{ours['tok_s'] / results['ours@1']['tok_s']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
