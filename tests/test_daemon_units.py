"""Daemon building blocks, tested without the daemon loop: inbox completeness (fake clock, real
files), failure classification (real exceptions), the single-instance lock (real flock, a real
SIGKILLed holder), control flags, the atomic model swap, and the OOM retry decision."""
from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import chat_records, write_jsonl
from core.daemon.control_flags import active_flags, clear_flag, read_flag, write_flag
from core.daemon.model_swap import ModelDirError, install_model, read_lineage, recover, verify_model_dir
from core.daemon.failure_classifier import classify_exception, classify_exit, classify_report
from core.jobqueue.inbox_watcher import InboxTracker, is_ignored_name
from foundation.paths import Paths
from foundation.single_instance import AlreadyRunning, SingleInstance, is_locked, running_pid

REPO = Path(__file__).resolve().parents[1]


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


# ---------------------------------------------------------------- inbox completeness
def test_tracker_close_event_settles_then_ready(tmp_path):
    paths = Paths.from_base(tmp_path).ensure()
    clk = FakeClock()
    tr = InboxTracker(paths, stable_seconds=5.0, close_settle=0.2, clock=clk)
    f = write_jsonl(paths.inbox / "a.jsonl", chat_records(2))
    tr.on_event(f)  # created / modified
    assert tr.ready() == []
    tr.on_event(f, closed=True)
    clk.t += 0.1
    assert tr.ready() == []
    clk.t += 0.15
    assert [e.path.name for e in tr.ready()] == ["a.jsonl"]


def test_tracker_rename_into_inbox_is_ready_at_once(tmp_path):
    paths = Paths.from_base(tmp_path).ensure()
    clk = FakeClock()
    tr = InboxTracker(paths, stable_seconds=5.0, close_settle=0.2, clock=clk)
    tmp = write_jsonl(paths.inbox / ".x.jsonl.tmp", chat_records(2))
    tr.on_event(tmp)  # in-progress name: never tracked
    assert tr.pending_count() == 0
    os.rename(tmp, paths.inbox / "high" / "x.jsonl")
    tr.on_event(paths.inbox / "high" / "x.jsonl", closed=True, moved_in=True)
    assert [(e.path.name, e.priority) for e in tr.ready()] == [("x.jsonl", "high")]


def test_tracker_growing_file_waits_for_stable_size(tmp_path):
    paths = Paths.from_base(tmp_path).ensure()
    clk = FakeClock()
    tr = InboxTracker(paths, stable_seconds=1.0, clock=clk)
    f = paths.inbox / "low" / "grow.jsonl"
    f.write_text('{"messages": [')
    tr.scan()  # no events (polling / files present at start-up)
    assert tr.ready() == []  # first look starts the window
    clk.t += 0.9
    with open(f, "a") as fh:
        fh.write('{"role": "user", "content": "x"}')
    assert tr.ready() == []  # changed: window restarts
    clk.t += 0.9
    assert tr.ready() == []
    clk.t += 0.2
    ready = tr.ready()
    assert [(e.path.name, e.priority) for e in ready] == [("grow.jsonl", "low")]
    assert tr.next_deadline() == 0.0


def test_tracker_priorities_and_ignored_names(tmp_path):
    paths = Paths.from_base(tmp_path).ensure()
    tr = InboxTracker(paths)
    (paths.inbox / "normal").mkdir()
    assert tr.priority_of(paths.inbox / "x.jsonl") == "normal"
    assert tr.priority_of(paths.inbox / "high" / "x.jsonl") == "high"
    assert tr.priority_of(paths.inbox / "normal" / "x.jsonl") == "normal"
    assert tr.priority_of(paths.inbox / "high") is None  # the priority folder itself
    assert tr.priority_of(paths.inbox / "high" / "deep" / "x.jsonl") is None
    for n in (".x.jsonl", "x.jsonl.tmp", "x.part", "x.partial", "x.crdownload", "x.jsonl~"):
        assert is_ignored_name(n) and tr.priority_of(paths.inbox / n) is None
    (paths.inbox / "sub").mkdir()
    assert tr.priority_of(paths.inbox / "sub") == "normal"  # an entry: quarantined as a directory
    tr.on_event(paths.inbox / "sub" / "inner.jsonl")  # activity inside counts for the folder entry
    assert [e.path.name for e in tr._pending.values()] == ["sub"]


# ---------------------------------------------------------------- failure classification
def test_classifier_on_real_exceptions():
    import torch
    from trainer.engine.engine import DataError, NanLossError
    assert classify_exception(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")).kind == "oom"
    assert classify_exception(torch.OutOfMemoryError("x")).retryable
    assert classify_exception(NanLossError("training loss is nan at global step 7")).kind == "nan_loss"
    assert classify_exception(DataError("x.jsonl: not trainable", {"errors": []})).kind == "data_error"
    assert classify_exception(json.JSONDecodeError("Expecting value", "x", 0)).kind == "data_error"
    assert classify_exception(OSError(errno.ENOSPC, "No space left on device")).kind == "disk_full"
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as inner:
            raise RuntimeError("checkpoint save failed") from inner
    except RuntimeError as e:
        assert classify_exception(e).kind == "disk_full"
    try:
        torch.empty(1 << 62, dtype=torch.uint8)  # a real allocator failure on CPU
    except RuntimeError as e:
        assert classify_exception(e).kind == "oom", str(e)
    assert classify_exception(RuntimeError("something else")).kind == "other"
    assert classify_exit(-signal.SIGKILL).kind == "killed"
    assert classify_exit(1, "...\ntorch.OutOfMemoryError: CUDA out of memory").kind == "oom"
    assert classify_exit(1, "boom").message.endswith("boom")
    assert classify_report("NanLossError", "training loss is inf").kind == "nan_loss"


# ---------------------------------------------------------------- single instance
def test_single_instance_refuses_second_and_survives_sigkill(tmp_path):
    pids = tmp_path / ".pids"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; sys.path.insert(0, %r)\n"
        "from foundation.single_instance import SingleInstance\n"
        "SingleInstance(%r, 'd').acquire(); print('locked', flush=True); time.sleep(60)") % (str(REPO), str(pids))],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert is_locked(pids, "d") and running_pid(pids, "d") == holder.pid
        with pytest.raises(AlreadyRunning) as ei:
            SingleInstance(pids, "d").acquire()
        assert ei.value.pid == holder.pid and f"pid {holder.pid}" in str(ei.value)
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
        # the kernel released the lock; the stale PID file does not block a restart
        assert not is_locked(pids, "d") and running_pid(pids, "d") is None
        with SingleInstance(pids, "d"):
            assert (pids / "d.pid").read_text().strip() == str(os.getpid())
            assert running_pid(pids, "d") == os.getpid()
        assert not (pids / "d.pid").exists()
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(10)


# ---------------------------------------------------------------- control flags
def test_control_flags_roundtrip_and_handmade(tmp_path):
    paths = Paths.from_base(tmp_path).ensure()
    doc = write_flag(paths, "pause", "lunch")
    got = read_flag(paths, "pause")
    assert got["reason"] == "lunch" and got["created_at"] == doc["created_at"]
    (paths.control / ".skip").write_text("bad file, skip it")  # a person with echo
    assert read_flag(paths, "skip")["reason"] == "bad file, skip it"
    (paths.control / ".stop").touch()
    assert read_flag(paths, "stop")["reason"] == ""
    assert sorted(active_flags(paths)) == ["pause", "skip", "stop"]
    assert clear_flag(paths, "pause") and not clear_flag(paths, "pause")
    with pytest.raises(ValueError):
        write_flag(paths, "explode")


# ---------------------------------------------------------------- model swap
def test_install_model_swaps_atomically_and_verifies(tmp_path, tiny_model_dir):
    paths = Paths.from_base(tmp_path).ensure()
    paths.current_model.mkdir()
    (paths.current_model / ".gitkeep").touch()
    install_model(paths, tiny_model_dir, {"global_step": 5, "job_id": "j1", "source_file": "a.jsonl"})
    assert read_lineage(paths.current_model)["global_step"] == 5
    assert (paths.current_model / ".gitkeep").exists()
    verify_model_dir(paths.current_model)
    install_model(paths, tiny_model_dir, {"global_step": 9, "job_id": "j2", "source_file": "b.jsonl"})
    lin = read_lineage(paths.current_model)
    assert lin["global_step"] == 9 and [h["job_id"] for h in lin["history"]] == ["j1", "j2"]
    assert not list(paths.models.glob(".current_model*"))

    bad = tmp_path / "bad_model"
    bad.mkdir()
    for f in tiny_model_dir.iterdir():
        (bad / f.name).write_bytes(f.read_bytes())
    w = bad / "model.safetensors"
    w.write_bytes(w.read_bytes()[:-100])  # truncated weights
    with pytest.raises(ModelDirError, match="truncated"):
        install_model(paths, bad, {"global_step": 11, "job_id": "j3"})
    assert read_lineage(paths.current_model)["job_id"] == "j2", "a failed install leaves the old model"
    assert not list(paths.models.glob(".current_model*"))

    # an interrupted fallback swap (old moved aside, new not yet in) is repaired on start-up
    os.rename(paths.current_model, paths.models / ".current_model.old")
    (paths.models / ".current_model.new-1-2").mkdir()
    done = recover(paths)
    assert paths.current_model.is_dir() and read_lineage(paths.current_model)["job_id"] == "j2"
    assert any("restored" in d for d in done) and not (paths.models / ".current_model.new-1-2").exists()


# ---------------------------------------------------------------- OOM retry decision
def test_oom_retry_halves_batch_doubles_accumulation_then_gives_up(base_dir):
    from core.jobqueue.store import QueueStore
    from core.daemon.daemon import TrainingDaemon
    from trainer.config.loader import load_config

    d = TrainingDaemon(base_dir)
    d.cfg = load_config(base_dir=base_dir)  # per_device_batch_size 4, accumulation 1, oom_max_retries 2
    store: QueueStore = d.store
    store.enqueue(write_jsonl(d.paths.inbox / "big.jsonl", chat_records(3)), "low", source="t")
    store.claim(store.next_to_claim())
    store.update_record("big.jsonl", started=True, job_id="big-1")

    class A:  # the parts of an ActiveJob the decision reads
        name = "big.jsonl"
        global_step = 3

    expected = [(2, 2), (1, 4)]
    for bs, ga in expected:
        d._job_failed(A(), store.read_record("big.jsonl"), {"kind": "oom", "message": "CUDA out of memory"})
        rec = store.read_record("big.jsonl")
        assert (d.paths.queue_dir("low") / "big.jsonl").exists(), "retried from the head of its queue"
        assert rec["config_overrides"] == {"training.per_device_batch_size": bs,
                                           "training.gradient_accumulation_steps": ga}
        store.claim(store.next_to_claim())
    d._job_failed(A(), store.read_record("big.jsonl"), {"kind": "oom", "message": "CUDA out of memory"})
    err = json.loads((d.paths.failed / "big.error.json").read_text())
    assert err["reason"] == "oom" and err["oom_retries"] == 2
    assert err["config_overrides"]["training.per_device_batch_size"] == 1
    assert not store.read_record("big.jsonl")


# ---------------------------------------------------------------- hang detection
def test_stalled_job_is_killed_and_quarantined_as_hang(base_dir):
    """A trainer that makes no optimizer step for daemon.stall_timeout is killed (a real process,
    a fake monotonic clock) and its file quarantined with reason "hang"; the daemon goes on."""
    from core.daemon.child import ChildHandle
    from core.daemon.daemon import ActiveJob, TrainingDaemon
    from trainer.config.loader import load_config

    clk = FakeClock()
    d = TrainingDaemon(base_dir, monotonic=clk)
    d.cfg = load_config(base_dir=base_dir, overrides={"daemon.stall_timeout": 60.0})
    d.store.enqueue(write_jsonl(d.paths.inbox / "stuck.jsonl", chat_records(3)), "normal", source="t")
    d.store.claim(d.store.next_to_claim())
    d.store.update_record("stuck.jsonl", started=True, job_id="stuck-1")
    ch = ChildHandle(d.paths, wake=lambda: None)
    ch.proc = subprocess.Popen(["sleep", "120"], start_new_session=True, stdin=subprocess.PIPE)
    ch._eof.set()  # no message pipe in this test
    try:
        d.active = ActiveJob(name="stuck.jsonl", record=d.store.read_record("stuck.jsonl"), job={}, child=ch,
                             claimed_mono=clk.t, last_progress=clk.t, started_at="t", global_step=7)
        clk.t += 59
        d._check_stall()
        assert ch.poll() is None, "not stalled yet"
        d.paused = True
        clk.t += 600
        d._check_stall()
        assert ch.poll() is None, "a paused job is never a hang"
        d.paused = False
        d._check_stall()
        assert ch.wait(10) == -signal.SIGKILL
        d._check_active_child()
        assert d.active is None
        err = json.loads((d.paths.failed / "stuck.error.json").read_text())
        assert err["reason"] == "hang" and "no optimizer step for 60s" in err["message"]
        assert err["global_step"] == 7 and d.last_error["reason"] == "hang"
    finally:
        if ch.proc.poll() is None:
            ch.proc.kill()
            ch.proc.wait()
