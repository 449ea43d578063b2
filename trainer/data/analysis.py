"""What is in a training file, measured the way the trainer will see it.

    from trainer.data.analysis import AnalysisSettings, analyze_paths
    from trainer.data.trained_files import load_trained_index
    report = analyze_paths([Path("inbox/x.jsonl")], tokenizer, AnalysisSettings(max_length=512),
                           trained=load_trained_index(base_dir))

Per file and in total: examples, turns per example (messages other than system), roles, system
prompts; token lengths with the model's tokenizer and chat template, after the configured
profile's transform (``tokenize_example``, the training tokenization itself), with nearest-rank
percentiles, a histogram and what ``data.overlong_policy`` does to the over-long ones; the
assistant-token share (labelled tokens / tokens of the examples that would train: what the loss
sees); exact and near duplicates (``trainer.data.near_dupes``) within the file and against the
files already trained; encoding anomalies (``trainer.data.analysis_checks``); for syllo records
(``metadata.source == "syllo"``) the difficulty mix and the answer balance per question template.

Lines are read, decoded and parsed by the validator's own functions, so a line the daemon would
reject is reported here with the same line number and reason (``errors``), and the rest of the
file is still analysed. Exact duplicates are dropped before tokenizing when
``drop_duplicates`` is on, and the profile sees the same example indices, as in training.

Memory is bounded by what is counted, not by the file: lengths are kept as a Counter of values,
exact duplicates as 8-byte digests, near duplicates in an index capped at ``near_capacity``.

Against what was trained: ``trainer.data.trained_files``.
"""
from __future__ import annotations

import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from trainer.data.analysis_checks import (answer_balance, histogram, percentiles, record_texts,
                                          syllo_template, text_anomalies)
from trainer.data.near_dupes import NearDupIndex, example_text
from trainer.data.records import RecordError, detect_format, is_chat, normalize_record
from trainer.data.trained_files import TrainedIndex, digest
from trainer.data.validator import BLANK, iter_raw_lines, parse_line

_MAX_SYSTEM_PROMPTS = 1000  # distinct prompts counted one by one; more are lumped together


class AnalysisError(ValueError):
    """The path cannot be analysed at all (missing, no .jsonl in a folder)."""


@dataclass
class AnalysisSettings:
    max_length: int = 512
    overlong_policy: str = "truncate"
    loss_on: str = "assistant"
    drop_duplicates: bool = True
    max_line_bytes: int = 10_000_000
    profile: Any = None
    """A ``trainer.profiles`` profile (``transform_example``), or None for records as they are."""
    system_prompt: str | None = None
    """The rendered system prompt the profile inserts (config ``profile.system_prompt``)."""
    near_threshold: float = 0.8
    near_capacity: int = 100_000
    max_listed: int = 20
    """Errors, duplicates and anomalies listed per file (all are counted)."""


# ---------------------------------------------------------------- accumulation
@dataclass
class FileStats:
    """Counts for one file (or, merged, for several)."""

    lines: int = 0
    blank_lines: int = 0
    examples: int = 0
    n_errors: int = 0
    errors: list[dict] = field(default_factory=list)
    formats: Counter = field(default_factory=Counter)
    turns: Counter = field(default_factory=Counter)
    roles: Counter = field(default_factory=Counter)
    system_prompts: Counter = field(default_factory=Counter)
    system_prompts_other: int = 0
    without_system: int = 0
    full_lengths: Counter = field(default_factory=Counter)
    tokenized: int = 0
    overlong: int = 0
    truncated: int = 0
    dropped_overlong: int = 0
    rejected_overlong: int = 0
    no_labels: int = 0
    trained_examples: int = 0
    trained_tokens: int = 0
    assistant_tokens: int = 0
    dupes: Counter = field(default_factory=Counter)
    dupe_examples: list[dict] = field(default_factory=list)
    anomalies: Counter = field(default_factory=Counter)
    anomaly_examples: list[dict] = field(default_factory=list)
    syllo: int = 0
    difficulty: Counter = field(default_factory=Counter)
    syllo_kinds: Counter = field(default_factory=Counter)
    templates: dict[str, Counter] = field(default_factory=dict)
    near_index_full: bool = False

    def merge(self, o: "FileStats") -> None:
        for name, value in vars(o).items():
            mine = getattr(self, name)
            if name == "templates":
                for k, c in value.items():
                    self.templates.setdefault(k, Counter()).update(c)
            elif isinstance(value, Counter):
                mine.update(value)
            elif isinstance(value, bool):
                setattr(self, name, mine or value)
            elif isinstance(value, int):
                setattr(self, name, mine + value)
        # listed items stay per file; the total keeps counts only

    def to_dict(self, s: AnalysisSettings) -> dict:
        consequence = {"truncate": "truncated", "drop": "dropped", "fail": "the whole file is rejected"}
        n_chat = sum(self.turns.values())
        lengths = percentiles(self.full_lengths)
        return {
            "lines": self.lines, "blank_lines": self.blank_lines, "examples": self.examples,
            "n_errors": self.n_errors, "errors": self.errors, "formats": dict(self.formats),
            "turns": {"per_example": {str(k): v for k, v in sorted(self.turns.items())},
                      **({"mean": percentiles(self.turns)["mean"]} if n_chat else {})},
            "roles": dict(self.roles),
            "system_prompts": {
                "distinct": len(self.system_prompts) + (1 if self.system_prompts_other else 0),
                "examples_without": self.without_system,
                "top": [{"text": t if len(t) <= 200 else t[:197] + "...", "count": c}
                        for t, c in self.system_prompts.most_common(5)],
                "configured": s.system_prompt or None},
            "tokens": {
                "max_length": s.max_length, "overlong_policy": s.overlong_policy, "loss_on": s.loss_on,
                "tokenized": self.tokenized, "length": lengths,
                "histogram": histogram(self.full_lengths, upper=max(s.max_length, lengths.get("p99", 0))),
                "overlong": self.overlong,
                "overlong_consequence": consequence[s.overlong_policy], "truncated": self.truncated,
                "dropped_overlong": self.dropped_overlong, "rejected_overlong": self.rejected_overlong,
                "no_labels_after_truncation": self.no_labels, "trained_examples": self.trained_examples,
                "trained_tokens": self.trained_tokens, "assistant_tokens": self.assistant_tokens,
                "assistant_share": (round(self.assistant_tokens / self.trained_tokens, 4)
                                    if self.trained_tokens else None)},
            "duplicates": {"exact_within": self.dupes["exact_within"], "near_within": self.dupes["near_within"],
                           "exact_trained": self.dupes["exact_trained"], "near_trained": self.dupes["near_trained"],
                           "near_threshold": s.near_threshold, "near_index_full": self.near_index_full,
                           "examples": self.dupe_examples},
            "anomalies": {"counts": dict(self.anomalies), "examples": self.anomaly_examples},
            "syllo": None if not self.syllo else {
                "examples": self.syllo, "difficulty": dict(self.difficulty), "kinds": dict(self.syllo_kinds),
                **answer_balance(self.templates)},
        }


class _FileAnalysis:
    """One pass over one file."""

    def __init__(self, path: Path, tokenizer, s: AnalysisSettings, trained: TrainedIndex | None):
        self.path, self.tok, self.s, self.trained = path, tokenizer, s, trained
        self.st = FileStats()
        self.seen: dict[int, int] = {}
        self.near = NearDupIndex(threshold=s.near_threshold, capacity=s.near_capacity)
        self.kept = 0  # index the profile sees (examples left after duplicate removal)

    def error(self, line: int, reason: str, message: str, fld: str = "") -> None:
        self.st.n_errors += 1
        if len(self.st.errors) < self.s.max_listed:
            self.st.errors.append({"line": line, "field": fld, "reason": reason, "message": message})

    def _listed(self, items: list, item: dict) -> None:
        if len(items) < self.s.max_listed:
            items.append(item)

    def anomaly(self, line: int, kind: str, detail: str) -> None:
        self.st.anomalies[kind] += 1
        self._listed(self.st.anomaly_examples, {"line": line, "kind": kind, "detail": detail})

    def dupe(self, line: int, kind: str, same_as: str, similarity: float | None = None) -> None:
        self.st.dupes[kind] += 1
        self._listed(self.st.dupe_examples, {"line": line, "kind": kind, "same_as": same_as,
                                             **({"similarity": round(similarity, 3)} if similarity else {})})

    def run(self, progress: bool | None) -> FileStats:
        from tqdm import tqdm
        size = self.path.stat().st_size
        with open(self.path, "rb") as f, tqdm(total=size, unit="B", unit_scale=True, desc=self.path.name,
                                              file=sys.stderr, leave=False,
                                              disable=None if progress is None else not progress) as bar:
            pos = 0
            for n, raw in iter_raw_lines(f, self.s.max_line_bytes):
                now = f.tell()
                bar.update(now - pos)
                pos = now
                self.st.lines = n
                self.line(n, raw)
        self.st.near_index_full = self.near.full or bool(self.trained and self.trained.near.full)
        return self.st

    def line(self, n: int, raw: bytes | None) -> None:
        if raw is None:
            return self.error(n, "line_too_long", f"line is longer than {self.s.max_line_bytes} bytes")
        if n == 1 and raw.startswith(b"\xef\xbb\xbf"):
            self.anomaly(n, "bom", "UTF-8 byte order mark")
        if raw.endswith(b"\r\n"):
            self.st.anomalies["crlf"] += 1  # counted, not listed: a whole file usually has them
        if b"\x00" in raw:
            return self.error(n, "binary", "NUL byte in the line")
        obj, issue = parse_line(n, raw)
        if issue is not None:
            return self.error(n, issue.reason, issue.message)
        if obj is BLANK:
            self.st.blank_lines += 1
            return
        try:
            rec = normalize_record(obj)
        except RecordError as e:
            return self.error(n, e.reason, e.message, e.field)
        self.st.formats[detect_format(obj)] += 1
        self.st.examples += 1
        self.describe(n, rec)
        if self.duplicates(n, rec) and self.s.drop_duplicates:
            return  # trained once: the copy is neither tokenized nor seen by the profile
        self.tokens(n, rec)

    def describe(self, n: int, rec: dict) -> None:
        st = self.st
        for where, text in record_texts(rec):
            for kind, detail in text_anomalies(text):
                self.anomaly(n, kind, f"{where}: {detail}")
        if is_chat(rec):
            msgs = rec["messages"]
            st.roles.update(m["role"] for m in msgs)
            st.turns[sum(1 for m in msgs if m["role"] != "system")] += 1
            systems = [m["content"] for m in msgs if m["role"] == "system"]
            if not systems:
                st.without_system += 1
            for sp in systems:
                if sp in st.system_prompts or len(st.system_prompts) < _MAX_SYSTEM_PROMPTS:
                    st.system_prompts[sp] += 1
                else:
                    st.system_prompts_other += 1
        meta = rec.get("metadata") or {}
        if meta.get("source") == "syllo":
            st.syllo += 1
            st.difficulty[str(meta.get("difficulty", "unknown"))] += 1
            st.syllo_kinds[str(meta.get("kind", "unknown"))] += 1
            tpl = syllo_template(meta)
            if tpl is not None:
                st.templates.setdefault(tpl[0], Counter())[tpl[1]] += 1

    def duplicates(self, n: int, rec: dict) -> bool:
        """Count duplicates; True when the record is an exact copy of an earlier line of this file."""
        d = digest(rec)
        first = self.seen.get(d)
        if first is not None:
            self.dupe(n, "exact_within", f"line {first}")
            return True
        self.seen[d] = n
        if self.trained is not None and d in self.trained.exact:
            name, line = self.trained.exact[d]
            self.dupe(n, "exact_trained", f"{name}:{line}")
            return False
        sig = self.near.signature(example_text(rec))
        hit = self.trained.near.query(sig) if self.trained is not None else None
        if hit is not None:
            self.dupe(n, "near_trained", f"{hit[0][0]}:{hit[0][1]}", hit[1])
        else:
            hit = self.near.query(sig)
            if hit is not None:
                self.dupe(n, "near_within", f"line {hit[0]}", hit[1])
        self.near.add(n, sig)
        return False

    def tokens(self, n: int, rec: dict) -> None:
        from trainer.data.tokenization import TokenizationError, tokenize_example
        s, st = self.s, self.st
        index, self.kept = self.kept, self.kept + 1
        if self.tok is None:
            return
        if s.profile is not None and is_chat(rec):  # text records get no chat framing, as in training
            try:
                rec = s.profile.transform_example(rec, index, s.system_prompt)
            except ValueError as e:
                return self.error(n, "profile_invalid", str(e))
        try:
            t = tokenize_example(self.tok, rec, max_length=s.max_length, loss_on=s.loss_on, truncate=True)
        except TokenizationError as e:
            return self.error(n, e.reason, e.message)
        except Exception as e:  # a tokenizer failure is this line's problem, not the run's
            return self.error(n, "tokenization_error", f"{type(e).__name__}: {e}")
        st.tokenized += 1
        st.full_lengths[t["full_length"]] += 1
        if t["overlong"]:
            st.overlong += 1
            if s.overlong_policy == "drop":
                st.dropped_overlong += 1
                return
            if s.overlong_policy == "fail":
                st.rejected_overlong += 1
                return
            st.truncated += 1
        if t["n_labels"] == 0:
            st.no_labels += 1
            return
        st.trained_examples += 1
        st.trained_tokens += t["length"]
        st.assistant_tokens += t["n_labels"]


# ---------------------------------------------------------------- entry points
def collect_files(path: str | Path) -> list[Path]:
    """FILE, or the ``*.jsonl`` files of DIR (sorted, not recursive)."""
    p = Path(path)
    if p.is_dir():
        files = sorted(q for q in p.glob("*.jsonl") if q.is_file())
        if not files:
            raise AnalysisError(f"{p}: no .jsonl file in this folder")
        return files
    if not p.exists():
        raise AnalysisError(f"{p}: file does not exist")
    return [p]


def analyze_file(path: str | Path, tokenizer, settings: AnalysisSettings,
                 trained: TrainedIndex | None = None, progress: bool | None = None) -> tuple[dict, FileStats]:
    """(report, counts) of one file. An empty file (or one of blank lines only) is reported as
    ``errors`` with reason ``empty`` (line 0 for a file of zero bytes)."""
    p = Path(path)
    stats = _FileAnalysis(p, tokenizer, settings, trained).run(progress)
    if stats.examples == 0 and stats.n_errors == 0:
        stats.n_errors = 1
        stats.errors.append({"line": stats.lines, "field": "", "reason": "empty",
                             "message": "file has no examples (empty or only blank lines)"})
    return {"path": str(p), "ok": stats.n_errors == 0, **stats.to_dict(settings)}, stats


def analyze_paths(paths: Iterable[str | Path], tokenizer, settings: AnalysisSettings,
                  trained: TrainedIndex | None = None, progress: bool | None = None) -> dict:
    """``{"files": [report per file], "total": {...}, "trained": {...} | None, "settings": {...}}``.
    Each path is a file or a folder of ``*.jsonl``; ``AnalysisError`` when one is neither."""
    files = [f for p in paths for f in collect_files(p)]
    reports, total = [], FileStats()
    for f in files:
        rep, st = analyze_file(f, tokenizer, settings, trained, progress)
        reports.append(rep)
        total.merge(st)
    tot = {"path": "TOTAL", "files": len(files), "ok": all(r["ok"] for r in reports), **total.to_dict(settings)}
    del tot["errors"], tot["duplicates"]["examples"], tot["anomalies"]["examples"]
    return {"files": reports, "total": tot, "trained": trained.summary() if trained is not None else None,
            "settings": {"max_length": settings.max_length, "overlong_policy": settings.overlong_policy,
                         "loss_on": settings.loss_on, "drop_duplicates": settings.drop_duplicates,
                         "profile": getattr(settings.profile, "name", None),
                         "tokenizer": getattr(tokenizer, "name_or_path", None)}}


__all__ = ["AnalysisError", "AnalysisSettings", "FileStats", "analyze_file", "analyze_paths", "collect_files"]
