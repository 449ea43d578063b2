"""Freed memory stays in the training process: steps stop page-faulting their activations in.

glibc's own choice of what to hand back is sensitive to heap layout (a small block freed last can
pin the heap's top, and then even the defaults keep everything), so the default-against-retained
comparison drives malloc/free directly, where nothing else lands on the heap between the blocks:
there glibc's defaults trim the heap and fault every page in again, every step, on every run. The
torch run then checks that the engine's real allocations, with retention on, stop faulting.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

SETUP = """
import ctypes, json, random, resource, sys
sys.path.insert(0, {repo!r})
from foundation.allocator import retain_freed_memory
if {retain}:
    assert retain_freed_memory() and retain_freed_memory()  # idempotent
rng = random.Random(0)
sizes = [[rng.randint(1, 8) << 20 for _ in range(24)] for _ in range(30)]  # shuffled activation sizes
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
"""

LIBC_STEPS = SETUP + """
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd",
                                               "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
libc.mallinfo2.restype = MallInfo2
def steps():
    held = []
    for step in sizes:  # all of a step's blocks alive together, written, then freed
        blocks = [libc.malloc(n) for n in step]
        for block, n in zip(blocks, step):
            ctypes.memset(block, 1, n)
        for block in blocks:
            libc.free(block)
        info = libc.mallinfo2()
        held.append(info.arena + info.hblkhd)  # bytes malloc still holds from the kernel
    return held
steps()
before = faults()
held = steps()
print(json.dumps({{"faults": faults() - before, "held_min": min(held),
                  "pages": sum(map(sum, sizes)) // 4096,  # pages the measured steps write
                  "peak": max(map(sum, sizes))}}))  # bytes alive at once in the largest step
"""

TORCH_STEPS = SETUP + """
import torch
def steps():
    for step in sizes:
        acts = [torch.ones(n // 4) for n in step]  # float32: n bytes each
        del acts
steps()
before = faults()
steps()
print(json.dumps({{"faults": faults() - before}}))
"""


def _run(script: str, retain: bool) -> dict:
    out = subprocess.run([sys.executable, "-c", script.format(repo=str(REPO), retain=retain)],
                         capture_output=True, text=True, timeout=120, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_retained_memory_stops_the_page_faults_of_repeated_steps():
    default, retained = _run(LIBC_STEPS, False), _run(LIBC_STEPS, True)
    pages, peak = default["pages"], default["peak"]
    # glibc's defaults: the heap is trimmed after each step, so its pages fault in again (at least
    # once per 2 MB even where the kernel backs the heap with transparent huge pages).
    assert default["held_min"] < peak // 4, default
    assert default["faults"] > pages // 1024, (default, pages)
    # Retained: what the largest step used stays in the process, and the steps stop faulting.
    assert retained["held_min"] >= peak, (retained, peak)
    assert retained["faults"] * 20 < default["faults"], (retained, default)
    # The same with torch's own allocations (the engine's case): well under 1% of pages fault.
    torch_retained = _run(TORCH_STEPS, True)
    assert torch_retained["faults"] < pages // 100, (torch_retained, pages)
