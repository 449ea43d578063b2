"""How much of the CPU a background daemon takes: torch threads and Unix niceness.

On a box where training shares the cores with the evaluator, two processes that each start one
torch (OpenMP) thread per core oversubscribe the CPU and both slow down far more than the sum of
their work; a sidecar that runs one thread at a raised niceness leaves the trainer the cores it
needs and takes what is left. Used by the evaluation daemon (``evaluation.num_threads``,
``evaluation.nice``); the server has its own ``inference.num_threads``.
"""
from __future__ import annotations

import os


def apply_cpu_share(num_threads: int = 0, nice: int = 0) -> dict:
    """Set this process's torch CPU threads (0: leave torch's default) and raise its niceness by
    ``nice`` (0: unchanged; never lowered). Returns what is in effect, for the status file."""
    applied: dict = {}
    if num_threads > 0:
        import torch
        torch.set_num_threads(num_threads)
        applied["torch_threads"] = torch.get_num_threads()
    if nice > 0 and hasattr(os, "nice"):
        try:
            applied["nice"] = os.nice(nice)
        except OSError as e:  # not allowed here: run at the current priority and say so
            applied["nice_error"] = str(e)
    return applied
