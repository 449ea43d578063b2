"""Adversarial miner: probe the deployed model with freshly generated puzzles, find the patterns it
fails, and queue new puzzles of exactly those patterns for training at high priority.

One pass:

1. ``/models/info`` of the inference server (``PredictionClient.from_config``); when it does not
   answer (down, no model loaded) the status says so (``state: waiting``, ``server.error``) and the
   next pass tries again.
2. A probe set of ``autonomy.miner_probe_size`` NEW puzzles spread over ``curriculum_levels``. Never
   the validation suite: every puzzle whose fingerprint is a suite item's is re-drawn (mining the
   suite's failures would leak the test into training).
3. Greedy answers through the server (``monitoring.evaluation.server_mode.evaluate_via_server``, the
   scoring the automated tests use), grouped by pattern (``monitoring.autonomy.patterns``:
   difficulty, premise forms, question form, term count).
4. For the ``miner_max_patterns`` hardest failing patterns, ``miner_examples_per_pattern`` new
   puzzles of that pattern (not the probe's, not the suite's) are written atomically to
   ``data/adversarial_examples/adv-<time>-<rand>.jsonl`` and copied atomically into ``inbox/high/``
   (the daemon validates them like any file). Mining waits while ``miner_max_queued`` adversarial
   files are still waiting in inbox/high/ or queue/high/, so it never floods the queue.

``status/adversarial_mining.json``: ``state``, ``server`` (url, reachable, version, global_step,
profile, error), ``probe`` (id, at, n, correct, accuracy, by_difficulty {level: n, correct,
accuracy}, by_pattern [hardest first: key, the pattern's fields, n, correct, accuracy]),
``hardest_patterns``, ``recent_failures`` (the last probe's, at most 50: key, id, expected, got),
``examples_mined_total``, ``last_mined`` (file, queued_as, n, patterns), ``files`` (the last 20),
``mining`` (why nothing was mined, when so), ``inputs`` (problems with inputs, e.g. no suite found).
"""
from __future__ import annotations

import os
from typing import Any

from monitoring.autonomy.inputs import as_list, read_input
from monitoring.autonomy.patterns import (check_no_leak, generated_record, pattern_key, pattern_of, probe_records,
                                          queue_copy, records_like, remember, suite_fingerprints, unique_name, with_replay,
                                          write_records)
from monitoring.autonomy.sidecar import Sidecar, click_command

PREFIX = "adv"
MAX_FAILURES = 50
MAX_FILES = 20
MAX_PATTERNS_IN_STATUS = 50


def group_by_pattern(metas: list[dict], rows: list[dict]) -> list[dict]:
    """Per-pattern n / correct / accuracy of scored ``rows`` (``index`` into ``metas``), hardest first."""
    groups: dict[str, dict] = {}
    for row in rows:
        p = pattern_of(metas[row["index"]])
        g = groups.setdefault(pattern_key(p), {"key": pattern_key(p), **p, "n": 0, "correct": 0})
        g["n"] += 1
        g["correct"] += int(bool(row["correct"]))
    for g in groups.values():
        g["accuracy"] = round(g["correct"] / g["n"], 4)
    return sorted(groups.values(), key=lambda g: (g["accuracy"], -g["n"], g["key"]))


class AdversarialMiner(Sidecar):
    name = "adversarial_miner"
    status_name = "adversarial_mining"

    def __init__(self, *args: Any, client: Any = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.client = client
        prev, _ = read_input(self.status_path)  # totals survive restarts
        prev = prev or {}
        self.doc["examples_mined_total"] = int(prev.get("examples_mined_total") or 0)
        self.doc["files"] = as_list(prev.get("files"))
        self.doc["probe_id"] = int(prev.get("probe_id") or 0)

    def interval(self) -> float:
        return float(self.cfg.autonomy.miner_interval)

    def _client(self):
        if self.client is None:
            from monitoring.prediction_client import PredictionClient
            self.client = PredictionClient.from_config(self.paths.base)
        return self.client

    def run_once(self) -> dict[str, Any]:
        from monitoring.prediction_client import PredictionError
        client = self._client()
        url = getattr(client, "base_url", None)
        try:
            info = client.info()
        except PredictionError as e:
            self.log.warning("inference server not available: %s", e)
            return {"state": "waiting", "server": {"url": url, "reachable": False, "error": str(e)},
                    "mining": f"inference server not available; retrying in {self.interval():.0f}s"}
        info = info if isinstance(info, dict) else {}
        server = {"url": url, "reachable": True, "version": info.get("version"),
                  "global_step": info.get("global_step"), "profile": info.get("profile"), "error": None}
        inputs: list[str] = []
        exclude = suite_fingerprints(self.paths, self.cfg)
        if not exclude:
            inputs.append("no validation suite found (data/validation/ and the repository's are empty): "
                          "nothing to exclude")
        a = self.cfg.autonomy
        exclude |= generated_record(self.paths).load()  # never probe with what was trained on
        # a fresh probe set every pass: a new seed, answers balanced within each level
        probe = probe_records(a.miner_probe_size, list(a.curriculum_levels), f"probe:{os.urandom(8).hex()}", exclude)
        try:
            res, metas = self._probe(client, probe, info.get("profile") or self.cfg.profile.name)
        except PredictionError as e:
            self.log.warning("probe interrupted: %s", e)
            return {"state": "waiting", "server": {**server, "reachable": False, "error": str(e)},
                    "mining": f"probe interrupted ({e}); retrying in {self.interval():.0f}s"}
        by_pattern = group_by_pattern(metas, res["items"])
        probe_id = int(self.doc.get("probe_id") or 0) + 1
        failures = [{"key": pattern_key(pattern_of(metas[f["index"]])), **pattern_of(metas[f["index"]]),
                     "id": metas[f["index"]].get("id"), "expected": f["expected"], "got": f["got"]}
                    for f in res["failures"]][:MAX_FAILURES]
        failing = [g for g in by_pattern if g["correct"] < g["n"]]
        fields: dict[str, Any] = {
            "state": "idle", "server": server, "inputs": inputs, "probe_id": probe_id,
            "probe": {"id": probe_id, "at": self.now(), "n": res["n_items"], "correct": res["n_correct"],
                      "accuracy": res["accuracy"], "profile": res.get("profile"),
                      "by_difficulty": res["by_difficulty"], "by_pattern": by_pattern[:MAX_PATTERNS_IN_STATUS]},
            "hardest_patterns": [{"key": g["key"], "accuracy": g["accuracy"], "n": g["n"]}
                                 for g in failing[:a.miner_max_patterns]],
            "recent_failures": failures, "mining": None,
        }
        self.log.info("probe %d: accuracy %s on %d fresh puzzles, %d failing patterns", probe_id,
                      res["accuracy"], res["n_items"], len(failing))
        waiting = self._waiting_files()
        if not failing:
            fields["mining"] = "no failing pattern in this probe"
        elif len(waiting) >= a.miner_max_queued:
            fields["mining"] = f"{len(waiting)} adversarial files still wait in the high queue: {waiting[:3]}"
        else:
            from syllo.batch import fingerprints_of_records
            # mined puzzles never repeat a probe's, so the next probes stay unseen by training
            fields.update(self._mine(failing[:a.miner_max_patterns], exclude | fingerprints_of_records(probe)))
        return fields

    def _probe(self, client, records: list[dict], profile_name: str) -> tuple[dict, list[dict]]:
        from monitoring.evaluation.server_mode import evaluate_via_server
        from syllo.suite import Suite, SuiteItem
        items = [SuiteItem(i, rec, "probe", i + 1) for i, rec in enumerate(records)]
        probe = Suite(self.paths.data, "probe", {}, items)
        return evaluate_via_server(client, probe, self.cfg, profile_name), [it.meta for it in items]

    def _waiting_files(self) -> list[str]:
        out: list[str] = []
        for folder in (self.paths.inbox / "high", self.paths.queue / "high"):
            try:
                out += [n for n in os.listdir(folder) if n.startswith(PREFIX + "-") and n.endswith(".jsonl")]
            except OSError:
                continue
        return sorted(out)

    def _mine(self, patterns: list[dict], exclude: set[str]) -> dict[str, Any]:
        from syllo.batch import fingerprints_of_records
        a = self.cfg.autonomy
        records: list[dict] = []
        per: dict[str, int] = {}
        run = os.urandom(6).hex()
        for g in patterns:
            got = records_like(g, a.miner_examples_per_pattern, f"adv:{run}:{g['key']}", exclude, self.cfg.profile.name)
            exclude |= fingerprints_of_records(got)  # two patterns never yield the same puzzle twice
            for rec in got:
                rec["metadata"].update(source_kind="adversarial", mined_from=g["key"])
            records += got
            if got:
                per[g["key"]] = len(got)
        if not records:
            return {"mining": "no puzzle of the failing patterns could be drawn"}
        records = with_replay(records, a.replay_ratio, f"adv:{run}", exclude, self.cfg.profile.name)
        check_no_leak(records, suite_fingerprints(self.paths, self.cfg), "adversarial examples")
        remember(self.paths, records)  # before the file is visible: no generator repeats them
        path = write_records(self.paths.data / "adversarial_examples" / unique_name(PREFIX), records)
        queued = queue_copy(path, self.paths, "high")
        self.log.info("mined %d examples of %d patterns into %s, queued as %s", len(records), len(per),
                      path.name, queued)
        last = {"file": str(path.relative_to(self.paths.base)), "queued_as": str(queued.relative_to(self.paths.base)),
                "n": len(records), "patterns": per, "at": self.now()}
        return {"last_mined": last, "files": (as_list(self.doc.get("files")) + [last])[-MAX_FILES:],
                "examples_mined_total": int(self.doc.get("examples_mined_total") or 0) + len(records)}


def make(base_dir=None, config=None, **kw: Any) -> AdversarialMiner:
    return AdversarialMiner(base_dir, config, **kw)


miner_command = click_command(make, AdversarialMiner.name, "Probe the deployed model with fresh puzzles and queue new puzzles of the patterns it fails (inbox/high/).")
