"""Device and numeric precision: the one rule that training, evaluation and serving share.

Why one rule: the evaluator must score the same numeric model the server serves (bf16 and fp32
give different greedy answers on the margin), and the engine's "auto" must mean the same thing.

  device "auto"      -> "cuda" when a CUDA device is visible, else "cpu"
  precision "auto"   -> "bf16" on CUDA that supports it and on a CPU with native bf16
                        (avx512_bf16 / amx_bf16); else "fp32" (older GPUs, CPUs that would emulate
                        bf16 slower than fp32). Training then runs mixed precision on the CPU: fp32
                        master weights under bf16 autocast (1.3x the tokens/s of fp32 in
                        bench/train_throughput.py here), so checkpoints stay fp32. Serving and
                        evaluation load the weights in bf16, as vLLM's ``--dtype auto`` serves an
                        fp32 checkpoint in half precision: on such a CPU the serving prefill is
                        about 1.5x faster (bench/decode_step.py --precision bf16 against fp32;
                        bench/serve_throughput.py --precision; the quality cost is measured by
                        bench/serve_precision.py). ``inference.precision`` "fp32" keeps serving and
                        evaluation in fp32.
  "fp16"             -> for training: fp32 master weights + a grad scaler (so the model loads fp32);
                        for inference: weights in fp16
torch is imported lazily so that importing this module stays cheap for torch-free daemons.
"""
from __future__ import annotations

import functools
from typing import Any

DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "bf16", "fp16", "fp32")


def resolve_device(requested: str = "auto", *, key: str = "device") -> str:
    """A concrete device for ``requested`` (``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``mps``).

    ``key`` names the config key in the error, e.g. ``evaluation.device``."""
    import torch
    if requested in (None, "", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"{key} is {requested!r} but no CUDA device is available (use 'auto' or 'cpu')")
    if requested == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ValueError(f"{key} is 'mps' but MPS is not available (use 'auto' or 'cpu')")
    return requested


def cpu_has_native_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """True when the CPU computes bf16 in hardware (x86 ``avx512_bf16`` or ``amx_bf16`` flags).
    Elsewhere bf16 on the CPU is emulated and slower than fp32, so "auto" keeps fp32."""
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False


@functools.lru_cache(maxsize=1)
def _this_cpu_has_native_bf16() -> bool:
    return cpu_has_native_bf16()  # read once per process: the flags do not change


def resolve_precision(precision: str, device: str) -> str:
    """``bf16`` / ``fp16`` / ``fp32`` for ``precision`` on ``device`` (``auto`` resolved as the
    module docstring says; training and inference get the same answer, and ``load_dtype`` says
    what each loads for it)."""
    if precision not in (None, "", "auto"):
        return precision
    if str(device).startswith("cuda"):
        import torch
        if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
            return "bf16"
    if device == "cpu" and _this_cpu_has_native_bf16():
        return "bf16"
    return "fp32"


def load_dtype(precision: str, *, training: bool = False, device: str | None = None) -> Any:
    """The torch dtype to load weights in. Training in fp16 keeps fp32 weights (the scaler's
    master copy), so only inference loads fp16; training in bf16 on the CPU keeps fp32 weights
    too (autocast computes in bf16), so training callers pass ``device``."""
    import torch
    if precision == "bf16":
        return torch.float32 if (training and device == "cpu") else torch.bfloat16
    if precision == "fp16" and not training:
        return torch.float16
    return torch.float32


def model_dtype(device: str, precision: str = "auto") -> Any:
    """Dtype for serving or evaluating on ``device``: ``load_dtype(resolve_precision(...))``."""
    return load_dtype(resolve_precision(precision, device))


def dtype_name(dtype: Any) -> str:
    """A torch dtype as status files and evaluation records name it: ``float32``, ``bfloat16``."""
    return str(dtype).replace("torch.", "")


def relative_error(got: Any, want: Any) -> float:
    """Largest absolute difference over ``want``'s largest magnitude (NaN when either has a NaN)."""
    got, want = got.float(), want.float()
    if got.shape != want.shape:
        return float("inf")
    if not want.numel():
        return 0.0
    return float((got - want).abs().max()) / (float(want.abs().max()) or 1.0)


def same_numbers(got: Any, want: Any, *, exact: bool) -> tuple[bool, float]:
    """``(agree, relative error)``: the rule every self-check against a model's own output uses
    (pruned last layer, prepacked linears, fast forward). ``exact``: fp32 arithmetic on both sides
    (1e-4, summation order only); else bf16/fp16 rounding (3e-2). NaN never agrees."""
    err = relative_error(got, want)
    return err <= (1e-4 if exact else 3e-2), err
