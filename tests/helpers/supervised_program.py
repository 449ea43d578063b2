#!/usr/bin/env python3
"""A small real program for the watchdog tests.

    supervised_program.py BASE NAME heartbeat   writes status/NAME.json (pid, heartbeat_at) every 0.2 s
                                                until SIGTERM, then exits 0
    supervised_program.py BASE NAME crash       prints a line and exits 3 at once
    supervised_program.py BASE NAME stall       one heartbeat, then none (a hang) until SIGTERM
"""
import signal
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from foundation.status_io import write_status  # noqa: E402


def main() -> int:
    base, name, mode = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    if mode == "crash":
        print(f"{name}: cannot start (this program always fails)", flush=True)
        return 3
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print(f"{name}: running", flush=True)
    while not stop.is_set():
        write_status(base / "status" / f"{name}.json", {"state": "running"})
        if mode == "stall":
            stop.wait()
        stop.wait(0.2)
    print(f"{name}: stopped by SIGTERM", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
