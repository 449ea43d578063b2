"""The watchdog: its state machine with a fake clock and fake processes (no sleeping), then real
runs on a tmp base dir with a small real program, and one slow run of the real start/stop scripts."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from bad_inputs.daemon_harness import child_env, pid_gone, wait_for
from safety.supervision.state_machine import Machine, Observation, RestartPolicy, State

REPO = Path(__file__).resolve().parents[1]
PROGRAM = REPO / "tests" / "helpers" / "supervised_program.py"


# ---------------------------------------------------------------- fake world
class FakeClock:
    def __init__(self) -> None:
        self.t = 1_000_000.0

    def __call__(self) -> float:
        return self.t

    def advance(self, s: float) -> None:
        self.t += s


@dataclass
class FakeProc:
    pid: int
    alive: bool = True
    healthy: bool | None = True
    terminated: bool = False
    killed: bool = False


class FakeWorld:
    """Processes that live until the test says they die."""

    def __init__(self) -> None:
        self.procs: list[FakeProc] = []
        self.fail_spawn = False

    def spawn(self) -> FakeProc:
        if self.fail_spawn:
            raise OSError("no such file")
        p = FakeProc(100 + len(self.procs))
        self.procs.append(p)
        return p

    def probe(self, p: FakeProc) -> Observation:
        if not p.alive:
            return Observation(False, exit={"code": 1, "signal": None, "reason": "exited with code 1"})
        return Observation(True, healthy=p.healthy, detail="fake")

    @property
    def current(self) -> FakeProc:
        return self.procs[-1]


def machine(clock: FakeClock, world: FakeWorld, policy: RestartPolicy | None = None, rng=None) -> Machine:
    return Machine("prog", policy or RestartPolicy(), clock, spawn=world.spawn, probe=world.probe,
                   terminate=lambda p: setattr(p, "terminated", True),
                   kill=lambda p: (setattr(p, "killed", True), setattr(p, "alive", False)),
                   stop_timeout=30.0, log_tail=lambda: ["last line"], rng=rng or (lambda lo, hi: 1.0))


def crash_and_restart(clock: FakeClock, world: FakeWorld, m: Machine) -> float:
    """The current process dies; returns the back-off the machine chose, then lets it pass."""
    world.current.alive = False
    assert m.tick() == State.BACKOFF
    delay = m.backoff_until - clock()
    clock.advance(delay)
    assert m.tick() == State.STARTING
    return delay


# ---------------------------------------------------------------- state machine
def test_start_then_running_after_startsecs():
    clock, world = FakeClock(), FakeWorld()
    m = machine(clock, world)
    assert m.tick() == State.STARTING and m.handle.pid == 100
    assert m.tick() == State.STARTING
    clock.advance(1.0)
    assert m.tick() == State.RUNNING and m.restarts == 0


def test_backoff_doubles_with_jitter_bounds_and_cap():
    policy = RestartPolicy(max_failures=100)
    lows = [policy.backoff(n, lambda lo, hi: lo) for n in range(1, 13)]
    highs = [policy.backoff(n, lambda lo, hi: hi) for n in range(1, 13)]
    assert lows[:4] == pytest.approx([0.8, 1.6, 3.2, 6.4])
    assert highs[:4] == pytest.approx([1.2, 2.4, 4.8, 9.6])
    assert lows[-1] == pytest.approx(240.0) and highs[-1] == 300.0, "capped at 5 minutes"
    assert all(h <= 300.0 for h in highs)

    # the machine uses it: consecutive failures double the delay (seen through a fixed rng)
    clock, world = FakeClock(), FakeWorld()
    m = machine(clock, world, policy)
    m.tick()
    delays = [crash_and_restart(clock, world, m) for _ in range(11)]
    assert delays[:5] == pytest.approx([1, 2, 4, 8, 16])
    assert delays[-1] == 300.0 and m.restarts == 11
    assert m.last_exit["reason"] == "exited with code 1" and m.last_log_lines == ["last line"]

    # a real random source stays within the bounds
    import random
    rng = random.Random(7)
    for n in range(1, 12):
        d = policy.backoff(n, rng.uniform)
        base = min(300.0, 2.0 ** (n - 1))
        assert 0.8 * base <= d <= min(300.0, 1.2 * base)


def test_failures_forgotten_after_ten_minutes_healthy():
    clock, world = FakeClock(), FakeWorld()
    m = machine(clock, world, RestartPolicy(max_failures=100))
    m.tick()
    for _ in range(4):
        crash_and_restart(clock, world, m)
    assert m.consecutive_failures == 4
    clock.advance(1)
    m.tick()
    assert m.state == State.RUNNING
    clock.advance(599)
    m.tick()
    assert m.consecutive_failures == 4, "not yet 10 minutes healthy"
    clock.advance(1)
    m.tick()
    assert m.consecutive_failures == 0 and m.failures == []
    assert crash_and_restart(clock, world, m) == pytest.approx(1.0), "back-off starts over at 1 s"


def test_unhealthy_time_does_not_count_as_healthy():
    clock, world = FakeClock(), FakeWorld()
    m = machine(clock, world, RestartPolicy(max_failures=100))
    m.tick()
    crash_and_restart(clock, world, m)
    clock.advance(1)
    world.current.healthy = None  # heartbeat not known yet: neither healthy nor hung
    m.tick()
    clock.advance(700)
    m.tick()
    assert m.state == State.RUNNING and m.consecutive_failures == 1


def test_fatal_after_five_failed_starts_in_ten_minutes_then_reset():
    clock, world = FakeClock(), FakeWorld()
    m = machine(clock, world)
    m.tick()
    for _ in range(4):
        crash_and_restart(clock, world, m)
    world.current.alive = False
    assert m.tick() == State.FATAL
    assert len(world.procs) == 5 and "5 failed starts" in m.fatal_reason
    clock.advance(3600)
    assert m.tick() == State.FATAL and len(world.procs) == 5, "no restart while FATAL"
    assert m.reset() is True
    assert m.tick() == State.STARTING and len(world.procs) == 6 and m.consecutive_failures == 0


def test_failures_spread_over_more_than_ten_minutes_are_not_fatal():
    clock, world = FakeClock(), FakeWorld()
    m = machine(clock, world, RestartPolicy(reset_after=10_000))
    m.tick()
    for _ in range(8):
        clock.advance(200)  # runs 200 s between crashes: at most 3-4 failures in any 10 minutes
        crash_and_restart(clock, world, m)
    assert m.state == State.STARTING and m.restarts == 8


def test_spawn_failure_counts_and_goes_fatal():
    clock, world = FakeClock(), FakeWorld()
    world.fail_spawn = True
    m = machine(clock, world)
    for _ in range(5):
        m.tick()
        if m.state == State.BACKOFF:
            clock.advance(m.backoff_until - clock())
    assert m.state == State.FATAL and "spawn failed: no such file" in m.last_exit["reason"]


def test_hung_program_is_stopped_killed_after_timeout_and_restarted():
    clock, world = FakeClock(), FakeWorld()
    m = machine(clock, world)
    m.tick()
    clock.advance(1)
    m.tick()
    hung = world.current
    hung.healthy = False
    assert m.tick() == State.STOPPING and hung.terminated and not hung.killed
    clock.advance(29)
    assert m.tick() == State.STOPPING and not hung.killed
    clock.advance(1)
    m.tick()
    assert hung.killed
    assert m.tick() == State.BACKOFF and m.last_exit["reason"].startswith("hung")


def test_clean_exit_stays_down_unless_restart_always():
    clock, world = FakeClock(), FakeWorld()
    m = machine(clock, world)
    m.tick()
    clock.advance(1)
    m.tick()
    world.current.alive = False
    world.probe = lambda p: Observation(p.alive, healthy=True, exit={"code": 0, "signal": None, "reason": "exited with code 0"})
    m.probe = world.probe
    assert m.tick() == State.EXITED and m.failures == []
    clock.advance(3600)
    assert m.tick() == State.EXITED and len(world.procs) == 1, "asked to stop (trainctl stop): not restarted"
    m.reset()
    assert m.tick() == State.STARTING and len(world.procs) == 2

    m.restart_clean_exit = True
    clock.advance(1)
    m.tick()
    world.current.alive = False
    assert m.tick() == State.BACKOFF, "restart: always"

    # exiting 0 before startsecs is a failed start, whatever the restart setting
    m.restart_clean_exit = False
    clock.advance(m.backoff_until - clock())
    m.tick()
    world.current.alive = False
    assert m.tick() == State.BACKOFF and m.consecutive_failures == 2


def test_request_stop_is_not_a_failure():
    clock, world = FakeClock(), FakeWorld()
    m = machine(clock, world)
    m.tick()
    m.request_stop()
    assert m.state == State.STOPPING and world.current.terminated
    world.current.alive = False
    assert m.tick() == State.STOPPED and m.failures == [] and m.consecutive_failures == 0


# ---------------------------------------------------------------- real runs
def _table(tmp_path: Path, base: Path, programs: dict[str, str], **policy) -> Path:
    doc = {"programs": [{"name": name, "argv": ["{python}", str(PROGRAM), "{base_dir}", name, mode],
                         "status_file": name if mode != "crash" else None, "stop_timeout": 10,
                         **({"heartbeat_timeout": 1.0, "start_grace": 1.0} if mode == "stall" else {})}
                        for name, mode in programs.items()],
           "policy": {"backoff_initial": 0.2, "startsecs": 0.5, **policy}}
    path = tmp_path / "programs.json"
    path.write_text(json.dumps(doc))
    return path


def _watchdog_doc(base: Path) -> dict:
    try:
        return json.loads((base / "status" / "watchdog.json").read_text())
    except (OSError, ValueError):
        return {}


def _program(base: Path, name: str) -> dict:
    return (_watchdog_doc(base).get("programs") or {}).get(name) or {}


def _start_watchdog(reaper, base: Path, table: Path) -> subprocess.Popen:
    out = open(base / "logs" / "watchdog.out", "ab")
    return reaper.popen([sys.executable, str(REPO / "safety" / "daemon_watchdog.py"), "--base-dir", str(base),
                         "--programs", str(table), "--interval", "0.2"],
                        stdout=out, stderr=subprocess.STDOUT, env=child_env(), cwd=str(REPO))


def _trainctl(base: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "management.cli", "watchdog", *args, "--base-dir", str(base)],
                          capture_output=True, text=True, timeout=60, env=child_env(), cwd=str(REPO))


def test_sigkilled_program_is_restarted_and_a_crashing_one_goes_fatal(base_dir, reaper, tmp_path):
    table = _table(tmp_path, base_dir, {"worker": "heartbeat", "crasher": "crash"})
    wd = _start_watchdog(reaper, base_dir, table)
    first = wait_for(lambda: _program(base_dir, "worker").get("state") == "RUNNING"
                     and _program(base_dir, "worker")["pid"], 30, "worker RUNNING", proc=wd)
    os.kill(first, signal.SIGKILL)
    second = wait_for(lambda: (_program(base_dir, "worker").get("pid") or first) != first
                      and _program(base_dir, "worker")["pid"], 30, "worker restarted with a new pid", proc=wd)
    assert not pid_gone(second)
    worker = _program(base_dir, "worker")
    assert worker["restarts"] == 1 and worker["last_exit"]["signal"] == "SIGKILL"

    crasher = wait_for(lambda: _program(base_dir, "crasher").get("state") == "FATAL"
                       and _program(base_dir, "crasher"), 60, "crasher FATAL", proc=wd)
    assert crasher["failures_in_window"] == 5 and crasher["restarts"] == 4
    assert crasher["last_exit"]["code"] == 3 and crasher["pid"] is None
    assert any("always fails" in line for line in crasher["last_log_lines"])
    # the others keep running; no more restarts of the FATAL one
    assert _program(base_dir, "worker")["pid"] == second and not pid_gone(second)
    status = _trainctl(base_dir, "status")
    assert status.returncode == 1 and "FATAL" in status.stdout and "trainctl watchdog reset crasher" in status.stdout

    # reset while the watchdog runs: it tries again (and, still crashing, goes FATAL again)
    reset = _trainctl(base_dir, "reset", "crasher")
    assert reset.returncode == 0, reset.stdout + reset.stderr
    assert "reset taken" in reset.stdout
    wait_for(lambda: _program(base_dir, "crasher").get("restarts", 0) > 4, 30, "crasher started again", proc=wd)
    bad = _trainctl(base_dir, "reset", "nosuch")
    assert bad.returncode == 2 and "no program 'nosuch'" in bad.stderr

    # SIGTERM stops the watchdog and what it started
    wd.send_signal(signal.SIGTERM)
    assert wd.wait(timeout=60) == 0
    assert pid_gone(second)
    doc = _watchdog_doc(base_dir)
    assert doc["state"] == "stopped" and doc["programs"]["worker"]["state"] == "STOPPED"
    assert "stopped by SIGTERM" in (base_dir / "logs" / "worker.out").read_text()


def test_once_adopts_and_fatal_survives_a_watchdog_restart(base_dir, reaper, tmp_path):
    table = _table(tmp_path, base_dir, {"worker": "heartbeat"})
    cmd = [sys.executable, str(REPO / "safety" / "daemon_watchdog.py"), "run", "--once", "--base-dir", str(base_dir),
           "--programs", str(table)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=child_env(), cwd=str(REPO))
    assert r.returncode == 0, r.stderr
    pid = _program(base_dir, "worker")["pid"]
    try:
        assert pid and not pid_gone(pid)
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=child_env(), cwd=str(REPO))
        assert r.returncode == 0 and "adopted running pid" in r.stderr
        assert _program(base_dir, "worker")["pid"] == pid, "the second pass adopts, never starts a second one"
    finally:
        os.kill(pid, signal.SIGTERM)
    wait_for(lambda: pid_gone(pid), 30, "worker gone")

    # a FATAL program stays FATAL for the next watchdog, until reset (offline: edits watchdog.json)
    doc = _watchdog_doc(base_dir)
    doc["programs"]["worker"].update(state="FATAL", fatal_reason="5 failed starts (test)")
    (base_dir / "status" / "watchdog.json").write_text(json.dumps(doc))
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=child_env(), cwd=str(REPO))
    assert _program(base_dir, "worker")["state"] == "FATAL" and _program(base_dir, "worker")["pid"] is None
    reset = _trainctl(base_dir, "reset", "worker")
    assert reset.returncode == 0 and "watchdog not running" in reset.stdout
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=child_env(), cwd=str(REPO))
    pid = _program(base_dir, "worker")["pid"]
    assert _program(base_dir, "worker")["state"] == "STARTING" and pid
    os.kill(pid, signal.SIGTERM)
    wait_for(lambda: pid_gone(pid), 30, "worker gone")


def test_stale_heartbeat_is_a_hang_stopped_and_restarted(base_dir, reaper, tmp_path):
    table = _table(tmp_path, base_dir, {"staller": "stall"})
    wd = _start_watchdog(reaper, base_dir, table)
    first = wait_for(lambda: _program(base_dir, "staller").get("pid"), 30, "staller started", proc=wd)
    wait_for(lambda: (_program(base_dir, "staller").get("pid") or first) != first, 60, "hung staller replaced",
             proc=wd)
    last = _program(base_dir, "staller")["last_exit"]
    assert last["reason"].startswith("hung (status/staller.json heartbeat") and "stopped by the watchdog" in last["reason"]
    assert pid_gone(first)
    assert "stopped by SIGTERM" in (base_dir / "logs" / "staller.out").read_text(), "a polite stop first"
    wd.send_signal(signal.SIGTERM)
    assert wd.wait(timeout=60) == 0


def test_bad_arguments_answer_clearly(base_dir, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"programs": [{"name": "x", "argv": ["true"], "colour": "red"}]}))
    r = _trainctl(base_dir, "run", "--programs", str(bad))
    assert r.returncode == 2 and "unknown keys ['colour']" in r.stderr
    r = _trainctl(base_dir, "run", "--only", "nosuch")
    assert r.returncode == 2 and "unknown program(s) ['nosuch']" in r.stderr


def test_single_instance(base_dir, reaper, tmp_path):
    table = _table(tmp_path, base_dir, {"worker": "heartbeat"})
    wd = _start_watchdog(reaper, base_dir, table)
    wait_for(lambda: _program(base_dir, "worker").get("state") == "RUNNING", 30, "worker RUNNING", proc=wd)
    second = _trainctl(base_dir, "run", "--programs", str(table))
    assert second.returncode == 1 and f"already running (pid {wd.pid}" in second.stderr
    wd.send_signal(signal.SIGTERM)
    assert wd.wait(timeout=60) == 0


# ---------------------------------------------------------------- the real scripts
@pytest.mark.slow
def test_start_all_watchdog_restarts_killed_training_daemon_and_stop_all_cleans_up(base_dir, reaper):
    env = child_env()
    r = subprocess.run(["bash", str(REPO / "scripts" / "start_all.sh"), "--base-dir", str(base_dir),
                        "--training-only", "--no-setup"], capture_output=True, text=True, timeout=180, env=env)
    pids: set[int] = set()
    try:
        assert r.returncode == 0, r.stdout + r.stderr
        wd_pid = int((base_dir / ".pids" / "watchdog.pid").read_text())
        pids.add(wd_pid)
        first = int((base_dir / ".pids" / "training_daemon.pid").read_text())
        pids.add(first)
        wait_for(lambda: _program(base_dir, "training_daemon").get("state") == "RUNNING", 60, "daemon RUNNING")
        os.kill(first, signal.SIGKILL)  # its warm trainer child dies with it (PR_SET_PDEATHSIG)
        second = wait_for(lambda: (_program(base_dir, "training_daemon").get("pid") or first) != first
                          and _program(base_dir, "training_daemon")["pid"], 60, "daemon restarted")
        pids.add(second)
        wait_for(lambda: json.loads((base_dir / "status" / "training_status.json").read_text()).get("pid") == second,
                 120, "the new daemon's heartbeat")
        assert _program(base_dir, "training_daemon")["last_exit"]["signal"] == "SIGKILL"
    finally:
        stop = subprocess.run(["bash", str(REPO / "scripts" / "stop_all.sh"), "--base-dir", str(base_dir),
                               "--timeout", "120", "--kill"], capture_output=True, text=True, timeout=240, env=env)
    assert stop.returncode == 0, stop.stdout + stop.stderr
    for pid in pids:
        wait_for(lambda: pid_gone(pid), 30, f"pid {pid} gone")
    for pid_file in (base_dir / ".pids").glob("*.pid"):
        pid = int(pid_file.read_text().split()[0])
        assert pid_gone(pid), f"{pid_file.name}: {pid} still running"


def test_log_rotation_before_a_restart(tmp_path):
    from safety.supervision.processes import rotate_log
    log = tmp_path / "prog.out"
    for gen in range(5):
        log.write_text(f"gen {gen} " * 20)
        rotate_log(log, max_bytes=100, keep=3)
    assert not log.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prog.out.1", "prog.out.2", "prog.out.3"]
    assert (tmp_path / "prog.out.1").read_text().startswith("gen 4") and \
        (tmp_path / "prog.out.3").read_text().startswith("gen 2")
    log.write_text("small")
    rotate_log(log, max_bytes=100, keep=3)
    assert log.read_text() == "small"
