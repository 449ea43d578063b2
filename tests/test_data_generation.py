"""The data generation automation (monitoring/autonomy/data_generation.py) and the sidecar loop it
shares with the other autonomous daemons: real files in a tmp base dir, real subprocess for the
entry script, no model needed."""
from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import pytest

from foundation.paths import Paths
from monitoring.autonomy.data_generation import DataGeneration
from monitoring.autonomy.sidecar import Sidecar, run_sidecar
from syllo.analysis import wording_only_scores
from syllo.batch import fingerprints_of_records
from syllo.fingerprint_record import FingerprintRecord
from syllo.suite import REPO_SUITE_DIR, contains_validation_items, validation_fingerprints
from trainer.config.loader import load_config

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "monitoring" / "data_generation_automation.py"
BATCH = 60


def _base(tmp_path: Path, **autonomy) -> Path:
    paths = Paths.from_base(tmp_path / "base").ensure()
    cfg = {"autonomy": {"datagen_batch_size": BATCH, "datagen_interval": 0.1, **autonomy}}
    paths.config_file.write_text(json.dumps(cfg))
    return paths.base


def _once(base: Path, clock=None) -> dict:
    gen = DataGeneration(base, load_config(base_dir=base), clock=clock)
    gen.run(once=True)
    return json.loads((base / "status" / "data_generation.json").read_text())


def _records(folder: Path) -> list[dict]:
    return [json.loads(ln) for p in sorted(folder.rglob("*.jsonl")) for ln in p.read_text().splitlines() if ln]


def test_once_feeds_an_empty_queue_never_repeats_and_waits_when_full(tmp_path):
    base = _base(tmp_path)
    st = _once(base, clock=lambda: 1_800_000_000.0)
    files = sorted((base / "inbox").glob("*.jsonl"))
    assert len(files) == 1 and st["last_pass_state"] == "generated" and st["waiting_reason"] is None
    for key in ("schema_version", "updated_at", "pid", "heartbeat_at"):
        assert key in st
    assert st["mix_source"] == "default" and "curriculum_optimization.json: missing" in st["mix_problem"]
    assert st["batches_made"] == 1 and st["items_made"] == BATCH and st["seeds_used"] == [1_800_000_000]
    first = _records(base / "inbox")
    assert sum(st["items_by_difficulty"].values()) == BATCH
    assert Counter(r["metadata"]["difficulty"] for r in first) == st["items_by_difficulty"]
    assert st["items_by_difficulty"]["easy"] > st["items_by_difficulty"]["medium"]  # easy-heavy default
    assert not list((base / "data" / "generated").glob("*.jsonl"))  # written aside, then moved

    # a second run (fresh process state, counters read back) adds a batch with no puzzle of the first
    st2 = _once(base, clock=lambda: 1_800_000_000.0)
    assert st2["batches_made"] == 2 and st2["seeds_used"] == [1_800_000_000, 1_800_000_001]
    second = [r for r in _records(base / "inbox") if r not in first]
    assert len(second) == BATCH
    assert not fingerprints_of_records(first) & fingerprints_of_records(second)
    assert FingerprintRecord.for_base(base).load() == fingerprints_of_records(first + second)

    # now 2 files are waiting: it waits, says why, and makes nothing
    st3 = _once(base)
    assert st3["last_pass_state"] == "waiting" and "holds 2 file(s)" in st3["waiting_reason"]
    assert st3["batches_made"] == 2 and len(list((base / "inbox").glob("*.jsonl"))) == 2

    # nothing anywhere in the base dir's data paths is a suite item (current or archived version)
    suite_fps = validation_fingerprints(REPO_SUITE_DIR)
    everything = _records(base / "inbox") + _records(base / "queue") + _records(base / "data" / "generated")
    assert len(everything) == 2 * BATCH and contains_validation_items(everything, suite_fps) == []


def test_queue_files_count_and_full_disk_waits(tmp_path):
    base = _base(tmp_path)
    (base / "queue" / "processing" / "a.jsonl").write_text("{}\n")
    (base / "queue" / "low" / "b.jsonl").write_text("{}\n")
    st = _once(base)
    assert st["last_pass_state"] == "waiting" and st["queue_depth"] == 2
    assert not list((base / "inbox").glob("*.jsonl"))

    off = _base(tmp_path / "off", datagen_enabled=False)
    st = _once(off)
    assert st["last_pass_state"] == "waiting" and "autonomy.datagen_enabled" in st["waiting_reason"]

    full = _base(tmp_path / "full", datagen_min_free_mb=1e12)
    st = _once(full)
    assert st["last_pass_state"] == "waiting" and "free disk" in st["waiting_reason"]
    assert not list((full / "inbox").glob("*.jsonl"))


@pytest.mark.parametrize("content, problem", [
    ("{not json", "malformed JSON"),
    ('{"mix": {"legendary": 1}}', "unknown level 'legendary'"),
    ('{"mix": "hard"}', "non-empty object"),
    ('["mix"]', "expected a JSON object"),
])
def test_malformed_curriculum_status_gives_default_mix_and_a_message(tmp_path, content, problem):
    base = _base(tmp_path)
    (base / "status" / "curriculum_optimization.json").write_text(content)
    st = _once(base)
    assert st["last_pass_state"] == "generated" and st["mix_source"] == "default"
    assert problem in st["mix_problem"], st["mix_problem"]
    assert st["mix"] == {"easy": 0.6, "medium": 0.3, "hard": 0.1}


def test_the_curriculum_mix_is_used_and_batches_are_balanced(tmp_path):
    base = _base(tmp_path, datagen_batch_size=120)
    (base / "status" / "curriculum_optimization.json").write_text(
        json.dumps({"mix": {"medium": 1, "hard": 1}, "batch_tag": "ab-uniform-3"}))
    st = _once(base)
    assert st["mix_source"] == "curriculum" and st["mix_problem"] is None
    assert st["last_batch"]["by_difficulty"] == {"medium": 60, "hard": 60}
    # the curriculum's A/B tag names the batch, so its effect is attributed to the strategy
    assert st["last_batch"]["batch_tag"] == "ab-uniform-3"
    assert [p.name for p in (base / "inbox").glob("datagen-ab-uniform-3-*.jsonl")]
    scores = wording_only_scores(_records(base / "inbox"))
    assert all(v["accuracy"] <= 0.55 for v in scores.values()), scores


def test_entry_script_once_json_and_single_instance(tmp_path):
    base = _base(tmp_path)
    r = subprocess.run([sys.executable, str(SCRIPT), "--base-dir", str(base), "--once", "--json"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["state"] == "stopped" and doc["last_pass_state"] == "generated" and doc["batches_made"] == 1
    assert "generated datagen-" in (base / "logs" / "data_generation.log").read_text()
    # a second instance on the same base dir is refused while the first holds the lock
    from foundation.single_instance import SingleInstance
    with SingleInstance(base / ".pids", "data_generation"):
        assert run_sidecar(DataGeneration, "data_generation", base, once=True) == 1


class _Flaky(Sidecar):
    """Fails its first pass, then stops the loop on its third."""
    name = "flaky_test"

    def interval(self) -> float:
        return 0.0

    def run_once(self) -> dict:
        self.calls = getattr(self, "calls", 0) + 1
        if self.calls == 1:
            raise ValueError("bad input")
        if self.calls == 3:
            self.stop_event.set()
        return {"calls": self.calls}


def test_sidecar_loop_survives_a_failing_pass(tmp_path):
    base = _base(tmp_path)
    stop = threading.Event()
    sc = _Flaky(base, load_config(base_dir=base), stop_event=stop, clock=lambda: 1_700_000_000.0)
    doc = sc.run()
    assert sc.calls == 3 and doc["passes"] == 2 and doc["state"] == "stopped"
    assert doc["errors"][0]["error"] == "ValueError: bad input" and doc["last_pass_state"] == "idle"
    assert doc["updated_at"].startswith("2023-11-14T22:13:20")  # the injected clock


def test_cli_unique_same_seed_other_mix_repeats_nothing(tmp_path):
    base = _base(tmp_path)
    outs = []
    for mix in ("easy", "easy:0.5,medium:0.5"):
        out = tmp_path / f"{len(outs)}.jsonl"
        r = subprocess.run([sys.executable, str(REPO / "tools/data/generate_syllo_batch.py"), "--count", "40",
                            "--difficulty", mix, "--seed", "7", "--unique", "--base-dir", str(base),
                            "--output", str(out), "--no-progress"], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        outs.append([json.loads(ln) for ln in out.read_text().splitlines()])
    assert not fingerprints_of_records(outs[0]) & fingerprints_of_records(outs[1])
    assert len(FingerprintRecord.for_base(base).load()) == 80
