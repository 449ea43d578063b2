"""Receiving a model version over HTTP: deployment to a server that shares no file system with the
trainer (REMOTE_INFERENCE.md, "Serving from another machine").

    GET    /models/upload/{version}             what this server holds of a version: the committed
                                                manifest (``deployed``) and the bytes received so far
                                                of an unfinished upload (``incoming``)
    PUT    /models/upload/{version}/{file}      one file's bytes, streamed; ``Content-Range: bytes
                                                START-END/TOTAL`` continues a part at START
    POST   /models/upload/{version}/commit      {"files": {name: {"sha256", "size"}}}: verify every
                                                file, then make the version a deployed folder
    DELETE /models/upload/{version}             drop the version (upload and deployed folder)
    PUT    /models/current                      {"version"}: the version this server loads at start

Why it cannot serve a half-written model: bytes land in ``models/deployed/.incoming/<version>/
<file>.part``, a folder no version name can reach (version names never start with a dot). Only a
commit whose manifest matches every file (size and sha256) renames the folder to
``models/deployed/<version>`` in one ``rename``, after fsyncing the files, so a crash leaves either
the old state or the whole new version. An interrupted upload stays in ``.incoming`` for the client
to continue (``GET`` says where) until it is older than ``inference.upload_stale_seconds``.

Names are the model-file contract of ``foundation.model_files`` (plain names with a model suffix)
and versions ``foundation.deployed_versions.VERSION_RE``; every path goes through ``safe_join``.
State kept in memory (running hashes, which versions are busy) assumes the single server process
that ``trainctl serve`` runs.
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
import shutil
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from starlette.requests import ClientDisconnect, Request

from foundation.atomic_io import atomic_write_json, atomic_write_text, fsync_dir, read_json
from foundation.deployed_versions import BASE_VERSION, VERSION_RE, current_file, read_current_version
from foundation.model_files import MODEL_SUFFIXES, TRAINING_STATE_FILES
from foundation.paths import PathEscapeError, Paths, is_within, safe_join
from inference.errors import APIError, INVALID_REQUEST, NOT_FOUND, SERVER

log = logging.getLogger("inference.uploads")

INCOMING = ".incoming"
MANIFEST = ".upload_manifest.json"   # written by commit into the version folder: what was verified
PART = ".part"
MAX_FILES = 256
FILE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
RANGE_RE = re.compile(r"^bytes (\d+)-(\d+)/(\d+)$")
RESERVED_VERSIONS = {BASE_VERSION, "current"}  # "current" is the pointer file's name
HASH_BLOCK = 1 << 20
FREE_DISK_MARGIN = 256 << 20  # never fill the disk to the last byte: logs and status files need room


def _bad(message: str, param: str, code: str) -> APIError:
    return APIError(400, message, INVALID_REQUEST, param, code)


def _conflict(message: str, code: str, status: int = 409) -> APIError:
    return APIError(status, message, INVALID_REQUEST, None, code)


def check_version(version: str) -> str:
    if not VERSION_RE.match(version or "") or version in RESERVED_VERSIONS:
        raise _bad(f"version {version!r} is not a plain version name (letters, digits, '.', '_', '-'; not "
                   f"starting with a dot; not {' or '.join(sorted(RESERVED_VERSIONS))})", "version", "invalid_version")
    return version


def check_file_name(name: str) -> str:
    """A plain file name from the model-file contract (config, weights, tokenizer, chat template)."""
    if (not FILE_RE.match(name or "") or Path(name).suffix not in MODEL_SUFFIXES
            or name in TRAINING_STATE_FILES):
        raise _bad(f"file name {name!r} is not a model file (a plain name ending in {', '.join(MODEL_SUFFIXES)}; "
                   "no folders, no training state)", "file", "invalid_file_name")
    return name


def sha256_file(path: Path, upto: int | None = None) -> "hashlib._Hash":
    """A running sha256 over the first ``upto`` bytes of ``path`` (all of it when None)."""
    h = hashlib.sha256()
    left = upto
    with open(path, "rb") as fh:
        while left is None or left > 0:
            block = fh.read(HASH_BLOCK if left is None else min(HASH_BLOCK, left))
            if not block:
                break
            h.update(block)
            if left is not None:
                left -= len(block)
    return h


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def _newest_mtime(folder: Path) -> float:
    """Last activity in an upload folder (its files' writes, or the folder itself)."""
    times = [folder.stat().st_mtime]
    for f in folder.iterdir():
        try:
            times.append(f.stat().st_mtime)
        except FileNotFoundError:
            pass
    return max(times)


def _remove_tree(folder: Path) -> None:
    """Rename first (one atomic step out of sight), then delete at leisure."""
    if not folder.exists():
        return
    trash = folder.parent / f".trash-{folder.name}-{uuid.uuid4().hex[:8]}"
    os.rename(folder, trash)
    shutil.rmtree(trash, ignore_errors=True)


class UploadStore:
    """The upload side of ``models/deployed/`` of one server."""

    def __init__(self, paths: Paths, model_dir: str, *, max_bytes: int, stale_seconds: float,
                 served_version: Callable[[], str | None], clock: Callable[[], float] = time.time):
        self.paths = paths
        self.model_dir = model_dir
        self.root = paths.resolve(model_dir)
        self.incoming = self.root / INCOMING
        self.max_bytes = max_bytes
        self.stale_seconds = stale_seconds
        self.served_version = served_version
        self.clock = clock
        self._busy: set[str] = set()   # versions with a request in progress (event-loop thread only)
        self._hashes: dict[tuple[str, str], tuple[int, Any]] = {}  # (version, file) -> (bytes, running sha256)

    # ------------------------------------------------------------------ paths and bookkeeping
    def _incoming_dir(self, version: str) -> Path:
        if not is_within(self.paths.models, self.root):
            raise APIError(500, f"inference.model_dir {self.model_dir!r} is outside the models folder", SERVER)
        try:
            return safe_join(self.incoming, check_version(version))
        except PathEscapeError:
            raise _bad(f"version {version!r} resolves outside {self.incoming}", "version", "invalid_version") from None

    def _final_dir(self, version: str) -> Path:
        try:
            return safe_join(self.root, check_version(version))
        except PathEscapeError:
            raise _bad(f"version {version!r} resolves outside {self.root}", "version", "invalid_version") from None

    @contextmanager
    def _claim(self, version: str) -> Iterator[None]:
        """One request per version at a time; a second gets 409 at once rather than waiting behind a
        stream that may never finish (a half-open connection)."""
        if version in self._busy:
            raise _conflict(f"version {version!r} has another upload request in progress; retry when it ends",
                            "upload_busy")
        self._busy.add(version)
        try:
            yield
        finally:
            self._busy.discard(version)

    def _forget(self, version: str) -> None:
        for key in list(self._hashes):  # list(): commit runs in a worker thread
            if key[0] == version:
                self._hashes.pop(key, None)

    def sweep(self) -> list[str]:
        """Discard incomplete uploads idle for longer than ``stale_seconds``, and trash folders a
        crash left behind; returns the versions discarded."""
        gone: list[str] = []
        now = self.clock()
        if self.incoming.is_dir():
            for d in self.incoming.iterdir():
                if d.is_dir() and d.name not in self._busy and now - _newest_mtime(d) > self.stale_seconds:
                    shutil.rmtree(d, ignore_errors=True)
                    self._forget(d.name)
                    gone.append(d.name)
                    log.warning("discarded the incomplete upload of %s (idle over %.0fs)", d.name, self.stale_seconds)
        if self.root.is_dir():
            for d in self.root.glob(".trash-*"):
                shutil.rmtree(d, ignore_errors=True)
        return gone

    def _received(self, version: str) -> dict[str, int]:
        d = self._incoming_dir(version)
        if not d.is_dir():
            return {}
        return {f.name[:-len(PART)]: f.stat().st_size for f in sorted(d.iterdir())
                if f.is_file() and f.name.endswith(PART)}

    # ------------------------------------------------------------------ GET
    def status(self, version: str) -> dict:
        self.sweep()
        final = self._final_dir(version)
        manifest = read_json(final / MANIFEST) if (final / "config.json").is_file() else None
        return {"version": version, "deployed": (manifest or {}).get("files") if manifest else None,
                "incoming": self._received(version), "max_bytes": self.max_bytes,
                "served": self.served_version() == version,
                "current": read_current_version(self.paths, self.model_dir) == version}

    # ------------------------------------------------------------------ PUT (streamed)
    def _parse_range(self, request: Request) -> tuple[int, int | None, int | None]:
        """(start, end inclusive or None, total or None) from Content-Range; no header: the whole file."""
        raw = request.headers.get("content-range")
        if raw is None:
            return 0, None, None
        m = RANGE_RE.match(raw.strip())
        if not m:
            raise _bad(f"Content-Range {raw!r} is not 'bytes START-END/TOTAL'", "Content-Range", "invalid_range")
        start, end, total = (int(g) for g in m.groups())
        if not start <= end < total:
            raise _bad(f"Content-Range {raw!r} is not a range inside the file", "Content-Range", "invalid_range")
        return start, end, total

    async def receive(self, version: str, name: str, request: Request) -> dict:
        d = self._incoming_dir(version)
        check_file_name(name)
        start, end, total = self._parse_range(request)
        with self._claim(version):
            self.sweep()
            received = self._received(version)
            if name not in received and len(received) >= MAX_FILES:
                raise _conflict(f"an upload holds at most {MAX_FILES} files", "too_many_files", 413)
            have = received.get(name, 0)
            if start not in (0, have):  # continue where it stopped, or start the file over
                raise _conflict(f"{name}: this server holds {have} bytes of it; continue at byte {have} "
                                f"(Content-Range: bytes {have}-...) or start over at 0, not at {start}",
                                "offset_mismatch")
            others = sum(v for k, v in received.items() if k != name)
            limit = self.max_bytes - others  # the most this file may grow to
            if total is not None and total > limit:
                raise _conflict(f"{name} is {total} bytes; this upload may hold {self.max_bytes} bytes in all "
                                "(inference.upload_max_bytes)", "upload_too_large", 413)
            d.mkdir(parents=True, exist_ok=True)
            if total is not None and shutil.disk_usage(d).free < total - start + FREE_DISK_MARGIN:
                raise APIError(507, f"not enough free disk under {self.root} for {total - start} more bytes",
                               INVALID_REQUEST, None, "insufficient_storage")
            part = d / (name + PART)
            size, h = await self._hash_upto(version, name, part, start)
            disconnected = False
            # Plain blocking writes on the event loop: one chunk (at most 64 KiB from uvicorn) into
            # the page cache takes microseconds; the slow fsync happens at commit, in a thread.
            with open(part, "r+b" if start else "wb") as fh:
                fh.seek(start)
                fh.truncate()
                try:
                    async for chunk in request.stream():
                        if size + len(chunk) > limit:
                            raise _conflict(f"{name} grew past the upload limit of {self.max_bytes} bytes "
                                            "(inference.upload_max_bytes)", "upload_too_large", 413)
                        if end is not None and size + len(chunk) > end + 1:
                            raise _bad(f"{name}: the body runs past the end of Content-Range", "Content-Range",
                                       "invalid_range")
                        fh.write(chunk)
                        h.update(chunk)
                        size += len(chunk)
                except ClientDisconnect:
                    disconnected = True  # keep what arrived: the client continues from there
                finally:
                    fh.flush()
                    self._hashes[(version, name)] = (size, h)
            if disconnected:
                log.info("upload of %s/%s interrupted at %d bytes", version, name, size)
            # without Content-Range the body is the whole file
            complete = size == total if total is not None else not disconnected
            return {"version": version, "file": name, "received": size, "complete": complete}

    async def _hash_upto(self, version: str, name: str, part: Path, start: int) -> tuple[int, Any]:
        """The running hash of the part's first ``start`` bytes: kept from the last request, or
        re-read from disk (a restarted server, or a write that failed half-way)."""
        if start == 0:
            return 0, hashlib.sha256()
        known = self._hashes.get((version, name))
        if known is not None and known[0] == start:
            return start, known[1].copy()
        return start, await asyncio.to_thread(sha256_file, part, start)

    # ------------------------------------------------------------------ commit
    def _check_manifest(self, body: dict) -> dict[str, dict]:
        unknown = sorted(set(body) - {"files"})
        if unknown:
            raise _bad(f"unrecognized commit field(s): {', '.join(unknown)}", unknown[0], "unknown_parameter")
        files = body.get("files")
        if not isinstance(files, dict) or not files:
            raise _bad("'files' must be an object {file name: {\"sha256\": hex, \"size\": bytes}}", "files",
                       "invalid_type")
        if len(files) > MAX_FILES:
            raise _bad(f"a version holds at most {MAX_FILES} files", "files", "too_many_files")
        out: dict[str, dict] = {}
        for name, meta in files.items():
            check_file_name(name)
            if (not isinstance(meta, dict) or set(meta) != {"sha256", "size"}
                    or not isinstance(meta["sha256"], str) or not SHA256_RE.match(meta["sha256"])
                    or not isinstance(meta["size"], int) or isinstance(meta["size"], bool) or meta["size"] < 0):
                raise _bad(f"files[{name!r}] must be {{\"sha256\": 64 lowercase hex digits, \"size\": bytes}}",
                           "files", "invalid_value")
            out[name] = {"sha256": meta["sha256"], "size": meta["size"]}
        if "config.json" not in out or not any(n.endswith(".safetensors") for n in out):
            raise _bad("a version needs config.json and safetensors weights", "files", "incomplete_model")
        if sum(m["size"] for m in out.values()) > self.max_bytes:
            raise _conflict(f"the version is over the upload limit of {self.max_bytes} bytes", "upload_too_large", 413)
        return out

    async def commit(self, version: str, body: dict) -> dict:
        self._incoming_dir(version)
        files = self._check_manifest(body)
        with self._claim(version):
            if self.served_version() == version:
                raise _conflict(f"version {version!r} is being served; deploy under a new version name",
                                "version_in_use")
            return await asyncio.to_thread(self._commit, version, files)

    def _commit(self, version: str, files: dict[str, dict]) -> dict:
        d = self._incoming_dir(version)
        received = self._received(version)
        missing = [f"{n} ({received.get(n, 0)} of {m['size']} bytes)" for n, m in files.items()
                   if received.get(n) != m["size"]]
        if missing:
            raise _conflict(f"upload of {version!r} is incomplete: {', '.join(missing)}", "upload_incomplete")
        bad = []
        for name, meta in files.items():
            part = d / (name + PART)
            known = self._hashes.get((version, name))
            h = known[1] if known is not None and known[0] == meta["size"] else sha256_file(part)
            if h.hexdigest() != meta["sha256"]:
                bad.append(name)
                part.unlink(missing_ok=True)  # appending cannot fix it: the client sends it again
                self._hashes.pop((version, name), None)
        if bad:
            raise APIError(422, f"sha256 mismatch for {', '.join(bad)}: those files were discarded; upload them "
                                "again", INVALID_REQUEST, "files", "checksum_mismatch")
        for name in files:
            os.replace(d / (name + PART), d / name)
            _fsync_file(d / name)
        for extra in d.iterdir():  # parts the manifest does not name never become part of the version
            if extra.name not in files:
                extra.unlink()
        atomic_write_json(d / MANIFEST, {"version": version, "files": files,
                                         "committed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
        fsync_dir(d)
        final = self._final_dir(version)
        _remove_tree(final)  # a re-deployed version name (a rewritten checkpoint) replaces the old folder
        os.rename(d, final)
        fsync_dir(self.incoming)
        fsync_dir(self.root)
        self._forget(version)
        total = sum(m["size"] for m in files.values())
        log.info("committed version %s (%d files, %d bytes)", version, len(files), total)
        return {"status": "ok", "version": version, "files": len(files), "bytes": total}

    # ------------------------------------------------------------------ delete, current
    async def delete(self, version: str) -> dict:
        final = self._final_dir(version)
        d = self._incoming_dir(version)
        with self._claim(version):
            if version in (self.served_version(), read_current_version(self.paths, self.model_dir)):
                raise _conflict(f"version {version!r} is being served or is current; it stays", "version_in_use")
            had_upload, had_version = d.exists(), final.exists()
            await asyncio.to_thread(_remove_tree, d)
            await asyncio.to_thread(_remove_tree, final)
            self._forget(version)
        return {"status": "ok", "version": version, "discarded_upload": had_upload, "deleted": had_version}

    def set_current(self, body: dict) -> dict:
        unknown = sorted(set(body) - {"version"})
        if unknown:
            raise _bad(f"unrecognized field(s): {', '.join(unknown)}; use 'version'", unknown[0], "unknown_parameter")
        version = body.get("version")
        if not isinstance(version, str):
            raise _bad("'version' must be a string", "version", "invalid_type")
        if not (self._final_dir(version) / "config.json").is_file():
            raise APIError(404, f"no deployed version {version!r} on this server", NOT_FOUND, "version",
                           "version_not_found")
        atomic_write_text(current_file(self.paths, self.model_dir), version + "\n")
        return {"status": "ok", "current": version}
