"""Queue folders, atomic no-overwrite moves, job records, and the ``trainctl queue`` CLI."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import chat_records, write_jsonl
from foundation.paths import Paths
from core.jobqueue.fs import candidate_names, copy_in_atomically, exchange, move_unique, rename_noreplace
from core.jobqueue.store import QueueStore, sidecar_name
from core.jobqueue.cli import queue_group

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def store(tmp_path) -> QueueStore:
    return QueueStore(Paths.from_base(tmp_path / "base").ensure())


def _good(p: Path, seed: int = 0, n: int = 3) -> Path:
    return write_jsonl(p, chat_records(n, seed=seed))


def test_rename_noreplace_never_overwrites(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_text("A")
    b.write_text("B")
    with pytest.raises(FileExistsError):
        rename_noreplace(a, b)
    assert a.read_text() == "A" and b.read_text() == "B"
    rename_noreplace(a, tmp_path / "c")
    assert not a.exists() and (tmp_path / "c").read_text() == "A"


def test_move_unique_adds_suffixes_and_exchange_swaps(tmp_path):
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "x.jsonl").write_text("old")
    (dest / "x-2.jsonl").write_text("old2")
    src = tmp_path / "x.jsonl"
    src.write_text("new")
    got = move_unique(src, dest)
    assert got.name == "x-3.jsonl" and got.read_text() == "new"
    assert (dest / "x.jsonl").read_text() == "old"
    assert list(candidate_names("a.b.jsonl"))[:3] == ["a.b.jsonl", "a.b-2.jsonl", "a.b-3.jsonl"]
    d1, d2 = tmp_path / "d1", tmp_path / "d2"
    d1.mkdir()
    d2.mkdir()
    (d1 / "f").write_text("1")
    (d2 / "f").write_text("2")
    assert exchange(d1, d2)
    assert (d1 / "f").read_text() == "2" and (d2 / "f").read_text() == "1"


def test_copy_in_atomically_never_shows_a_partial_name(tmp_path):
    src = _good(tmp_path / "in.jsonl", n=50)
    dest = tmp_path / "q"
    got = copy_in_atomically(src, dest)
    assert got.read_bytes() == src.read_bytes()
    assert sorted(os.listdir(dest)) == ["in.jsonl"]  # no temp file left behind
    got2 = copy_in_atomically(src, dest)
    assert got2.name == "in-2.jsonl"


def test_priority_then_fifo_and_resumable_first(store):
    p = store.paths
    for name, prio in [("n1.jsonl", "normal"), ("l1.jsonl", "low"), ("h1.jsonl", "high"), ("n2.jsonl", "normal"),
                       ("h2.jsonl", "high")]:
        store.enqueue(_good(p.inbox / name), prio, source="test")
    order = []
    while (e := store.next_to_claim()) is not None:
        order.append(e.name)
        store.claim(e)
        os.replace(p.processing / e.name, p.completed / e.name)
    assert order == ["h1.jsonl", "h2.jsonl", "n1.jsonl", "n2.jsonl", "l1.jsonl"]

    # a started job goes back to the head of its queue and is claimed before higher priorities
    store.enqueue(_good(p.inbox / "lowjob.jsonl"), "low", source="test")
    e = store.next_to_claim()
    store.claim(e)
    store.update_record("lowjob.jsonl", started=True, job_id="job-1")
    store.enqueue(_good(p.inbox / "urgent.jsonl"), "high", source="test")
    store.requeue("lowjob.jsonl", head=True)
    assert (p.queue_dir("low") / "lowjob.jsonl").exists()
    nxt = store.next_to_claim()
    assert nxt.name == "lowjob.jsonl" and nxt.record["job_id"] == "job-1"


def test_names_unique_across_active_folders_and_sidecars(store):
    p = store.paths
    a = store.enqueue(_good(p.inbox / "d.jsonl"), "normal", source="t")
    b = store.enqueue(_good(p.inbox / "d.jsonl", seed=1), "high", source="t")
    assert (a.name, b.name) == ("d.jsonl", "d-2.jsonl")
    # completing and failing files with colliding names
    c = store.complete(store.claim(store.next_to_claim()), {"status": "completed"})
    assert c.name == "d-2.jsonl" and (p.completed / "d-2.result.json").is_file()
    (p.inbox / "d.txt").write_text("x")
    f1 = store.fail(p.inbox / "d.txt", {"reason": "wrong_extension"})
    assert f1.name == "d.txt" and json.loads((p.failed / "d.txt.error.json").read_text())["reason"] == "wrong_extension"
    (p.failed / "d.jsonl").write_text("occupied")
    f2 = store.fail(p.queue_dir("normal") / "d.jsonl", {"reason": "x"})
    assert f2.name == "d-2.jsonl" and (p.failed / "d-2.error.json").is_file()
    assert (p.failed / "d.jsonl").read_text() == "occupied"
    assert sidecar_name("a.jsonl", "error") == "a.error.json" and sidecar_name("a.txt", "error") == "a.txt.error.json"


def test_retry_and_move_priority(store):
    p = store.paths
    store.enqueue(_good(p.inbox / "r.jsonl"), "low", source="t")
    store.move_priority("r.jsonl", "high")
    assert (p.queue_dir("high") / "r.jsonl").exists() and store.read_record("r.jsonl")["priority"] == "high"
    e = store.next_to_claim()
    store.fail(store.claim(e), {"reason": "oom", "priority": "high"})
    store.delete_record("r.jsonl")
    got = store.retry("r.jsonl")
    assert got.parent.name == "high" and not (p.failed / "r.error.json").exists()
    assert store.read_record("r.jsonl")["previous_errors"][0]["reason"] == "oom"


# ---------------------------------------------------------------- CLI
def _run(base: Path, *args: str):
    return CliRunner().invoke(queue_group, [*args, "--base-dir", str(base)], catch_exceptions=False)


def test_queue_cli_add_list_status_remove_retry(base_dir, tmp_path):
    good = _good(tmp_path / "good.jsonl", n=5)
    r = _run(base_dir, "add", str(good), "--priority", "high", "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    assert doc["ok"] and doc["name"] == "good.jsonl" and doc["n_examples"] == 5
    assert (base_dir / "queue" / "high" / "good.jsonl").read_bytes() == good.read_bytes()
    assert good.exists(), "add copies, the original stays"

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "x"}]}\n{oops\n')
    r = _run(base_dir, "add", str(bad), "--json")
    assert r.exit_code == 1
    doc = json.loads(r.output)
    assert doc["reason"] == "invalid_records" and [e["line"] for e in doc["errors"]] == [1, 2]
    assert "bad.jsonl" in doc["error"]
    for path, reason in [(tmp_path, "is_directory"), (tmp_path / "nope.jsonl", None)]:
        r = _run(base_dir, "add", str(path))
        assert r.exit_code == 1 and ("no such file" in r.output or reason in r.output or "directory" in r.output)
    inside = _good(base_dir / "inbox" / "dropped.jsonl")
    r = _run(base_dir, "add", str(inside))
    assert r.exit_code == 1 and "already in the daemon's inbox" in r.output
    txt = tmp_path / "data.txt"
    txt.write_text("x")
    assert "only .jsonl" in _run(base_dir, "add", str(txt)).output

    r = _run(base_dir, "status", "--json")
    assert json.loads(r.output)["high"] == 1
    r = _run(base_dir, "set-priority", "good.jsonl", "low", "--json")
    assert r.exit_code == 0 and json.loads(r.output)["priority"] == "low"
    listing = json.loads(_run(base_dir, "list", "--json").output)
    assert [e["name"] for e in listing["low"]] == ["good.jsonl"]

    r = _run(base_dir, "remove", "good.jsonl", "--json")
    assert r.exit_code == 0
    err = json.loads((base_dir / "queue" / "failed" / "good.error.json").read_text())
    assert err["reason"] == "removed" and (base_dir / "queue" / "failed" / "good.jsonl").exists()
    assert _run(base_dir, "remove", "good.jsonl").exit_code == 1
    assert _run(base_dir, "remove", "../config.json").exit_code == 1

    r = _run(base_dir, "retry", "good.jsonl", "--json")
    assert r.exit_code == 0 and json.loads(r.output)["priority"] == "low"
    text = _run(base_dir, "list").output
    assert "low (1)" in text and "good.jsonl" in text


def test_queue_cli_runs_by_path(base_dir):
    out = subprocess.run([sys.executable, str(REPO / "core" / "training_queue.py"), "status", "--json",
                          "--base-dir", str(base_dir)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["recently_completed"] == 0


def test_corrections_train_after_high_and_before_normal(store):
    """The self-correction loop writes queue/corrections/*.jsonl itself (no record): the daemon adopts
    and claims them right after high-priority files, and a requeue keeps them at that level."""
    p = store.paths
    store.enqueue(_good(p.inbox / "n1.jsonl"), "normal", source="test")
    store.enqueue(_good(p.inbox / "h1.jsonl"), "high", source="test")
    _good(p.queue_dir("corrections") / "corr-1.jsonl", seed=5)
    order = []
    while (e := store.next_to_claim()) is not None:
        order.append(e.name)
        store.claim(e)
        if e.name == "corr-1.jsonl":
            assert store.read_record("corr-1.jsonl")["priority"] == "corrections"
            store.requeue("corr-1.jsonl", head=True)
            assert (p.queue_dir("corrections") / "corr-1.jsonl").exists()
            store.claim(store.next_to_claim())
        os.replace(p.processing / e.name, p.completed / e.name)
    assert order == ["h1.jsonl", "corr-1.jsonl", "n1.jsonl"]
    assert store.counts()["corrections"] == 0
