"""Self-correction loop: check what is trained, learn from what the model gets wrong, and write
correction examples.

One pass:

1. **Quality of the training data** (``data_quality.check_records``): every data file waiting in or
   done by the queue (``queue/{high,normal,low,processing,recently_completed}/*.jsonl``) is checked
   once (per name and size); flags go to ``data/flagged_examples/<file>.flagged.jsonl`` (atomic), one
   line per flagged example: ``file``, ``line``, ``reason`` (wrong_answer | duplicate |
   format_drift), ``detail``, ``record``.
2. **Error patterns**: the newest evaluation's failures (the model registry's evaluation details;
   the failing suite items are looked up in the suite by id for their pattern) and the adversarial
   miner's last probe failures (``status/adversarial_mining.json`` ``recent_failures``) are grouped
   by pattern (``patterns.pattern_of``) into ``logs/error_patterns/<source>-<time>.json``:
   ``{source, ref, at, n_failures, groups: [{key, pattern fields, n, examples: [{id, answered,
   expected}]}]}``. Each evaluation and each probe is processed once (cursors in the status).
   Suite prompts are not copied: a failure is referred to by the item's id.
3. **Corrections**: for the most frequent failing patterns, ``selfcorrect_per_pattern`` NEW puzzles
   of the pattern (never a suite item: fingerprint check before writing) with the right answer and,
   for the emoji_think profile, a correct explanation derived by the logic (``explain``; STaR,
   arXiv 2203.14465) go to ``queue/corrections/corr-<time>-<rand>.jsonl`` (atomic). The training
   daemon is to train that folder like a queue level; while its status shows it does not
   (``queue.corrections`` missing), ``selfcorrect_to_inbox: auto`` also copies the file into
   ``inbox/high/``.

``status/self_correction.json``: ``state``, ``checked_files``, ``flagged_total``, ``flagged_by_reason``,
``last_flagged`` (file, n, by reason), ``cursors`` (evaluation_id, probe_id), ``error_pattern_files``
(last 20), ``corrections_total``, ``last_correction`` (file, n, patterns, queued_as), ``delivery``,
``inputs`` (problems with inputs, e.g. a malformed miner status).
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from foundation.atomic_io import atomic_write_json
from foundation.paths import PRIORITIES
from monitoring.autonomy.data_quality import check_records
from monitoring.autonomy.explain import reasoned_answer
from monitoring.autonomy.inputs import as_dict, as_list, read_input
from monitoring.autonomy.patterns import (check_no_leak, generated_record, parse_key, pattern_key, pattern_of,
                                          queue_copy, records_like, remember, suite_fingerprints, training_profile, with_replay,
                                          unique_name, write_records)
from monitoring.autonomy.sidecar import Sidecar, click_command

CHECKED_FOLDERS = (*PRIORITIES, "processing", "recently_completed")
MAX_CHECKED = 1000
MAX_LINES = 50_000
MAX_EXAMPLES = 5
REASONING_PROFILES = ("emoji_think",)


def group_failures(failures: list[dict]) -> list[dict]:
    """``[{pattern fields..., id, answered, expected}]`` -> groups, most failures first."""
    groups: dict[str, dict] = {}
    for f in failures:
        key = pattern_key(f)
        g = groups.setdefault(key, {"key": key, **{k: f.get(k) for k in ("difficulty", "premise_forms",
                                                                           "question_form", "n_terms")},
                                    "n": 0, "examples": []})
        g["n"] += 1
        if len(g["examples"]) < MAX_EXAMPLES:
            g["examples"].append({"id": f.get("id"), "answered": f.get("answered"), "expected": f.get("expected")})
    return sorted(groups.values(), key=lambda g: (-g["n"], g["key"]))


class SelfCorrectionLoop(Sidecar):
    name = "self_correction_loop"
    status_name = "self_correction"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        prev, _ = read_input(self.status_path)  # cursors and totals survive restarts
        prev = prev or {}
        for key, default in (("checked_files", []), ("cursors", {}), ("flagged_total", 0),
                             ("flagged_by_reason", {}), ("corrections_total", 0), ("error_pattern_files", [])):
            self.doc[key] = prev.get(key, default)
        self._suite_meta: dict[str, dict] | None = None

    def interval(self) -> float:
        return float(self.cfg.autonomy.selfcorrect_interval)

    def run_once(self) -> dict[str, Any]:
        inputs: list[str] = []
        fields: dict[str, Any] = {"state": "idle", "inputs": inputs}
        fields.update(self._check_data())
        exclude = suite_fingerprints(self.paths, self.cfg)
        if not exclude:
            inputs.append("no validation suite found: corrections cannot be checked against it; none written")
        groups: list[tuple[str, list[dict]]] = []
        for source, ref, failures in (self._evaluation_failures(inputs), self._probe_failures(inputs)):
            if failures is None:
                continue
            grouped = group_failures(failures)
            groups.append((source, grouped))
            path = self.paths.logs / "error_patterns" / f"{source}-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{os.urandom(2).hex()}.json"
            atomic_write_json(path, {"source": source, "ref": ref, "at": self.now(), "n_failures": len(failures),
                                     "groups": grouped})
            fields["error_pattern_files"] = (as_list(self.doc.get("error_pattern_files"))
                                             + [str(path.relative_to(self.paths.base))])[-20:]
            self.log.info("%s %s: %d failures in %d patterns -> %s", source, ref, len(failures), len(grouped), path.name)
        if groups and exclude:
            fields.update(self._write_corrections(groups, exclude))
        return fields

    # ------------------------------------------------------------------ 1. data quality
    def _check_data(self) -> dict[str, Any]:
        from trainer.profiles import get_profile
        profile = get_profile(self.cfg.profile.name, self.cfg.profile.options)
        accepted = {self.cfg.profile.name, training_profile(self.cfg.profile.name)}
        checked = as_list(self.doc.get("checked_files"))
        by_reason = dict(as_dict(self.doc.get("flagged_by_reason")))
        total = int(self.doc.get("flagged_total") or 0)
        last = self.doc.get("last_flagged")
        for folder in CHECKED_FOLDERS:
            d = self.paths.queue / folder
            try:
                names = sorted(n for n in os.listdir(d) if n.endswith(".jsonl") and not n.startswith("."))
            except OSError:
                continue
            for name in names:
                try:
                    ident = f"{name}:{(d / name).stat().st_size}"
                    if ident in checked:
                        continue
                    with open(d / name, encoding="utf-8", errors="replace") as fh:
                        flags = list(check_records((ln for i, ln in enumerate(fh) if i < MAX_LINES), profile, accepted))
                except OSError:
                    continue  # moved by the daemon meanwhile: checked under its new folder next pass
                checked = (checked + [ident])[-MAX_CHECKED:]
                if not flags:
                    continue
                rel = str((d / name).relative_to(self.paths.base))
                out = self.paths.data / "flagged_examples" / f"{Path(name).stem}.flagged.jsonl"
                write_records(out, [{"file": rel, **f} for f in flags])
                counts: dict[str, int] = {}
                for f in flags:
                    counts[f["reason"]] = counts.get(f["reason"], 0) + 1
                    by_reason[f["reason"]] = by_reason.get(f["reason"], 0) + 1
                total += len(flags)
                last = {"file": rel, "flagged": str(out.relative_to(self.paths.base)), "n": len(flags),
                        "by_reason": counts, "at": self.now()}
                self.log.info("%s: %d flagged %s -> %s", rel, len(flags), counts, out.name)
        return {"checked_files": checked, "flagged_total": total, "flagged_by_reason": by_reason, "last_flagged": last}

    # ------------------------------------------------------------------ 2. error patterns
    def _suite_metas(self, inputs: list[str]) -> dict[str, dict]:
        if self._suite_meta is None:
            from syllo.suite import SuiteError, load_suite, resolve_suite_dir
            try:
                suite = load_suite(resolve_suite_dir(self.paths.base, self.cfg.data.validation_dir), verify=False)
                self._suite_meta = {str(it.meta.get("id")): it.meta for it in suite.items}
            except (SuiteError, OSError) as e:
                inputs.append(f"validation suite unreadable: {e}")
                return {}
        return self._suite_meta

    def _evaluation_failures(self, inputs: list[str]) -> tuple[str, Any, list[dict] | None]:
        if not self.paths.model_db.exists():
            inputs.append("model registry: none yet (no evaluation to learn from)")
            return "evaluation", None, None
        from foundation.model_db import ModelDB
        db = ModelDB(self.paths.model_db, base_dir=self.paths.base)
        try:
            evals = db.latest_evaluations(with_details=True)
        finally:
            db.close()
        if not evals:
            return "evaluation", None, None
        newest = max(evals, key=lambda e: e["id"])
        cursors = dict(as_dict(self.doc.get("cursors")))
        if newest["id"] <= int(cursors.get("evaluation_id") or 0):
            return "evaluation", newest["id"], None
        cursors["evaluation_id"] = newest["id"]
        self.doc["cursors"] = cursors
        metas = self._suite_metas(inputs)
        out = []
        for f in as_list(as_dict(newest.get("details")).get("failures")):
            meta = metas.get(str(f.get("id")))
            if meta is None:
                continue  # an item of another suite version: its pattern is unknown
            out.append({**pattern_of(meta), "id": f.get("id"), "answered": f.get("got"), "expected": f.get("expected")})
        return "evaluation", {"evaluation_id": newest["id"], "checkpoint": newest["checkpoint_path"],
                              "global_step": newest["global_step"], "suite_version": newest["suite_version"]}, out

    def _probe_failures(self, inputs: list[str]) -> tuple[str, Any, list[dict] | None]:
        doc, problem = read_input(self.paths.status_file("adversarial_mining.json"))
        if problem:
            inputs.append(problem)
            return "probe", None, None
        probe = as_dict(doc.get("probe"))
        pid = probe.get("id")
        cursors = dict(as_dict(self.doc.get("cursors")))
        if not isinstance(pid, int) or pid <= int(cursors.get("probe_id") or 0):
            return "probe", pid, None
        cursors["probe_id"] = pid
        self.doc["cursors"] = cursors
        out = []
        for f in as_list(doc.get("recent_failures")):
            if isinstance(f, dict) and isinstance(f.get("key"), str):
                out.append({**parse_key(f["key"]), "id": f.get("id"), "answered": f.get("got"),
                            "expected": f.get("expected")})
        return "probe", {"probe_id": pid, "at": probe.get("at")}, out

    # ------------------------------------------------------------------ 3. corrections
    def _write_corrections(self, groups: list[tuple[str, list[dict]]], exclude: set[str]) -> dict[str, Any]:
        from syllo.batch import fingerprints_of_records
        from syllo.puzzles import puzzle_from_metadata
        a = self.cfg.autonomy
        reasoning = self.cfg.profile.name in REASONING_PROFILES
        exclude = exclude | generated_record(self.paths).load()
        run = os.urandom(6).hex()
        records: list[dict] = []
        per: dict[str, int] = {}
        for source, grouped in groups:
            for g in grouped[:a.selfcorrect_max_patterns]:
                got = records_like(g, a.selfcorrect_per_pattern, f"corr:{run}:{source}:{g['key']}", exclude,
                                   self.cfg.profile.name)
                exclude |= fingerprints_of_records(got)
                for rec in got:
                    rec["metadata"].update(source_kind="correction", corrects=g["key"], from_failures_of=source)
                    if reasoning:  # the right answer with a derivation (STaR-style rationale)
                        rec["messages"][-1]["content"] = reasoned_answer(puzzle_from_metadata(rec["metadata"]))
                records += got
                if got:
                    per[g["key"]] = per.get(g["key"], 0) + len(got)
        if not records:
            return {}

        def explain(rec: dict) -> None:  # replayed puzzles get the same reasoned answer as the targeted ones
            rec["messages"][-1]["content"] = reasoned_answer(puzzle_from_metadata(rec["metadata"]))
        records = with_replay(records, a.replay_ratio, f"corr:{run}", exclude, self.cfg.profile.name,
                              explain if reasoning else None)
        check_no_leak(records, suite_fingerprints(self.paths, self.cfg), "corrections")
        remember(self.paths, records)  # before the file is visible: no generator repeats them
        path = write_records(self.paths.queue / "corrections" / unique_name("corr"), records)
        delivery = self._delivery()
        queued = queue_copy(path, self.paths, "high") if delivery == "inbox/high" else None
        self.log.info("wrote %d corrections of %d patterns to %s (delivery: %s)", len(records), len(per), path.name, delivery)
        return {"corrections_total": int(self.doc.get("corrections_total") or 0) + len(records), "delivery": delivery,
                "last_correction": {"file": str(path.relative_to(self.paths.base)), "n": len(records), "patterns": per,
                                    "queued_as": None if queued is None else str(queued.relative_to(self.paths.base)),
                                    "at": self.now()}}

    def _delivery(self) -> str:
        mode = self.cfg.autonomy.selfcorrect_to_inbox
        if mode == "auto":
            doc, _ = read_input(self.paths.status_file("training_status.json"))
            claims = "corrections" in as_dict(as_dict(doc).get("queue"))
            return "queue/corrections" if claims else "inbox/high"
        return "inbox/high" if mode == "always" else "queue/corrections"


def make(base_dir=None, config=None, **kw: Any) -> SelfCorrectionLoop:
    return SelfCorrectionLoop(base_dir, config, **kw)


selfcorrect_command = click_command(make, SelfCorrectionLoop.name, "Flag wrong/duplicate/drifted training examples, log error patterns, write corrections (queue/corrections/).")
