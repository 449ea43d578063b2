#!/usr/bin/env python3
"""Deployment orchestrator: keeps the best eligible checkpoint serving, and rolls back a bad one.

Every ``deployment.interval`` seconds, and within ``deployment.poll_interval`` of a change to
``status/model_comparisons.json``, ``status/regression_monitoring.json`` or (strategy ``newest``) the
checkpoint folders, it:

1. picks the target: walking the ranking best-first (strategy ``best_ranked``) or the newest complete
   checkpoint (strategy ``newest``), skipping checkpoints the regression monitor flags, incomplete
   ones, and ones that already failed a deployment;
2. if the target is not what ``models/deployed/current`` names, copies its model files into
   ``models/deployed/<version>/`` (temp folder + rename: never half-written), calls
   ``POST /models/reload``, checks ``/models/info`` reports the version and global step, and runs a
   smoke completion;
3. on success points ``models/deployed/current`` at the version (atomic write); on any failure
   reloads the version that was serving before and records why.

It writes ``status/deployment_status.json`` (history newest first) and ``status/last_deployment.json``.

    python3 monitoring/deployment_orchestrator.py run        # the daemon (also: trainctl deploy run)
    python3 monitoring/deployment_orchestrator.py once       # one check, prints the outcome
    python3 monitoring/deployment_orchestrator.py status
    python3 monitoring/deployment_orchestrator.py rollback [--to VERSION]
"""
from __future__ import annotations

if __package__ in (None, ""):
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import json
import logging
import os
import re
import shutil
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import click

from foundation.atomic_io import atomic_write_json, atomic_write_text, read_json
from foundation.model_files import model_files
from foundation.paths import PathEscapeError, Paths, is_within, safe_join
from foundation.status_io import read_status, utc_now_iso, write_status

log = logging.getLogger("deployment_orchestrator")

HISTORY_LIMIT = 50


@dataclass
class Candidate:
    folder: Path          # absolute checkpoint folder
    rel: str              # path relative to the base dir (as the status files name it)
    global_step: int | None
    job_id: str
    score: float | None
    info: dict
    signature: str        # changes when the checkpoint is rewritten (failed ones are retried then)


_UNREACHABLE = object()


class VerificationError(RuntimeError):
    """The new version loaded but is not what /models/info reports, or its smoke completion failed."""


# ------------------------------------------------------------------ pure helpers
def version_name(global_step: int | None, job_id: str) -> str:
    job = re.sub(r"[^A-Za-z0-9._-]", "_", job_id or "job")[:80].strip("._-") or "job"
    step = f"{global_step:08d}" if isinstance(global_step, int) else "unknown"
    return f"step-{step}-{job}"


def checkpoint_complete(folder: Path) -> tuple[bool, str, dict]:
    """(complete?, why not, checkpoint_info) for a checkpoint folder."""
    info = read_json(folder / "checkpoint_info.json")
    if not isinstance(info, dict):
        return False, "checkpoint_info.json missing or unreadable", {}
    if info.get("complete") is not True:
        return False, "checkpoint_info.json does not say complete: true", info
    try:
        folder = weights_folder(folder, info)
    except PathEscapeError:
        return False, "checkpoint_info.json model_dir points outside the checkpoint", info
    if not (folder / "config.json").is_file():
        return False, "config.json missing", info
    if not any(folder.glob("*.safetensors")):
        return False, "no *.safetensors weights", info
    return True, "", info


def weights_folder(folder: Path, info: dict) -> Path:
    """Where a checkpoint's full weights are: the folder itself, or its ``merged/`` copy for LoRA
    (checkpoint_info.json ``model_dir``)."""
    return safe_join(folder, str(info.get("model_dir") or "."))


def _signature(folder: Path) -> str:
    try:
        st = (folder / "checkpoint_info.json").stat()
        return f"{st.st_mtime_ns}:{st.st_size}"
    except OSError:
        return "missing"


def _file_sig(path: Path) -> tuple:
    try:
        st = path.stat()
        return (st.st_mtime_ns, st.st_size, st.st_ino)
    except OSError:
        return ()


# ------------------------------------------------------------------ orchestrator
class DeploymentOrchestrator:
    def __init__(self, base_dir: str | os.PathLike | None = None, *, config: Any = None, client: Any = None,
                 clock: Callable[[], float] = time.time):
        from trainer.config.loader import load_config
        self.paths = Paths.from_base(base_dir)
        self.config = config or load_config(base_dir=self.paths.base)
        self.dcfg = self.config.deployment
        if client is None:
            from monitoring.prediction_client import PredictionClient
            client = PredictionClient.from_config(self.paths.base)
        self.client = client
        self.clock = clock
        self.deployed_dir = self.paths.resolve(self.config.inference.model_dir)
        self.status_path = self.paths.status_file("deployment_status")
        self.last_path = self.paths.status_file("last_deployment")
        self.daemon_mode = False   # True inside run(): only the daemon stamps pid/heartbeat_at
        self._lock_depth = 0
        self.blocked_path = self.deployed_dir / "blocked.json"
        self.failed: dict[str, dict] = self._read_blocked()
        self.state = "idle"
        self.last_check: dict = {}

    # -------------------------------------------------------------- blocked checkpoints
    def _read_blocked(self) -> dict[str, dict]:
        """Checkpoints not to deploy again: they failed a deployment, or a person rolled them back.
        Kept in models/deployed/blocked.json (shared by the daemon and the CLI, written under the
        deploy lock); an entry stops applying when the checkpoint is rewritten (new signature)."""
        doc = read_json(self.blocked_path)
        return dict(doc) if isinstance(doc, dict) else {}

    def _block(self, rel: str, signature: str, error: str, version: str | None) -> None:
        self.failed = self._read_blocked()
        self.failed[rel] = {"signature": signature, "error": error, "at": utc_now_iso(self.clock), "version": version}
        atomic_write_json(self.blocked_path, self.failed)

    def unblock(self, rel: str | None = None) -> list[str]:
        with self._lock():
            self.failed = self._read_blocked()
            gone = list(self.failed) if rel is None else [k for k in self.failed if k == rel]
            for k in gone:
                self.failed.pop(k, None)
            atomic_write_json(self.blocked_path, self.failed)
            self.write_status()
            return gone

    # -------------------------------------------------------------- reading the other sidecars' files
    def _rel(self, p: Path) -> str:
        try:
            return str(p.resolve().relative_to(self.paths.base))
        except ValueError:
            return str(p.resolve())

    def _resolve_checkpoint(self, raw: Any) -> Path | None:
        if not isinstance(raw, str) or not raw:
            return None
        try:
            p = Path(raw)
            folder = p.resolve() if p.is_absolute() else safe_join(self.paths.base, raw)
        except (PathEscapeError, OSError):
            return None
        return folder if is_within(self.paths.models, folder) else None

    def flagged(self) -> set[str]:
        """Checkpoints the regression monitor flags (as paths relative to the base dir)."""
        doc = read_json(self.paths.status_file("regression_monitoring")) or {}
        out: set[str] = set()
        for raw in doc.get("flagged") or [] if isinstance(doc, dict) else []:
            folder = self._resolve_checkpoint(raw)
            out.add(self._rel(folder) if folder else str(raw))
        return out

    def _candidate(self, folder: Path, score: float | None = None) -> tuple[Candidate | None, str]:
        ok, why, info = checkpoint_complete(folder)
        if not ok:
            return None, why
        step = info.get("global_step")
        return Candidate(folder=folder.resolve(), rel=self._rel(folder),
                         global_step=step if isinstance(step, int) else None,
                         job_id=str(info.get("job_id") or folder.parent.name), score=score, info=info,
                         signature=_signature(folder)), ""

    def ranked_candidates(self) -> tuple[list[Candidate], list[dict]]:
        """Candidates best first by the strategy, and why others were skipped."""
        skipped: list[dict] = []
        out: list[Candidate] = []
        if self.dcfg.strategy == "best_ranked":
            doc = read_json(self.paths.status_file("model_comparisons"))
            # The comparison engine's list, best first (monitoring/model_comparison_engine.py).
            ranking = doc.get("ranking") if isinstance(doc, dict) else None
            for i, item in enumerate(ranking or []):
                raw = item.get("checkpoint") if isinstance(item, dict) else None
                folder = self._resolve_checkpoint(raw)
                if folder is None:
                    skipped.append({"checkpoint": raw, "reason": f"ranking[{i}].checkpoint is not a folder "
                                                                "under models/"})
                    continue
                score = item.get("score")
                c, why = self._candidate(folder, score if isinstance(score, (int, float)) else None)
                if c is None:
                    skipped.append({"checkpoint": raw, "reason": why})
                else:
                    out.append(c)
        else:
            found = []
            for info_file in self.paths.checkpoints.glob("*/step-*/checkpoint_info.json"):
                c, why = self._candidate(info_file.parent)
                if c is None:
                    continue
                found.append((c.global_step if c.global_step is not None else -1,
                              info_file.stat().st_mtime_ns if info_file.exists() else 0, c))
            out = [c for *_, c in sorted(found, key=lambda t: (t[0], t[1]), reverse=True)]
        return out, skipped

    def choose_target(self) -> tuple[Candidate | None, list[dict]]:
        cands, skipped = self.ranked_candidates()
        flagged = self.flagged()
        for c in cands:
            if c.rel in flagged:
                skipped.append({"checkpoint": c.rel, "reason": "flagged by the regression monitor"})
                continue
            failed = self.failed.get(c.rel)
            if failed and failed.get("signature") == c.signature:
                skipped.append({"checkpoint": c.rel, "reason": f"failed to deploy before: {failed.get('error')}"})
                continue
            return c, skipped
        return None, skipped

    # -------------------------------------------------------------- deployed versions
    def current_version(self) -> str | None:
        from foundation.deployed_versions import read_current_version
        return read_current_version(self.paths, self.config.inference.model_dir)

    def version_info(self, version: str | None) -> dict:
        if not version:
            return {}
        try:
            folder = safe_join(self.deployed_dir, version)
        except PathEscapeError:
            return {}
        doc = read_json(folder / "deploy_info.json")
        return doc if isinstance(doc, dict) else {}

    def set_current(self, version: str) -> None:
        atomic_write_text(self.deployed_dir / "current", version + "\n")

    def stage(self, c: Candidate, version: str) -> Path:
        """Copy the checkpoint's model files into models/deployed/<version>/ (temp folder + rename)."""
        final = safe_join(self.deployed_dir, version)
        if final.is_dir():
            existing = read_json(final / "deploy_info.json") or {}
            if existing.get("checkpoint") == c.rel and existing.get("signature") == c.signature:
                return final
        self.deployed_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.deployed_dir / f".staging-{version}-{os.getpid()}"
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
                trash = self.deployed_dir / f".trash-{version}-{os.getpid()}"
                os.rename(final, trash)
                shutil.rmtree(trash, ignore_errors=True)
            os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return final

    def list_versions(self) -> list[dict]:
        out = []
        if not self.deployed_dir.is_dir():
            return out
        for d in self.deployed_dir.iterdir():
            if d.is_dir() and not d.name.startswith(".") and (d / "config.json").is_file():
                info = read_json(d / "deploy_info.json") or {}
                out.append({"version": d.name, "checkpoint": info.get("checkpoint"),
                            "global_step": info.get("global_step"), "deployed_at": info.get("deployed_at"),
                            "mtime": d.stat().st_mtime})
        return sorted(out, key=lambda v: v["mtime"], reverse=True)

    def prune(self, keep: set[str]) -> list[str]:
        """Remove deployed versions beyond keep_versions (never ``keep``, e.g. current and previous)."""
        removed = []
        versions = self.list_versions()
        extra = [v for v in versions if v["version"] not in keep][max(self.dcfg.keep_versions - len(keep), 0):]
        for v in extra:
            shutil.rmtree(self.deployed_dir / v["version"], ignore_errors=True)
            removed.append(v["version"])
        return removed

    @contextmanager
    def _lock(self) -> Iterator[None]:
        """One deployment (and one status-file update) at a time, across processes: the daemon and
        a person running ``once`` / ``rollback``. Re-entrant within this object."""
        import fcntl
        if self._lock_depth:
            self._lock_depth += 1
            try:
                yield
            finally:
                self._lock_depth -= 1
            return
        self.deployed_dir.mkdir(parents=True, exist_ok=True)
        with open(self.deployed_dir / ".deploy.lock", "a+") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            self._lock_depth = 1
            try:
                yield
            finally:
                self._lock_depth = 0
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    @property
    def history(self) -> list[dict]:
        """Deployment history, newest first, as persisted in the status file (shared by the
        daemon and the CLI, so it is always re-read rather than cached)."""
        doc = read_status(self.status_path) or {}
        return list(doc.get("history") or [])[:HISTORY_LIMIT]

    def _record(self, entry: dict) -> None:
        with self._lock():
            history = [entry, *self.history][:HISTORY_LIMIT]
            write_status(self.last_path, entry, daemon=False, clock=self.clock)
            self.write_status(history=history)

    # -------------------------------------------------------------- the decision
    def check_once(self, reason: str = "manual") -> dict:
        """One deployment check; returns what happened (also recorded in the status file)."""
        from monitoring.prediction_client import PredictionError
        with self._lock():
            now = utc_now_iso(self.clock)
            self.failed = self._read_blocked()
            target, skipped = self.choose_target()
            current = self.current_version()
            current_ckpt = self.version_info(current).get("checkpoint")
            if target is None:
                result = {"action": "none", "reason": "no eligible checkpoint", "skipped": skipped[:20]}
            elif target.rel == current_ckpt:
                served = self.served_version()
                if served in (_UNREACHABLE, current):
                    result = {"action": "none", "reason": f"{target.rel} is already deployed as {current}",
                              "skipped": skipped[:20]}
                else:
                    # models/deployed/current is the source of truth: a restarted server that could
                    # not load it (or serves something else) is brought back to it
                    entry = self.deploy(target, trigger=f"resync:{reason}")
                    result = {"action": "resync", "reason": f"the server served {served!r}, current is {current!r}",
                              "entry": entry, "skipped": skipped[:20]}
            else:
                try:
                    reachable = self.client.is_reachable()
                except PredictionError:
                    reachable = False
                if not reachable:
                    result = {"action": "wait", "reason": f"inference server {self.client.base_url} is not reachable; "
                                                          f"will deploy {target.rel} when it is", "skipped": skipped[:20]}
                else:
                    entry = self.deploy(target, trigger=reason)
                    result = {"action": "deploy", "entry": entry, "skipped": skipped[:20]}
            self.last_check = {"at": now, "trigger": reason, **{k: v for k, v in result.items() if k != "entry"}}
            self.write_status()
            return result

    def served_version(self) -> Any:
        """The version the server serves; None when it has no model; _UNREACHABLE when it does not answer."""
        from monitoring.prediction_client import PredictionError, ServerUnreachable
        try:
            return self.client.info().get("version")
        except ServerUnreachable:
            return _UNREACHABLE
        except PredictionError as e:
            return None if e.status == 503 else _UNREACHABLE

    def deploy(self, c: Candidate, trigger: str = "manual") -> dict:
        from monitoring.prediction_client import PredictionError
        self.state = "deploying"
        version = version_name(c.global_step, c.job_id)
        started = time.monotonic()
        entry: dict = {"version": version, "checkpoint": c.rel, "global_step": c.global_step, "score": c.score,
                       "job_id": c.job_id, "trigger": trigger, "started_at": utc_now_iso(self.clock),
                       "finished_at": None, "outcome": None, "error": None, "previous_version": None,
                       "rolled_back_to": None, "seconds": None}
        self.write_status(deploying=entry)
        previous = None
        try:
            try:
                previous = self.client.info().get("version")
            except PredictionError:
                previous = self.current_version()
            entry["previous_version"] = previous
            self.stage(c, version)
            self.client.reload(version, timeout=self.dcfg.request_timeout)
            self.verify(version, c.global_step)
        except (PredictionError, VerificationError, OSError, RuntimeError) as e:
            entry["error"] = f"{type(e).__name__}: {e}"
            entry["outcome"] = "failed"
            self._block(c.rel, c.signature, entry["error"], version)
            if previous and previous != version:
                try:
                    self.client.reload(previous, timeout=self.dcfg.request_timeout)
                    info = self.client.info()
                    if info.get("version") != previous:
                        raise VerificationError(f"after rollback /models/info reports {info.get('version')!r}")
                    entry["outcome"] = "rolled_back"
                    entry["rolled_back_to"] = previous
                except (PredictionError, VerificationError) as e2:
                    entry["error"] += f"; rollback to {previous!r} failed too: {e2}"
            if previous != version:
                shutil.rmtree(self.deployed_dir / version, ignore_errors=True)
        else:
            self.set_current(version)
            entry["outcome"] = "deployed"
            keep = {version} | ({previous} if previous else set())
            entry["pruned"] = self.prune(keep)
        entry["finished_at"] = utc_now_iso(self.clock)
        entry["seconds"] = round(time.monotonic() - started, 3)
        self.state = "idle"
        self._record(entry)
        log.info("deployment of %s (%s): %s %s", c.rel, version, entry["outcome"], entry["error"] or "")
        return entry

    def verify(self, version: str, global_step: int | None) -> None:
        """``/models/info`` must report the version (and step), and a smoke completion must succeed."""
        info = self.client.info()
        if info.get("version") != version:
            raise VerificationError(f"/models/info reports version {info.get('version')!r}, expected {version!r}")
        if global_step is not None and info.get("global_step") != global_step:
            raise VerificationError(f"/models/info reports global_step {info.get('global_step')!r}, "
                                    f"expected {global_step}")
        r = self.client.chat(self.dcfg.smoke_prompt, max_tokens=self.dcfg.smoke_max_tokens, temperature=0.0,
                             timeout=self.dcfg.request_timeout)
        if r.finish_reason not in ("stop", "length") or not isinstance(r.text, str):
            raise VerificationError(f"smoke completion ended with {r.finish_reason!r}")
        if r.version not in (None, version):
            raise VerificationError(f"smoke completion was answered by version {r.version!r}, expected {version!r}")

    def rollback(self, to: str | None = None) -> dict:
        """Serve an earlier version again (a person's decision; ``to`` defaults to the previous one)."""
        from foundation.deployed_versions import VersionError, resolve_version
        with self._lock():
            current = self.current_version()
            if to is None:
                for h in self.history:
                    v = h.get("version")
                    if h.get("outcome") in ("deployed", "manual_rollback") and v and v != current \
                            and (self.deployed_dir / v / "config.json").is_file():
                        to = v
                        break
            if to is None:
                raise click.ClickException("no earlier deployed version to roll back to (see `deploy list`)")
            if to != "base":
                try:
                    resolve_version(self.paths, to, self.config.inference.model_dir)
                except VersionError as e:
                    raise click.ClickException(e.message)
            info = self.version_info(to)
            entry = {"version": to, "checkpoint": info.get("checkpoint"), "global_step": info.get("global_step"),
                     "score": info.get("score"), "trigger": "manual", "started_at": utc_now_iso(self.clock),
                     "previous_version": current, "outcome": None, "error": None}
            from monitoring.prediction_client import PredictionError
            try:
                self.client.reload(to, timeout=self.dcfg.request_timeout)
                self.verify(to, info.get("global_step") if to != "base" else None)
                if to != "base":
                    self.set_current(to)
                entry["outcome"] = "manual_rollback"
                # keep the daemon from redeploying what a person just rolled back
                bad = self.version_info(current)
                if bad.get("checkpoint"):
                    self._block(bad["checkpoint"], bad.get("signature") or "", f"rolled back by hand to {to}",
                                current)
            except (PredictionError, VerificationError) as e:
                entry["outcome"] = "failed"
                entry["error"] = f"{type(e).__name__}: {e}"
            entry["finished_at"] = utc_now_iso(self.clock)
            self._record(entry)
            return entry

    # -------------------------------------------------------------- status + loop
    def write_status(self, deploying: dict | None = None, history: list[dict] | None = None) -> None:
        with self._lock():
            prev = read_status(self.status_path) or {}
            current = self.current_version()
            cinfo = self.version_info(current)
            payload = {
                "state": self.state, "strategy": self.dcfg.strategy, "server_url": self.client.base_url,
                "current_version": current, "current_checkpoint": cinfo.get("checkpoint"),
                "current_global_step": cinfo.get("global_step"), "deploying": deploying,
                "last_check": self.last_check,
                "history": history if history is not None else list(prev.get("history") or [])[:HISTORY_LIMIT],
                "failed_checkpoints": self._read_blocked(),
            }
            if not self.daemon_mode:  # a CLI run: keep the daemon's liveness fields as they are
                for key in ("pid", "heartbeat_at"):
                    if key in prev:
                        payload[key] = prev[key]
            write_status(self.status_path, payload, daemon=self.daemon_mode, clock=self.clock)

    def watch_signature(self) -> tuple:
        sig: list = [_file_sig(self.paths.status_file("model_comparisons")),
                     _file_sig(self.paths.status_file("regression_monitoring")), _file_sig(self.blocked_path)]
        if self.dcfg.strategy == "newest":
            sig.append(tuple(sorted((str(p), _file_sig(p))
                                    for p in self.paths.checkpoints.glob("*/step-*/checkpoint_info.json"))))
        return tuple(sig)

    def run(self, stop_event: threading.Event, *, monotonic: Callable[[], float] = time.monotonic) -> None:
        """The daemon loop: check on every change (polled) and every ``interval`` seconds."""
        self.daemon_mode = True
        last_sig: tuple | None = None
        next_check = 0.0
        next_beat = 0.0
        while not stop_event.is_set():
            now = monotonic()
            try:
                sig = self.watch_signature()
                if sig != last_sig or now >= next_check:
                    trigger = "interval" if sig == last_sig else ("start" if last_sig is None else "change")
                    last_sig = sig
                    self.check_once(trigger)
                    next_check = monotonic() + self.dcfg.interval
                    next_beat = monotonic() + self.config.monitoring.status_interval
                elif now >= next_beat:
                    self.write_status()
                    next_beat = now + self.config.monitoring.status_interval
            except Exception:  # noqa: BLE001 - a daemon loop survives a bad cycle and says so
                log.exception("deployment check failed")
                self.last_check = {"at": utc_now_iso(self.clock), "action": "error",
                                   "reason": "unexpected error (see logs/deployment_orchestrator.log)"}
                next_check = monotonic() + self.dcfg.interval
            stop_event.wait(self.dcfg.poll_interval)
        self.state = "stopped"
        self.write_status()


# ---------------------------------------------------------------------- CLI
_base_opt = click.option("--base-dir", type=click.Path(file_okay=False), default=None,
                         help="Runtime base dir (default: $TRAINER_BASE_DIR or the repo root).")
_url_opt = click.option("--server-url", default=None, help="Inference server URL (default: from config).")


def _make(base_dir: str | None, server_url: str | None) -> DeploymentOrchestrator:
    from trainer.config.loader import ConfigError, load_config
    from monitoring.prediction_client import PredictionClient
    try:
        paths = Paths.from_base(base_dir)
        cfg = load_config(base_dir=paths.base)
    except ConfigError as e:
        raise click.ClickException(str(e))
    client = PredictionClient.from_config(paths.base)
    if server_url:
        client = PredictionClient(server_url, api_key=client.api_key, admin_key=client.admin_key,
                                  timeout=client.timeout)
    return DeploymentOrchestrator(paths.base, config=cfg, client=client)


@click.group("deploy")
def deploy_group() -> None:
    """Deploy the best checkpoint to the inference server (orchestrator daemon and tools)."""


@deploy_group.command("run")
@_base_opt
@_url_opt
def run_command(base_dir: str | None, server_url: str | None) -> None:
    """Run the orchestrator daemon until SIGTERM / Ctrl-C."""
    import signal
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    orch = _make(base_dir, server_url)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    pid_file = orch.paths.pids / "deployment_orchestrator.pid"
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(pid_file, f"{os.getpid()}\n")
    click.echo(f"deployment orchestrator: strategy {orch.dcfg.strategy}, server {orch.client.base_url}", err=True)
    try:
        orch.run(stop)
    finally:
        try:
            if pid_file.read_text().strip() == str(os.getpid()):
                pid_file.unlink()
        except OSError:
            pass


@deploy_group.command("once")
@_base_opt
@_url_opt
def once_command(base_dir: str | None, server_url: str | None) -> None:
    """Run one deployment check now and print what happened (exit 1 if a deployment failed)."""
    result = _make(base_dir, server_url).check_once("manual")
    click.echo(json.dumps(result, indent=2))
    entry = result.get("entry") or {}
    if entry.get("outcome") in ("failed", "rolled_back"):
        raise SystemExit(1)


@deploy_group.command("status")
@_base_opt
def status_command(base_dir: str | None) -> None:
    """Print status/deployment_status.json (current version, last check, recent history)."""
    paths = Paths.from_base(base_dir)
    doc = read_status(paths.status_file("deployment_status"))
    if doc is None:
        raise click.ClickException(f"{paths.status_file('deployment_status')} does not exist yet "
                                   "(start `trainctl deploy run`)")
    doc["history"] = doc.get("history", [])[:5]
    click.echo(json.dumps(doc, indent=2))


@deploy_group.command("list")
@_base_opt
@_url_opt
def list_command(base_dir: str | None, server_url: str | None) -> None:
    """List versions under models/deployed/ (newest first); * marks the current one."""
    orch = _make(base_dir, server_url)
    current = orch.current_version()
    for v in orch.list_versions():
        mark = "*" if v["version"] == current else " "
        click.echo(f"{mark} {v['version']}  step={v['global_step']}  from={v['checkpoint']}  at={v['deployed_at']}")


@deploy_group.command("unblock")
@_base_opt
@click.argument("checkpoint", required=False)
@click.option("--all", "all_", is_flag=True, help="Unblock every checkpoint.")
def unblock_command(base_dir: str | None, checkpoint: str | None, all_: bool) -> None:
    """Allow a checkpoint that failed (or was rolled back) to be deployed again."""
    if not checkpoint and not all_:
        raise click.UsageError("name a CHECKPOINT (path relative to the base dir) or pass --all")
    gone = _make(base_dir, None).unblock(None if all_ else checkpoint)
    click.echo(json.dumps({"unblocked": gone}))


@deploy_group.command("rollback")
@_base_opt
@_url_opt
@click.option("--to", "to", default=None, help="Version to serve (default: the previously deployed one).")
def rollback_command(base_dir: str | None, server_url: str | None, to: str | None) -> None:
    """Serve an earlier deployed version again and make it current."""
    entry = _make(base_dir, server_url).rollback(to)
    click.echo(json.dumps(entry, indent=2))
    if entry.get("outcome") != "manual_rollback":
        raise SystemExit(1)

