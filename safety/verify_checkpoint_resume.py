#!/usr/bin/env python3
"""Prove that a checkpoint resumes: its weights give the loss recorded at save time on a fixed batch
of its source data, and one more optimizer step from its saved optimizer state (through the real
engine) gives a loss within the tolerance. Exit 0 resumes, 1 does not, 2 cannot check (bad arguments,
missing files).

    python3 safety/verify_checkpoint_resume.py CHECKPOINT [--dataset FILE] [--base-dir DIR]
        [--examples N] [--rtol R] [--atol A] [--no-train-step] [--json]

The code lives in ``safety.resume_check``.
"""
import contextlib
import json
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import click  # noqa: E402


@click.command("verify_checkpoint_resume", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("checkpoint", type=click.Path(exists=True, file_okay=False))
@click.option("--dataset", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Data for the fixed batch and the extra step (default: the job's source file, from job_meta.json).")
@click.option("--base-dir", type=click.Path(file_okay=False), default=None,
              help="Runtime base dir for config.json and queue/ (default: $TRAINER_BASE_DIR or the repo root).")
@click.option("--examples", type=click.IntRange(min=1), default=8, show_default=True, help="Size of the fixed batch.")
@click.option("--rtol", type=click.FloatRange(min=0), default=0.25, show_default=True)
@click.option("--atol", type=click.FloatRange(min=0), default=0.1, show_default=True)
@click.option("--no-train-step", is_flag=True, help="Only the loss check (no resumed step).")
@click.option("--json", "as_json", is_flag=True)
def main(checkpoint: str, dataset: str | None, base_dir: str | None, examples: int, rtol: float, atol: float,
         no_train_step: bool, as_json: bool) -> None:
    """Does CHECKPOINT (a step-<N> folder) resume with the loss it was saved with?"""
    from safety.resume_check import ResumeCheckError, verify
    try:
        with contextlib.redirect_stdout(sys.stderr):  # the Trainer prints its logs: keep stdout for the report
            rep = verify(checkpoint, base_dir, dataset, examples, rtol, atol, train_step=not no_train_step)
    except ResumeCheckError as e:
        raise click.UsageError(str(e))
    if as_json:
        click.echo(json.dumps(rep.to_dict(), indent=2))
    else:
        click.echo(f"checkpoint {rep.checkpoint} (global step {rep.global_step}), data {rep.dataset}")
        click.echo(f"  recorded loss {rep.recorded_loss:.4f} ({rep.recorded_from}); tolerance {rep.tolerance:.4f}")
        click.echo(f"  fixed batch loss of the loaded weights: {rep.fixed_batch_loss:.4f}")
        if rep.resumed_to_step is not None:
            click.echo(f"  one resumed step (saved optimizer state) -> global step {rep.resumed_to_step}, "
                       f"loss {rep.resumed_step_loss}")
        click.echo("OK: the checkpoint resumes" if rep.ok else "FAILED: " + "; ".join(rep.problems))
    sys.exit(0 if rep.ok else 1)


if __name__ == "__main__":
    main()
