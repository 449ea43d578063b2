#!/usr/bin/env python3
"""The warm trainer child: started by the training daemon *before* a file arrives, it imports
torch/transformers/the engine (several seconds) and then waits for one job on stdin. That is what
makes drop-to-first-step latency small. A child runs up to ``daemon.child_max_jobs`` jobs, then
a fresh process replaces it (so leaks never pile up); a child whose job failed is always replaced,
which gives an OOM retry a clean CUDA context. The daemon starts the next warm child while it
finishes the previous job's bookkeeping.

Protocol (JSON lines):
  daemon -> child, stdin:  {"cmd": "job", "job": {TrainJob}} | {"cmd": "pause"|"resume"|"stop"|"skip"}
                           | {"cmd": "exit"}.  EOF on stdin means the daemon is gone: exit at once.
  child -> daemon, fd $TRAINER_CHILD_MSG_FD:
     {"type": "ready", "pid", "import_s"}   {"type": "started", "job_id"}
     {"type": "step", "global_step"}        {"type": "paused"|"resumed"|"heartbeat", ...}
     {"type": "result", "result": JobResult, "verified": bool}
     {"type": "error", "kind", "message", "traceback", "global_step", "report"}
stdout/stderr go to logs/trainer_child.log.

Orphan safety: the child asks the kernel for SIGKILL when its parent dies (PR_SET_PDEATHSIG) and
also exits on stdin EOF, so a SIGKILLed daemon never leaves a trainer writing the same job folder
as the next daemon's trainer.

With ``training.num_processes > 1`` or ``training.num_machines > 1`` the job runs under
``accelerate launch core/train.py --job-file F`` in a subprocess (``core/daemon/launch.py``); commands
are relayed through ``$TRAINER_JOB_CONTROL_FILE``. A multi-machine job is also published on the
job endpoint (``core/daemon/job_server.py``) that ``trainctl worker`` polls on the other machines.
A group launch that dies without rank 0's report (a rank or machine died) is reported as
``killed``, which the daemon retries from the last complete checkpoint.
"""
from __future__ import annotations

if __package__ in (None, ""):
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import json
import os
import queue
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path

from foundation.logs import enable_stack_dumps
from foundation.json_lines import iter_json_lines
from foundation.parent_death import die_with_parent, preexec_die_with_parent

MSG_FD_ENV = "TRAINER_CHILD_MSG_FD"
PARENT_ENV = "TRAINER_CHILD_PARENT_PID"


class Channel:
    def __init__(self, fd: int | None):
        self._f = os.fdopen(fd, "w", buffering=1, encoding="utf-8") if fd is not None else None
        self._lock = threading.Lock()

    def send(self, msg: dict) -> None:
        line = json.dumps(msg, default=str)
        with self._lock:
            try:
                if self._f is not None:
                    self._f.write(line + "\n")
                    self._f.flush()
                else:
                    print("@@child " + line, flush=True)
            except (BrokenPipeError, OSError):
                os._exit(4)  # the daemon is gone


def _stdin_reader(jobs: "queue.Queue", make_ctl) -> None:
    """Reads the daemon's commands in order. The job's control object is created here, when the
    job line is read, so a command that follows the job on the pipe can never be lost or reach
    another job (commands carry the job id they are meant for)."""
    current = {"ctl": None, "job_id": None}
    for msg in iter_json_lines(sys.stdin):
        cmd = msg.get("cmd")
        if cmd == "job":
            ctl = make_ctl()
            current.update(ctl=ctl, job_id=msg["job"].get("job_id"))
            jobs.put((msg["job"], ctl))
        elif cmd == "exit":
            jobs.put(None)
        elif cmd in ("pause", "resume", "stop", "skip"):
            if current["ctl"] is not None and msg.get("job_id") in (None, current["job_id"]):
                current["ctl"].command(cmd)
    os._exit(0)  # stdin closed: the daemon exited or died


def _warm_imports() -> None:
    import torch  # noqa: F401
    import transformers  # noqa: F401
    from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainingArguments  # noqa: F401
    import trainer.engine.engine  # noqa: F401
    for mod in ("trainer.data.tokenization", "trainer.data.batching", "trainer.profiles", "trainer.data.validator",
                "accelerate"):
        try:
            __import__(mod)
        except ImportError:
            pass


def _prewarm() -> None:
    """While idle, touch what the next job will need first: the likely model's config, its
    modelling module (transformers imports architectures lazily) and its tokenizer. Then freeze
    the import-time heap so the Trainer's ``gc.collect()`` at train start does not walk it."""
    import gc
    try:
        from core.daemon.model_swap import has_weights
        from foundation.paths import Paths
        from trainer.config.loader import load_config
        paths = Paths.from_base(os.environ.get("TRAINER_BASE_DIR") or None)
        model_path = paths.current_model
        if not has_weights(model_path):
            model_path = paths.resolve(load_config(base_dir=paths.base).model.model_path)
        from transformers import AutoConfig, AutoTokenizer
        from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING
        conf = AutoConfig.from_pretrained(model_path)
        MODEL_FOR_CAUSAL_LM_MAPPING[type(conf)]
        AutoTokenizer.from_pretrained(model_path)
        weights_mb = sum(p.stat().st_size for p in Path(model_path).glob("*.safetensors")) / 2 ** 20
        if weights_mb <= WARMUP_RUN_MAX_MB:
            _warmup_run(paths, str(model_path))
    except Exception as e:  # noqa: BLE001 - pre-warming is an optimisation only
        print(f"trainer child: pre-warm skipped: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
    gc.collect()
    gc.freeze()


WARMUP_RUN_MAX_MB = 256


def _warmup_run(paths, model_path: str) -> None:
    """One optimizer step of the real engine on a 2-example scratch file (small models only): the
    first job in a fresh process otherwise pays for every lazy initialisation on the way to its
    first step (modelling code, accelerate state, optimizer kernels). Writes only to a temp dir."""
    import shutil
    import tempfile
    from trainer.config.loader import config_to_dict, load_config
    from trainer.engine.engine import TrainerEngine
    from trainer.engine.job import TrainJob
    cfg = config_to_dict(load_config(base_dir=paths.base))
    cfg["training"].update(max_steps=1, save_steps=10 ** 6, eval_steps=0, per_device_batch_size=1,
                           gradient_accumulation_steps=1, num_processes=1, logging_steps=1)
    cfg["data"].update(max_length=min(64, cfg["data"]["max_length"]))
    tmp = Path(tempfile.mkdtemp(prefix="trainer-warmup-"))
    try:
        ex = {"messages": [{"role": "user", "content": "warm up"}, {"role": "assistant", "content": "ok"}]}
        ex2 = {"messages": [{"role": "user", "content": "warm up again"}, {"role": "assistant", "content": "ok!"}]}
        (tmp / "w.jsonl").write_text(json.dumps(ex) + "\n" + json.dumps(ex2) + "\n")
        job = TrainJob(dataset=str(tmp / "w.jsonl"), output_dir=str(tmp / "out"), model_path=model_path,
                       job_id="warmup", config=cfg, resume=False, status_file="", eval_dir=str(tmp / "no-eval"))
        t = time.monotonic()
        TrainerEngine().run_job(job)
        print(f"trainer child: warm-up step done in {time.monotonic() - t:.2f}s", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _verify_loadable(final_dir: str) -> None:
    """The exported model must load through the same path every consumer uses."""
    import gc

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    m = AutoModelForCausalLM.from_pretrained(final_dir, dtype=torch.float32)
    AutoTokenizer.from_pretrained(final_dir)
    del m
    gc.collect()


def _run_in_process(job_doc: dict, ctl, chan: Channel) -> dict:
    from trainer.engine.engine import TrainerEngine
    from trainer.engine.job import TrainJob
    job = TrainJob(**job_doc)
    result = TrainerEngine().run_job(job, control=ctl)
    return result.to_dict()


def _run_launched(job_doc: dict, ctl, chan: Channel, control_file: Path) -> dict:
    """A group launch: accelerate launch core/train.py --job-file F (machine rank 0); relay
    commands; for a multi-machine job, publish it to the workers while it runs."""
    import contextlib
    from core.daemon.launch import accelerate_command, cluster_token, launch_env
    from trainer.engine.job_control import CONTROL_FILE_ENV, write_control_file
    from foundation.atomic_io import atomic_write_json
    tr = (job_doc.get("config") or {}).get("training") or {}
    job_file = control_file.with_name("job.json")
    atomic_write_json(job_file, job_doc)
    write_control_file(control_file, "none", 0)
    cmd = accelerate_command(tr, job_file, machine_rank=0)
    env = launch_env(tr, {CONTROL_FILE_ENV: str(control_file)})
    publish = contextlib.nullcontext()
    if int(tr.get("num_machines", 1)) > 1:
        from core.daemon.job_server import JobServer
        host = str(tr.get("main_process_ip") or "127.0.0.1")
        publish = JobServer(host, int(tr.get("job_server_port") or 29499), job_doc, cluster_token(host))
    with publish:
        rc, last = _launch_and_wait(cmd, env, job_doc, ctl, control_file)
    try:
        doc = json.loads(last)
    except json.JSONDecodeError:
        doc = None
    if isinstance(doc, dict) and doc.get("ok") is False:  # rank 0's own report (exit status 1)
        kind = doc.get("error_kind") or _classify_report(doc)
        message = doc.get("error") or "failed"
        raise _LaunchFailed(kind, f"a rank of the training group died: {message}" if kind == "killed" else message,
                            doc)
    if rc != 0 or not isinstance(doc, dict):
        from foundation.failures import classify_exit
        f = classify_exit(rc, last)
        if f.kind == "other":
            # Rank 0 reports every exception of its own as JSON; no report means a rank (here or
            # on another machine) died and the group went down with it: restart the group.
            raise _LaunchFailed("killed", f"a rank of the training group died ({f.message})", doc)
        raise _LaunchFailed(f.kind, f.message, doc)
    return doc


_GROUP_FAILURE_TYPES = ("DistBackendError", "DistNetworkError", "DistStoreError", "DistError")
_GROUP_FAILURE_TEXT = ("connection closed by peer", "connection reset by peer", "gloo", "nccl",
                       "broken pipe", "socket timeout", "timed out")


def _classify_report(doc: dict) -> str:
    """Rank 0's own exception (train_cli's ``error_type``/``error_mro``): a collective that failed
    because a peer went away counts as a killed group (restarted); the rest as any child error."""
    from foundation.failures import classify_report
    mro = list(doc.get("error_mro") or [])
    kind = classify_report(str(doc.get("error_type") or ""), str(doc.get("error") or ""), mro or None).kind
    text = str(doc.get("error") or "").lower()
    if kind == "other" and (set(mro) & set(_GROUP_FAILURE_TYPES) or any(t in text for t in _GROUP_FAILURE_TEXT)):
        return "killed"
    return kind


def _launch_and_wait(cmd: list[str], env: dict, job_doc: dict, ctl, control_file: Path) -> tuple[int, str]:
    """Run the launch; relay commands and progress; return (exit status, last stdout line)."""
    from trainer.engine.job_control import write_control_file
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=None, env=env, text=True,
                            start_new_session=True, preexec_fn=preexec_die_with_parent)
    relay_seq = [0]

    def relay(cmd_name: str) -> None:
        relay_seq[0] += 1
        write_control_file(control_file, cmd_name, relay_seq[0])

    ctl.relay = relay
    done = threading.Event()
    threading.Thread(target=_relay_progress, args=(job_doc.get("status_file"), ctl, done), daemon=True,
                     name="progress").start()
    last = ""
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            sys.stdout.write(line)
            if line.strip():
                last = line.strip()
        rc = proc.wait()
    finally:
        done.set()
    return rc, last


def _relay_progress(status_file: str | None, ctl, done: threading.Event) -> None:
    """The launched ranks report steps only to the status file (rank 0 writes it every logging
    step); turn its ``current_step`` into step messages so the daemon sees progress (stall
    detection, first-step time)."""
    if not status_file:
        return
    seen = None
    while not done.wait(0.5):
        try:
            doc = json.loads(Path(status_file).read_text())
        except (OSError, ValueError):
            continue
        step = doc.get("current_step")
        if doc.get("status") in ("training", "paused") and (doc.get("step_in_file") or 0) >= 1 \
                and step is not None and step != seen:
            seen = step
            ctl.report_step(int(step))


class _LaunchFailed(RuntimeError):
    def __init__(self, kind: str, message: str, doc: dict | None):
        super().__init__(message)
        self.kind = kind
        self.doc = doc or {}


def main() -> int:
    # SIGUSR1 dumps every thread's Python stack to stderr (logs/trainer_child.log), even when the
    # interpreter is stuck in C code: what safety/anti_stuck_monitor.py saves before it kills a hang.
    enable_stack_dumps()
    parent = int(os.environ.get(PARENT_ENV, "0") or 0)
    die_with_parent(parent or None)
    fd_env = os.environ.get(MSG_FD_ENV)
    chan = Channel(int(fd_env) if fd_env else None)
    from trainer.engine.job_control import ChildControl

    class _Ctl(ChildControl):
        relay = None

        def command(self, cmd: str) -> None:  # noqa: D401 - also relays to launched ranks
            super().command(cmd)
            if self.relay is not None:
                self.relay(cmd)

    jobs: "queue.Queue" = queue.Queue()
    threading.Thread(target=_stdin_reader, args=(jobs, lambda: _Ctl(on_event=chan.send)), daemon=True,
                     name="stdin").start()

    t0 = time.monotonic()
    _warm_imports()
    _prewarm()
    chan.send({"type": "ready", "pid": os.getpid(), "import_s": round(time.monotonic() - t0, 3), "jobs_done": 0})
    done = 0
    while True:
        item = jobs.get()
        if item is None:
            return 0
        job_doc, ctl = item
        if not _run_one(job_doc, ctl, chan):
            return 1
        done += 1
        _release_memory()
        chan.send({"type": "ready", "pid": os.getpid(), "import_s": 0.0, "jobs_done": done})


def _release_memory() -> None:
    import gc
    gc.collect()
    try:
        import torch
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass


def _run_one(job_doc: dict, ctl, chan: Channel) -> bool:
    """Run one job and report it; False when it failed (the process then exits)."""
    chan.send({"type": "started", "job_id": job_doc.get("job_id"), "pid": os.getpid()})
    try:
        from core.daemon.launch import is_group_launch
        if is_group_launch((job_doc.get("config") or {}).get("training") or {}):
            result = _run_launched(job_doc, ctl, chan, Path(job_doc["output_dir"]) / "control.json")
        else:
            result = _run_in_process(job_doc, ctl, chan)
        verified = False
        if result.get("final_model_dir") and not result.get("stopped_reason"):
            _verify_loadable(result["final_model_dir"])
            verified = True
        chan.send({"type": "result", "result": result, "verified": verified})
        return True
    except BaseException as e:  # noqa: BLE001 - every failure is reported, then we exit
        from foundation.failures import classify_exception
        if isinstance(e, _LaunchFailed):
            kind, message, report = e.kind, str(e), e.doc.get("report")
        else:
            f = classify_exception(e)
            kind, message, report = f.kind, f.message, getattr(e, "report", None)
        tb = traceback.format_exc()
        sys.stderr.write(tb)
        sys.stderr.flush()
        chan.send({"type": "error", "kind": kind, "message": message, "traceback": tb[-8000:],
                   "global_step": ctl.last_step, "report": report if isinstance(report, dict) else None,
                   "exception_type": type(e).__name__})
        return False


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
