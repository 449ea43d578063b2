"""The daemon's adapter to the model registry (``foundation.model_db``, SQLite): one run per
daemon start, every complete checkpoint registered once with the file that produced it, and one
row per finished or failed file.

Why every call swallows errors: the registry is a record of what happened, not part of the
training path; a locked or broken database must never fail a job or stop the daemon.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

from foundation.atomic_io import read_json
from foundation.status_io import utc_now_iso


class Registry:
    def __init__(self, db_path: Path, clock: Callable[[], float], log: logging.Logger):
        self.db_path = db_path
        self.clock = clock
        self.log = log
        self._db = None
        self._run_id: int | None = None
        self._registered: set[str] = set()

    def open(self, run_name: str, base_model: str, config: dict) -> None:
        try:
            from foundation.model_db import ModelDB
        except ImportError:
            self.log.warning("foundation.model_db not available; checkpoints are not registered")
            return
        try:
            self._db = ModelDB(self.db_path)
            self._run_id = self._db.start_run(run_name, base_model, config)
        except Exception as e:  # noqa: BLE001
            self.log.error("model_db unavailable: %s", e)
            self._db = None

    def new_job(self) -> None:
        """Forget what was registered for the previous job (a new job writes a new folder)."""
        self._registered = set()

    def register_checkpoints(self, output_dir: str | None) -> None:
        """Register every complete checkpoint (``checkpoint_info.json`` written) of a job folder."""
        if self._db is None or not output_dir:
            return
        for p in sorted(Path(output_dir).glob("step-*")):
            info_path = p / "checkpoint_info.json"
            if str(p) in self._registered or not info_path.is_file():
                continue
            info = read_json(info_path) or {}
            try:
                self._db.register_checkpoint(p, int(info.get("global_step", p.name[5:])), info.get("job_id"),
                                             info.get("source_file"), info.get("train_loss"),
                                             info.get("validation_loss"), info.get("created_at"), self._run_id)
                self._registered.add(str(p))
            except Exception as e:  # noqa: BLE001
                self.log.error("model_db: cannot register %s: %s", p, e)

    def record_file(self, rec: dict, status: str, res: dict, err: dict | None) -> None:
        if self._db is None:
            return
        try:
            self._db.record_file(self._run_id, rec.get("original_name") or rec.get("name", ""), rec.get("job_id"),
                                 status, res.get("steps"), res.get("tokens"), rec.get("started_at"),
                                 utc_now_iso(self.clock), {**res, **({"error": err} if err else {})})
        except Exception as e:  # noqa: BLE001
            self.log.error("model_db: cannot record file: %s", e)

    def close(self) -> None:
        if self._db is not None:
            try:
                self._db.close()
            except Exception:  # noqa: BLE001
                pass
