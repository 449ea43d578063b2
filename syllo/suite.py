#!/usr/bin/env python3
"""The fixed, versioned validation suite (``data/validation/``) and the guard that keeps it out of
training data.

The suite is generated once from a fixed seed (``SUITE_SEED``) by ``build_suite`` and committed:
``syllo_validation_<version>.jsonl`` (plain-profile chat records with full syllo metadata) plus
``MANIFEST.json``::

    {"suite": "syllo", "version": "v2", "seed": 20250501, "generator_version": 2,
     "counts": {"easy": 70, ...}, "n_items": 200,
     "files": {"syllo_validation_v2.jsonl": {"sha256": "...", "items": 200}},
     "wording_only_accuracy": {"easy": 0.5, ...}, "created_by": "tools/data/syllo_suite.py build"}

Versions: v2 (current) balances answers within every difficulty and question template (v1's
question wording alone predicted its answers well above chance) and its prompts state the logic's
reading. Earlier versions stay readable in a subfolder named after the version
(``data/validation/v1/``, with their own manifest): ``load_suite(suite_dir_for("v1"))``. The
training engine reads only the top folder's ``*.jsonl`` (the current suite) for validation loss.

It serves twice: the training engine computes validation loss on ``data/validation/*.jsonl``, and
the automated tests score every checkpoint on it. Scores are only comparable on the same suite,
so evaluations are stored under ``suite_version`` (``syllo-v2``), and ``load_suite`` refuses a
suite whose files no longer match their manifest hashes.

Leak guard: ``validation_fingerprints(dir)`` returns fingerprints of every suite item (archived
versions included) and ``contains_validation_items(records, fingerprints)`` the indices of training
records that contain one. A fingerprint is either ``k:`` + sha256 of the puzzle's canonical key
(sorted premises + question, parsed back from the prompt text, so re-ordered premises, another
profile's extra instructions or a different system prompt still match) or ``t:`` + sha256 of a
user turn's whitespace/case-normalised text (for any non-syllo item a suite may hold).

    python3 tools/data/syllo_suite.py build [--output data/validation] [--seed N] [--version v2]
    python3 tools/data/syllo_suite.py verify [--dir data/validation] [--version v1]
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable


from foundation.atomic_io import atomic_write_json, atomic_write_text
from foundation.json_lines import numbered_json_lines
from syllo.parsing import key_fingerprint
from syllo.puzzles import (GENERATOR_VERSION, canonical_key_of, normalize_text,
                                      parse_core, puzzle_from_metadata, render_record)

SUITE_NAME = "syllo"
SUITE_VERSION = "v2"
CURRENT_SUITE_VERSION = f"{SUITE_NAME}-{SUITE_VERSION}"  # what evaluations are stored under
SUITE_SEED = 20250501
SUITE_COUNTS = {"easy": 70, "medium": 60, "hard": 40, "expert": 30}
MANIFEST = "MANIFEST.json"
REPO_SUITE_DIR = Path(__file__).resolve().parents[1] / "data" / "validation"


class SuiteError(ValueError):
    """The suite folder is missing, incomplete, or does not match its manifest."""


@dataclass
class SuiteItem:
    index: int
    record: dict            # the plain chat record as stored
    file: str
    line: int

    @property
    def meta(self) -> dict:
        return self.record.get("metadata") or {}

    @property
    def difficulty(self) -> str:
        return str(self.meta.get("difficulty", "unknown"))

    @property
    def answer(self) -> str:
        return str(self.meta.get("answer", ""))


@dataclass
class Suite:
    dir: Path
    version: str            # e.g. "syllo-v1": the key evaluations are stored under
    manifest: dict
    items: list[SuiteItem]


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def suite_file_name(version: str = SUITE_VERSION) -> str:
    return f"syllo_validation_{version}.jsonl"


def build_suite(output: str | os.PathLike = REPO_SUITE_DIR, seed: int = SUITE_SEED,
                counts: dict[str, int] | None = None, version: str = SUITE_VERSION) -> dict:
    """Generate the suite deterministically and write it with its manifest. Returns the manifest.

    Items are drawn as the generator's (``syllo.batch.draw_items``, namespace ``syllo-suite``), so
    within every difficulty and question template the answers are balanced exactly when the
    level's count is even."""
    from syllo.analysis import wording_only_scores
    from syllo.batch import draw_items
    counts = dict(counts or SUITE_COUNTS)
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    lines: list[str] = []
    records: list[dict] = []
    seen: set[str] = set()
    for difficulty, n in counts.items():
        for pz in draw_items(seed, difficulty, n, namespace="syllo-suite", seen=seen):
            rec = render_record(pz, "plain", index=len(lines), seed=seed)
            records.append(rec)
            lines.append(json.dumps(rec, ensure_ascii=False))
    name = suite_file_name(version)
    atomic_write_text(out / name, "\n".join(lines) + "\n")
    manifest = {
        "suite": SUITE_NAME, "version": version, "seed": seed, "generator_version": GENERATOR_VERSION,
        "counts": counts, "n_items": len(lines),
        "files": {name: {"sha256": sha256_file(out / name), "items": len(lines)}},
        "created_by": "tools/data/syllo_suite.py build",
        "wording_only_accuracy": {k: v["accuracy"] for k, v in wording_only_scores(records).items()},
        "notes": "Fixed validation suite: never train on it (the training daemon refuses files containing its items). "
                 "Answers are balanced within every difficulty and question template; prompts state the "
                 "logic's reading (no existential import).",
    }
    atomic_write_json(out / MANIFEST, manifest)
    return manifest


def archived_suite_dirs(folder: str | os.PathLike = REPO_SUITE_DIR) -> list[Path]:
    """Earlier suite versions kept readable under ``<suite dir>/<version>/`` (each with its manifest)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(d for d in folder.iterdir() if d.is_dir() and (d / MANIFEST).is_file())


def suite_dir_for(version: str | None = None, folder: str | os.PathLike = REPO_SUITE_DIR) -> Path:
    """The folder of suite ``version`` ("v1" or "syllo-v1"; None: the current one)."""
    folder = Path(folder)
    if version is None:
        return folder
    v = version.removeprefix(f"{SUITE_NAME}-")
    if (folder / MANIFEST).is_file() and read_manifest(folder).get("version") == v:
        return folder
    cand = folder / v
    if (cand / MANIFEST).is_file():
        return cand
    known = [read_manifest(d)["version"] for d in [folder, *archived_suite_dirs(folder)] if (d / MANIFEST).is_file()]
    raise SuiteError(f"no suite version {version!r} under {folder} (known: {', '.join(known) or 'none'})")


def read_manifest(folder: str | os.PathLike) -> dict:
    folder = Path(folder)
    path = folder / MANIFEST
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SuiteError(f"{path}: no manifest (build the suite with tools/data/syllo_suite.py build)") from None
    except json.JSONDecodeError as e:
        raise SuiteError(f"{path}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
    for key in ("suite", "version", "files"):
        if key not in data:
            raise SuiteError(f"{path}: missing field '{key}'")
    return data


def suite_version_of(manifest: dict) -> str:
    return f"{manifest['suite']}-{manifest['version']}"


def verify_suite(folder: str | os.PathLike) -> dict:
    """Check every file named in the manifest against its sha256 and item count."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    for name, info in manifest["files"].items():
        p = folder / name
        if not p.is_file():
            raise SuiteError(f"{folder / MANIFEST}: field 'files.{name}': file {p} is missing")
        digest = sha256_file(p)
        if digest != info.get("sha256"):
            raise SuiteError(f"{p}: sha256 {digest} does not match the manifest ({info.get('sha256')}); "
                             "the suite was modified (rebuild it and bump its version)")
    return manifest


def load_suite(folder: str | os.PathLike = REPO_SUITE_DIR, *, verify: bool = True,
               max_items: int | None = None) -> Suite:
    folder = Path(folder)
    manifest = verify_suite(folder) if verify else read_manifest(folder)
    items: list[SuiteItem] = []
    for name in manifest["files"]:
        p = folder / name
        with open(p, encoding="utf-8") as f:
            for lineno, _, rec, error in numbered_json_lines(f):
                if error is not None:
                    raise SuiteError(f"{p}:{lineno}: invalid JSON: {error}")
                if not isinstance(rec, dict) or not isinstance(rec.get("messages"), list):
                    raise SuiteError(f"{p}:{lineno}: field 'messages': not a chat record")
                if "answer" not in (rec.get("metadata") or {}):
                    raise SuiteError(f"{p}:{lineno}: field 'metadata.answer' is missing")
                items.append(SuiteItem(len(items), rec, name, lineno))
    if max_items is not None:
        items = select_items(items, max_items)
    return Suite(folder, suite_version_of(manifest), manifest, items)


def select_items(items: list[SuiteItem], n: int) -> list[SuiteItem]:
    """A deterministic subset of ``n`` items keeping the difficulty mix (round robin over levels)."""
    if n >= len(items):
        return list(items)
    by: dict[str, list[SuiteItem]] = {}
    for it in items:
        by.setdefault(it.difficulty, []).append(it)
    out: list[SuiteItem] = []
    k = 0
    while len(out) < n:
        for lst in by.values():
            if k < len(lst) and len(out) < n:
                out.append(lst[k])
        k += 1
    return sorted(out, key=lambda it: it.index)


def resolve_suite_dir(base_dir: str | os.PathLike | None = None, configured: str | None = None) -> Path:
    """The suite folder for a runtime base dir: ``<base>/<data.validation_dir>`` when it holds a
    manifest, else the suite committed in the repository."""
    if base_dir is not None:
        cand = Path(configured or "data/validation")
        cand = cand if cand.is_absolute() else Path(base_dir) / cand
        if (cand / MANIFEST).is_file():
            return cand
    return REPO_SUITE_DIR


def install_suite(base_dir: str | os.PathLike) -> Path:
    """Copy the committed suite into a base dir's data/validation/ (for base dirs outside the repo)."""
    dst = Path(base_dir) / "data" / "validation"
    dst.mkdir(parents=True, exist_ok=True)
    manifest = verify_suite(REPO_SUITE_DIR)
    for name in [*manifest["files"], MANIFEST]:
        # copied with atomic writes so a reader never sees half a file
        atomic_write_text(dst / name, (REPO_SUITE_DIR / name).read_text(encoding="utf-8"))
    return dst


# --------------------------------------------------------------------------- leak guard
def _h(prefix: str, text: str) -> str:
    return prefix + hashlib.sha256(text.encode("utf-8")).hexdigest()


def _texts_of(record: Any) -> list[str]:
    """User-side texts of a training record in any accepted input format."""
    if isinstance(record, str):
        try:
            record = json.loads(record)
        except json.JSONDecodeError:
            return [record]
    if not isinstance(record, dict):
        return []
    out: list[str] = []
    msgs = record.get("messages")
    if isinstance(msgs, list):
        for m in msgs:
            if isinstance(m, dict) and m.get("role") == "user" and isinstance(m.get("content"), str):
                out.append(m["content"])
    for key in ("prompt", "instruction", "input", "text"):
        v = record.get(key)
        if isinstance(v, str):
            out.append(v)
        elif isinstance(v, list):  # conversational prompt
            out.extend(m["content"] for m in v if isinstance(m, dict) and m.get("role") == "user"
                       and isinstance(m.get("content"), str))
    return out


def fingerprints_of_text(text: str) -> set[str]:
    fps = {_h("t:", normalize_text(text))}
    key = parse_core(text)
    if key is not None:
        fps.add(key_fingerprint(key))
    return fps


def validation_fingerprints(validation_dir: str | os.PathLike) -> set[str]:
    """Fingerprints of every item in every ``*.jsonl`` of the folder and of the archived suite
    versions in its subfolders (empty set when none): an old suite's items stay out of training,
    so its scores stay meaningful for the models it measured."""
    folder = Path(validation_dir)
    fps: set[str] = set()
    if not folder.is_dir():
        return fps
    for p in sorted(folder.rglob("*.jsonl")):
        with open(p, encoding="utf-8", errors="replace") as f:
            for line in f:
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue
                for text in _texts_of(rec):
                    fps |= fingerprints_of_text(text)
                meta = rec.get("metadata") if isinstance(rec, dict) else None
                if isinstance(meta, dict) and meta.get("source") == "syllo":
                    try:
                        fps.add(key_fingerprint(canonical_key_of(puzzle_from_metadata(meta))))
                    except ValueError:
                        pass
    return fps


def contains_validation_items(records: Iterable[Any], fingerprints: set[str]) -> list[int]:
    """0-based indices (line indices for a file read line by line) of the records that contain a
    validation item. ``records`` may be parsed dicts (any accepted input format) or raw JSON lines."""
    if not fingerprints:
        return []
    hits: list[int] = []
    for i, rec in enumerate(records):
        for text in _texts_of(rec):
            if fingerprints_of_text(text) & fingerprints:
                hits.append(i)
                break
    return hits


def file_contains_validation_items(path: str | os.PathLike, fingerprints: set[str]) -> list[int]:
    """1-based line numbers of a JSONL file's lines that contain a validation item."""
    with open(path, encoding="utf-8", errors="replace") as f:
        return [i + 1 for i in contains_validation_items((ln for ln in f), fingerprints)]


def main(argv: list[str] | None = None) -> int:
    import argparse
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="(re)generate the suite from its fixed seed")
    b.add_argument("--output", default=str(REPO_SUITE_DIR))
    b.add_argument("--seed", type=int, default=SUITE_SEED)
    b.add_argument("--version", default=SUITE_VERSION)
    v = sub.add_parser("verify", help="check the suite against its manifest")
    v.add_argument("--dir", default=str(REPO_SUITE_DIR))
    v.add_argument("--version", default=None, help="an archived version (e.g. v1) under --dir")
    a = ap.parse_args(argv)
    try:
        if a.cmd == "build":
            m = build_suite(a.output, seed=a.seed, version=a.version)
        else:
            m = verify_suite(suite_dir_for(a.version, a.dir))
    except SuiteError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(json.dumps(m, indent=2))
    return 0
