#!/usr/bin/env python3
"""``trainctl eval``: the evaluation loop's commands (no torch import until a command needs it).

    trainctl eval daemon [--once]            automated tests on every new checkpoint (+ reports)
    trainctl eval run [CHECKPOINT ...]       evaluate now (default: every pending checkpoint)
    trainctl eval compare [--json]           rank evaluated checkpoints -> status/model_comparisons.json
              [--interval S]             ... again every S seconds until SIGTERM (.pids/model_comparison.pid;
                                         `monitoring/model_comparison_engine.py --base-dir . --interval 600`)
    trainctl eval regression [--json]        flag regressions -> status/regression_monitoring.json
    trainctl eval calibration [--json]       calibration -> status/confidence_calibration.json
    trainctl eval status [--json]            what the automated tests are doing
    trainctl eval suite [--json]             the fixed validation suite (verified)
"""
from __future__ import annotations

import json
import sys
from pathlib import Path


import click

_base = click.option("--base-dir", type=click.Path(file_okay=False), default=None,
                     help="Runtime base dir (default: $TRAINER_BASE_DIR or the repo root).")
_json = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


def _cfg(base_dir):
    from trainer.config.click_load import cli_config
    return cli_config(base_dir)


@click.group("eval")
def eval_group() -> None:
    """Evaluation: automated tests, comparison, regression and calibration."""


@eval_group.command("daemon")
@_base
@click.option("--once", is_flag=True, help="One pass, then exit.")
def daemon_command(base_dir, once) -> None:
    """Run the automated testing daemon (single instance per base dir)."""
    from monitoring.evaluation.daemon import run_daemon
    sys.exit(run_daemon(base_dir, once=once, config=_cfg(base_dir)))


@eval_group.command("run")
@_base
@click.argument("checkpoints", nargs=-1, type=click.Path(exists=True, file_okay=False))
@_json
def run_command(base_dir, checkpoints, as_json) -> None:
    """Evaluate CHECKPOINTS (model folders) now, or every pending checkpoint when none is given."""
    from foundation.model_db import ModelDB
    from foundation.paths import Paths
    from monitoring.evaluation.checkpoints import read_checkpoint_info
    from monitoring.evaluation.daemon import AutomatedTester, refresh_reports
    from monitoring.evaluation.local_mode import evaluate_checkpoint
    from monitoring.evaluation.scoring import record_result
    paths = Paths.from_base(base_dir)
    cfg = _cfg(base_dir)
    if not checkpoints:
        tester = AutomatedTester(paths.base, cfg)
        n = tester.run_once()
        out = {"evaluated": n, "last_result": tester.status.doc.get("last_result"),
               "errors": tester.status.doc.get("errors")}
        click.echo(json.dumps(out, indent=2) if as_json else f"evaluated {n} checkpoint(s)")
        return
    from syllo.suite import load_suite, resolve_suite_dir
    suite = load_suite(resolve_suite_dir(paths.base, cfg.data.validation_dir), max_items=cfg.evaluation.max_items)
    db = ModelDB(paths.model_db, base_dir=paths.base)
    results = []
    for ck in checkpoints:
        info = read_checkpoint_info(ck) or {}
        db.register_checkpoint(ck, int(info.get("global_step", 0)), info.get("job_id"), info.get("source_file"))
        res = evaluate_checkpoint(ck, suite, cfg, base_dir=paths.base)
        record_result(db, ck, suite, res)
        results.append({"checkpoint": db.rel(ck), "accuracy": res["accuracy"],
                        "validation_loss": res["validation_loss"],
                        "ece": (res.get("calibration") or {}).get("ece"), "by_difficulty": res["by_difficulty"]})
    refresh_reports(paths.base, cfg, suite.version)
    if as_json:
        click.echo(json.dumps(results, indent=2))
    else:
        for r in results:
            click.echo(f"{r['checkpoint']}: accuracy {r['accuracy']:.3f}  validation_loss "
                       f"{r['validation_loss'] if r['validation_loss'] is None else round(r['validation_loss'], 4)}")


def _report(module, base_dir, as_json, printer) -> None:
    cfg = _cfg(base_dir)
    if module.__name__.endswith("confidence_calibrator"):
        doc = module.run_once(base_dir)
    else:
        doc = module.run_once(base_dir, cfg)
    if as_json:
        click.echo(json.dumps(doc, indent=2))
    else:
        printer(doc)


def _print_ranking(doc) -> None:
    if not doc["ranking"]:
        click.echo("no evaluated checkpoints")
        return
    click.echo(f"{'rank':>4}  {'score':>6}  {'acc':>6}  {'loss':>7}  {'ece':>6}  flag  checkpoint")
    for r in doc["ranking"]:
        p = r["parts"]
        f = lambda x, n=4: "-" if x is None else f"{x:.{n}f}"  # noqa: E731
        click.echo(f"{r['rank']:>4}  {f(r['score'], 3):>6}  {f(p['accuracy'], 3):>6}  {f(p['validation_loss']):>7}  "
                   f"{f(p['ece'], 3):>6}  {'yes ' if r['flagged'] else '    '}  {r['checkpoint']}")


def _print_regression(doc) -> None:
    if not doc["alerts"]:
        click.echo(f"no regressions among {doc['n_checked']} evaluated checkpoint(s)")
    for a in doc["alerts"]:
        click.echo(f"FLAGGED {a['checkpoint']} ({a['metric']}): {a['message']}")


def _print_calibration(doc) -> None:
    lt = doc.get("latest")
    if not lt:
        click.echo("no calibration data")
        return
    click.echo(f"{lt['checkpoint']}: ECE {lt['ece']:.4f} over {lt['n']} answers")
    for b in lt["bins"]:
        acc = "-" if b["accuracy"] is None else f"{b['accuracy']:.3f}"
        conf = "-" if b["mean_confidence"] is None else f"{b['mean_confidence']:.3f}"
        click.echo(f"  [{b['lower']:.2f}, {b['upper']:.2f})  n={b['count']:<5} acc={acc}  conf={conf}")


@eval_group.command("compare")
@_base
@_json
@click.option("--interval", type=float, default=None,
              help="Loop: rank again every INTERVAL seconds until SIGTERM (single instance, "
                   ".pids/model_comparison.pid). Default: once.")
def compare_command(base_dir, as_json, interval) -> None:
    """Rank evaluated checkpoints by composite score (writes status/model_comparisons.json)."""
    from monitoring.evaluation import comparison as model_comparison_engine
    if interval is None:
        _report(model_comparison_engine, base_dir, as_json, _print_ranking)
        return
    if interval <= 0:
        raise click.BadParameter("must be > 0", param_hint="--interval")
    _loop(base_dir, "model_comparison", interval,
          lambda: _report(model_comparison_engine, base_dir, as_json, _print_ranking))


def _loop(base_dir, name: str, interval: float, one_pass) -> None:
    """Run ``one_pass`` every ``interval`` seconds until SIGTERM/SIGINT, as the only ``name`` of the
    base dir (lock + PID file in .pids/). A failed pass is logged and the loop goes on."""
    import logging
    import signal
    import threading
    from foundation.logs import setup_logging
    from foundation.paths import Paths
    from foundation.single_instance import AlreadyRunning, SingleInstance
    paths = Paths.from_base(base_dir)
    try:
        lock = SingleInstance(paths.pids, name).acquire()
    except AlreadyRunning as e:
        raise click.ClickException(str(e)) from None
    log = setup_logging(paths.logs, f"monitoring.{name}", file_name=name)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    log.info("%s: every %gs (pid %s)", name, interval, lock.pid_path)
    try:
        while not stop.is_set():
            try:
                one_pass()
            except (Exception, SystemExit) as e:  # noqa: BLE001 - a bad pass must not end the loop
                log.error("pass failed: %s", e, exc_info=not isinstance(e, click.ClickException))
            stop.wait(interval)
    finally:
        lock.release()
        logging.getLogger(f"monitoring.{name}").info("%s stopped", name)


@eval_group.command("regression")
@_base
@_json
def regression_command(base_dir, as_json) -> None:
    """Flag regressed checkpoints (writes status/regression_monitoring.json)."""
    from monitoring.evaluation import regression as continuous_regression_monitor
    _report(continuous_regression_monitor, base_dir, as_json, _print_regression)


@eval_group.command("calibration")
@_base
@_json
def calibration_command(base_dir, as_json) -> None:
    """Confidence calibration of the newest evaluation (writes status/confidence_calibration.json)."""
    from monitoring.evaluation import calibration as confidence_calibrator
    _report(confidence_calibrator, base_dir, as_json, _print_calibration)


@eval_group.command("status")
@_base
@_json
def status_command(base_dir, as_json) -> None:
    """Print status/automated_testing.json (human summary or JSON)."""
    from foundation.paths import Paths
    from foundation.status_io import read_status
    from monitoring.evaluation.daemon import STATUS_NAME
    doc = read_status(Paths.from_base(base_dir).status_file(STATUS_NAME))
    if doc is None:
        raise click.ClickException("no status/automated_testing.json yet (is `trainctl eval daemon` running?)")
    if as_json:
        click.echo(json.dumps(doc, indent=2))
        return
    click.echo(f"state {doc.get('state')}  suite {doc.get('suite_version')} ({doc.get('n_suite_items')} items)  "
               f"pending {doc.get('n_pending')}  evaluated {doc.get('evaluated_total')}  heartbeat {doc.get('heartbeat_at')}")
    lr = doc.get("last_result")
    if lr:
        click.echo(f"last: {lr['checkpoint']} accuracy {lr['accuracy']:.3f}  validation_loss {lr['validation_loss']}")
        for d, v in sorted(lr["by_difficulty"].items()):
            click.echo(f"  {d:<7} {v['correct']}/{v['n']}")


@eval_group.command("suite")
@_base
@_json
def suite_command(base_dir, as_json) -> None:
    """Show the fixed validation suite in use, verified against its MANIFEST.json (exit 1 on mismatch)."""
    from foundation.paths import Paths
    from syllo.suite import SuiteError, load_suite, resolve_suite_dir
    cfg = _cfg(base_dir)
    folder = resolve_suite_dir(Paths.from_base(base_dir).base, cfg.data.validation_dir)
    try:
        suite = load_suite(folder, verify=True)
    except SuiteError as e:
        raise click.ClickException(str(e))
    counts: dict[str, int] = {}
    for it in suite.items:
        counts[it.difficulty] = counts.get(it.difficulty, 0) + 1
    out = {"dir": str(folder), "version": suite.version, "n_items": len(suite.items), "by_difficulty": counts,
           "verified": True, "manifest": suite.manifest}
    click.echo(json.dumps(out, indent=2) if as_json else
               f"{suite.version}: {len(suite.items)} items {counts} in {folder} (manifest verified)")

