"""File-system moves for the queue: atomic, never overwriting, never copy-then-delete.

Why a module of its own: every move of a data file (inbox -> queue -> processing -> completed /
failed) must be one atomic rename that cannot clobber another file with the same name, even when
the daemon and a ``trainctl queue`` command race for the same target name. ``os.rename``
silently replaces an existing file, so we use Linux ``renameat2(RENAME_NOREPLACE)`` (atomic
check-and-rename in the kernel) and fall back to ``link`` + ``unlink`` (also atomic for the
no-replace check) where renameat2 is unavailable. ``exchange`` swaps two directories atomically
(``RENAME_EXCHANGE``), which is how models/current_model/ is replaced without a moment where it
does not exist.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import shutil
from pathlib import Path

_AT_FDCWD = -100
_RENAME_NOREPLACE = 1
_RENAME_EXCHANGE = 2

_libc = None
_renameat2_ok = True


def _renameat2(src: str, dst: str, flags: int) -> None:
    """Call renameat2; raise OSError (ENOSYS/EINVAL when the kernel or fs lacks it)."""
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    fn = getattr(_libc, "renameat2", None)
    if fn is None:
        raise OSError(errno.ENOSYS, "renameat2 not available")
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    rc = fn(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), flags)
    if rc != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e), src, None, dst)


def rename_noreplace(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Atomically rename ``src`` to ``dst``; FileExistsError when ``dst`` exists (never replaced).
    Works for files, directories and symlinks (the link itself moves, not its target)."""
    global _renameat2_ok
    src, dst = os.fspath(src), os.fspath(dst)
    if _renameat2_ok:
        try:
            _renameat2(src, dst, _RENAME_NOREPLACE)
            return
        except OSError as e:
            if e.errno not in (errno.ENOSYS, errno.EINVAL):
                raise
            _renameat2_ok = False
    if os.path.isdir(src) and not os.path.islink(src):
        # No atomic no-replace for directories without renameat2: best effort check.
        if os.path.lexists(dst):
            raise FileExistsError(errno.EEXIST, "destination exists", dst)
        os.rename(src, dst)
        return
    os.link(src, dst, follow_symlinks=False)  # raises FileExistsError atomically
    os.unlink(src)


def exchange(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Atomically swap two paths (both must exist). False when the kernel/fs cannot do it."""
    try:
        _renameat2(os.fspath(a), os.fspath(b), _RENAME_EXCHANGE)
        return True
    except OSError as e:
        if e.errno in (errno.ENOSYS, errno.EINVAL):
            return False
        raise


def split_name(name: str) -> tuple[str, str]:
    """``x.jsonl`` -> (``x``, ``.jsonl``); a directory or extension-less name keeps ext ''."""
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem:
        return name, ""
    return stem, "." + ext


def candidate_names(name: str, limit: int = 10_000):
    """``x.jsonl``, ``x-2.jsonl``, ``x-3.jsonl`` ... (the collision suffixes)."""
    yield name
    stem, ext = split_name(name)
    for i in range(2, limit):
        yield f"{stem}-{i}{ext}"


def move_unique(src: str | os.PathLike, dest_dir: str | os.PathLike, name: str | None = None,
                taken=None) -> Path:
    """Move ``src`` into ``dest_dir`` under ``name`` (default: its own), adding ``-2``, ``-3``...
    when the name is taken; ``taken(name) -> bool`` may reserve more names (e.g. names used in
    other queue folders). Returns the new path. Cross-device: copy to a temp name, fsync, rename."""
    src = Path(src)
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    for cand in candidate_names(name or src.name):
        if taken is not None and taken(cand):
            continue
        dst = dest_dir / cand
        try:
            rename_noreplace(src, dst)
            return dst
        except FileExistsError:
            continue
        except OSError as e:
            if e.errno != errno.EXDEV:
                raise
            return _move_across_devices(src, dest_dir, cand, taken)
    raise FileExistsError(f"no free name for {src.name} in {dest_dir}")


def _move_across_devices(src: Path, dest_dir: Path, first: str, taken) -> Path:
    tmp = dest_dir / f".{first}.incoming"
    if src.is_dir():
        shutil.copytree(src, tmp, symlinks=True)
    else:
        shutil.copy2(src, tmp, follow_symlinks=False)
        _fsync_file(tmp)
    for cand in candidate_names(first):
        if taken is not None and taken(cand):
            continue
        try:
            rename_noreplace(tmp, dest_dir / cand)
        except FileExistsError:
            continue
        if src.is_dir() and not src.is_symlink():
            shutil.rmtree(src)
        else:
            src.unlink()
        return dest_dir / cand
    raise FileExistsError(f"no free name for {src.name} in {dest_dir}")


def copy_in_atomically(src: str | os.PathLike, dest_dir: str | os.PathLike, name: str | None = None,
                       taken=None) -> Path:
    """Copy a file into ``dest_dir`` so a watcher never sees half of it: write a dot-temp name
    in the same folder (watchers ignore dotfiles), fsync, then rename to a free name."""
    src = Path(src)
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    tmp = dest_dir / f".{(name or src.name)}.{os.getpid()}.part"
    try:
        with open(src, "rb") as fi, open(tmp, "wb") as fo:
            shutil.copyfileobj(fi, fo, 1 << 20)
            fo.flush()
            os.fsync(fo.fileno())
        return move_unique(tmp, dest_dir, name or src.name, taken=taken)
    finally:
        if tmp.exists():
            tmp.unlink()


def _fsync_file(p: Path) -> None:
    fd = os.open(p, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


