"""Load, merge and validate configuration.

defaults < config.json < environment (``TRAINER__SECTION__KEY=value``, JSON-parsed when it parses)
< CLI overrides (``{"training.learning_rate": 1e-4}``). Nothing starts on an invalid config: every
problem is reported as a ``ConfigError`` naming the dotted key, the value and what is allowed.
"""
from __future__ import annotations

import ast
import dataclasses
import difflib
import inspect
import json
import os
import textwrap
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Mapping

from foundation.secrets import REDACTED
from trainer.config.schema import Config

ENV_PREFIX = "TRAINER__"

# The seed's flat config.json keys and the dotted keys that replaced them. A flat key is still
# accepted (moved to its dotted key on read, with a one-line note on stderr); `trainctl config
# migrate` rewrites the file.
FLAT_KEYS = {
    "batch_size": "training.per_device_batch_size",
    "learning_rate": "training.learning_rate",
    "eval_steps": "training.eval_steps",
    "save_steps": "training.save_steps",
    "max_length": "data.max_length",
    "poll_interval": "daemon.poll_interval",
    "model_name": "model.model_name",
    "model_path": "model.model_path",
}
# Keys a later release renamed, with the old values translated where the type changed (None: kept as
# is). Moved on read like the flat keys, with the same note; `trainctl config migrate` rewrites them.
RENAMED_KEYS: dict[str, tuple[str, dict | None]] = {
    # true: attention in fp32 (the old default); false: in bf16 as autocast does
    "training.fp32_cpu_attention": ("training.cpu_attention", {True: "flash_fp32", False: "flash_bf16"}),
}
_noted: set[tuple[str, str]] = set()


class ConfigError(ValueError):
    """One or more configuration problems; ``problems`` lists each message."""

    def __init__(self, problems: list[str], source: str | None = None):
        self.problems = problems
        self.source = source
        head = f"invalid configuration{f' in {source}' if source else ''}"
        super().__init__(head + ":\n  - " + "\n  - ".join(problems))


# ---------------------------------------------------------------- docs
@lru_cache(maxsize=None)
def field_docs(cls: type) -> dict[str, str]:
    """Attribute docstrings (the string literal right below each field) of a dataclass."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError):
        return {}
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs: dict[str, str] = {}
    for node, nxt in zip(body, body[1:]):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            if isinstance(nxt, ast.Expr) and isinstance(getattr(nxt, "value", None), ast.Constant) \
                    and isinstance(nxt.value.value, str):
                docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def _resolve_type(cls: type, fl: dataclasses.Field) -> Any:
    import typing
    hints = typing.get_type_hints(cls)
    return hints.get(fl.name, fl.type)


# ---------------------------------------------------------------- validation
def _type_ok(expected: Any, value: Any) -> tuple[bool, Any]:
    """Return (ok, coerced value)."""
    if expected is bool:
        return isinstance(value, bool), value
    if expected is int:
        if isinstance(value, bool):
            return False, value
        if isinstance(value, int):
            return True, value
        if isinstance(value, float) and value.is_integer():
            return True, int(value)
        return False, value
    if expected is float:
        if isinstance(value, bool):
            return False, value
        return isinstance(value, (int, float)), float(value) if isinstance(value, (int, float)) else value
    if expected is str:
        return isinstance(value, str), value
    if expected is list:
        return isinstance(value, list), value
    if expected is dict:
        return isinstance(value, dict), value
    return True, value


_TYPE_NAMES = {bool: "a boolean (true/false)", int: "an integer", float: "a number", str: "a string",
               list: "a list", dict: "an object"}


def _build(cls: type, data: Mapping[str, Any], prefix: str, problems: list[str]) -> Any:
    kwargs: dict[str, Any] = {}
    fields = {fl.name: fl for fl in dataclasses.fields(cls)}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=1, cutoff=0.5)
            hint = f"; did you mean '{prefix}{close[0]}'?" if close else \
                f"; valid keys here: {', '.join(sorted(fields))}"
            problems.append(f"unknown key '{dotted}'{hint}")
            continue
        fl = fields[key]
        ftype = _resolve_type(cls, fl)
        if dataclasses.is_dataclass(ftype):
            if not isinstance(value, Mapping):
                problems.append(f"'{dotted}' must be an object with keys "
                                f"{', '.join(x.name for x in dataclasses.fields(ftype))}; got {value!r}")
                continue
            kwargs[key] = _build(ftype, value, dotted + ".", problems)
            continue
        meta = fl.metadata
        ok, coerced = _type_ok(ftype, value)
        if not ok:
            shown = repr(REDACTED if meta.get("secret") else value)  # a mistyped key is still a key
            problems.append(f"'{dotted}' must be {_TYPE_NAMES.get(ftype, ftype)}; got {shown} "
                            f"({type(value).__name__})")
            continue
        if "choices" in meta and coerced not in meta["choices"]:
            close = difflib.get_close_matches(str(coerced), [str(c) for c in meta["choices"]], n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            problems.append(f"'{dotted}' is {coerced!r}; allowed: {', '.join(map(repr, meta['choices']))}{hint}")
            continue
        if "min" in meta and isinstance(coerced, (int, float)):
            lo = meta["min"]
            if coerced < lo or (meta.get("exclusive_min") and coerced <= lo):
                rel = ">" if meta.get("exclusive_min") else ">="
                hi = f" and <= {meta['max']}" if "max" in meta else ""
                problems.append(f"'{dotted}' is {coerced!r}; must be {rel} {lo}{hi}")
                continue
        if "max" in meta and isinstance(coerced, (int, float)) and coerced > meta["max"]:
            problems.append(f"'{dotted}' is {coerced!r}; must be <= {meta['max']}")
            continue
        kwargs[key] = coerced
    return cls(**kwargs)


def _cross_checks(cfg: Config, problems: list[str]) -> None:
    if cfg.training.precision == "fp16" and cfg.training.device == "cpu":
        problems.append("'training.precision' is 'fp16' but 'training.device' is 'cpu'; "
                        "fp16 needs CUDA: use 'fp32' or 'bf16' on CPU")
    local_eval_cpu = cfg.evaluation.mode == "local" and cfg.evaluation.device == "cpu"
    if cfg.inference.precision == "fp16" and (cfg.inference.device == "cpu" or local_eval_cpu):
        where = "inference.device" if cfg.inference.device == "cpu" else "evaluation.device"
        problems.append(f"'inference.precision' is 'fp16' but '{where}' is 'cpu'; "
                        "fp16 needs CUDA: use 'auto', 'fp32' or 'bf16' on CPU")
    if cfg.training.machine_rank >= cfg.training.num_machines:
        problems.append(f"'training.machine_rank' ({cfg.training.machine_rank}) must be below "
                        f"'training.num_machines' ({cfg.training.num_machines})")
    for key in ("api_key", "admin_api_key"):
        if getattr(cfg.inference, key) and getattr(cfg.inference, f"{key}_file"):
            problems.append(f"'inference.{key}' and 'inference.{key}_file' are both set; keep one "
                            f"(the file is the safer place)")
    dk = getattr(cfg, "disk", None)
    if dk is not None and dk.pause_free_gb > 0 and dk.resume_free_gb <= dk.pause_free_gb:
        problems.append(f"'disk.resume_free_gb' ({dk.resume_free_gb}) must be above 'disk.pause_free_gb' "
                        f"({dk.pause_free_gb}), or a disk_low pause would flap")
    ev = cfg.evaluation
    if ev.weight_loss + ev.weight_accuracy + ev.weight_calibration <= 0:
        problems.append("'evaluation.weight_*' must not all be 0")
    try:
        from trainer.profiles import available_profiles
        names = available_profiles()
        if names and cfg.profile.name not in names:
            close = difflib.get_close_matches(cfg.profile.name, names, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            problems.append(f"'profile.name' is {cfg.profile.name!r}; allowed: "
                            f"{', '.join(map(repr, names))}{hint}")
    except ImportError:
        pass


# ---------------------------------------------------------------- merging
def deep_merge(base: dict, over: Mapping) -> dict:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def set_dotted(d: dict, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    cur = d
    for p in parts[:-1]:
        nxt = cur.get(p)
        if not isinstance(nxt, dict):
            nxt = {}
            cur[p] = nxt
        cur = nxt
    cur[parts[-1]] = value


def get_dotted(d: Mapping, dotted: str) -> Any:
    cur: Any = d
    for p in dotted.split("."):
        if not isinstance(cur, Mapping) or p not in cur:
            raise KeyError(dotted)
        cur = cur[p]
    return cur


def parse_value(raw: str) -> Any:
    """CLI/env value: JSON when it parses (numbers, booleans, lists), else the plain string."""
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, ValueError):
        return raw


def env_overrides(environ: Mapping[str, str] | None = None) -> dict:
    environ = os.environ if environ is None else environ
    out: dict = {}
    for k, v in environ.items():
        if k.startswith(ENV_PREFIX):
            dotted = k[len(ENV_PREFIX):].lower().replace("__", ".")
            set_dotted(out, dotted, parse_value(v))
    return out


def migrate_flat_keys(data: Mapping[str, Any], source: str | None = None) -> tuple[dict, list[tuple[str, str]]]:
    """``data`` with the seed's flat keys (``FLAT_KEYS``) and renamed keys (``RENAMED_KEYS``) moved
    to their current keys, and the (old, new) pairs moved. An old key whose new key is set too is an
    error (which one is meant is unclear); an old value with no translation stays where it is (the
    unknown-key check then names it)."""
    out = json.loads(json.dumps(data))
    moved: list[tuple[str, str]] = []
    problems = []
    renames = {**{flat: (dotted, None) for flat, dotted in FLAT_KEYS.items()}, **RENAMED_KEYS}
    for old, (new, values) in renames.items():
        parent_key, _, leaf = old.rpartition(".")
        try:
            parent = get_dotted(out, parent_key) if parent_key else out
        except KeyError:
            continue
        if not isinstance(parent, dict) or leaf not in parent or isinstance(parent[leaf], Mapping):
            continue
        value = parent[leaf]
        if values is not None and (isinstance(value, (dict, list)) or value not in values):
            continue
        try:
            get_dotted(out, new)
            kind = "old flat key" if old in FLAT_KEYS else "old key"
            problems.append(f"'{old}' ({kind}) and '{new}' are both set; keep only '{new}'")
            continue
        except KeyError:
            pass
        del parent[leaf]
        set_dotted(out, new, value if values is None else values[value])
        moved.append((old, new))
    if problems:
        raise ConfigError(problems, source)
    return out, moved


def note_flat_key(flat: str, dotted: str, source: str) -> None:
    """One line on stderr, once per process and file, naming the new key."""
    import sys
    if (source, flat) not in _noted:
        _noted.add((source, flat))
        print(f"note: {source}: config key '{flat}' is now '{dotted}' (accepted; "
              f"`trainctl config migrate` rewrites the file)", file=sys.stderr)


def read_config_file(path: str | os.PathLike, *, flat_keys: bool = True) -> dict:
    """The file as a dict ({} when missing); the seed's flat keys are moved to their dotted keys
    (with a note) unless ``flat_keys`` is False (the raw file, for ``config migrate``)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except UnicodeDecodeError as e:
        raise ConfigError([f"not valid UTF-8: {e}"], str(path))
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError([f"invalid JSON at line {e.lineno} column {e.colno}: {e.msg}"], str(path))
    if not isinstance(data, dict):
        raise ConfigError([f"top level must be a JSON object, got {type(data).__name__}"], str(path))
    data.pop("$schema", None)
    data.pop("_comment", None)
    if flat_keys:
        data, moved = migrate_flat_keys(data, str(path))
        for flat, dotted in moved:
            note_flat_key(flat, dotted, str(path))
    return data


def validate_dict(data: Mapping[str, Any], source: str | None = None) -> Config:
    problems: list[str] = []
    cfg = _build(Config, data, "", problems)
    if not problems:
        _cross_checks(cfg, problems)
    if problems:
        raise ConfigError(problems, source)
    return cfg


def load_config(config_file: str | os.PathLike | None = None, *, base_dir: str | os.PathLike | None = None,
                overrides: Mapping[str, Any] | Iterable[tuple[str, Any]] | None = None,
                environ: Mapping[str, str] | None = None) -> Config:
    """The effective config. ``overrides`` are dotted keys (CLI flags)."""
    from foundation.paths import Paths
    if config_file is None:
        config_file = Paths.from_base(base_dir).config_file
    merged = read_config_file(config_file)
    merged = deep_merge(merged, env_overrides(environ))
    if overrides:
        items = overrides.items() if isinstance(overrides, Mapping) else overrides
        for k, v in items:
            if v is not None:
                set_dotted(merged, k, v)
    return validate_dict(merged, str(config_file))


def config_to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def explain(cfg: Config) -> list[tuple[str, Any, str]]:
    """(dotted key, value, docstring) for every leaf field."""
    rows: list[tuple[str, Any, str]] = []

    def walk(obj: Any, prefix: str) -> None:
        docs = field_docs(type(obj))
        for fl in dataclasses.fields(obj):
            v = getattr(obj, fl.name)
            if dataclasses.is_dataclass(v):
                walk(v, f"{prefix}{fl.name}.")
            else:
                rows.append((f"{prefix}{fl.name}", v, docs.get(fl.name, "")))
    walk(cfg, "")
    return rows
