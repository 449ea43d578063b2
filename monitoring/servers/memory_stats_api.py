"""System panel of the live monitor: RAM, CPU, disk (psutil), and GPU memory/utilisation when there is
a GPU. GPU numbers come from pynvml when it is installed (it is not a dependency: NVIDIA's package
comes with CUDA set-ups), else from ``torch.cuda`` when torch is *already imported* by this process;
the monitor never imports torch itself (seconds of start-up and hundreds of MB for a web page).
"""
from __future__ import annotations

import os
import sys
from typing import Any

import psutil

_GIB = float(2**30)


def _gib(x: float) -> float:
    return round(x / _GIB, 2)


def _gpus_nvml() -> list[dict] | None:
    try:
        import pynvml  # type: ignore[import-not-found]
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except Exception:  # no driver / no GPU: pynvml raises its own NVMLError types
        return None
    try:
        out = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            mem = pynvml.nvmlDeviceGetMemoryInfo(h)
            util = pynvml.nvmlDeviceGetUtilizationRates(h)
            name = pynvml.nvmlDeviceGetName(h)
            out.append({"index": i, "name": name.decode() if isinstance(name, bytes) else str(name),
                        "memory_used_gib": _gib(mem.used), "memory_total_gib": _gib(mem.total),
                        "utilization_percent": float(util.gpu)})
        return out
    except Exception:
        return None
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:
            pass


def _gpus_torch() -> list[dict] | None:
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    try:
        if not torch.cuda.is_available():
            return []
        out = []
        for i in range(torch.cuda.device_count()):
            free, total = torch.cuda.mem_get_info(i)
            try:
                util = float(torch.cuda.utilization(i))  # needs pynvml underneath
            except Exception:
                util = None
            out.append({"index": i, "name": torch.cuda.get_device_name(i),
                        "memory_used_gib": _gib(total - free), "memory_total_gib": _gib(total),
                        "utilization_percent": util})
        return out
    except Exception:
        return None


def system_stats(disk_path: str | os.PathLike = "/") -> dict[str, Any]:
    """``{ram: {...}, cpu: {...}, disk: {...}, gpus: [...] | null}`` (``gpus`` null: unknown/none)."""
    vm = psutil.virtual_memory()
    try:
        du = psutil.disk_usage(str(disk_path))
        disk = {"path": str(disk_path), "used_gib": _gib(du.used), "total_gib": _gib(du.total),
                "free_gib": _gib(du.free), "percent": du.percent}
    except OSError:
        disk = None
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    gpus = _gpus_nvml()
    if gpus is None:
        gpus = _gpus_torch()
    return {
        "ram": {"used_gib": _gib(vm.total - vm.available), "total_gib": _gib(vm.total), "percent": vm.percent},
        # interval=None: the share since the previous call (non-blocking; the first call reads 0.0)
        "cpu": {"percent": psutil.cpu_percent(interval=None), "count": psutil.cpu_count(), "load": load},
        "disk": disk,
        "gpus": gpus,
    }
