"""Checks that look beyond the status files: config, the current model's files, the inference
server over HTTP (127.0.0.1 only), disk, memory and GPU memory."""
from __future__ import annotations

import json
import shutil
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import psutil

from foundation.deployed_versions import read_current_version
from foundation.paths import Paths
from safety.health.findings import BROKEN, DEGRADED, OK, Finding

GIB = 1024 ** 3


def check_config(paths: Paths) -> tuple[Any, list[Finding]]:
    """The loaded config (None when invalid) and its finding."""
    from trainer.config.loader import ConfigError, load_config
    try:
        cfg = load_config(base_dir=paths.base)
    except ConfigError as e:
        return None, [Finding("config", BROKEN, f"config.json is invalid: {'; '.join(e.problems)}",
                              "fix it (trainctl config validate names each key; trainctl config edit KEY VALUE), "
                              "then restart the daemons", {"problems": e.problems})]
    except (OSError, ValueError) as e:
        return None, [Finding("config", BROKEN, f"config.json cannot be read: {e}",
                              "restore it from backups/ or rewrite it (trainctl config show --defaults)")]
    return cfg, [Finding("config", OK, "config.json is valid")]


def _safetensors_files(folder: Path) -> list[Path]:
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text(encoding="utf-8")).get("weight_map") or {}
        return [folder / name for name in sorted(set(weight_map.values()))]
    return sorted(folder.glob("*.safetensors"))


def check_model(paths: Paths, cfg: Any, deep: bool = False) -> list[Finding]:
    """models/current_model (or the base model while nothing is trained yet) has a config.json and
    safetensors weights whose headers parse; ``deep`` also loads every tensor and checks it is finite."""
    folder, what = paths.current_model, "models/current_model"
    if not (folder / "config.json").exists() and cfg is not None:
        folder, what = paths.resolve(cfg.model.model_path), f"the base model {cfg.model.model_path} (nothing trained yet)"
    check = "model.current"
    try:
        json.loads((folder / "config.json").read_text(encoding="utf-8"))
        files = _safetensors_files(folder)
    except (OSError, ValueError) as e:
        return [Finding(check, BROKEN, f"{what}: config.json missing or unreadable ({e})",
                        "restore models/current_model from backups/ (or point model.model_path at a model folder)")]
    if not files:
        return [Finding(check, BROKEN, f"{what} has no .safetensors weights",
                        "restore it from backups/ or from the newest checkpoint in models/checkpoints/")]
    from safetensors import safe_open
    n_tensors, bad = 0, []
    for f in files:
        try:
            with safe_open(str(f), framework="numpy") as st:  # reads and validates the header only
                keys = list(st.keys())
                n_tensors += len(keys)
                if deep:
                    import numpy as np
                    bad += [k for k in keys if not np.isfinite(st.get_tensor(k)).all()]
        except Exception as e:  # noqa: BLE001 - safetensors raises its own error types for a damaged file
            return [Finding(check, BROKEN, f"{what}: {f.name} does not parse as safetensors ({e})",
                            "the file is damaged: restore it from backups/ or the newest checkpoint")]
    if bad:
        return [Finding(check, BROKEN, f"{what}: {len(bad)} tensor(s) hold NaN/inf (e.g. {bad[0]})",
                        "training diverged: restore the previous model from backups/ and lower the learning rate")]
    depth = "every tensor finite" if deep else "headers parse (--deep loads the tensors)"
    return [Finding(check, OK, f"{what}: {len(files)} safetensors file(s), {n_tensors} tensors, {depth}",
                    details={"folder": str(folder)})]


def check_inference(paths: Paths, cfg: Any, timeout: float = 5.0) -> list[Finding]:
    """GET /health on 127.0.0.1 at the configured port; the version served must be the deployed one."""
    port = cfg.inference.port
    url = f"http://127.0.0.1:{port}/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            body = json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as e:
        try:
            body = json.loads(e.read() or b"{}")
        except ValueError:
            body = {}
        return [Finding("inference.health", DEGRADED, f"{url} answered {e.code} ({body.get('status') or body})",
                        "no model loaded yet (or a failed load): see logs/inference_server.out")]
    except (OSError, ValueError) as e:
        return [Finding("inference.health", DEGRADED, f"{url} does not answer ({e})",
                        "start the inference server (scripts/start_all.sh) or check inference.port in config.json")]
    served = body.get("version")
    deployed = read_current_version(paths, cfg.inference.model_dir)
    if deployed and served != deployed:
        return [Finding("inference.version", DEGRADED, f"the server serves {served!r} but models/deployed/current "
                        f"names {deployed!r}", "the deployment orchestrator reloads it at its next check; or "
                        f"trainctl deploy rollback / POST /models/reload {{\"version\": \"{deployed}\"}}",
                        {"served": served, "deployed": deployed})]
    return [Finding("inference.health", OK, f"{url}: ok, serving {served!r}"
                    + (" (the deployed version)" if deployed else " (nothing deployed yet)"))]


def check_resources(paths: Paths, disk_warn_gb: float, disk_crit_gb: float, mem_warn_pct: float) -> list[Finding]:
    out: list[Finding] = []
    du = psutil.disk_usage(str(paths.base))
    free_gb = du.free / GIB
    detail = {"free_gb": round(free_gb, 2), "used_pct": du.percent}
    if free_gb < disk_crit_gb:
        out.append(Finding("disk", BROKEN, f"{free_gb:.1f} GiB free under {paths.base} (below {disk_crit_gb} GiB)",
                           "free space now: old checkpoints (trainctl models list), logs/, backups/; training "
                           "stops on disk_full", detail))
    elif free_gb < disk_warn_gb:
        out.append(Finding("disk", DEGRADED, f"{free_gb:.1f} GiB free under {paths.base} (below {disk_warn_gb} GiB)",
                           "prune old checkpoints and logs before the disk fills", detail))
    else:
        out.append(Finding("disk", OK, f"{free_gb:.1f} GiB free ({du.percent:.0f}% used)", details=detail))
    vm = psutil.virtual_memory()
    avail_pct = 100.0 * vm.available / vm.total
    detail = {"available_gb": round(vm.available / GIB, 2), "available_pct": round(avail_pct, 1)}
    if avail_pct < mem_warn_pct:
        out.append(Finding("memory", DEGRADED, f"only {avail_pct:.0f}% of memory available",
                           "an OOM kill is near: lower training.per_device_batch_size or inference.max_batch_size, "
                           "or stop other programs", detail))
    else:
        out.append(Finding("memory", OK, f"{avail_pct:.0f}% of memory available", details=detail))
    return out + _gpu_memory(mem_warn_pct)


def _gpu_memory(warn_pct: float) -> list[Finding]:
    """Per-GPU memory through nvidia-smi when there is one (no torch import, no CUDA context)."""
    smi = shutil.which("nvidia-smi")
    if not smi:
        return []
    try:
        out = subprocess.run([smi, "--query-gpu=index,memory.used,memory.total", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError) as e:
        return [Finding("gpu_memory", DEGRADED, f"nvidia-smi failed ({e})", "check the GPU driver (nvidia-smi)")]
    findings = []
    for line in out.strip().splitlines():
        try:
            idx, used, total = (float(x) for x in line.split(","))
        except ValueError:
            continue
        free_pct = 100.0 * (total - used) / total if total else 0.0
        level = DEGRADED if free_pct < warn_pct else OK
        findings.append(Finding(f"gpu_memory.{int(idx)}", level, f"GPU {int(idx)}: {used:.0f}/{total:.0f} MiB used",
                                "lower the batch size or stop the other GPU users" if level != OK else ""))
    return findings
