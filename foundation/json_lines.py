"""The daemon <-> trainer-child pipe protocol is JSON lines; both ends read it the same way."""
from __future__ import annotations

import json
from typing import Iterable, Iterator


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
