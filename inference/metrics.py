"""Prometheus metrics of the inference server (``GET /metrics``).

One registry per server instance (not the global default) so that several servers in one process
(tests) do not collide. Names are stable; REMOTE_INFERENCE.md lists them.
"""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
BATCH_BUCKETS = (1, 2, 4, 8, 12, 16, 24, 32, 64, 128)


class ServerMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter("inference_requests_total", "HTTP requests by endpoint and status code",
                                ["endpoint", "status"], registry=r)
        self.errors = Counter("inference_errors_total", "Error responses by OpenAI error type and code",
                              ["type", "code"], registry=r)
        self.prompt_tokens = Counter("inference_prompt_tokens_total", "Prompt tokens processed", registry=r)
        self.completion_tokens = Counter("inference_completion_tokens_total", "Completion tokens generated",
                                         registry=r)
        self.latency = Histogram("inference_request_latency_seconds", "Request latency by endpoint",
                                 ["endpoint"], buckets=LATENCY_BUCKETS, registry=r)
        self.ttft = Histogram("inference_time_to_first_token_seconds", "Queue + prefill time to the first token",
                              buckets=LATENCY_BUCKETS, registry=r)
        self.queue_wait = Histogram("inference_queue_wait_seconds", "Time a request waited before its prefill",
                                    buckets=LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram("inference_batch_size", "Rows decoded together per decode step",
                                    buckets=BATCH_BUCKETS, registry=r)
        self.step_seconds = Histogram("inference_decode_step_seconds", "Wall time of one batched decode step",
                                      buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 1.0),
                                      registry=r)
        self.prefill_seconds = Histogram("inference_prefill_seconds", "Wall time of one prefill forward",
                                         buckets=(0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 5.0),
                                         registry=r)
        self.reloads = Counter("inference_reloads_total", "Model reloads by outcome", ["outcome"], registry=r)
        self.reload_seconds = Histogram("inference_reload_seconds", "Time to load and swap in a model",
                                        buckets=LATENCY_BUCKETS, registry=r)
        self.queue_depth = Gauge("inference_queue_depth", "Requests waiting for a batch slot", registry=r)
        self.active = Gauge("inference_active_requests", "Requests being decoded", registry=r)
        self.model_loaded = Gauge("inference_model_loaded", "1 when a model is loaded", registry=r)
        self.global_step = Gauge("inference_model_global_step", "Global step of the served model (-1: unknown)",
                                 registry=r)

    # called from the batcher thread (prometheus_client is thread-safe)
    def observe_batch(self, n: int, seconds: float | None = None) -> None:
        self.batch_size.observe(n)
        if seconds is not None:
            self.step_seconds.observe(seconds)

    def observe_prefill(self, seconds: float) -> None:
        self.prefill_seconds.observe(seconds)

    def observe_ttft(self, seconds: float) -> None:
        self.ttft.observe(seconds)

    def observe_queue_wait(self, seconds: float) -> None:
        self.queue_wait.observe(seconds)

    def observe_tokens(self, prompt: int, completion: int) -> None:
        self.prompt_tokens.inc(prompt)
        self.completion_tokens.inc(completion)

    def count_error(self, code: str, type: str = "server_error") -> None:
        self.errors.labels(type=type, code=code).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
