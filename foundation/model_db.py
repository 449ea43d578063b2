#!/usr/bin/env python3
"""Model registry: one SQLite file (``models/model_db.sqlite``) that says where every checkpoint
came from and how good it is.

Why SQLite: several processes (training daemon, trainer child, evaluators, deployment
orchestrator, live monitor) read and write it at once, and any of them may be killed at any
moment. WAL journaling lets readers run while a writer commits; ``busy_timeout`` makes a writer
wait for another writer instead of failing; every write is one short transaction, so a killed
process leaves either the whole row or nothing.

Schema (migrated by ``PRAGMA user_version``; each step in ``MIGRATIONS`` runs once, inside an
``IMMEDIATE`` transaction that re-reads the version, so two processes opening a fresh file at
the same moment do not both migrate):

* ``runs``         (id, name, base_model, config_json, created_at): one row per training lineage/run
                    (secrets in config_json are stored as "***").
* ``files``        (id, run_id, source_file, job_id, status, steps, tokens, started_at, finished_at,
                    result_json, recorded_at): one row per trained data file (per job outcome).
* ``checkpoints``  (id, path UNIQUE, global_step, job_id, source_file, train_loss, validation_loss,
                    created_at, run_id, registered_at): every complete checkpoint folder.
  Version 2 adds ``deleted_at``, ``deleted_reason``: set when retention deleted the folder.
* ``evaluations``  (id, checkpoint_id, suite_version, accuracy, by_difficulty_json, n_items,
                    validation_loss, calibration_json, details_json, created_at): one row per
                    evaluation run; the newest row per (checkpoint, suite version) is the current one.

Paths are stored relative to the base dir when they lie inside it (so a base dir can be moved
or mounted elsewhere) and absolute otherwise; callers may pass either form.

    trainctl models list [--json] [--base-dir DIR]
    python3 core/model_db.py list --json
"""
from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Iterable

from foundation.paths import Paths, resolve_base_dir
from foundation.secrets import redact
from foundation.status_io import utc_now_iso

BUSY_TIMEOUT_MS = 30_000

MIGRATIONS: list[str] = [
    # version 1
    """
    CREATE TABLE IF NOT EXISTS runs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT NOT NULL,
        base_model TEXT,
        config_json TEXT NOT NULL DEFAULT '{}',
        created_at TEXT NOT NULL
    );
    CREATE TABLE IF NOT EXISTS files (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        run_id INTEGER REFERENCES runs(id),
        source_file TEXT NOT NULL,
        job_id TEXT,
        status TEXT NOT NULL,
        steps INTEGER,
        tokens INTEGER,
        started_at TEXT,
        finished_at TEXT,
        result_json TEXT NOT NULL DEFAULT '{}',
        recorded_at TEXT NOT NULL
    );
    CREATE INDEX IF NOT EXISTS files_job ON files(job_id);
    CREATE TABLE IF NOT EXISTS checkpoints (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        path TEXT NOT NULL UNIQUE,
        global_step INTEGER NOT NULL,
        job_id TEXT,
        source_file TEXT,
        train_loss REAL,
        validation_loss REAL,
        created_at TEXT NOT NULL,
        run_id INTEGER REFERENCES runs(id),
        registered_at TEXT NOT NULL
    );
    CREATE INDEX IF NOT EXISTS checkpoints_step ON checkpoints(global_step);
    CREATE TABLE IF NOT EXISTS evaluations (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        checkpoint_id INTEGER NOT NULL REFERENCES checkpoints(id),
        suite_version TEXT NOT NULL,
        accuracy REAL,
        by_difficulty_json TEXT NOT NULL DEFAULT '{}',
        n_items INTEGER NOT NULL,
        validation_loss REAL,
        calibration_json TEXT,
        details_json TEXT,
        created_at TEXT NOT NULL
    );
    CREATE INDEX IF NOT EXISTS evaluations_ckpt ON evaluations(checkpoint_id, suite_version);
    """,
    # version 2: retention deletes a checkpoint's folder but keeps its row and metrics
    """
    ALTER TABLE checkpoints ADD COLUMN deleted_at TEXT;
    ALTER TABLE checkpoints ADD COLUMN deleted_reason TEXT
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)

_CKPT_ORDERS = {
    "global_step": "global_step ASC, created_at ASC, id ASC",
    "-global_step": "global_step DESC, created_at DESC, id DESC",
    "created_at": "created_at ASC, id ASC",
    "-created_at": "created_at DESC, id DESC",
    "id": "id ASC",
}


class ModelDBError(RuntimeError):
    """The registry file is unusable (e.g. written by a newer version of this code)."""


def _dumps(obj: Any) -> str:
    return json.dumps(obj if obj is not None else {}, ensure_ascii=False, default=str, sort_keys=True)


def _loads(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return None


def _finite_or_none(x: Any) -> float | None:
    if x is None:
        return None
    x = float(x)
    return x if x == x and x not in (float("inf"), float("-inf")) else None


class ModelDB:
    """The registry. Cheap to construct; one SQLite connection per thread (and per process:
    a connection inherited through ``fork`` is never reused)."""

    def __init__(self, path: str | os.PathLike, base_dir: str | os.PathLike | None = None):
        self.path = Path(path).expanduser().resolve()
        if base_dir is None:
            # models/model_db.sqlite lives one level below the base dir by the design card.
            base_dir = self.path.parent.parent if self.path.parent.name == "models" else resolve_base_dir()
        self.base_dir = Path(base_dir).expanduser().resolve()
        self._local = threading.local()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._migrate()

    @classmethod
    def for_base(cls, base_dir: str | os.PathLike | None = None) -> "ModelDB":
        paths = Paths.from_base(base_dir)
        return cls(paths.model_db, base_dir=paths.base)

    # ------------------------------------------------------------------ connection
    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is not None and getattr(self._local, "pid", None) == os.getpid():
            return conn
        conn = sqlite3.connect(str(self.path), timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        self._set_wal(conn)
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        self._local.conn, self._local.pid = conn, os.getpid()
        return conn

    @staticmethod
    def _set_wal(conn: sqlite3.Connection) -> None:
        # Switching the journal mode needs a moment without other writers; retry briefly.
        for _ in range(50):
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError:
                time.sleep(0.05)
        conn.execute("PRAGMA journal_mode=WAL")

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None and getattr(self._local, "pid", None) == os.getpid():
            conn.close()
        self._local.conn = None

    def _write(self, sql: str, params: Iterable[Any] = ()) -> sqlite3.Cursor:
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            cur = conn.execute(sql, tuple(params))
            conn.execute("COMMIT")
            return cur
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def _migrate(self) -> None:
        conn = self._conn()
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise ModelDBError(f"{self.path}: schema version {version} is newer than this code "
                               f"understands ({SCHEMA_VERSION}); upgrade the project")
        if version == SCHEMA_VERSION:
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]  # another process may have won
            for i in range(version, SCHEMA_VERSION):
                for stmt in MIGRATIONS[i].split(";"):
                    if stmt.strip():
                        conn.execute(stmt)
                conn.execute(f"PRAGMA user_version={i + 1}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def schema_version(self) -> int:
        return int(self._conn().execute("PRAGMA user_version").fetchone()[0])

    # ------------------------------------------------------------------ paths
    def rel(self, path: str | os.PathLike) -> str:
        """The stored form of a path: relative to the base dir when inside it, else absolute."""
        p = Path(path).expanduser()
        if not p.is_absolute():
            p = self.base_dir / p
        p = Path(os.path.normpath(p))
        try:
            return p.relative_to(self.base_dir).as_posix()
        except ValueError:
            try:
                return p.resolve().relative_to(self.base_dir).as_posix()
            except ValueError:
                return str(p.resolve())

    def abs_path(self, stored: str) -> Path:
        p = Path(stored)
        return p if p.is_absolute() else self.base_dir / p

    # ------------------------------------------------------------------ runs / files
    def start_run(self, name: str, base_model: str | None, config: dict | None = None) -> int:
        """A new run row; API keys and other secrets in ``config`` are stored as "***" (foundation.secrets)."""
        cur = self._write("INSERT INTO runs(name, base_model, config_json, created_at) VALUES (?,?,?,?)",
                          (name, base_model, _dumps(redact(config or {})), utc_now_iso()))
        return int(cur.lastrowid)

    def record_file(self, run_id: int | None, source_file: str, job_id: str | None, status: str,
                    steps: int | None = None, tokens: int | None = None, started_at: str | None = None,
                    finished_at: str | None = None, result: dict | None = None) -> int:
        cur = self._write(
            "INSERT INTO files(run_id, source_file, job_id, status, steps, tokens, started_at, finished_at,"
            " result_json, recorded_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
            (run_id, source_file, job_id, status, steps, tokens, started_at, finished_at,
             _dumps(result or {}), utc_now_iso()))
        return int(cur.lastrowid)

    def list_runs(self) -> list[dict]:
        rows = self._conn().execute("SELECT * FROM runs ORDER BY id").fetchall()
        # rows written before secrets were redacted on insert are redacted on the way out
        out = []
        for r in rows:
            stored = _loads(r["config_json"])
            config = redact(stored)
            out.append({**dict(r), "config": config,
                        "config_json": r["config_json"] if config == stored else _dumps(config)})
        return out

    def list_files(self, job_id: str | None = None) -> list[dict]:
        if job_id is None:
            rows = self._conn().execute("SELECT * FROM files ORDER BY id").fetchall()
        else:
            rows = self._conn().execute("SELECT * FROM files WHERE job_id=? ORDER BY id", (job_id,)).fetchall()
        return [{**{k: r[k] for k in r.keys() if k != "result_json"}, "result": _loads(r["result_json"])}
                for r in rows]

    # ------------------------------------------------------------------ checkpoints
    def register_checkpoint(self, path: str | os.PathLike, global_step: int, job_id: str | None,
                            source_file: str | None, train_loss: float | None = None,
                            validation_loss: float | None = None, created_at: str | None = None,
                            run_id: int | None = None) -> int:
        """Idempotent on ``path``: registering it again fills in losses that were unknown before
        (never overwrites known ones with null) and returns the same id."""
        rel = self.rel(path)
        now = utc_now_iso()
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(
                "INSERT INTO checkpoints(path, global_step, job_id, source_file, train_loss, validation_loss,"
                " created_at, run_id, registered_at) VALUES (?,?,?,?,?,?,?,?,?)"
                " ON CONFLICT(path) DO UPDATE SET"
                "  train_loss=COALESCE(excluded.train_loss, train_loss),"
                "  validation_loss=COALESCE(excluded.validation_loss, validation_loss),"
                "  run_id=COALESCE(run_id, excluded.run_id),"
                "  job_id=COALESCE(job_id, excluded.job_id),"
                "  source_file=COALESCE(source_file, excluded.source_file),"
                "  deleted_at=NULL, deleted_reason=NULL",  # registered again: the folder is back
                (rel, int(global_step), job_id, source_file, _finite_or_none(train_loss),
                 _finite_or_none(validation_loss), created_at or now, run_id, now))
            row = conn.execute("SELECT id FROM checkpoints WHERE path=?", (rel,)).fetchone()
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return int(row[0])

    def _ckpt_dict(self, r: sqlite3.Row) -> dict:
        d = dict(r)
        d["abs_path"] = str(self.abs_path(d["path"]))
        return d

    def list_checkpoints(self, order: str = "global_step") -> list[dict]:
        if order not in _CKPT_ORDERS:
            raise ValueError(f"unknown order {order!r}; expected one of {', '.join(_CKPT_ORDERS)}")
        rows = self._conn().execute(f"SELECT * FROM checkpoints ORDER BY {_CKPT_ORDERS[order]}").fetchall()
        return [self._ckpt_dict(r) for r in rows]

    def get_checkpoint(self, path: str | os.PathLike) -> dict | None:
        r = self._conn().execute("SELECT * FROM checkpoints WHERE path=?", (self.rel(path),)).fetchone()
        return self._ckpt_dict(r) if r else None

    def mark_deleted(self, path: str | os.PathLike, reason: str) -> bool:
        """Record that retention deleted the checkpoint's folder (its row and evaluations stay, so
        its metrics are never lost). False when the path was never registered."""
        cur = self._write("UPDATE checkpoints SET deleted_at=?, deleted_reason=? WHERE path=?",
                          (utc_now_iso(), reason, self.rel(path)))
        return cur.rowcount > 0

    # ------------------------------------------------------------------ evaluations
    def record_evaluation(self, checkpoint_path: str | os.PathLike, suite_version: str, accuracy: float | None,
                          by_difficulty: dict, n_items: int, validation_loss: float | None = None,
                          calibration: dict | None = None, details: dict | None = None) -> int:
        """Store one evaluation. The checkpoint must be registered first (``KeyError`` otherwise,
        so an evaluation never floats without its lineage)."""
        ck = self.get_checkpoint(checkpoint_path)
        if ck is None:
            raise KeyError(f"checkpoint {self.rel(checkpoint_path)!r} is not registered in {self.path}")
        cur = self._write(
            "INSERT INTO evaluations(checkpoint_id, suite_version, accuracy, by_difficulty_json, n_items,"
            " validation_loss, calibration_json, details_json, created_at) VALUES (?,?,?,?,?,?,?,?,?)",
            (ck["id"], str(suite_version), _finite_or_none(accuracy), _dumps(by_difficulty or {}), int(n_items),
             _finite_or_none(validation_loss), None if calibration is None else _dumps(calibration),
             None if details is None else _dumps(details), utc_now_iso()))
        return int(cur.lastrowid)

    def _eval_dict(self, r: sqlite3.Row, with_details: bool) -> dict:
        d = {k: r[k] for k in r.keys() if not k.endswith("_json")}
        d["by_difficulty"] = _loads(r["by_difficulty_json"]) or {}
        d["calibration"] = _loads(r["calibration_json"])
        if with_details:
            d["details"] = _loads(r["details_json"])
        d["abs_path"] = str(self.abs_path(d["checkpoint_path"]))
        return d

    _EVAL_SELECT = (
        "SELECT e.id, e.suite_version, e.accuracy, e.by_difficulty_json, e.n_items, e.validation_loss,"
        " e.calibration_json, e.details_json, e.created_at AS evaluated_at,"
        " c.id AS checkpoint_id, c.path AS checkpoint_path, c.global_step, c.job_id, c.source_file,"
        " c.train_loss, c.validation_loss AS train_validation_loss, c.created_at AS checkpoint_created_at"
        " FROM evaluations e JOIN checkpoints c ON c.id = e.checkpoint_id")

    def latest_evaluations(self, suite_version: str | None = None, with_details: bool = False) -> list[dict]:
        """The newest evaluation of each checkpoint (for one suite version, or for the newest row
        whatever its version), ordered by global step. Keys: id, suite_version, accuracy,
        by_difficulty, n_items, validation_loss (suite), calibration, evaluated_at, checkpoint_id,
        checkpoint_path (stored form), abs_path, global_step, job_id, source_file, train_loss,
        train_validation_loss (the trainer's), checkpoint_created_at [, details]."""
        where = "" if suite_version is None else " AND e2.suite_version = ?"
        sql = (self._EVAL_SELECT +
               " WHERE e.id = (SELECT MAX(e2.id) FROM evaluations e2 WHERE e2.checkpoint_id = e.checkpoint_id"
               + where + ") ORDER BY c.global_step ASC, c.created_at ASC, c.id ASC")
        params = () if suite_version is None else (str(suite_version),)
        return [self._eval_dict(r, with_details) for r in self._conn().execute(sql, params).fetchall()]

    def evaluations_for(self, checkpoint_path: str | os.PathLike, with_details: bool = True) -> list[dict]:
        rows = self._conn().execute(self._EVAL_SELECT + " WHERE c.path = ? ORDER BY e.id",
                                    (self.rel(checkpoint_path),)).fetchall()
        return [self._eval_dict(r, with_details) for r in rows]

    def checkpoints_evaluated_in_other_dtype(self, suite_version: str, mode: str, dtype: str,
                                             order: str = "global_step") -> list[dict]:
        """Registered checkpoints whose newest evaluation on ``suite_version`` was made in ``mode``
        with a dtype (``details.dtype``) other than ``dtype``, or with none recorded (evaluations
        from before the dtype was recorded)."""
        if order not in _CKPT_ORDERS:
            raise ValueError(f"unknown order {order!r}")
        rows = self._conn().execute(
            "SELECT * FROM checkpoints c WHERE EXISTS (SELECT 1 FROM evaluations e WHERE e.id ="
            " (SELECT MAX(e2.id) FROM evaluations e2 WHERE e2.checkpoint_id = c.id AND e2.suite_version = ?)"
            " AND json_extract(e.details_json, '$.mode') = ?"
            " AND COALESCE(json_extract(e.details_json, '$.dtype'), '') != ?)"
            f" ORDER BY {_CKPT_ORDERS[order]}", (str(suite_version), mode, dtype)).fetchall()
        return [self._ckpt_dict(r) for r in rows]

    def unevaluated_checkpoints(self, suite_version: str, order: str = "global_step") -> list[dict]:
        """Registered checkpoints with no evaluation on ``suite_version`` (whether or not the
        folder still exists: callers check, since training prunes old checkpoints)."""
        if order not in _CKPT_ORDERS:
            raise ValueError(f"unknown order {order!r}")
        rows = self._conn().execute(
            "SELECT * FROM checkpoints c WHERE NOT EXISTS (SELECT 1 FROM evaluations e WHERE"
            f" e.checkpoint_id = c.id AND e.suite_version = ?) ORDER BY {_CKPT_ORDERS[order]}",
            (str(suite_version),)).fetchall()
        return [self._ckpt_dict(r) for r in rows]
