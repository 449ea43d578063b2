"""May this path enter the training queue? One verdict with a machine-readable reason.

Used by the daemon for every inbox entry and by ``trainctl queue add``. The checks that need no
parsing come first and never open the file (a FIFO would block, a symlink could point anywhere):
symlinks (refused; ``symlink_outside_base`` when the target leaves the base dir), directories,
non-regular files, wrong extension, empty, unreadable. Then the content check is the engine's
own validator (``trainer.data.validator.validate_file``: invalid JSON / UTF-8, binary, wrong schema, no
assistant turn, huge lines ... each with line numbers), and finally the leak guard: a file holding
items of the fixed validation suite is refused (``contains_validation_items``).

Token-level checks (over-long examples with ``overlong_policy=fail``) need the tokenizer, which
only the trainer child loads; the engine measures them when it tokenizes (on the records as
trained, profile included) and reports a failure there as ``data_error`` with the file's line number.
"""
from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from foundation.paths import Paths, is_within

ERROR_LIST_LIMIT = 50


@dataclass
class InputVerdict:
    ok: bool
    reason: str = ""
    """Stable code: symlink, symlink_outside_base, is_directory, not_regular_file, wrong_extension,
    empty, unreadable, missing, binary, invalid_records (line errors), no_valid_example,
    contains_validation_items, validator_error."""
    message: str = ""
    errors: list[dict] = field(default_factory=list)
    """Line problems: ``{"line", "field", "reason", "message"}`` (first ERROR_LIST_LIMIT)."""
    n_examples: int = 0
    report: dict | None = None

    def line_numbers(self) -> list[int]:
        return sorted({int(e["line"]) for e in self.errors if e.get("line")})

    def to_error(self) -> dict[str, Any]:
        return {"reason": self.reason, "kind": "invalid_input", "message": self.message,
                "errors": self.errors, "line_numbers": self.line_numbers(),
                "n_errors": (self.report or {}).get("n_errors", len(self.errors))}


class _Fingerprints:
    """Validation-suite fingerprints, recomputed only when the suite folder changes."""

    def __init__(self) -> None:
        self._key: tuple | None = None
        self._fps: set[str] = set()

    def get(self, folder: Path) -> set[str]:
        try:
            from syllo.suite import validation_fingerprints
        except ImportError:
            return set()
        try:
            key = tuple(sorted((p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in folder.glob("*.jsonl")))
        except OSError:
            key = ()
        if key != self._key:
            self._fps = validation_fingerprints(folder) if key else set()
            self._key = key
        return self._fps


_FPS = _Fingerprints()


def check_input(path: str | os.PathLike, paths: Paths, cfg=None) -> InputVerdict:
    p = Path(path)
    name = p.name
    try:
        st = os.lstat(p)
    except FileNotFoundError:
        return InputVerdict(False, "missing", f"{p}: file does not exist")
    if stat.S_ISLNK(st.st_mode):
        target = os.readlink(p)
        if not is_within(paths.base, p.parent / target):
            return InputVerdict(False, "symlink_outside_base",
                                f"{name}: symbolic link to {target!r}, outside the base dir {paths.base}; "
                                f"refused (copy the file in, or use `trainctl queue add`)")
        return InputVerdict(False, "symlink", f"{name}: symbolic links are not accepted (the target could "
                                              f"change or vanish while training); copy the file in instead")
    if stat.S_ISDIR(st.st_mode):
        return InputVerdict(False, "is_directory", f"{name}: is a directory; drop .jsonl files, not folders "
                                                   f"(only inbox/high/ and inbox/low/ are special)")
    if not stat.S_ISREG(st.st_mode):
        return InputVerdict(False, "not_regular_file", f"{name}: not a regular file (FIFO, socket or device)")
    if not name.endswith(".jsonl"):
        return InputVerdict(False, "wrong_extension",
                            f"{name}: only .jsonl (JSON Lines) files are accepted, got "
                            f"{Path(name).suffix or 'no extension'!r}")
    if st.st_size == 0:
        return InputVerdict(False, "empty", f"{name}: file is empty")
    if not os.access(p, os.R_OK):
        return InputVerdict(False, "unreadable", f"{name}: not readable by the daemon")

    from trainer.data.validator import validate_file
    data = getattr(cfg, "data", None)
    kwargs: dict[str, Any] = {}
    if data is not None:
        kwargs = dict(max_length=data.max_length, overlong_policy=data.overlong_policy,
                      drop_duplicates=data.drop_duplicates, max_line_bytes=data.max_line_bytes)
    profile = None
    if cfg is not None:
        try:
            from trainer.profiles import get_profile
            profile = get_profile(cfg.profile.name, cfg.profile.options)
        except ImportError:
            profile = None
    try:
        rep = validate_file(p, tokenizer=None, profile=profile, max_errors=ERROR_LIST_LIMIT, **kwargs)
    except Exception as e:  # noqa: BLE001 - a validator crash must not crash the daemon
        return InputVerdict(False, "validator_error", f"{name}: validator failed: {type(e).__name__}: {e}")
    errors = [{"line": e.line, "field": e.field, "reason": e.reason, "message": e.message}
              for e in rep.errors[:ERROR_LIST_LIMIT]]
    report = rep.to_dict()
    report["errors"] = report["errors"][:ERROR_LIST_LIMIT]
    report["warnings"] = report["warnings"][:ERROR_LIST_LIMIT]
    if not rep.ok:
        if rep.n_errors:
            first = errors[0]
            msg = (f"{name}: {rep.n_errors} invalid line(s); first: line {first['line']}: "
                   f"{first['field'] or '<line>'}: {first['reason']}: {first['message']}")
            return InputVerdict(False, "invalid_records", msg, errors, 0, report)
        return InputVerdict(False, rep.file_error or "invalid", f"{name}: {rep.file_error_message}",
                            errors, 0, report)

    folder = paths.resolve(cfg.data.validation_dir) if cfg is not None else paths.validation
    fps = _FPS.get(Path(folder))
    if fps:
        from syllo.suite import contains_validation_items
        hits = contains_validation_items(rep.examples, fps)
        if hits:
            lines = [rep.example_lines[i] for i in hits if i < len(rep.example_lines)]
            errs = [{"line": ln, "field": "messages", "reason": "validation_item",
                     "message": "contains an item of the fixed validation suite (never trained on)"}
                    for ln in lines[:ERROR_LIST_LIMIT]]
            return InputVerdict(False, "contains_validation_items",
                                f"{name}: {len(hits)} example(s) contain items of the validation suite "
                                f"(lines {', '.join(map(str, lines[:10]))}{' ...' if len(lines) > 10 else ''})",
                                errs, 0, report)
    return InputVerdict(True, "", "", [], rep.n_examples, report)
