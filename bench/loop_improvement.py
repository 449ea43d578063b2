#!/usr/bin/env python3
"""Does the model improve unattended? From a fresh base dir (the repo's config.json and
data/validation/, the embedded tiny model built by tools/models/make_tiny_model.py), start the whole
system with scripts/start_all.sh (no file dropped, no manual step), let it run for a fixed budget,
then stop it with scripts/stop_all.sh and report:

* the base model's suite accuracy per difficulty (evaluated here, before the start);
* every suite evaluation of the run over time (model_db), per difficulty;
* the deployed model's suite accuracy over time (status/deployment_status.json history joined with
  the model_db evaluation of each deployed checkpoint);
* the curriculum-vs-uniform A/B evidence at equal steps (status/curriculum_optimization.json ``ab``);
* a final ``SUMMARY`` line: easy+medium accuracy of the base and of the deployed model (first, last,
  best), whether the target (>= 0.65, rising) is met and whether the curriculum did at least as well
  as uniform.

    .venv/bin/python bench/loop_improvement.py [--minutes 30] [--poll 30] [--base-dir DIR] [--json FILE]

The budget is at most 30 minutes (the issue's bound for 2 CPU cores). Ports are picked free so the
run does not collide with a system already running on this machine.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

MAX_MINUTES = 30.0
TARGET = 0.65
LEVELS = ("easy", "medium", "hard", "expert")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_base(base: Path) -> Path:
    """The repo's runtime layout in ``base``: config.json (model paths and ports made local),
    data/validation/ (current and archived suites) and a freshly built tiny model."""
    from foundation.paths import Paths
    from tools.models.make_tiny_model import build
    paths = Paths.from_base(base).ensure()
    shutil.copytree(REPO / "data" / "validation", paths.validation, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns(".gitkeep"))
    cfg = json.loads((REPO / "config.json").read_text())
    model_rel = cfg.get("model", {}).get("model_path", "models/tiny-qwen3")
    build(base / model_rel, seed=0)
    cfg.setdefault("inference", {})["port"] = free_port()
    cfg.setdefault("monitoring", {})["live_monitor_port"] = free_port()
    paths.config_file.write_text(json.dumps(cfg, indent=2) + "\n")
    return paths.base


def em_accuracy(by: dict) -> float | None:
    """Easy+medium accuracy pooled over items (the issue's target measure)."""
    n = sum(int((by.get(lv) or {}).get("n") or 0) for lv in ("easy", "medium"))
    c = sum(int((by.get(lv) or {}).get("correct") or 0) for lv in ("easy", "medium"))
    return c / n if n else None


def fmt_levels(by: dict) -> str:
    return " ".join(f"{lv}={by[lv]['accuracy']:.3f}" if lv in by and by[lv].get("accuracy") is not None
                    else f"{lv}=  -  " for lv in LEVELS)


def evaluate_base(base: Path) -> dict:
    from monitoring.evaluation.local_mode import evaluate_checkpoint
    from syllo.suite import load_suite, resolve_suite_dir
    from trainer.config.loader import load_config
    cfg = load_config(base_dir=str(base))
    suite = load_suite(resolve_suite_dir(base, cfg.data.validation_dir), max_items=cfg.evaluation.max_items)
    res = evaluate_checkpoint(base / cfg.model.model_path, suite, cfg, device="cpu", base_dir=str(base))
    return {"suite_version": suite.version, "accuracy": res["accuracy"], "by_difficulty": res["by_difficulty"]}


def read_json(path: Path) -> dict:
    try:
        doc = json.loads(path.read_text())
        return doc if isinstance(doc, dict) else {}
    except (OSError, ValueError):
        return {}


def evaluations(base: Path) -> list[dict]:
    """The newest suite evaluation of every checkpoint, by global step (none before the first)."""
    from foundation.model_db import ModelDB
    from foundation.paths import Paths
    if not Paths.from_base(base).model_db.exists():
        return []
    db = ModelDB.for_base(base)
    try:
        return db.latest_evaluations()
    finally:
        db.close()


def deployed_timeline(base: Path, evals: list[dict]) -> list[dict]:
    """Successful deployments oldest first, each with its checkpoint's suite evaluation."""
    by_ck = {e["checkpoint_path"]: e for e in evals}
    hist = read_json(base / "status" / "deployment_status.json").get("history") or []
    out = []
    for h in reversed(hist):  # history is newest first
        if not isinstance(h, dict) or h.get("outcome") != "deployed":
            continue
        e = by_ck.get(h.get("checkpoint"))
        out.append({"at": h.get("finished_at"), "version": h.get("version"), "global_step": h.get("global_step"),
                    "checkpoint": h.get("checkpoint"), "by_difficulty": (e or {}).get("by_difficulty") or {},
                    "accuracy": (e or {}).get("accuracy")})
    return out


def ab_summary(base: Path) -> dict:
    doc = read_json(base / "status" / "curriculum_optimization.json")
    ab = doc.get("ab") or {}
    cur = ab.get("current") or {}
    return {"strategy": doc.get("strategy"), "mix": doc.get("mix"), "state": ab.get("state"),
            "decided": ab.get("decided"), "equal_steps": cur.get("equal_steps"), "stats": cur.get("stats") or {},
            "intervals": ab.get("intervals"), "unattributed": ab.get("unattributed"),
            "at_chance": ab.get("at_chance")}


def run_script(name: str, base: Path, *extra: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": sys.executable}
    return subprocess.run(["bash", str(REPO / "scripts" / name), "--base-dir", str(base), *extra],
                          capture_output=True, text=True, env=env, timeout=timeout, cwd=str(REPO))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=MAX_MINUTES, help=f"run budget (at most {MAX_MINUTES:.0f})")
    ap.add_argument("--poll", type=float, default=30.0, help="seconds between progress lines")
    ap.add_argument("--base-dir", help="fresh base dir to use (default: a new temp dir)")
    ap.add_argument("--json", help="also write the full report to this file")
    a = ap.parse_args(argv)
    if not 0 < a.minutes <= MAX_MINUTES:
        ap.error(f"--minutes must be in (0, {MAX_MINUTES:.0f}]")
    base = Path(a.base_dir) if a.base_dir else Path(tempfile.mkdtemp(prefix="loop-bench-")) / "base"
    if base.exists() and any(base.iterdir()):
        ap.error(f"{base} is not empty: the benchmark starts from a fresh base dir")
    t_setup = time.monotonic()
    make_base(base)
    base_eval = evaluate_base(base)
    print(f"base dir {base} (setup {time.monotonic() - t_setup:.0f}s)", flush=True)
    print(f"base model  ({base_eval['suite_version']}): acc={base_eval['accuracy']:.3f} "
          f"easy+medium={em_accuracy(base_eval['by_difficulty']):.3f}  {fmt_levels(base_eval['by_difficulty'])}",
          flush=True)

    started = run_script("start_all.sh", base, "--no-setup", timeout=300)
    if started.returncode != 0:
        print(started.stdout + started.stderr, file=sys.stderr)
        run_script("stop_all.sh", base, "--timeout", "60", "--kill")
        return 1
    t0 = time.monotonic()
    deadline = t0 + a.minutes * 60
    seen: set[str] = set()
    samples: list[dict] = []
    try:
        while True:
            evals = evaluations(base)
            for e in evals:
                if e["checkpoint_path"] not in seen:
                    seen.add(e["checkpoint_path"])
                    em = em_accuracy(e["by_difficulty"])
                    print(f"[{(time.monotonic() - t0) / 60:5.1f} min] eval step {e['global_step']:>5}: "
                          f"acc={e['accuracy']:.3f} easy+medium={em if em is None else round(em, 3)}  "
                          f"{fmt_levels(e['by_difficulty'])}  ({os.path.basename(e.get('source_file') or '')})",
                          flush=True)
            dep = read_json(base / "status" / "deployment_status.json")
            tl = deployed_timeline(base, evals)
            cur = tl[-1] if tl else None
            samples.append({"minutes": round((time.monotonic() - t0) / 60, 2),
                            "deployed_step": dep.get("current_global_step"),
                            "deployed_easy_medium": em_accuracy(cur["by_difficulty"]) if cur else None})
            if time.monotonic() >= deadline:
                break
            time.sleep(min(a.poll, max(0.0, deadline - time.monotonic())))  # a progress cadence, not a sync
    finally:
        stopped = run_script("stop_all.sh", base, "--timeout", "120", "--kill")
    evals = evaluations(base)
    tl = deployed_timeline(base, evals)
    ab = ab_summary(base)
    print("\ndeployed model over time (suite accuracy per difficulty):")
    for d in tl:
        em = em_accuracy(d["by_difficulty"])
        print(f"  {d['at']}  step {d['global_step']:>5}  easy+medium={'  -  ' if em is None else f'{em:.3f}'}  "
              f"{fmt_levels(d['by_difficulty'])}")
    print(f"\ncurriculum A/B ({ab['state']}; strategy now {ab['strategy']}, mix {ab['mix']}; "
          f"{ab['intervals']} attributed intervals, {ab['unattributed']} unattributed, {ab['at_chance']} at chance; "
          f"equal steps {ab['equal_steps']}):")
    for arm, s in ab["stats"].items():
        print(f"  {arm:18s} n={s.get('n')} steps={s.get('steps')} gain/1k steps={s.get('mean_gain_per_1k')} "
              f"se={s.get('se')} gain at equal steps={s.get('gain_at_equal_steps')}")
    dem = [em_accuracy(d["by_difficulty"]) for d in tl]
    dem = [x for x in dem if x is not None]
    base_em = em_accuracy(base_eval["by_difficulty"])
    gains = {arm: s.get("mean_gain_per_1k") for arm, s in ab["stats"].items()}
    others = [v for k, v in gains.items() if k != "uniform" and v is not None]
    cur_vs_uni = (None if gains.get("uniform") is None or not others else max(others) >= gains["uniform"])
    rising = len(dem) >= 2 and dem[-1] > dem[0]
    met = bool(dem) and dem[-1] >= TARGET and rising
    report = {"base_dir": str(base), "minutes": a.minutes, "base": base_eval, "evaluations": [
        {k: e[k] for k in ("global_step", "accuracy", "by_difficulty", "checkpoint_path", "source_file")} for e in evals],
        "deployed": tl, "samples": samples, "ab": ab, "stop_rc": stopped.returncode}
    if a.json:
        Path(a.json).write_text(json.dumps(report, indent=2))
    fmt = lambda x: "-" if x is None else f"{x:.3f}"  # noqa: E731
    print(f"\nSUMMARY minutes={a.minutes:g} evaluations={len(evals)} deployments={len(tl)} "
          f"base_easy_medium={fmt(base_em)} deployed_easy_medium first={fmt(dem[0] if dem else None)} "
          f"last={fmt(dem[-1] if dem else None)} best={fmt(max(dem) if dem else None)} rising={rising} "
          f"target>={TARGET}:{'met' if met else 'NOT met'} curriculum>=uniform={cur_vs_uni} "
          f"stop_rc={stopped.returncode}", flush=True)
    if stopped.returncode != 0:
        print(stopped.stdout + stopped.stderr, file=sys.stderr)
    return 0 if stopped.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
