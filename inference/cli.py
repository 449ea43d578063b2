#!/usr/bin/env python3
"""``trainctl serve``: run the OpenAI-compatible inference server (also ``python3 inference/cli.py``).

Settings come from config.json's ``inference`` section (+ ``TRAINER__INFERENCE__*`` environment
variables); the flags below override them. API keys are never taken from the command line (they
would show in ``ps``): use config.json or ``$INFERENCE_API_KEY`` / ``$INFERENCE_ADMIN_KEY``.
"""
from __future__ import annotations

if __package__ in (None, ""):
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import click


@click.command("serve")
@click.option("--base-dir", type=click.Path(file_okay=False), default=None,
              help="Runtime base dir (default: $TRAINER_BASE_DIR or the repo root).")
@click.option("--host", default=None, help="Bind address (default: inference.host, 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port (default: inference.port, 8765).")
@click.option("--model", "model_path", default=None,
              help="Serve this model folder at start instead of models/deployed/current.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default=None)
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16", "fp16"]), default=None,
              help="Weights' precision (default: inference.precision; auto = bf16 where the device computes it natively).")
@click.option("--max-batch-size", type=int, default=None, help="Requests decoded together.")
@click.option("--max-queue", type=int, default=None, help="Waiting requests before answering 429.")
@click.option("--batch-wait-ms", type=float, default=None, help="Batch gathering window in milliseconds.")
@click.option("--threads", "num_threads", type=int, default=None,
              help="Torch CPU threads (default: inference.num_threads; 0 = torch default).")
@click.option("--no-base-fallback", is_flag=True, default=False,
              help="Start with no model (503) when nothing is deployed, instead of serving the base model.")
@click.option("--log-level", default="warning", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"]))
def serve_command(base_dir, host, port, model_path, device, precision, max_batch_size, max_queue, batch_wait_ms,
                  num_threads, no_base_fallback, log_level) -> None:
    """Serve the deployed model over an OpenAI-compatible HTTP API (hot reload, batching)."""
    from trainer.config.loader import ConfigError
    from inference.settings import ServerSettings, check_bind_safety

    from foundation.logs import setup_logging
    from foundation.paths import Paths
    setup_logging(Paths.from_base(base_dir).logs, None, file_name="inference_server", level=log_level)  # rotated daily
    try:
        settings = ServerSettings.from_config(
            base_dir, host=host, port=port, initial_model=model_path, device=device, precision=precision,
            max_batch_size=max_batch_size, max_queue=max_queue, batch_wait_ms=batch_wait_ms, num_threads=num_threads,
            serve_base_model_when_empty=False if no_base_fallback else None)
    except ConfigError as e:
        raise click.ClickException(str(e))
    for name in ("max_batch_size", "max_queue"):
        if getattr(settings, name) < 1:
            raise click.BadParameter(f"--{name.replace('_', '-')} must be >= 1")
    try:
        check_bind_safety(settings)
    except ValueError as e:
        raise click.ClickException(str(e))

    import uvicorn

    from inference.server import create_app
    app = create_app(settings)
    click.echo(f"inference server on http://{settings.host}:{settings.port} (base dir {settings.base_dir})",
               err=True)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=log_level, access_log=False,
                timeout_graceful_shutdown=5)


if __name__ == "__main__":
    serve_command()
