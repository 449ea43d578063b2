"""The orchestrator's side of the deployed-version store (``models/deployed/``).

The file contract itself (``current``, version names, where a version's folder is) lives in
``foundation.deployed_versions``, shared with the server; this module adds what only the
orchestrator does: staging a checkpoint as a new version (temp folder + rename, never
half-written), pointing ``current`` at it, listing and pruning versions, and the block list
(``blocked.json``) of checkpoints not to deploy again.
"""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Callable

from foundation.atomic_io import atomic_write_json, atomic_write_text, read_json
from foundation.deployed_versions import current_file, read_current_version, resolve_version
from foundation.model_files import model_files
from foundation.paths import PathEscapeError, Paths, safe_join
from foundation.status_io import utc_now_iso
from monitoring.deployment.candidates import Candidate, weights_folder


def version_name(global_step: int | None, job_id: str) -> str:
    job = re.sub(r"[^A-Za-z0-9._-]", "_", job_id or "job")[:80].strip("._-") or "job"
    step = f"{global_step:08d}" if isinstance(global_step, int) else "unknown"
    return f"step-{step}-{job}"


class VersionStore:
    """``models/deployed/<version>/`` folders and the ``current`` pointer, for one base dir."""

    def __init__(self, paths: Paths, model_dir: str, clock: Callable[[], float]):
        self.paths = paths
        self.model_dir = model_dir
        self.clock = clock
        self.root = paths.resolve(model_dir)

    def current(self) -> str | None:
        return read_current_version(self.paths, self.model_dir)

    def resolve(self, version: str) -> Path:
        """The folder of a deployed version; raises foundation.deployed_versions.VersionError."""
        return resolve_version(self.paths, version, self.model_dir)

    def info(self, version: str | None) -> dict:
        """A version's deploy_info.json ({} when unknown)."""
        if not version:
            return {}
        try:
            folder = safe_join(self.root, version)
        except PathEscapeError:
            return {}
        doc = read_json(folder / "deploy_info.json")
        return doc if isinstance(doc, dict) else {}

    def has(self, version: str) -> bool:
        return (self.root / version / "config.json").is_file()

    def set_current(self, version: str) -> None:
        atomic_write_text(current_file(self.paths, self.model_dir), version + "\n")

    def stage(self, c: Candidate, version: str) -> Path:
        """Copy the checkpoint's model files into models/deployed/<version>/ (temp folder + rename)."""
        final = safe_join(self.root, version)
        if final.is_dir():
            existing = read_json(final / "deploy_info.json") or {}
            if existing.get("checkpoint") == c.rel and existing.get("signature") == c.signature:
                return final
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".staging-{version}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        try:
            copied = []
            for f in model_files(weights_folder(c.folder, c.info)):
                shutil.copy2(f, tmp / f.name)
                copied.append(f.name)
            if not any(n.endswith(".safetensors") for n in copied):
                raise RuntimeError(f"{c.rel} has no safetensors weights")
            info = {"version": version, "checkpoint": c.rel, "global_step": c.global_step, "job_id": c.job_id,
                    "source_file": c.info.get("source_file"), "score": c.score, "signature": c.signature,
                    "deployed_at": utc_now_iso(self.clock), "files": copied}
            atomic_write_json(tmp / "deploy_info.json", info)
            for f in tmp.iterdir():
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
            if final.exists():
                trash = self.root / f".trash-{version}-{os.getpid()}"
                os.rename(final, trash)
                shutil.rmtree(trash, ignore_errors=True)
            os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return final

    def remove(self, version: str) -> None:
        shutil.rmtree(self.root / version, ignore_errors=True)

    def list(self) -> list[dict]:
        """Deployed versions, newest first."""
        out = []
        if not self.root.is_dir():
            return out
        for d in self.root.iterdir():
            if d.is_dir() and not d.name.startswith(".") and (d / "config.json").is_file():
                info = read_json(d / "deploy_info.json") or {}
                out.append({"version": d.name, "checkpoint": info.get("checkpoint"),
                            "global_step": info.get("global_step"), "deployed_at": info.get("deployed_at"),
                            "mtime": d.stat().st_mtime})
        return sorted(out, key=lambda v: v["mtime"], reverse=True)

    def prune(self, keep: set[str], keep_versions: int) -> list[str]:
        """Remove deployed versions beyond ``keep_versions`` (never ``keep``, e.g. current and previous)."""
        removed = []
        extra = [v for v in self.list() if v["version"] not in keep][max(keep_versions - len(keep), 0):]
        for v in extra:
            self.remove(v["version"])
            removed.append(v["version"])
        return removed


class BlockList:
    """Checkpoints not to deploy again: they failed a deployment, or a person rolled them back.
    Kept in models/deployed/blocked.json (shared by the daemon and the CLI, written under the
    deploy lock); an entry stops applying when the checkpoint is rewritten (new signature)."""

    def __init__(self, path: Path, clock: Callable[[], float]):
        self.path = path
        self.clock = clock

    def read(self) -> dict[str, dict]:
        doc = read_json(self.path)
        return dict(doc) if isinstance(doc, dict) else {}

    def block(self, rel: str, signature: str, error: str, version: str | None) -> dict[str, dict]:
        entries = self.read()
        entries[rel] = {"signature": signature, "error": error, "at": utc_now_iso(self.clock), "version": version}
        atomic_write_json(self.path, entries)
        return entries

    def unblock(self, rel: str | None = None) -> list[str]:
        """Drop one checkpoint's entry (``rel``), or all of them; returns the ones dropped."""
        entries = self.read()
        gone = list(entries) if rel is None else [k for k in entries if k == rel]
        for k in gone:
            entries.pop(k, None)
        atomic_write_json(self.path, entries)
        return gone
