"""Converters on each input format, and the data CLIs' exit codes (by path and through trainctl)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from trainer.data.validator import validate_file
from tests.conftest import REPO, write_jsonl
from tools.data.convert import convert_file

GOOD = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}


def _read(path: Path) -> list[dict]:
    return [json.loads(l) for l in path.read_text(encoding="utf-8").splitlines()]


def test_convert_each_format(tmp_path):
    cases = {
        "prompt_completion": ({"prompt": "p", "completion": "c"},
                              {"messages": [{"role": "user", "content": "p"}, {"role": "assistant", "content": "c"}]}),
        "alpaca": ({"instruction": "i", "input": "x", "output": "o", "metadata": {"id": 7}},
                   {"messages": [{"role": "user", "content": "i\n\nx"}, {"role": "assistant", "content": "o"}],
                    "metadata": {"id": 7}}),
        "text": ({"text": "raw"}, {"text": "raw"}),
        "messages": (GOOD, GOOD),
    }
    for fmt, (src, expect) in cases.items():
        inp = write_jsonl(tmp_path / f"{fmt}.in.jsonl", [src, src])
        out = tmp_path / f"{fmt}.jsonl"
        res = convert_file(inp, out, format=fmt)
        assert res.written and res.n_written == 2 and not res.bad, fmt
        assert _read(out) == [expect, expect]
        assert validate_file(out).ok
        # an explicit format rejects other formats, line by line
        wrong = "alpaca" if fmt != "alpaca" else "text"
        res = convert_file(inp, tmp_path / "x.jsonl", format=wrong)
        assert not res.written and [(b.line, b.reason) for b in res.bad] == [(1, "format_mismatch"), (2, "format_mismatch")]
    assert not (tmp_path / "x.jsonl").exists()


def test_convert_mixed_json_array_and_bad_lines(tmp_path):
    arr = tmp_path / "in.json"
    arr.write_text(json.dumps([{"prompt": "a", "completion": "b"}, {"instruction": "i", "output": "o"}, {"text": "t"}]))
    res = convert_file(arr, tmp_path / "arr.jsonl")
    assert res.written and res.formats == {"prompt_completion": 1, "alpaca": 1, "text": 1}
    inp = tmp_path / "mixed.jsonl"
    inp.write_bytes(b'{"prompt": "a", "completion": "b"}\n{oops\n\n{"instruction": "i"}\n\xff\n')
    out = tmp_path / "mixed.out.jsonl"
    res = convert_file(inp, out)
    assert not res.written and not out.exists()
    assert [(b.line, b.field, b.reason) for b in res.bad] == [
        (2, "", "invalid_json"), (4, "output", "missing_field"), (5, "", "invalid_utf8")]
    res = convert_file(inp, out, skip_bad=True)
    assert res.written and res.n_written == 1 and len(res.bad) == 3
    assert _read(out) == [{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}]


def _run(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / script), *args], capture_output=True, text=True,
                          timeout=120, cwd=str(REPO))


def test_validate_script_by_path(tmp_path, tiny_model_dir):
    base = tmp_path / "base"
    base.mkdir()
    good = write_jsonl(tmp_path / "good.jsonl", [GOOD, {"prompt": "x", "completion": "y"}])
    bad = write_jsonl(tmp_path / "bad.jsonl", [GOOD, "{nope", {"messages": [{"role": "bot", "content": "x"}]}])
    r = _run("tools/data/validate_data.py", "--file", str(good), "--base-dir", str(base))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "OK" in r.stdout
    r = _run("tools/data/validate_data.py", "--file", str(bad), "--base-dir", str(base))
    assert r.returncode == 1
    out = r.stdout.splitlines()
    assert out[0].startswith(f"{bad}:2: <line>: invalid_json:")
    assert out[1].startswith(f"{bad}:3: messages[0].role: unknown_role:")
    assert "NOT TRAINABLE" in out[-1]
    r = _run("tools/data/validate_data.py", "--file", str(bad), "--json", "--base-dir", str(base))
    assert r.returncode == 1
    rep = json.loads(r.stdout)
    assert rep["ok"] is False and [e["line"] for e in rep["errors"]] == [2, 3]
    # with the model's tokenizer: an over-long example under policy fail makes the file untrainable
    r = _run("tools/data/validate_data.py", "--file", str(good), "--model", str(tiny_model_dir),
             "--max-length", "8", "--policy", "fail", "--base-dir", str(base))
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"{good}:1: <line>: overlong:" in r.stdout
    r = _run("tools/data/validate_data.py", "--file", str(tmp_path / "missing.jsonl"), "--base-dir", str(base))
    assert r.returncode == 1 and "missing" in r.stdout


def test_config_defaults_are_used(tmp_path):
    from trainer.engine.validate_cli import run
    base = tmp_path / "base"
    base.mkdir()
    (base / "config.json").write_text(json.dumps({"data": {"drop_duplicates": False}}))
    f = write_jsonl(tmp_path / "d.jsonl", [GOOD, GOOD])
    lines: list[str] = []
    assert run(f, as_json=True, base_dir=str(base), echo=lambda s, err=False: lines.append(s)) == 0
    rep = json.loads(lines[-1])
    assert rep["n_duplicates"] == 1 and rep["n_examples"] == 2  # kept: the config said so
    (base / "config.json").write_text("{broken")
    lines.clear()
    assert run(f, as_json=True, base_dir=str(base), echo=lambda s, err=False: lines.append(s)) == 0
    assert lines[0].startswith("note: config not used") and json.loads(lines[-1])["n_examples"] == 1


def test_trainctl_data_group(tmp_path):
    from management.cli import main
    src = write_jsonl(tmp_path / "raw.jsonl", [{"instruction": "i", "output": "o"}])
    out = tmp_path / "clean.jsonl"
    runner = CliRunner()
    r = runner.invoke(main, ["data", "convert", "--input", str(src), "--output", str(out)])
    assert r.exit_code == 0, r.output
    assert _read(out)[0]["messages"][1] == {"role": "assistant", "content": "o"}
    r = runner.invoke(main, ["data", "validate", "--file", str(out), "--base-dir", str(tmp_path)])
    assert r.exit_code == 0, r.output
    bad = write_jsonl(tmp_path / "bad.jsonl", ["[]"])
    r = runner.invoke(main, ["data", "validate", "--file", str(bad), "--base-dir", str(tmp_path)])
    assert r.exit_code == 1 and f"{bad}:1: <line>: not_object" in r.output
    r = runner.invoke(main, ["data", "convert", "--input", str(bad), "--output", str(tmp_path / "o.jsonl")])
    assert r.exit_code == 1 and not (tmp_path / "o.jsonl").exists()
    r = runner.invoke(main, ["data", "convert", "--input", str(tmp_path / "nope.jsonl"), "--output", str(out)])
    assert r.exit_code == 2


def test_cli_modules_do_not_import_torch():
    code = ("import sys; import management.cli as m; m.main(['data', '--help'], standalone_mode=False); "
            "import tools.data.cli, tools.data.convert, trainer.engine.validate_cli; "
            "print('torch' in sys.modules, 'transformers' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=str(REPO))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "False False"
