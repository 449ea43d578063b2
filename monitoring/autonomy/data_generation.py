"""Data generation automation: keeps the trainer fed with fresh, balanced syllo puzzles.

Every ``autonomy.datagen_interval`` seconds it looks at the training queue. While the queue holds
fewer than ``autonomy.datagen_min_queue`` files (``inbox/`` with its ``high``/``low`` folders plus
``queue/{high,normal,low,processing}``) and the base dir's disk has at least
``autonomy.datagen_min_free_mb`` free, it generates one batch of ``autonomy.datagen_batch_size``
puzzles and drops it into ``inbox/`` atomically: written aside in ``data/generated/`` (temp file +
rename), then renamed into ``inbox/``, so the inbox watcher never sees half a file. One batch per
pass at most, and none while the queue is at its bound: it never floods.

The mix is the one the curriculum optimizer recommends (``status/curriculum_optimization.json``,
field ``mix``: ``{"easy": 0.5, ...}``); while that file is missing or its mix is malformed,
``autonomy.datagen_default_mix`` (easy-heavy), and the status says why.

No repeats, no leaks: every puzzle is excluded when its fingerprint is in the persistent record of
everything generated into this base dir (``data/generated/.fingerprints``, ``syllo.fingerprint_record``)
or in the validation suite (the base dir's and the repository's, archived versions included); the
batch is checked once more with ``contains_validation_items`` before it is written. The record is
updated before the file becomes visible. Seeds go up by one per batch (``next_seed``; the first is
the clock's seconds), though the record alone already rules out repeats.

``status/data_generation.json`` (``schema_version``, ``updated_at``, ``pid``, ``heartbeat_at`` and):

* ``state``: ``starting`` | ``generated`` | ``waiting`` | ``error`` | ``stopped``
* ``waiting_reason``: why no batch was made in the last pass (null after a batch)
* ``queue_depth``, ``min_queue``, ``free_mb``, ``min_free_mb``
* ``mix``, ``mix_source`` (``curriculum`` | ``default``), ``mix_problem`` (null or why the
  curriculum's mix was not used)
* ``batches_made``, ``items_made``, ``items_by_difficulty``, ``seeds_used`` (last 100), ``next_seed``
* ``last_batch``: null or ``{file, seed, count, by_difficulty, mix, wording_only_accuracy, at}``
* ``suite_fingerprints``, ``suite_problem``, ``recorded_fingerprints``
* ``passes``, ``last_pass_at``, ``last_error``, ``errors`` (``monitoring.autonomy.sidecar``)

Counters survive a restart (read back from the previous status file).

    python3 monitoring/data_generation_automation.py [--base-dir D] [--once] [--json]
    trainctl datagen [--base-dir D] [--once] [--json]
"""
from __future__ import annotations

import os
import re
import shutil
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from foundation.paths import QUEUE_LEVELS
from foundation.status_io import read_status
from monitoring.autonomy.inputs import read_input
from monitoring.autonomy.sidecar import Sidecar, click_command

NAME = "data_generation"
CURRICULUM_STATUS = "curriculum_optimization.json"
TAG_RE = re.compile(r"^[A-Za-z0-9._-]{1,48}$")
MAX_SEEDS = 100
MIB = 1024 * 1024
FALLBACK_MIX = {"easy": 0.6, "medium": 0.3, "hard": 0.1}  # when even the configured default is malformed


class DataGeneration(Sidecar):
    name = NAME

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        from syllo.fingerprint_record import FingerprintRecord
        self.record = FingerprintRecord.for_base(self.paths.base)
        prev = read_status(self.status_path) or {}
        by = prev.get("items_by_difficulty")
        seeds = prev.get("seeds_used")
        self.doc.update({
            "waiting_reason": None, "queue_depth": None, "min_queue": self.cfg.autonomy.datagen_min_queue,
            "free_mb": None, "min_free_mb": self.cfg.autonomy.datagen_min_free_mb,
            "mix": None, "mix_source": None, "mix_problem": None,
            "batches_made": _int(prev.get("batches_made")), "items_made": _int(prev.get("items_made")),
            "items_by_difficulty": {k: _int(v) for k, v in by.items()} if isinstance(by, dict) else {},
            "seeds_used": [s for s in seeds if isinstance(s, int)][-MAX_SEEDS:] if isinstance(seeds, list) else [],
            "next_seed": prev.get("next_seed") if isinstance(prev.get("next_seed"), int) else None,
            "last_batch": prev.get("last_batch") if isinstance(prev.get("last_batch"), dict) else None,
            "suite_fingerprints": None, "suite_problem": None, "recorded_fingerprints": None,
        })

    def interval(self) -> float:
        return float(self.cfg.autonomy.datagen_interval)

    # ------------------------------------------------------------------ inputs
    def queue_depth(self) -> int:
        """Data files waiting or training: inbox/ (+ high/, low/) and queue/{high,corrections,normal,low,processing}."""
        folders = [self.paths.inbox, self.paths.inbox / "high", self.paths.inbox / "low",
                   *(self.paths.queue_dir(q) for q in (*QUEUE_LEVELS, "processing"))]
        n = 0
        for d in folders:
            try:
                n += sum(1 for e in os.scandir(d) if e.is_file() and not e.name.startswith("."))
            except FileNotFoundError:
                continue
        return n

    def current_mix(self) -> tuple[dict[str, float], str, str | None]:
        """(mix, source, problem): the curriculum's recommendation, or the default and why."""
        from syllo.mix import MixError, mix_from_mapping
        try:
            default = mix_from_mapping(self.cfg.autonomy.datagen_default_mix)
        except MixError as e:
            default = dict(FALLBACK_MIX)
            self.log.error("autonomy.datagen_default_mix is malformed (%s); using %s", e, FALLBACK_MIX)
        doc, problem = read_input(self.paths.status_file(CURRICULUM_STATUS))
        if doc is None:
            return default, "default", problem
        if "mix" not in doc:
            return default, "default", f"{CURRICULUM_STATUS}: no 'mix' field yet; using the default mix"
        try:
            return mix_from_mapping(doc["mix"]), "curriculum", None
        except MixError as e:
            return default, "default", f"{CURRICULUM_STATUS}: field 'mix' is malformed ({e}); using the default mix"

    def batch_tag(self) -> str | None:
        """The curriculum's A/B tag for the next batch (it goes into the file name, so the curriculum
        can attribute what this batch taught to the strategy that chose its mix)."""
        doc, _ = read_input(self.paths.status_file(CURRICULUM_STATUS))
        tag = (doc or {}).get("batch_tag")
        return tag if isinstance(tag, str) and TAG_RE.match(tag) else None

    def suite_fingerprints(self) -> tuple[set[str], str | None]:
        from syllo.suite import REPO_SUITE_DIR, resolve_suite_dir, validation_fingerprints
        folder = resolve_suite_dir(self.paths.base, self.cfg.data.validation_dir)
        fps = validation_fingerprints(self.paths.validation) | validation_fingerprints(folder) \
            | validation_fingerprints(REPO_SUITE_DIR)
        if not fps:
            return fps, (f"the validation suite is empty or missing ({folder}); nothing to keep out of the "
                         "batches, generating anyway")
        return fps, None

    def free_mb(self) -> float:
        return shutil.disk_usage(self.paths.base).free / MIB

    # ------------------------------------------------------------------ one pass
    def run_once(self) -> dict[str, Any]:
        a = self.cfg.autonomy
        mix, source, problem = self.current_mix()
        if problem:
            self.log.warning("%s", problem)
        depth = self.queue_depth()
        free = self.free_mb()
        mix = {k: round(v, 4) for k, v in mix.items()}
        fields: dict[str, Any] = {"mix": mix, "mix_source": source, "mix_problem": problem, "queue_depth": depth,
                                  "free_mb": round(free, 1), "min_queue": a.datagen_min_queue,
                                  "min_free_mb": a.datagen_min_free_mb}
        if not a.datagen_enabled:
            return self._wait(fields, "disabled by config autonomy.datagen_enabled = false")
        if depth >= a.datagen_min_queue:
            return self._wait(fields, f"the training queue holds {depth} file(s) "
                                      f"(>= autonomy.datagen_min_queue {a.datagen_min_queue})")
        if free < a.datagen_min_free_mb:
            return self._wait(fields, f"free disk {free:.0f} MiB is below autonomy.datagen_min_free_mb "
                                      f"{a.datagen_min_free_mb:.0f} MiB")
        fps, suite_problem = self.suite_fingerprints()
        if suite_problem:
            self.log.warning("%s", suite_problem)
        fields.update(suite_fingerprints=len(fps), suite_problem=suite_problem)
        fields.update(self._make_batch(mix, fps))
        return fields

    def _wait(self, fields: dict[str, Any], reason: str) -> dict[str, Any]:
        if reason != self.doc.get("waiting_reason"):
            self.log.info("waiting: %s", reason)
        return {**fields, "state": "waiting", "waiting_reason": reason}

    def _make_batch(self, mix: dict[str, float], suite_fps: set[str]) -> dict[str, Any]:
        from foundation.atomic_io import atomic_write_text
        from syllo.analysis import wording_only_scores
        from syllo.batch import fingerprints_of_records, generate_batch
        from syllo.puzzles import dumps_record
        from syllo.suite import contains_validation_items
        seed = self.doc.get("next_seed")
        if not isinstance(seed, int):
            seed = int(self.clock() if self.clock else datetime.now(timezone.utc).timestamp())
        recorded = self.record.load()
        recs = generate_batch(self.cfg.autonomy.datagen_batch_size, mix, seed=seed, profile="plain",
                              exclude=suite_fps | recorded)
        leaks = contains_validation_items(recs, suite_fps)
        if leaks:  # defence in depth: generate_batch excluded them already
            raise RuntimeError(f"batch of seed {seed} holds {len(leaks)} validation item(s); not written")
        added = self.record.add(fingerprints_of_records(recs))  # before the file is visible
        stamp = datetime.fromtimestamp(self.clock() if self.clock else datetime.now(timezone.utc).timestamp(),
                                       timezone.utc).strftime("%Y%m%dT%H%M%S")
        tag = self.batch_tag()
        name = _free_name(self.paths.inbox, f"datagen-{tag + '-' if tag else ''}{stamp}-s{seed}.jsonl")
        aside = self.paths.generated / name
        atomic_write_text(aside, "".join(dumps_record(r) + "\n" for r in recs))
        self.paths.inbox.mkdir(parents=True, exist_ok=True)
        os.replace(aside, self.paths.inbox / name)  # same file system: atomic, never half a file
        by = Counter(r["metadata"]["difficulty"] for r in recs)
        totals = dict(self.doc.get("items_by_difficulty") or {})
        for k, v in by.items():
            totals[k] = totals.get(k, 0) + v
        last = {"file": f"inbox/{name}", "batch_tag": tag, "seed": seed, "count": len(recs), "by_difficulty": dict(by),
                "mix": mix, "wording_only_accuracy": {k: v["accuracy"] for k, v in wording_only_scores(recs).items()},
                "at": self.now()}
        self.log.info("generated %s: %d items %s (seed %d, %d new fingerprints)", name, len(recs), dict(by), seed, added)
        return {"state": "generated", "waiting_reason": None, "last_batch": last,
                "batches_made": self.doc["batches_made"] + 1, "items_made": self.doc["items_made"] + len(recs),
                "items_by_difficulty": totals, "seeds_used": (self.doc["seeds_used"] + [seed])[-MAX_SEEDS:],
                "next_seed": seed + 1, "recorded_fingerprints": len(recorded) + added,
                "queue_depth": self.queue_depth()}


def _int(x: Any) -> int:
    return x if isinstance(x, int) and not isinstance(x, bool) and x >= 0 else 0


def _free_name(folder: Path, name: str) -> str:
    stem, ext = name.rsplit(".", 1)
    k = 1
    while (folder / name).exists():
        k += 1
        name = f"{stem}-{k}.{ext}"
    return name


def build(base_dir=None, config=None, **kwargs: Any) -> DataGeneration:
    return DataGeneration(base_dir, config, **kwargs)


datagen_command = click_command(build, NAME, "Keep the training queue fed with fresh, balanced syllo batches "
                                             "(status/data_generation.json).")
