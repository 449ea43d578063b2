"""Peak memory of the training process: resident set (RSS) and, on CUDA, allocated device memory.

The peak RSS comes from the kernel's high-water mark (``VmHWM`` in ``/proc/self/status``), reset at
the start of each job (``/proc/self/clear_refs``) so a warm trainer child that runs many jobs
reports each job's own peak; where either is unavailable it falls back to
``resource.getrusage(...).ru_maxrss`` (the process-lifetime peak).
"""
from __future__ import annotations

import resource
import sys


def reset_peaks() -> None:
    """Start a new measurement window (best effort: a kernel without clear_refs keeps the old peak)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.reset_peak_memory_stats()


def peak_rss_bytes() -> int:
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)  # bytes on macOS, KiB on Linux


def peak_cuda_bytes() -> int | None:
    """``torch.cuda.max_memory_allocated`` since the last reset; None without CUDA in use."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return None
    return int(torch.cuda.max_memory_allocated())


def peaks() -> dict[str, int | None]:
    return {"peak_rss_bytes": peak_rss_bytes(), "peak_cuda_bytes": peak_cuda_bytes()}
