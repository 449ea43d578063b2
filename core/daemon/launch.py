"""The ``accelerate launch`` command line of a multi-process or multi-machine job: one builder for
the daemon's trainer child (machine rank 0) and for ``trainctl worker`` (ranks 1..), so every
machine joins the same launch with the same arguments.

Why ``--multi_gpu`` on CPU too: accelerate's ``--cpu`` flag selects its *simple* launcher, which
starts one plain process (no RANK/WORLD_SIZE), whatever ``--num_processes`` says. ``--multi_gpu``
is its torchrun launcher (one elastic agent per machine, ``--nnodes``/``--node_rank`` from
``--num_machines``/``--machine_rank``); the ranks then pick gloo on CPU themselves
(``TrainingArguments(use_cpu=...)``; ``ACCELERATE_USE_CPU`` is set when training.device is cpu).

``--max_restarts 0``: a group restart is the daemon's job, not torchrun's. torchrun restarts only
the ranks of a machine whose agent is alive, and re-runs the script in memory; the daemon restarts
the whole group (every machine) from the last complete checkpoint, with the restart counted
against ``daemon.max_job_restarts`` (core/daemon/outcomes.py).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from foundation.net import is_loopback

REPO = Path(__file__).resolve().parents[2]
TRAIN_SCRIPT = REPO / "core" / "train.py"
TOKEN_ENV = "TRAINER_CLUSTER_TOKEN"


def is_group_launch(training: dict) -> bool:
    """Whether the job runs under ``accelerate launch`` (several processes or machines)."""
    return int(training.get("num_processes", 1)) > 1 or int(training.get("num_machines", 1)) > 1


def accelerate_command(training: dict, job_file: str | os.PathLike, machine_rank: int, *,
                       python: str = sys.executable) -> list[str]:
    """``python -m accelerate.commands.launch ... core/train.py --job-file F`` for ``machine_rank``.
    ``training.num_processes`` counts ranks per machine; accelerate wants the total."""
    per_machine = int(training.get("num_processes", 1))
    machines = int(training.get("num_machines", 1))
    cmd = [python, "-m", "accelerate.commands.launch", "--num_processes", str(per_machine * machines),
           "--max_restarts", "0"]
    if training.get("accelerate_config"):
        cmd += ["--config_file", str(training["accelerate_config"])]
    else:
        cmd += ["--multi_gpu", "--mixed_precision", "no", "--dynamo_backend", "no"]
    if machines > 1:
        cmd += ["--num_machines", str(machines), "--machine_rank", str(int(machine_rank)),
                "--main_process_ip", str(training.get("main_process_ip") or "127.0.0.1"),
                "--main_process_port", str(int(training.get("main_process_port") or 29500))]
    else:
        cmd += ["--num_machines", "1"]
    return cmd + [str(TRAIN_SCRIPT), "--job-file", str(job_file)]


def launch_env(training: dict, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    if str(training.get("device", "auto")) == "cpu":
        env["ACCELERATE_USE_CPU"] = "true"
    env.update(extra or {})
    return env


def cluster_token(host: str) -> str | None:
    """The shared secret of the job endpoint (``$TRAINER_CLUSTER_TOKEN``); required when the
    endpoint is reachable from other machines (``host`` not a loopback address)."""
    token = os.environ.get(TOKEN_ENV) or None
    if token is None and not is_loopback(host):
        raise RuntimeError(f"training.main_process_ip is {host}, reachable from other machines: set "
                           f"${TOKEN_ENV} (the same value on every machine) so that only workers get the job")
    return token
