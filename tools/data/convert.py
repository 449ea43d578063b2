#!/usr/bin/env python3
"""Convert prompt/completion, alpaca, text (or mixed) records to the messages JSONL the trainer
reads natively; writes the output atomically and reports every bad line with its number.

    python3 tools/data/convert.py --input raw.jsonl --output inbox/clean.jsonl [--format auto]
    trainctl data convert --input raw.json --output clean.jsonl --format alpaca

Input is JSON Lines, or (``.json``) one JSON array of records (item i is reported as line i).
Text records stay ``{"text": ...}`` (raw text has no chat structure to convert to). With a bad
line nothing is written (exit 1) unless ``--skip-bad`` (good lines are written, bad ones listed).
"""
from __future__ import annotations

if __package__ in (None, ""):
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import click

from foundation.atomic_io import atomic_write_text
from trainer.data.validator import BLANK, LineIssue, iter_raw_lines, parse_line
from trainer.data.records import FORMATS, RecordError, normalize_record


@dataclass
class ConvertResult:
    input: str
    output: str
    n_records: int = 0
    n_good: int = 0
    n_written: int = 0
    written: bool = False
    bad: list[LineIssue] = field(default_factory=list)
    formats: dict = field(default_factory=dict)
    """Input format -> count (auto detection)."""

    def to_dict(self) -> dict:
        return {"input": self.input, "output": self.output, "n_records": self.n_records,
                "n_good": self.n_good, "n_written": self.n_written, "written": self.written, "formats": self.formats,
                "bad": [vars(b) for b in self.bad]}


def _items(path: Path, max_line_bytes: int):
    """(line number, parsed value or BLANK, issue) over a JSONL file or a JSON array file."""
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(path.read_bytes().decode("utf-8-sig"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            yield 1, None, LineIssue(1, "", "invalid_json", f"not a JSON document: {e}")
            return
        if not isinstance(data, list):
            yield 1, None, LineIssue(1, "", "not_object", "a .json input must be an array of records")
            return
        for i, obj in enumerate(data, 1):
            yield i, obj, None
        return
    with open(path, "rb") as f:
        for n, raw in iter_raw_lines(f, max_line_bytes):
            if raw is None:
                yield n, None, LineIssue(n, "", "line_too_long", f"line is longer than {max_line_bytes} bytes")
                continue
            obj, issue = parse_line(n, raw)
            yield n, obj, issue


def output_record(rec: dict) -> dict:
    """A normalized record as one output line: metadata only when there is some."""
    out = {"messages": rec["messages"]} if "messages" in rec else {"text": rec["text"]}
    if rec.get("metadata"):
        out["metadata"] = rec["metadata"]
    return out


def convert_file(input: str | Path, output: str | Path, *, format: str = "auto", skip_bad: bool = False,
                 max_line_bytes: int = 10_000_000) -> ConvertResult:
    """Convert ``input`` to messages JSONL at ``output`` (atomic). Raises FileNotFoundError /
    IsADirectoryError for a bad input path."""
    from trainer.data.records import detect_format
    src, dst = Path(input), Path(output)
    if not src.exists():
        raise FileNotFoundError(f"{src}: no such file")
    if src.is_dir():
        raise IsADirectoryError(f"{src}: is a directory")
    res = ConvertResult(str(src), str(dst))
    lines: list[str] = []
    for n, obj, issue in _items(src, max_line_bytes):
        if issue is not None:
            res.bad.append(issue)
            continue
        if obj is BLANK:
            continue
        res.n_records += 1
        try:
            rec = normalize_record(obj, format=format)
        except RecordError as e:
            res.bad.append(LineIssue(n, e.field, e.reason, e.message))
            continue
        kind = detect_format(obj) or "?"
        res.formats[kind] = res.formats.get(kind, 0) + 1
        lines.append(json.dumps(output_record(rec), ensure_ascii=False))
    res.n_good = len(lines)
    if res.bad and not skip_bad:
        return res
    if not lines:
        return res
    atomic_write_text(dst, "\n".join(lines) + "\n")
    res.written, res.n_written = True, len(lines)
    return res


@click.command("convert")
@click.option("--input", "input_", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Input .jsonl (or .json array).")
@click.option("--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Output .jsonl (written atomically).")
@click.option("--format", "fmt", type=click.Choice(list(FORMATS)), default="auto", show_default=True,
              help="Input format; auto detects it per line.")
@click.option("--skip-bad", is_flag=True, help="Write the good lines even when some lines are bad.")
@click.option("--json", "as_json", is_flag=True, help="Print a machine-readable result.")
@click.pass_context
def convert_command(ctx: click.Context, input_: Path, output: Path, fmt: str, skip_bad: bool, as_json: bool) -> None:
    """Convert training data to messages JSONL. Exit 0: written; 1: bad lines (nothing written
    unless --skip-bad) or nothing to write; 2: usage error."""
    try:
        res = convert_file(input_, output, format=fmt, skip_bad=skip_bad)
    except (FileNotFoundError, IsADirectoryError) as e:
        raise click.BadParameter(str(e), param_hint="--input")
    if as_json:
        click.echo(json.dumps(res.to_dict(), indent=2, ensure_ascii=False))
    else:
        for b in res.bad:
            click.echo(b.format(input_), err=True)
        kinds = ", ".join(f"{k} x{v}" for k, v in sorted(res.formats.items())) or "none"
        if res.written:
            click.echo(f"{output}: wrote {res.n_written} record(s) from {input_} ({kinds})"
                       + (f"; skipped {len(res.bad)} bad line(s)" if res.bad else ""))
        elif res.bad:
            click.echo(f"{input_}: {len(res.bad)} bad line(s); nothing written "
                       f"(--skip-bad writes the {res.n_good} good one(s))", err=True)
        else:
            click.echo(f"{input_}: no records; nothing written", err=True)
    ctx.exit(0 if res.written and (not res.bad or skip_bad) else 1)


if __name__ == "__main__":
    sys.exit(convert_command())
