"""Die with the parent: ask the kernel for SIGKILL when the process that started us exits
(Linux ``PR_SET_PDEATHSIG``). Used by the trainer child (parent: the daemon), by every
``accelerate launch`` it or a multi-machine worker starts, and by each launched rank (parent: the
torchrun agent, which puts every rank in its own session, so a killed launcher would otherwise
leave its ranks running as orphans that still hold the job's checkpoints and collectives)."""
from __future__ import annotations

import ctypes
import os
import signal

_PR_SET_PDEATHSIG = 1


def die_with_parent(expected_parent: int | None = None) -> None:
    """Arm SIGKILL-on-parent-exit for this process. With ``expected_parent``, exit at once when the
    parent already changed (it died before the request took effect)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    except OSError:  # not Linux/glibc: the other orphan guards (stdin EOF, pid files) still apply
        return
    if expected_parent and os.getppid() != expected_parent:
        os._exit(3)


def preexec_die_with_parent() -> None:
    """``subprocess.Popen(preexec_fn=...)``: the started program dies with the process starting it."""
    die_with_parent()
