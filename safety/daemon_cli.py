"""The pieces the safety daemons' command lines share (watchdog, anti-stuck monitor, crash detector):
the ``--base-dir`` option, the runtime folders and rotating log a ``run`` starts with, and the
entry scripts' "no subcommand means ``run``"."""
from __future__ import annotations

import json
import sys
from typing import Callable, TypeVar

import click

from foundation.daemon_run import only_instance, stop_on_signals
from foundation.logs import setup_logging
from foundation.paths import Paths
from foundation.single_instance import running_pid
from foundation.status_io import read_status

D = TypeVar("D")

base_dir_option = click.option("--base-dir", type=click.Path(file_okay=False), default=None,
                               help="Runtime base dir (default: $TRAINER_BASE_DIR or the repo root).")


def pass_daemon_options(what: str, status_file: str, interval_default: str) -> Callable:
    """The ``run`` options of a daemon that works in passes (anti-stuck monitor, crash detector):
    ``--base-dir``, ``--once``, ``--json``, ``--interval``; ``what`` names one pass ("check")."""
    options = (base_dir_option,
               click.option("--once", is_flag=True, help=f"One {what}, then exit."),
               click.option("--json", "as_json", is_flag=True, help=f"With --once: print status/{status_file}."),
               click.option("--interval", type=click.FloatRange(min=0.05), default=None,
                            help=f"Seconds between {what}s (default: {interval_default})."))

    def apply(command: Callable) -> Callable:
        for option in reversed(options):
            command = option(command)
        return command
    return apply


def daemon_paths(base_dir: str | None, log_name: str, *, must_exist: bool = True) -> Paths:
    """The base dir's Paths with its folders created, and the root logger writing to
    ``logs/<log_name>.log`` (rotated daily) and stderr (which the watchdog keeps as
    ``logs/<name>.out``). ``must_exist``: a base dir that does not exist is a usage error (a typo
    must not start a daemon on an empty tree); the watchdog, which sets a new tree up, creates it."""
    paths = Paths.from_base(base_dir)
    if must_exist and not paths.base.is_dir():
        raise click.UsageError(f"base dir {paths.base} does not exist")
    paths.ensure()
    setup_logging(paths.logs, None, file_name=log_name)
    return paths


def serve(paths: Paths, instance: str, make: Callable[[], D], one_pass: Callable[[D], object], *, once: bool,
          as_json: bool = False, render: Callable[[dict, object], str] | None = None) -> None:
    """A daemon's ``run`` subcommand, under its single-instance lock: ``make()`` the daemon (inside
    the lock: it reads the state its previous instance left), then with ``once`` one pass
    (``one_pass(daemon)``) and ``write_status("stopped")``, printed as JSON (``as_json``) or
    ``render(status, what the pass returned)``; else ``daemon.run(stop)`` until SIGTERM / SIGINT."""
    with only_instance(paths.pids, instance):
        daemon = make()
        if once:
            result = one_pass(daemon)
            doc = daemon.write_status("stopped")  # type: ignore[attr-defined]
            if as_json:
                click.echo(json.dumps(doc, indent=2))
            elif render is not None:
                click.echo(render(doc, result))
            return
        daemon.run(stop_on_signals())  # type: ignore[attr-defined]


def daemon_status(base_dir: str | None, instance: str, status_name: str) -> tuple[int | None, dict]:
    """(the running daemon's pid or None, its status file or {})."""
    paths = Paths.from_base(base_dir)
    return running_pid(paths.pids, instance), read_status(paths.status_file(status_name)) or {}


def status_json(doc: dict, pid: int | None, pid_key: str) -> str:
    """The status document as ``--json`` prints it: plus ``running`` and ``<pid_key>``."""
    return json.dumps({**doc, "running": pid is not None, pid_key: pid}, indent=2)


def show_status(base_dir: str | None, instance: str, status_name: str, *, as_json: bool, pid_key: str,
                title: str, render: Callable[[dict], str], missing: str) -> None:
    """A daemon's status subcommand: ``status_json``, or ``<title>: running (pid N)`` and
    ``render(status document)`` (``missing`` before the daemon wrote one)."""
    pid, doc = daemon_status(base_dir, instance, status_name)
    if as_json:
        click.echo(status_json(doc, pid, pid_key))
        return
    click.echo(f"{title}: {'running (pid %s)' % pid if pid else 'not running'}")
    click.echo(render(doc) if doc else missing)


def run_by_default(group: click.Group, prog_name: str, argv: list[str] | None = None) -> None:
    """The entry script's command line: ``group``'s, where no subcommand (nothing, or options
    first) means ``run`` (the form the watchdog and people type: ``script.py --base-dir D``)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or (args[0].startswith("-") and args[0] not in ("-h", "--help")):
        args.insert(0, "run")
    group.main(args, prog_name=prog_name)
