"""The runtime folder layout under one base dir, and the guard that keeps paths inside it.

Base dir precedence: explicit argument (``--base-dir``) > ``$TRAINER_BASE_DIR`` > the repo root.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PRIORITIES = ("high", "normal", "low")
# The levels the daemon claims from, in order: the self-correction loop's ``corrections`` level
# trains right after ``high`` (people's urgent files) and before the normal queue.
QUEUE_LEVELS = ("high", "corrections", "normal", "low")


class PathEscapeError(ValueError):
    """A name or path would lead outside the base dir."""


def resolve_base_dir(base_dir: str | os.PathLike | None = None) -> Path:
    if base_dir is None:
        base_dir = os.environ.get("TRAINER_BASE_DIR") or REPO_ROOT
    return Path(base_dir).expanduser().resolve()


def safe_join(root: str | os.PathLike, *parts: str) -> Path:
    """Join ``parts`` under ``root``; raise PathEscapeError if the result leaves ``root``.

    Symlinks are resolved, so a link pointing outside is refused too.
    """
    root_p = Path(root).resolve()
    candidate = root_p.joinpath(*parts).resolve()
    if candidate != root_p and root_p not in candidate.parents:
        raise PathEscapeError(f"path {'/'.join(parts)!r} resolves outside {root_p}")
    return candidate


def is_within(root: str | os.PathLike, path: str | os.PathLike) -> bool:
    try:
        root_p = Path(root).resolve()
        p = Path(path).resolve()
    except OSError:
        return False
    return p == root_p or root_p in p.parents


@dataclass(frozen=True)
class Paths:
    """Every runtime folder, derived from one base dir."""

    base: Path

    @classmethod
    def from_base(cls, base_dir: str | os.PathLike | None = None) -> "Paths":
        return cls(resolve_base_dir(base_dir))

    # top level
    @property
    def config_file(self) -> Path: return self.base / "config.json"
    @property
    def inbox(self) -> Path: return self.base / "inbox"
    @property
    def queue(self) -> Path: return self.base / "queue"
    @property
    def control(self) -> Path: return self.base / "control"
    @property
    def status(self) -> Path: return self.base / "status"
    @property
    def models(self) -> Path: return self.base / "models"
    @property
    def data(self) -> Path: return self.base / "data"
    @property
    def logs(self) -> Path: return self.base / "logs"
    @property
    def backups(self) -> Path: return self.base / "backups"
    @property
    def pids(self) -> Path: return self.base / ".pids"

    # queue
    def queue_dir(self, name: str) -> Path:
        if name not in (*QUEUE_LEVELS, "processing", "failed", "recently_completed"):
            raise ValueError(f"unknown queue folder {name!r}")
        return self.queue / name
    @property
    def processing(self) -> Path: return self.queue / "processing"
    @property
    def failed(self) -> Path: return self.queue / "failed"
    @property
    def completed(self) -> Path: return self.queue / "recently_completed"

    # models
    @property
    def current_model(self) -> Path: return self.models / "current_model"
    @property
    def checkpoints(self) -> Path: return self.models / "checkpoints"
    @property
    def deployed(self) -> Path: return self.models / "deployed"
    @property
    def model_db(self) -> Path: return self.models / "model_db.sqlite"

    # data
    @property
    def validation(self) -> Path: return self.data / "validation"
    @property
    def generated(self) -> Path: return self.data / "generated"

    def status_file(self, name: str) -> Path:
        return safe_join(self.status, name if name.endswith(".json") else name + ".json")

    def resolve(self, p: str | os.PathLike) -> Path:
        """A config path: relative ones are taken from the base dir."""
        p = Path(p).expanduser()
        return p if p.is_absolute() else (self.base / p)

    def ensure(self) -> "Paths":
        for d in (self.inbox, self.inbox / "high", self.inbox / "low", self.control, self.status,
                  self.models, self.current_model.parent, self.checkpoints, self.deployed,
                  self.validation, self.generated, self.data / "adversarial_examples",
                  self.data / "flagged_examples", self.logs, self.logs / "error_patterns", self.backups, self.pids,
                  *(self.queue / q for q in (*QUEUE_LEVELS, "processing", "failed", "recently_completed"))):
            d.mkdir(parents=True, exist_ok=True)
        return self
