"""Why did a training job fail? One machine-readable kind per failure.

Kinds (written to ``NAME.error.json`` as ``reason``/``kind``):
  oom        out of (GPU or host) memory -> retried with half the batch, double accumulation
  nan_loss   the loss became NaN/inf
  data_error the file is not trainable (validator/tokenization/ValueError family)
  disk_full  ENOSPC / EDQUOT while writing checkpoints or the model
  killed     the training process died from a signal (SIGKILL by the OOM killer, a person, ...)
  hang       no optimizer step for longer than daemon.stall_timeout (the daemon killed it)
  other      anything else

Kept free of torch imports: the daemon classifies child exits by exit status and the child's
report (exception type name + message), the child classifies exception objects, and the crash
detector (safety/) reads free text from logs with the same markers (``classify_text``).
"""
from __future__ import annotations

import errno
import signal
from dataclasses import asdict, dataclass

KINDS = ("oom", "nan_loss", "data_error", "disk_full", "killed", "hang", "other")

_OOM_TYPES = {"OutOfMemoryError", "CudaOutOfMemoryError", "MemoryError"}
_OOM_TEXT = ("out of memory", "cuda out of memory", "can't allocate memory", "cannot allocate memory",
             "defaultcpuallocator", "cublas_status_alloc_failed", "hip out of memory", "mps backend out of memory")
_NAN_TYPES = {"NanLossError"}
_NAN_TEXT = ("loss is nan", "loss is inf", "loss is -inf", "nan loss", "non-finite loss")
# The engine raises data problems as the ValueError family (DataError, RecordError,
# JSONDecodeError, UnicodeDecodeError all derive from it); the MRO check catches subclasses.
_DATA_TYPES = {"DataError", "RecordError", "ValidationError", "ValueError"}
_DISK_TEXT = ("no space left on device", "disk quota exceeded", "enospc")
_RETRYABLE = {"oom"}


@dataclass
class Failure:
    kind: str
    message: str
    retryable: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


def classify_exception(exc: BaseException) -> Failure:
    """Classify an exception raised by the engine (walks the ``__cause__``/``__context__`` chain)."""
    seen = set()
    chain = []
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        chain.append(e)
        e = e.__cause__ or e.__context__
    for e in chain:
        kind = _kind_of(type(e).__name__, [c.__name__ for c in type(e).__mro__], str(e),
                        getattr(e, "errno", None))
        if kind != "other":
            return Failure(kind, _message(exc), kind in _RETRYABLE)
    return Failure("other", _message(exc), False)


def classify_report(type_name: str, message: str, mro: list[str] | None = None,
                    err_no: int | None = None) -> Failure:
    """Classify from a reported exception (type name, message) -- e.g. the child's pipe report."""
    kind = _kind_of(type_name, mro or [type_name], message, err_no)
    return Failure(kind, f"{type_name}: {message}" if type_name else message, kind in _RETRYABLE)


def classify_exit(returncode: int | None, stderr_tail: str = "") -> Failure:
    """Classify a child that exited without a report (crash, signal, killed by the kernel)."""
    if returncode is not None and returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        hint = " (possibly the kernel OOM killer)" if -returncode == signal.SIGKILL else ""
        return Failure("killed", f"training process killed by {name}{hint}", False)
    if returncode in (137, 143):  # shells/launchers report 128+signal
        return Failure("killed", f"training process exited with status {returncode} (killed by a signal)", False)
    low = stderr_tail.lower()
    if any(t in low for t in _OOM_TEXT):
        return Failure("oom", f"training process ran out of memory (exit status {returncode})", True)
    if any(t in low for t in _DISK_TEXT):
        return Failure("disk_full", f"no space left on device (exit status {returncode})", False)
    if any(t in low for t in _NAN_TEXT):
        return Failure("nan_loss", f"loss became NaN/inf (exit status {returncode})", False)
    tail = stderr_tail.strip().splitlines()[-1:] if stderr_tail.strip() else []
    return Failure("other", f"training process exited with status {returncode}"
                   + (f": {tail[0][:500]}" if tail else ""), False)


def classify_text(text: str) -> str | None:
    """The kind named by free text (an exception line, log lines): oom, disk_full or nan_loss;
    None when the text names none of them."""
    low = text.lower()
    if any(t in low for t in _OOM_TEXT) or any(t.lower() in low for t in _OOM_TYPES):
        return "oom"
    if any(t in low for t in _DISK_TEXT):
        return "disk_full"
    if any(t in low for t in _NAN_TEXT) or any(t.lower() in low for t in _NAN_TYPES):
        return "nan_loss"
    return None


def _kind_of(type_name: str, mro: list[str], message: str, err_no: int | None) -> str:
    low = message.lower()
    names = set(mro) | {type_name}
    if names & _OOM_TYPES or any(t in low for t in _OOM_TEXT):
        return "oom"
    if err_no in (errno.ENOSPC, errno.EDQUOT) or any(t in low for t in _DISK_TEXT):
        return "disk_full"
    if names & _NAN_TYPES or any(t in low for t in _NAN_TEXT):
        return "nan_loss"
    if names & _DATA_TYPES:
        return "data_error"
    return "other"


def _message(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}"[:4000] if text else type(exc).__name__
