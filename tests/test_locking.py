"""foundation.locking (the one file-lock implementation) and the status merge built on it."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading

import pytest

from foundation.locking import FileMutex, LockTimeout, held_elsewhere
from foundation.status_io import read_status, update_status
from tests.helpers.inference_server import REPO

HOLDER = ("import sys, time; sys.path.insert(0, %r)\n"
          "from foundation.locking import FileMutex\n"
          "m = FileMutex(%r); m.acquire(); print('locked', flush=True); time.sleep(120)")


def test_a_held_lock_times_out_with_a_clear_error_and_dies_with_its_holder(tmp_path):
    path = tmp_path / "sub" / "x.lock"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER % (str(REPO), str(path))], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert held_elsewhere(path)
        with pytest.raises(LockTimeout) as ei:
            with FileMutex(path, timeout=0.2):
                pass
        assert isinstance(ei.value, OSError) and str(path) in str(ei.value)
        assert not FileMutex(path, per_thread=False).try_acquire()
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
        # the kernel dropped the lock with its holder
        assert not held_elsewhere(path)
        with FileMutex(path, timeout=5) as m:
            assert m.held and held_elsewhere(path)
        assert not held_elsewhere(path)
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(10)


def test_reentrant_in_one_thread_exclusive_across_threads(tmp_path):
    m = FileMutex(tmp_path / "y.lock", timeout=5)
    seen: list[bool] = []
    with m:
        with m:  # re-entrant: the orchestrator takes its deploy lock inside a locked check
            t = threading.Thread(target=lambda: seen.append(m.try_acquire()))
            t.start()
            t.join(10)
        assert m.held
    assert seen == [False] and not m.held


WRITER = ("import sys; sys.path.insert(0, %r)\n"
          "from foundation.status_io import update_status\n"
          "for k in range(%d): update_status(%r, {'w%s_' + str(k): k}, daemon=False)")


def test_update_status_merges_concurrent_writers_without_losing_keys(tmp_path):
    path = tmp_path / "status" / "shared.json"
    update_status(path, {"seed": True}, daemon=False)
    n = 60
    procs = [subprocess.Popen([sys.executable, "-c", WRITER % (str(REPO), n, str(path), w)]) for w in "ab"]
    for p in procs:
        assert p.wait(120) == 0
    doc = read_status(path)
    assert doc["seed"] is True
    assert sorted(k for k in doc if k.startswith("w")) == sorted(f"w{w}_{k}" for w in "ab" for k in range(n))
    json.loads(path.read_text())  # whole, valid JSON
