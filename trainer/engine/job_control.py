"""Step-boundary control for a running job, as the engine sees it (``JobControl``).

The daemon is the only reader of ``control/`` flags; it forwards commands to the trainer child
("pause", "resume", "stop", "skip"). Two ways in:

- ``ChildControl``: the single-process case. The child's stdin thread calls ``command()``; the
  engine calls ``poll()`` after every optimizer step and ``wait_resume()`` while paused.
- ``FileJobControl``: the ``accelerate launch`` case (``training.num_processes > 1``). The child
  writes the latest command to a small JSON file (``$TRAINER_JOB_CONTROL_FILE``); rank 0 reads it
  and, when torch.distributed is up, broadcasts the decision so every rank stops/pauses at the
  same step (otherwise one rank would wait forever in an all-reduce). While paused, all ranks
  meet in a broadcast every few seconds so no collective times out during a long pause.
"""
from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Callable

from trainer.engine.job import JobControl

CONTROL_FILE_ENV = "TRAINER_JOB_CONTROL_FILE"


class ChildControl(JobControl):
    def __init__(self, on_event: Callable[[dict], None] | None = None, *, step_report_interval: float = 0.5,
                 heartbeat_interval: float = 2.0):
        self._cond = threading.Condition()
        self._pause_requested = False
        self._in_pause = False
        self._final: str | None = None
        self._on_event = on_event or (lambda msg: None)
        self._step_every = step_report_interval
        self._hb = heartbeat_interval
        self._last_report = 0.0
        self.last_step: int | None = None

    def command(self, cmd: str) -> None:
        with self._cond:
            if cmd == "pause":
                self._pause_requested = True
            elif cmd == "resume":
                self._pause_requested = False
            elif cmd in ("stop", "skip"):
                self._final = self._final or cmd
            self._cond.notify_all()

    def poll(self, global_step: int) -> str | None:
        first = self.last_step is None
        self.last_step = global_step
        now = time.monotonic()
        if first or now - self._last_report >= self._step_every:
            self._last_report = now
            self._on_event({"type": "step", "global_step": global_step, "t": time.time()})
        with self._cond:
            if self._final:
                return self._final
            if self._pause_requested and not self._in_pause:
                self._in_pause = True
                return "pause"
        return None

    def report_step(self, global_step: int) -> None:
        """Progress seen elsewhere (the launched ranks' status writes): tell the daemon."""
        self.last_step = global_step
        self._on_event({"type": "step", "global_step": global_step, "t": time.time()})

    def wait_resume(self) -> str | None:
        self._on_event({"type": "paused", "global_step": self.last_step})
        with self._cond:
            while True:
                if self._final:
                    self._in_pause = False
                    return self._final
                if not self._pause_requested:
                    self._in_pause = False
                    break
                if not self._cond.wait(timeout=self._hb):
                    self._on_event({"type": "heartbeat", "global_step": self.last_step, "paused": True})
        self._on_event({"type": "resumed", "global_step": self.last_step})
        return None


def write_control_file(path: str | os.PathLike, cmd: str, seq: int) -> None:
    from foundation.atomic_io import atomic_write_json
    atomic_write_json(path, {"cmd": cmd, "seq": seq, "at": time.time()})


class FileJobControl(JobControl):
    """Reads the child's command file; see the module docstring. ``from_env()`` returns None when
    the process was not launched by the daemon (plain ``accelerate launch core/train.py``)."""

    def __init__(self, path: str | os.PathLike, *, pause_sync_interval: float = 2.0):
        self.path = Path(path)
        self._interval = pause_sync_interval
        self._paused_for_seq: int | None = None

    @classmethod
    def from_env(cls) -> "FileJobControl | None":
        p = os.environ.get(CONTROL_FILE_ENV)
        return cls(p) if p else None

    def _read(self) -> tuple[str | None, int]:
        try:
            doc = json.loads(self.path.read_text())
            return doc.get("cmd"), int(doc.get("seq", 0))
        except (FileNotFoundError, ValueError, OSError):
            return None, 0

    def _decide(self) -> str | None:
        cmd, seq = self._read()
        if cmd in ("stop", "skip"):
            return cmd
        if cmd == "pause" and self._paused_for_seq != seq:
            self._paused_for_seq = seq
            return "pause"
        return None

    @staticmethod
    def _agree(value: str | None) -> str | None:
        """Rank 0's value on every rank (no-op without torch.distributed)."""
        try:
            import torch.distributed as dist
        except ImportError:
            return value
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return value
        box = [value if dist.get_rank() == 0 else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def poll(self, global_step: int) -> str | None:
        rank0 = int(os.environ.get("RANK", "0")) == 0
        return self._agree(self._decide() if rank0 else None)

    def wait_resume(self) -> str | None:
        rank0 = int(os.environ.get("RANK", "0")) == 0
        while True:
            time.sleep(self._interval)
            verdict = None
            if rank0:
                cmd, _ = self._read()
                verdict = cmd if cmd in ("stop", "skip") else ("paused" if cmd == "pause" else "resume")
            verdict = self._agree(verdict)
            if verdict in ("stop", "skip"):
                return verdict
            if verdict == "resume":
                return None
