"""``trainctl health`` / ``python3 safety/comprehensive_health_check.py`` / ``scripts/check_health.sh``.

Exit 0 healthy, 1 degraded, 2 broken (click's own usage errors are 2 as well). ``--json`` prints the
report: {schema_version, checked_at, base_dir, status, exit_code, counts, findings: [{check, level,
message, action, details}]}.
"""
from __future__ import annotations

import json
import sys
import time

import click

from foundation.paths import Paths
from foundation.status_io import utc_now_iso
from safety.health.findings import Finding, render_text, report
from safety.health.process_checks import (check_processes, check_processing_queue, expected_programs,
                                          load_status_files)
from safety.health.service_checks import check_config, check_inference, check_model, check_resources


def run_checks(paths: Paths, *, stale_after: float = 60.0, deep: bool = False, disk_warn_gb: float = 5.0,
               disk_crit_gb: float = 1.0, mem_warn_pct: float = 10.0) -> list[Finding]:
    now = time.time()
    docs, findings = load_status_files(paths)
    cfg, config_findings = check_config(paths)
    findings = config_findings + findings
    findings += check_processes(paths, docs, stale_after, now)
    findings += check_processing_queue(paths, docs)
    if cfg is not None and any(p.name == "inference_server" for p in expected_programs(docs)):
        findings += check_inference(paths, cfg)
    findings += check_model(paths, cfg, deep)
    findings += check_resources(paths, disk_warn_gb, disk_crit_gb, mem_warn_pct)
    return findings


@click.command("health", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--base-dir", type=click.Path(file_okay=False), default=None,
              help="Runtime base dir (default: $TRAINER_BASE_DIR or the repo root).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--deep", is_flag=True, help="Also load every weight tensor of the current model (slow on big models).")
@click.option("--verbose", "-v", is_flag=True, help="List the checks that passed too.")
@click.option("--stale-after", type=click.FloatRange(min=1), default=60.0, show_default=True,
              help="A heartbeat older than this many seconds counts as stale.")
@click.option("--disk-warn-gb", type=click.FloatRange(min=0), default=5.0, show_default=True)
@click.option("--disk-crit-gb", type=click.FloatRange(min=0), default=1.0, show_default=True)
@click.option("--mem-warn-pct", type=click.FloatRange(min=0, max=100), default=10.0, show_default=True,
              help="Degraded when less than this % of RAM (or of a GPU's memory) is available.")
def health_command(base_dir: str | None, as_json: bool, deep: bool, verbose: bool, stale_after: float,
                   disk_warn_gb: float, disk_crit_gb: float, mem_warn_pct: float) -> None:
    """Is the system healthy? Every process, status file, the queue, inference, disk, memory, config, model.
    Exit 0 healthy, 1 degraded, 2 broken; each finding says what to do."""
    paths = Paths.from_base(base_dir)
    if not paths.base.is_dir():
        raise click.UsageError(f"base dir {paths.base} does not exist")
    findings = run_checks(paths, stale_after=stale_after, deep=deep, disk_warn_gb=disk_warn_gb,
                          disk_crit_gb=disk_crit_gb, mem_warn_pct=mem_warn_pct)
    doc = report(findings, str(paths.base), utc_now_iso())
    click.echo(json.dumps(doc, indent=2) if as_json else render_text(doc, verbose))
    sys.exit(doc["exit_code"])
