#!/usr/bin/env python3
"""The disk manager: keeps the base dir's file system from filling up, and pauses training when it must.

    python3 management/auto_disk_manager.py [--base-dir D] [--once] [--json]
    trainctl disk [--once] [--json]

Every ``disk.interval`` seconds it reads the free space of the base dir's file system
(``shutil.disk_usage``). Below ``disk.low_free_gb`` it frees space, cheapest loss first:

1. checkpoint retention (management/checkpoint_retention.py) asked for the missing bytes: folders
   the policy does not keep go first, then kept ones, oldest first; protected ones never;
2. rotated logs (``logs/*.log.<date>``, ``*.out.<n>``) older than ``disk.compress_logs_after_days`` are
   gzipped, and older than ``disk.delete_logs_after_days`` deleted (live logs are never touched).

Still below ``disk.pause_free_gb``: it pauses training by writing ``control/.pause`` with
``{"reason": "disk_low", "by": "auto_disk_manager", ...}`` (the flag file ``trainctl pause`` writes; the
daemon checkpoints at the next step and waits). Once free space is back above
``disk.resume_free_gb`` it resumes, but only a pause that is its own (reason ``disk_low``): it writes
``control/.resume`` and removes ``.pause``, as ``trainctl resume`` does. A person's pause is never lifted.

``status/disk.json``: ``free_bytes``, ``total_bytes``, ``used_bytes``, ``state`` (ok / low / paused),
thresholds, ``last_actions``; plus ``pid`` and ``heartbeat_at`` for the watchdog (row ``disk_manager``).
"""
from __future__ import annotations

import gzip
import json
import logging
import os
import re
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

import click

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from foundation.atomic_io import atomic_write_json, read_json  # noqa: E402
from foundation.daemon_run import only_instance, run_passes, stop_on_signals  # noqa: E402
from foundation.paths import Paths  # noqa: E402
from foundation.status_io import utc_now_iso, write_status  # noqa: E402
from management.checkpoint_retention import GIB, Policy, run_retention  # noqa: E402

NAME = "auto_disk_manager"
STATUS_NAME = "disk"
REASON = "disk_low"
ROTATED_RE = re.compile(r"\.(log|out)\.[0-9][0-9_.-]*$")  # logging's rotated suffixes (date or counter)


def _atomic_gzip(src: Path) -> int:
    """``src`` -> ``src.gz`` (temp file + rename), then ``src`` removed. Returns bytes freed."""
    dst = src.with_name(src.name + ".gz")
    tmp = src.with_name(f".{dst.name}.tmp-{os.getpid()}")
    try:
        with open(src, "rb") as fin, gzip.open(tmp, "wb") as fout:
            shutil.copyfileobj(fin, fout)
        os.replace(tmp, dst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    before = src.stat().st_size
    src.unlink()
    return before - dst.stat().st_size


def clean_logs(logs_dir: Path, compress_after_s: float, delete_after_s: float, now: float) -> list[dict]:
    """Gzip rotated logs older than ``compress_after_s``; delete rotated/compressed ones older than
    ``delete_after_s``. Live log files (``x.log``, ``x.out``) are never touched."""
    actions: list[dict] = []
    if not logs_dir.is_dir():
        return actions
    for p in sorted(logs_dir.rglob("*")):
        if not p.is_file() or p.name.startswith("."):
            continue
        rotated = ROTATED_RE.search(p.name) or p.name.endswith(".gz")
        if not rotated:
            continue
        age = now - p.stat().st_mtime
        try:
            if age > delete_after_s:
                size = p.stat().st_size
                p.unlink()
                actions.append({"action": "deleted_log", "path": str(p.relative_to(logs_dir)), "bytes": size})
            elif age > compress_after_s and not p.name.endswith(".gz"):
                freed = _atomic_gzip(p)
                actions.append({"action": "compressed_log", "path": str(p.relative_to(logs_dir)), "bytes": freed})
        except OSError as e:  # ENOSPC while compressing: leave the file as it is
            actions.append({"action": "log_error", "path": str(p.relative_to(logs_dir)), "error": str(e)})
    return actions


class DiskManager:
    """One check per :meth:`check_once`; clock and disk usage are injectable for tests."""

    def __init__(self, paths: Paths, config: Any, *, clock: Callable[[], float] = time.time,
                 usage: Callable[[str], Any] = shutil.disk_usage):
        self.paths, self.config, self.clock, self.usage = paths, config, clock, usage
        self.dcfg = config.disk
        self.last_actions: list[dict] = []
        self._empty_pause = False  # we paused with an empty flag (no room for its JSON)

    def free(self) -> int:
        return int(self.usage(str(self.paths.base)).free)

    # ---------------------------------------------------------------- the pause flag
    def _pause_flag(self) -> Path:
        return self.paths.control / ".pause"

    def own_pause(self) -> bool:
        """The current pause is this manager's disk_low pause (a person's pause is not)."""
        p = self._pause_flag()
        if not p.exists():
            return False
        doc = read_json(p)
        if doc is None and self._empty_pause:
            return p.stat().st_size == 0
        return isinstance(doc, dict) and doc.get("reason") == REASON

    def pause(self, free: int) -> dict:
        doc = {"reason": REASON, "created_at": utc_now_iso(self.clock), "by": NAME, "pid": os.getpid(),
               "free_bytes": free, "message": f"free disk space {free / GIB:.2f} GiB is below "
                                             f"disk.pause_free_gb={self.dcfg.pause_free_gb}"}
        try:
            atomic_write_json(self._pause_flag(), doc)
        except OSError:  # no room even for the flag's JSON: an empty flag still pauses (no blocks needed)
            self._pause_flag().touch()
            self._empty_pause = True
            doc["written"] = "empty flag (disk full)"
        return {"action": "paused", **doc}

    def resume(self, free: int) -> dict:
        doc = {"reason": "disk space is back", "created_at": utc_now_iso(self.clock), "by": NAME,
               "pid": os.getpid(), "free_bytes": free}
        atomic_write_json(self.paths.control / ".resume", doc)
        if self.own_pause():  # re-checked: a person may have paused in between
            self._pause_flag().unlink(missing_ok=True)
        return {"action": "resumed", **doc}

    # ---------------------------------------------------------------- one pass
    def check_once(self) -> dict:
        d = self.dcfg
        low, pause_at, resume_at = (int(x * GIB) for x in (d.low_free_gb, d.pause_free_gb, d.resume_free_gb))
        actions: list[dict] = []
        free = self.free()
        retention = None
        if free < low:
            retention = run_retention(self.paths, Policy.from_config(self.config), free_bytes=low - free)
            for r in retention["deleted"]:
                actions.append({"action": "deleted_checkpoint", **r})
            free = self.free()
        if free < low:
            actions += clean_logs(self.paths.logs, d.compress_logs_after_days * 86400,
                                  d.delete_logs_after_days * 86400, self.clock())
            free = self.free()
        flag_set = self._pause_flag().exists()
        if free < pause_at and not flag_set:
            actions.append(self.pause(free))
        elif free >= resume_at and self.own_pause():
            actions.append(self.resume(free))
        if actions:
            self.last_actions = actions
            import logging
            for a in actions:
                logging.getLogger(NAME).info("%s %s", a["action"], a.get("path") or a.get("message") or "")
        state = "paused" if self.own_pause() else ("low" if free < low else "ok")
        u = self.usage(str(self.paths.base))
        doc = {"state": state, "free_bytes": int(u.free), "total_bytes": int(u.total), "used_bytes": int(u.used),
               "free_gb": round(u.free / GIB, 3), "thresholds_gb": {"low": d.low_free_gb, "pause": d.pause_free_gb,
                                                                    "resume": d.resume_free_gb},
               "paused_by_us": self.own_pause(), "actions": actions, "last_actions": self.last_actions,
               "checkpoint_bytes": (retention or {}).get("plan", {}).get("bytes_after")}
        try:
            write_status(self.paths.status_file(STATUS_NAME), doc, clock=self.clock)
        except OSError as e:  # the disk may be full to the last block: the pause above matters more
            doc["status_error"] = str(e)
        return doc

    def run(self, stop: threading.Event) -> None:
        run_passes(stop, self.dcfg.interval, self.check_once, logging.getLogger(NAME), "disk check")


@click.command("disk")
@click.option("--base-dir", type=click.Path(file_okay=False), default=None,
              help="Runtime base dir (default: $TRAINER_BASE_DIR or the repo root).")
@click.option("--once", is_flag=True, help="One check, then exit.")
@click.option("--json", "as_json", is_flag=True, help="Print the check's result as JSON (with --once).")
def disk_command(base_dir: str | None, once: bool, as_json: bool) -> None:
    """Watch free disk space: clean by retention and old logs, pause training (disk_low) when still low."""
    from foundation.logs import setup_logging
    from trainer.config.click_load import cli_config
    paths = Paths.from_base(base_dir)
    cfg = cli_config(paths.base)
    mgr = DiskManager(paths.ensure(), cfg)
    with only_instance(paths.pids, NAME):
        if once:
            doc = mgr.check_once()
            click.echo(json.dumps(doc, indent=2) if as_json else
                       f"{doc['state']}: {doc['free_gb']} GiB free; {len(doc['actions'])} action(s)")
            return
        setup_logging(paths.logs, NAME, to_stderr=not as_json)
        mgr.run(stop_on_signals())


main = disk_command

if __name__ == "__main__":
    main()
