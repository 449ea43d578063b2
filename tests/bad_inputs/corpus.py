"""The corpus of bad inputs the daemon must quarantine (each with its reason) while staying up.

Generated rather than committed: several kinds cannot live in git (a FIFO, a symlink pointing
outside the base dir, invalid UTF-8 next to valid JSON, a line longer than the configured limit).
``make_corpus(folder, base_dir)`` writes every entry into ``folder`` and returns
``{entry name: (expected reason, expected line-level reason or None, expected line numbers)}``.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

GOOD = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
HUGE_LINE_BYTES = 6000  # tests set data.max_line_bytes below this


def _w(p: Path, data: bytes | str) -> None:
    p.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))


def make_corpus(folder: Path, base_dir: Path, validation_line: str | None = None) -> dict[str, tuple]:
    folder.mkdir(parents=True, exist_ok=True)
    good = json.dumps(GOOD)
    exp: dict[str, tuple] = {}

    _w(folder / "invalid_json.jsonl", '{"messages": [{"role": "user", "content": "x"}\n')
    exp["invalid_json.jsonl"] = ("invalid_records", "invalid_json", [1])
    _w(folder / "empty.jsonl", b"")
    exp["empty.jsonl"] = ("empty", None, [])
    _w(folder / "blank_lines.jsonl", "\n   \n\t\n")
    exp["blank_lines.jsonl"] = ("empty", None, [])
    _w(folder / "binary.jsonl", bytes(range(256)) * 4)
    exp["binary.jsonl"] = ("binary", None, [])
    _w(folder / "wrong_schema.jsonl", good + "\n" + json.dumps({"foo": 1, "bar": [2]}) + "\n")
    exp["wrong_schema.jsonl"] = ("invalid_records", "missing_messages", [2])
    _w(folder / "no_assistant.jsonl", json.dumps({"messages": [{"role": "user", "content": "hi"}]}) + "\n")
    exp["no_assistant.jsonl"] = ("invalid_records", "no_assistant_turn", [1])
    _w(folder / "huge_line.jsonl", good + "\n" + json.dumps(
        {"messages": [{"role": "user", "content": "x" * HUGE_LINE_BYTES}, {"role": "assistant", "content": "y"}]}) + "\n")
    exp["huge_line.jsonl"] = ("invalid_records", "line_too_long", [2])
    _w(folder / "invalid_utf8.jsonl", good.encode() + b"\n" +
       b'{"messages": [{"role": "user", "content": "caf\xe9"}, {"role": "assistant", "content": "ok"}]}\n')
    exp["invalid_utf8.jsonl"] = ("invalid_records", "invalid_utf8", [2])
    _w(folder / "wrong_extension.txt", good + "\n")
    exp["wrong_extension.txt"] = ("wrong_extension", None, [])
    _w(folder / "README", "drop .jsonl files here\n")
    exp["README"] = ("wrong_extension", None, [])
    sub = folder / "a_directory"
    sub.mkdir()
    _w(sub / "inner.jsonl", good + "\n")
    exp["a_directory"] = ("is_directory", None, [])
    os.symlink("/etc/hostname", folder / "escape_link.jsonl")
    exp["escape_link.jsonl"] = ("symlink_outside_base", None, [])
    inside = base_dir / "data" / "generated" / "inside.jsonl"
    inside.parent.mkdir(parents=True, exist_ok=True)
    _w(inside, good + "\n")
    os.symlink(inside, folder / "inside_link.jsonl")
    exp["inside_link.jsonl"] = ("symlink", None, [])
    _w(folder / "not_object.jsonl", "[1, 2, 3]\n")
    exp["not_object.jsonl"] = ("invalid_records", "not_object", [1])
    _w(folder / "bad_role.jsonl", json.dumps({"messages": [{"role": "wizard", "content": "hi"},
                                                           {"role": "assistant", "content": "x"}]}) + "\n")
    exp["bad_role.jsonl"] = ("invalid_records", "unknown_role", [1])
    _w(folder / "non_string_content.jsonl", json.dumps({"messages": [{"role": "user", "content": 123},
                                                                     {"role": "assistant", "content": "x"}]}) + "\n")
    exp["non_string_content.jsonl"] = ("invalid_records", "non_string_content", [1])
    _w(folder / "messages_not_list.jsonl", json.dumps({"messages": "hello"}) + "\n")
    exp["messages_not_list.jsonl"] = ("invalid_records", "invalid_messages", [1])
    _w(folder / "empty_assistant.jsonl", json.dumps({"messages": [{"role": "user", "content": "hi"},
                                                                  {"role": "assistant", "content": ""}]}) + "\n")
    exp["empty_assistant.jsonl"] = ("invalid_records", "empty_assistant", [1])
    os.mkfifo(folder / "fifo.jsonl")
    exp["fifo.jsonl"] = ("not_regular_file", None, [])
    _w(folder / "mixed_good_bad.jsonl", good + "\n" + good.replace("hello", "hey") + "\n{not json}\n")
    exp["mixed_good_bad.jsonl"] = ("invalid_records", "invalid_json", [3])
    if validation_line is not None:
        _w(folder / "leaks_validation.jsonl", good + "\n" + validation_line.rstrip("\n") + "\n")
        exp["leaks_validation.jsonl"] = ("contains_validation_items", "validation_item", [2])
    return exp


IGNORED_NAMES = (".hidden.jsonl", "in_progress.jsonl.tmp", "download.part", "editor.jsonl~")


def make_ignored(folder: Path) -> list[str]:
    """Names the daemon must never take (in-progress conventions): they stay in the inbox."""
    for n in IGNORED_NAMES:
        _w(folder / n, json.dumps(GOOD) + "\n")
    return list(IGNORED_NAMES)
