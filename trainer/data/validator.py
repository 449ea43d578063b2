"""Validate a ``.jsonl`` training file: every problem with its line, field and reason code.

Why so strict: the daemon never trains part of a file silently. A file with any line error is
untrainable as a whole (the daemon quarantines it with this report); warnings (duplicates,
over-long examples that are truncated or dropped by policy) are reported and the file trains.

The file is read as bytes and decoded line by line, so invalid UTF-8 is reported with its line
number and one bad line never hides the others. Token-length checks use the training
tokenization itself (``trainer.data.tokenization.tokenize_example``), so "over-long" means
exactly what the trainer will see; without a tokenizer they are skipped.

Reason codes (stable, machine-readable):
  line errors: invalid_utf8, line_too_long, invalid_json, not_object, missing_messages,
    invalid_messages, empty_messages, invalid_message, missing_role, unknown_role,
    missing_content, non_string_content, no_assistant_turn, empty_assistant, missing_field,
    empty_prompt, empty_text, invalid_metadata, profile_invalid, overlong (policy fail),
    template_error, template_mismatch, no_chat_template, slow_tokenizer, tokenization_error
  line warnings: duplicate, overlong (policy truncate/drop), no_labels_after_truncation
  file errors: missing, is_directory, not_regular_file, wrong_extension, unreadable, empty,
    binary, no_valid_example
"""
from __future__ import annotations

import json
import os
import stat
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from trainer.data.records import RecordError, content_key, normalize_record

OVERLONG_POLICIES = ("truncate", "drop", "fail")
FILE_ERROR_MESSAGES = {
    "missing": "file does not exist",
    "is_directory": "path is a directory, not a file",
    "not_regular_file": "path is not a regular file",
    "wrong_extension": "only .jsonl files are accepted",
    "unreadable": "file cannot be read",
    "empty": "file has no examples (empty or only blank lines)",
    "binary": "file contains NUL bytes (binary, not JSON Lines)",
    "no_valid_example": "file has no valid example",
}
_READ_CHUNK = 1 << 20


@dataclass
class LineIssue:
    line: int
    """1-based line number."""
    field: str
    """Where in the record, e.g. ``messages[2].role``; empty for the whole line."""
    reason: str
    """Stable reason code (module docstring)."""
    message: str
    """Human explanation."""

    def format(self, path: str | os.PathLike = "") -> str:
        return f"{path}:{self.line}: {self.field or '<line>'}: {self.reason}: {self.message}"


@dataclass
class ValidationReport:
    path: str
    ok: bool = False
    """True when the file is trainable: no file error, no line error, at least one example."""
    file_error: str | None = None
    """Whole-file problem code (module docstring), or None."""
    file_error_message: str | None = None
    errors: list[LineIssue] = field(default_factory=list)
    warnings: list[LineIssue] = field(default_factory=list)
    examples: list[dict] = field(default_factory=list)
    """Normalized trainable examples in file order (duplicates / dropped over-long removed)."""
    example_lines: list[int] = field(default_factory=list)
    """Line number of each entry of ``examples``."""
    n_lines: int = 0
    n_valid: int = 0
    """Lines holding a valid record (before duplicate / over-long removal)."""
    n_duplicates: int = 0
    n_overlong: int = 0
    n_errors: int = 0
    """All line errors, including ones beyond ``max_errors`` that are not listed."""
    n_tokens: int | None = None
    """Tokens of the kept examples after truncation (None without a tokenizer)."""
    max_length: int | None = None
    overlong_policy: str = "truncate"

    @property
    def n_examples(self) -> int:
        return len(self.examples)

    def error_counts(self) -> dict[str, int]:
        return dict(Counter(e.reason for e in self.errors))

    def to_dict(self, include_examples: bool = False) -> dict[str, Any]:
        """JSON-able report (what the daemon writes next to a quarantined file)."""
        d = {
            "path": self.path, "ok": self.ok, "file_error": self.file_error,
            "file_error_message": self.file_error_message,
            "n_lines": self.n_lines, "n_valid": self.n_valid, "n_examples": self.n_examples,
            "n_errors": self.n_errors, "n_warnings": len(self.warnings),
            "n_duplicates": self.n_duplicates, "n_overlong": self.n_overlong, "n_tokens": self.n_tokens,
            "max_length": self.max_length, "overlong_policy": self.overlong_policy,
            "error_counts": self.error_counts(),
            "warning_counts": dict(Counter(w.reason for w in self.warnings)),
            "errors": [asdict(e) for e in self.errors],
            "warnings": [asdict(w) for w in self.warnings],
        }
        if include_examples:
            d["examples"] = self.examples
        return d

    def summary(self) -> str:
        """One human paragraph."""
        name = self.path
        if self.file_error and not self.errors:
            return f"{name}: NOT TRAINABLE: {self.file_error} ({self.file_error_message})"
        parts = [f"{self.n_examples} trainable example(s) from {self.n_lines} line(s)"]
        if self.n_duplicates:
            parts.append(f"{self.n_duplicates} duplicate(s)")
        if self.n_overlong:
            parts.append(f"{self.n_overlong} over-long ({self.overlong_policy}, max_length {self.max_length})")
        if self.n_tokens is not None:
            parts.append(f"{self.n_tokens} tokens")
        if self.ok:
            return f"{name}: OK: " + ", ".join(parts)
        counts = ", ".join(f"{k} x{v}" for k, v in sorted(self.error_counts().items()))
        more = f" (first {len(self.errors)} listed)" if self.n_errors > len(self.errors) else ""
        head = f"{name}: NOT TRAINABLE: {self.n_errors} line error(s){more}: {counts}"
        if self.file_error:
            head += f"; {self.file_error_message}"
        return head + "; " + ", ".join(parts)


def _file_error(report: ValidationReport, code: str, detail: str = "") -> ValidationReport:
    report.ok = False
    if code != "no_valid_example":  # the file as a whole is unusable: nothing of it is trainable
        report.examples, report.example_lines = [], []
    report.file_error = code
    report.file_error_message = FILE_ERROR_MESSAGES[code] + (f": {detail}" if detail else "")
    return report


def iter_raw_lines(f, max_line_bytes: int):
    """(line number, bytes or None when longer than max_line_bytes) for each line; a long line is
    consumed in chunks without being kept in memory."""
    n = 0
    while True:
        raw = f.readline(max_line_bytes + 1)
        if not raw:
            return
        n += 1
        if len(raw) > max_line_bytes and not raw.endswith(b"\n"):
            while True:  # skip the rest of the line
                rest = f.readline(_READ_CHUNK)
                if not rest or rest.endswith(b"\n"):
                    break
            yield n, None
        elif len(raw.rstrip(b"\r\n")) > max_line_bytes:
            yield n, None
        else:
            yield n, raw


BLANK = object()


def parse_line(n: int, raw: bytes) -> tuple[Any, LineIssue | None]:
    """Decode and parse one line: (value, None), (BLANK, None) for a blank line, or
    (None, issue) for invalid_utf8 / invalid_json."""
    if n == 1 and raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]  # UTF-8 byte order mark
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return None, LineIssue(n, "", "invalid_utf8",
                               f"invalid UTF-8 at byte {e.start}: {raw[e.start:e.start + 4]!r}")
    if not text.strip():
        return BLANK, None
    try:
        return json.loads(text), None
    except json.JSONDecodeError as e:
        return None, LineIssue(n, "", "invalid_json", f"{e.msg} at column {e.colno}")
    except RecursionError:
        return None, LineIssue(n, "", "invalid_json", "nesting too deep")


def validate_file(path: str | os.PathLike, *, tokenizer=None, max_length: int = 512,
                  overlong_policy: str = "truncate", drop_duplicates: bool = True,
                  max_line_bytes: int = 10_000_000, profile=None, max_errors: int = 1000,
                  loss_on: str = "assistant") -> ValidationReport:
    """Validate one file; never raises for bad data (only for bad arguments).

    ``profile``: an object with ``validate_example(record) -> list[str]`` (problems, each
    reported as ``profile_invalid``). ``loss_on`` matters only with a tokenizer (an example
    truncated to no labelled token is reported)."""
    if overlong_policy not in OVERLONG_POLICIES:
        raise ValueError(f"overlong_policy must be one of {OVERLONG_POLICIES}, got {overlong_policy!r}")
    p = Path(path)
    report = ValidationReport(path=str(p), max_length=max_length if tokenizer is not None else None,
                              overlong_policy=overlong_policy)
    try:
        st = os.stat(p)
    except FileNotFoundError:
        return _file_error(report, "missing")
    except OSError as e:
        return _file_error(report, "unreadable", str(e))
    if stat.S_ISDIR(st.st_mode):
        return _file_error(report, "is_directory")
    if not stat.S_ISREG(st.st_mode):
        return _file_error(report, "not_regular_file")
    if p.suffix.lower() != ".jsonl":
        return _file_error(report, "wrong_extension", f"got {p.suffix or 'no extension'!r}")
    if st.st_size == 0:
        return _file_error(report, "empty")

    tokenize = None
    if tokenizer is not None:
        from trainer.data.tokenization import TokenizationError, tokenize_example

        def tokenize(rec: dict) -> dict:
            return tokenize_example(tokenizer, rec, max_length=max_length, loss_on=loss_on, truncate=True)

    def error(line: int, fld: str, reason: str, message: str) -> None:
        report.n_errors += 1
        if len(report.errors) < max_errors:
            report.errors.append(LineIssue(line, fld, reason, message))

    def warn(line: int, fld: str, reason: str, message: str) -> None:
        if len(report.warnings) < max_errors:
            report.warnings.append(LineIssue(line, fld, reason, message))

    seen: dict[str, int] = {}
    n_tokens = 0
    try:
        f = open(p, "rb")
    except OSError as e:
        return _file_error(report, "unreadable", str(e))
    with f:
        head = f.read(8192)
        if b"\x00" in head:
            return _file_error(report, "binary", "NUL byte in the first 8 KiB")
        f.seek(0)
        for n, raw in iter_raw_lines(f, max_line_bytes):
            report.n_lines = n
            if raw is None:
                error(n, "", "line_too_long", f"line is longer than {max_line_bytes} bytes")
                continue
            if b"\x00" in raw:
                return _file_error(report, "binary", f"NUL byte on line {n}")
            obj, issue = parse_line(n, raw)
            if issue is not None:
                error(n, issue.field, issue.reason, issue.message)
                continue
            if obj is BLANK:
                continue  # blank lines are allowed and skipped
            try:
                rec = normalize_record(obj)
            except RecordError as e:
                error(n, e.field, e.reason, e.message)
                continue
            if profile is not None:
                try:
                    problems = list(profile.validate_example(rec) or [])
                except Exception as e:  # a profile bug must not hide the rest of the report
                    problems = [f"profile {type(profile).__name__} failed on this record: {e!r}"]
                for msg in problems:
                    error(n, "", "profile_invalid", str(msg))
                if problems:
                    continue
            key = content_key(rec)
            first = seen.get(key)
            if first is not None and drop_duplicates:  # checked before tokenizing: no work for copies
                report.n_valid += 1
                report.n_duplicates += 1
                warn(n, "", "duplicate", f"same example as line {first} (dropped)")
                continue
            t = None
            if tokenize is not None:
                try:
                    t = tokenize(rec)
                except TokenizationError as e:
                    error(n, "", e.reason, e.message)
                    continue
                except Exception as e:  # tokenizer failures are this record's problem, not the run's
                    error(n, "", "tokenization_error", f"{type(e).__name__}: {e}")
                    continue
                if t["overlong"] and overlong_policy == "fail":
                    report.n_overlong += 1
                    error(n, "", "overlong", f"{t['full_length']} tokens > max_length {max_length}")
                    continue
            report.n_valid += 1
            if first is not None:
                report.n_duplicates += 1
                warn(n, "", "duplicate", f"same example as line {first} (kept)")
            else:
                seen[key] = n
            if t is not None:
                if t["overlong"]:
                    report.n_overlong += 1
                    msg = f"{t['full_length']} tokens > max_length {max_length}"
                    if overlong_policy == "drop":
                        warn(n, "", "overlong", msg + " (dropped)")
                        continue
                    warn(n, "", "overlong", msg + " (truncated)")
                    if t["n_labels"] == 0:
                        warn(n, "", "no_labels_after_truncation",
                             "nothing left to learn after truncation (dropped)")
                        continue
                n_tokens += t["length"]
            report.examples.append(rec)
            report.example_lines.append(n)

    if tokenizer is not None:
        report.n_tokens = n_tokens
    if report.n_errors == 0 and report.n_valid == 0:
        return _file_error(report, "empty")  # only blank lines
    if report.n_valid == 0:
        _file_error(report, "no_valid_example")
    elif not report.examples:
        _file_error(report, "no_valid_example", "every valid example was dropped (duplicates / over-long)")
    report.ok = report.n_errors == 0 and report.file_error is None and bool(report.examples)
    return report


def format_issues(report: ValidationReport) -> list[str]:
    """``file:line: field: reason: message`` for every error, then every warning."""
    return [e.format(report.path) for e in report.errors] + \
        [f"{w.format(report.path)} (warning)" for w in report.warnings]
