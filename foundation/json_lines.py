"""Reading line files: the daemon <-> trainer-child pipe protocol and the JSONL files (logs,
training data, suites) are JSON lines; every reader parses them the same way."""
from __future__ import annotations

import json
import os
from typing import Any, Iterable, Iterator, NamedTuple


def iter_json_lines(lines: Iterable[str]) -> Iterator[dict]:
    """Each JSON object of ``lines``; blank lines and lines that are not JSON objects are skipped
    (a peer killed mid-write leaves half a line, which must not stop the reader)."""
    for line in lines:
        line = line.strip()
        if not line:
            continue
        try:
            msg = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(msg, dict):
            yield msg


class NumberedLine(NamedTuple):
    lineno: int
    """1-based."""
    text: str
    value: Any
    """The parsed JSON value (any type); None when ``error`` is set."""
    error: str | None
    """The JSON decoder's message for a line that is not JSON, else None."""


def numbered_json_lines(lines: Iterable[str]) -> Iterator[NumberedLine]:
    """Each non-blank line of ``lines`` with its line number, parsed: for readers that report
    a bad line by number (data checks, the validation suite) instead of skipping it."""
    for lineno, text in enumerate(lines, 1):
        if not text.strip():
            continue
        try:
            yield NumberedLine(lineno, text, json.loads(text), None)
        except json.JSONDecodeError as e:
            yield NumberedLine(lineno, text, None, e.msg)


def tail_lines(path: str | os.PathLike, max_bytes: int) -> list[str]:
    """The complete lines among the last ``max_bytes`` bytes of ``path`` (a line cut by the start
    of that window is left out); [] when the file cannot be read. For logs that grow for weeks,
    of which only the end matters."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            data = f.read()
    except OSError:
        return []
    lines = data.decode("utf-8", "replace").splitlines()
    return lines[1:] if size > max_bytes else lines
