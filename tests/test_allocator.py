"""Freed memory stays in the training process: steps stop page-faulting their activations in."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

STEPS = """
import random, resource, sys, torch
sys.path.insert(0, {repo!r})
from foundation.allocator import retain_freed_memory
if {retain}:
    assert retain_freed_memory() and retain_freed_memory()  # idempotent
rng = random.Random(0)
def steps():
    for _ in range(30):  # activations of shuffled sizes alive together, then freed, as in training
        acts = [torch.ones(rng.randint(1, 8) << 18) for _ in range(24)]
        del acts
steps()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
steps()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(retain: bool) -> int:
    out = subprocess.run([sys.executable, "-c", STEPS.format(repo=str(REPO), retain=retain)],
                         capture_output=True, text=True, timeout=120, check=True)
    return int(out.stdout.strip().splitlines()[-1])


def test_retained_memory_stops_the_page_faults_of_repeated_steps():
    default, retained = _faults(False), _faults(True)
    assert default > 5000, default  # glibc's defaults hand the pages back and fault them in again
    assert retained * 5 < default, (retained, default)
