"""Which checkpoint to deploy: the candidate policy.

Reads what the evaluation sidecars publish (``status/model_comparisons.json``'s ``ranking``, best
first, and ``status/regression_monitoring.json``'s ``flagged`` list) or, with strategy ``newest``,
the checkpoint folders themselves, and picks the first candidate that is complete, not flagged by
the regression monitor and not blocked (failed to deploy before, or rolled back by hand).
Nothing here talks to the server or writes a file.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from foundation.atomic_io import read_json
from foundation.paths import PathEscapeError, Paths, is_within, safe_join


@dataclass
class Candidate:
    folder: Path          # absolute checkpoint folder
    rel: str              # path relative to the base dir (as the status files name it)
    global_step: int | None
    job_id: str
    score: float | None
    info: dict
    signature: str        # changes when the checkpoint is rewritten (failed ones are retried then)


def weights_folder(folder: Path, info: dict) -> Path:
    """Where a checkpoint's full weights are: the folder itself, or its ``merged/`` copy for LoRA
    (checkpoint_info.json ``model_dir``)."""
    return safe_join(folder, str(info.get("model_dir") or "."))


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


def checkpoint_signature(folder: Path) -> str:
    """Changes whenever checkpoint_info.json is rewritten (a re-saved checkpoint is a new candidate)."""
    try:
        st = (folder / "checkpoint_info.json").stat()
        return f"{st.st_mtime_ns}:{st.st_size}"
    except OSError:
        return "missing"


class CandidatePolicy:
    """Ranks and filters checkpoints for one base dir under strategy ``best_ranked`` or ``newest``."""

    def __init__(self, paths: Paths, strategy: str):
        self.paths = paths
        self.strategy = strategy

    def rel(self, p: Path) -> str:
        try:
            return str(p.resolve().relative_to(self.paths.base))
        except ValueError:
            return str(p.resolve())

    def resolve_checkpoint(self, raw: Any) -> Path | None:
        """A checkpoint path from a status file, as a folder under models/ (None when it is not one)."""
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
            folder = self.resolve_checkpoint(raw)
            out.add(self.rel(folder) if folder else str(raw))
        return out

    def candidate(self, folder: Path, score: float | None = None) -> tuple[Candidate | None, str]:
        ok, why, info = checkpoint_complete(folder)
        if not ok:
            return None, why
        step = info.get("global_step")
        return Candidate(folder=folder.resolve(), rel=self.rel(folder),
                         global_step=step if isinstance(step, int) else None,
                         job_id=str(info.get("job_id") or folder.parent.name), score=score, info=info,
                         signature=checkpoint_signature(folder)), ""

    def ranked(self) -> tuple[list[Candidate], list[dict]]:
        """Candidates best first by the strategy, and why others were skipped."""
        skipped: list[dict] = []
        out: list[Candidate] = []
        if self.strategy == "best_ranked":
            doc = read_json(self.paths.status_file("model_comparisons"))
            # The comparison engine's list, best first (its format: monitoring/evaluation/comparison.py).
            ranking = doc.get("ranking") if isinstance(doc, dict) else None
            for i, item in enumerate(ranking or []):
                raw = item.get("checkpoint") if isinstance(item, dict) else None
                folder = self.resolve_checkpoint(raw)
                if folder is None:
                    skipped.append({"checkpoint": raw, "reason": f"ranking[{i}].checkpoint is not a folder "
                                                                "under models/"})
                    continue
                score = item.get("score")
                c, why = self.candidate(folder, score if isinstance(score, (int, float)) else None)
                if c is None:
                    skipped.append({"checkpoint": raw, "reason": why})
                else:
                    out.append(c)
        else:
            found = []
            for info_file in self.paths.checkpoints.glob("*/step-*/checkpoint_info.json"):
                c, why = self.candidate(info_file.parent)
                if c is None:
                    continue
                found.append((c.global_step if c.global_step is not None else -1,
                              info_file.stat().st_mtime_ns if info_file.exists() else 0, c))
            out = [c for *_, c in sorted(found, key=lambda t: (t[0], t[1]), reverse=True)]
        return out, skipped

    def choose(self, blocked: dict[str, dict]) -> tuple[Candidate | None, list[dict]]:
        """The first ranked candidate that is neither flagged nor blocked (at its current signature)."""
        cands, skipped = self.ranked()
        flagged = self.flagged()
        for c in cands:
            if c.rel in flagged:
                skipped.append({"checkpoint": c.rel, "reason": "flagged by the regression monitor"})
                continue
            failed = blocked.get(c.rel)
            if failed and failed.get("signature") == c.signature:
                skipped.append({"checkpoint": c.rel, "reason": f"failed to deploy before: {failed.get('error')}"})
                continue
            return c, skipped
        return None, skipped

    def watched_checkpoint_files(self) -> tuple:
        """(path, signature) of every checkpoint_info.json: what strategy ``newest`` reacts to."""
        return tuple(sorted((str(p), file_signature(p))
                            for p in self.paths.checkpoints.glob("*/step-*/checkpoint_info.json")))


def file_signature(path: Path) -> tuple:
    """(mtime, size, inode) of a file, () when it is missing: cheap change detection by polling."""
    try:
        st = path.stat()
        return (st.st_mtime_ns, st.st_size, st.st_ino)
    except OSError:
        return ()
