"""``trainctl worker``: a machine with ``training.machine_rank`` >= 1 in a multi-machine launch.

The daemon runs only on machine rank 0: intake, queue, checkpoints, deployment and the registry
stay there. A worker has no queue and writes nothing of the job's: it polls rank 0's job endpoint
(``core/daemon/job_server.py``) and, for every new launch it sees, runs the same
``accelerate launch ... --machine_rank R core/train.py --job-file F`` (``core/daemon/launch.py``)
that joins rank 0's torch.distributed group; then it waits for the next launch.

What a worker needs on its own machine: this repository and venv, and the job's paths (the
dataset, the model folder, the job folder with its checkpoints, the validation suite) at the same
place as on rank 0 (shared storage, read by every rank; only rank 0 writes checkpoints, status and
the final model; each rank adds its own ``rng_state_<rank>.pth`` to a checkpoint before rank 0
seals it). A job whose paths are missing here is refused with a log line naming them.

A group failure (this launch or rank 0's dies) ends the launch on every machine; the daemon
restarts the job from its last complete checkpoint with a new launch id, and the worker joins it.
Its own files: ``logs/worker.log`` and ``.pids/trainer_worker.{lock,pid}`` /
``.pids/worker_launch.pid`` (the process group of the current launch).
"""
from __future__ import annotations

if __package__ in (None, ""):  # run by path: python3 core/daemon/worker.py
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import json
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import urllib.error
import urllib.request
from pathlib import Path

import click

from core.daemon.launch import accelerate_command, cluster_token, launch_env
from foundation.atomic_io import atomic_write_json, atomic_write_text
from foundation.parent_death import preexec_die_with_parent
from foundation.paths import Paths
from foundation.single_instance import AlreadyRunning, SingleInstance
from trainer.engine.job_control import CONTROL_FILE_ENV

LOCK_NAME = "trainer_worker"
LAUNCH_PID = "worker_launch.pid"
log = logging.getLogger("trainer_worker")


def fetch_job(url: str, token: str | None, timeout: float = 5.0) -> dict | None:
    """Rank 0's current launch, or None when none is published (nothing listens between launches)."""
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            doc = json.loads(r.read())
    except urllib.error.HTTPError as e:
        if e.code == 401:
            log.error("job endpoint %s refused the token: set the same $TRAINER_CLUSTER_TOKEN as on rank 0", url)
        return None
    except (urllib.error.URLError, OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) and doc.get("launch_id") and isinstance(doc.get("job"), dict) else None


def missing_paths(job: dict) -> list[str]:
    """The job's inputs that this machine cannot see (it needs them at rank 0's paths)."""
    need = [job.get("dataset"), job.get("model_path"), str(Path(job.get("output_dir") or "/").parent)]
    return [p for p in need if p and not Path(p).exists()]


class Worker:
    def __init__(self, paths: Paths, machine_rank: int, main_process_ip: str, job_server_port: int,
                 poll_interval: float, token: str | None):
        self.paths = paths
        self.token = token
        self.rank = machine_rank
        self.ip = main_process_ip
        self.url = f"http://{main_process_ip}:{job_server_port}/job"
        self.poll = poll_interval
        self.stop = threading.Event()
        self.proc: subprocess.Popen | None = None
        self.last_launch: str | None = None

    def run(self) -> int:
        log.info("worker machine_rank %d polling %s", self.rank, self.url)
        while not self.stop.is_set():
            doc = fetch_job(self.url, self.token)
            if doc is None or doc["launch_id"] == self.last_launch:
                self.stop.wait(self.poll)
                continue
            self.last_launch = doc["launch_id"]
            self.join(doc)
        return 0

    def join(self, doc: dict) -> int | None:
        """Run this machine's part of one launch to its end."""
        job = dict(doc["job"])
        missing = missing_paths(job)
        if missing:
            log.error("job %s: not visible on this machine: %s (a multi-machine job needs the same paths "
                      "on every machine); not joining", job.get("job_id"), ", ".join(missing))
            return None
        tr = (job.get("config") or {}).get("training") or {}
        job["status_file"] = ""  # status belongs to rank 0 (its engine writes it on rank 0 only anyway)
        tmp = Path(tempfile.mkdtemp(prefix="trainer-worker-"))
        try:
            atomic_write_json(tmp / "job.json", job)
            # Every rank joins rank 0's step-boundary broadcasts (FileJobControl); only rank 0
            # reads the file, so a path that never exists is right here.
            env = launch_env(tr, {CONTROL_FILE_ENV: str(tmp / "control.json")})
            cmd = accelerate_command(tr, tmp / "job.json", machine_rank=self.rank)
            log.info("joining launch %s of job %s (machine_rank %d)", doc["launch_id"][:8], job.get("job_id"),
                     self.rank)
            with open(self.paths.logs / "worker_launch.log", "ab") as out:
                self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                             env=env, start_new_session=True, preexec_fn=preexec_die_with_parent)
            atomic_write_text(self.paths.pids / LAUNCH_PID, f"{self.proc.pid}\n")
            while self.proc.poll() is None:
                if self.stop.wait(0.5):
                    self.kill_launch()
            rc = self.proc.wait()
            log.info("launch %s ended with status %s", doc["launch_id"][:8], rc)
            return rc
        finally:
            (self.paths.pids / LAUNCH_PID).unlink(missing_ok=True)
            shutil.rmtree(tmp, ignore_errors=True)

    def kill_launch(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)  # its ranks die with it (PR_SET_PDEATHSIG)
            except (ProcessLookupError, PermissionError):
                pass


@click.command("worker", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--base-dir", default=None, help="This machine's runtime base dir (config.json, logs/).")
@click.option("--machine-rank", type=int, default=None, help="Overrides training.machine_rank (must be >= 1).")
@click.option("--main-process-ip", default=None, help="Overrides training.main_process_ip (the rank-0 machine).")
def worker_command(base_dir: str | None, machine_rank: int | None, main_process_ip: str | None) -> None:
    """Join the rank-0 daemon's multi-machine training launches (training.num_machines > 1)."""
    from foundation.logs import setup_logging
    from trainer.config.loader import ConfigError, load_config
    paths = Paths.from_base(base_dir)
    for d in (paths.logs, paths.pids):
        d.mkdir(parents=True, exist_ok=True)
    try:
        cfg = load_config(base_dir=paths.base)
    except ConfigError as e:
        raise click.ClickException(str(e))
    tr = cfg.training
    rank = tr.machine_rank if machine_rank is None else machine_rank
    if rank < 1:
        raise click.ClickException("a worker needs machine_rank >= 1 (rank 0 is the machine that runs the daemon); "
                                   "set training.machine_rank or pass --machine-rank")
    ip = main_process_ip or tr.main_process_ip
    try:
        token = cluster_token(ip)
    except RuntimeError as e:
        raise click.ClickException(str(e))
    setup_logging(paths.logs, "trainer_worker", file_name="worker", keep_days=cfg.daemon.log_keep_days)
    worker = Worker(paths, rank, ip, tr.job_server_port, cfg.daemon.poll_interval, token)

    def on_signal(signum, frame) -> None:
        worker.stop.set()
        worker.kill_launch()
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        with SingleInstance(paths.pids, LOCK_NAME):
            raise SystemExit(worker.run())
    except AlreadyRunning as e:
        raise click.ClickException(str(e))


def main() -> None:
    worker_command()


if __name__ == "__main__":
    main()
