"""The autonomous sidecars: data generation, curriculum optimizer, adversarial miner, self-correction.

Each is a daemon that talks to the others only through ``status/*.json``, ``control/`` and files in
``inbox/``/``queue/``/``data/``; ``sidecar`` holds the loop, lock, status and logging they share.
"""
