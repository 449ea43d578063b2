"""``/metrics`` on the live monitor: training gauges in the Prometheus text format, for people who
already run Prometheus and Grafana. Read from the files at scrape time (a collector, not gauges set
in a loop), so a scrape always reports what the status files say now; an absent value is simply not
exported rather than exported as 0.
"""
from __future__ import annotations

from typing import Callable

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

# (metric name, help, training_status.json key)
_TRAINING = [
    ("trainer_global_step", "Global optimizer step of the lineage.", "current_step"),
    ("trainer_step_in_file", "Optimizer steps done on the current file.", "step_in_file"),
    ("trainer_file_total_steps", "Optimizer steps the current file takes.", "file_total_steps"),
    ("trainer_loss", "Training loss of the last logging window.", "loss"),
    ("trainer_validation_loss", "Last loss on the fixed validation suite.", "validation_loss"),
    ("trainer_val_train_gap", "Validation loss minus training loss at the last evaluation.", "val_train_gap"),
    ("trainer_learning_rate", "Current learning rate.", "learning_rate"),
    ("trainer_tokens_per_second", "Non-padding tokens per second in the current job.", "tokens_per_sec"),
    ("trainer_eta_seconds", "Estimated seconds until the current file is done.", "eta_seconds"),
    ("trainer_epoch", "Epoch within the current file.", "epoch"),
]


def _num(x) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else None


class TrainingCollector(Collector):
    def __init__(self, snapshot: Callable[[], dict], last_point: Callable[[], dict | None]):
        self.snapshot = snapshot
        self.last_point = last_point

    def collect(self):
        panels = self.snapshot().get("panels", {})
        tr = panels.get("training") or {}
        for name, help_text, key in _TRAINING:
            v = _num(tr.get(key))
            if v is not None:
                yield GaugeMetricFamily(name, help_text, value=v)
        gn = _num((self.last_point() or {}).get("grad_norm"))
        if gn is not None:
            yield GaugeMetricFamily("trainer_grad_norm", "Gradient norm at the last logged step.", value=gn)
        if not tr.get("unknown"):
            up = GaugeMetricFamily("trainer_daemon_up", "1 when the training daemon holds its lock.",
                                   value=1.0 if tr.get("daemon_running") else 0.0)
            yield up
            yield GaugeMetricFamily("trainer_paused", "1 while training is paused.",
                                    value=1.0 if tr.get("state") == "paused" or tr.get("paused") else 0.0)
            age = _num(tr.get("heartbeat_age_s"))
            if age is not None:
                yield GaugeMetricFamily("trainer_heartbeat_age_seconds", "Age of the daemon's heartbeat.", value=age)
        counts = (panels.get("queue") or {}).get("counts")
        if isinstance(counts, dict):
            g = GaugeMetricFamily("trainer_queue_files", "Files per queue folder.", labels=["folder"])
            for folder, n in sorted(counts.items()):
                g.add_metric([folder], float(n))
            yield g
        procs = (panels.get("processes") or {}).get("processes") or []
        g = GaugeMetricFamily("monitor_heartbeat_age_seconds", "Heartbeat age per status file.", labels=["process"])
        for p in procs:
            if _num(p.get("heartbeat_age_s")) is not None:
                g.add_metric([p["name"]], float(p["heartbeat_age_s"]))
        yield g


def metrics_text(snapshot: Callable[[], dict], last_point: Callable[[], dict | None]) -> bytes:
    reg = CollectorRegistry(auto_describe=False)
    reg.register(TrainingCollector(snapshot, last_point))
    return generate_latest(reg)
