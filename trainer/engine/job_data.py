"""A job's data: the training file (validated, rendered for the profile, tokenized once) and the
validation suite it is evaluated on."""
from __future__ import annotations

import json
from pathlib import Path

from trainer.config.schema import Config
from trainer.engine.job import TrainJob


class DataError(ValueError):
    """The dataset is not trainable; ``report`` is the validator's report dict."""

    def __init__(self, message: str, report: dict | None = None):
        super().__init__(message)
        self.report = report or {}


def _profile_and_prompt(cfg: Config):
    from trainer.profiles import get_profile
    profile = get_profile(cfg.profile.name, cfg.profile.options)
    return profile, profile.render_system_prompt(cfg.profile.system_prompt or None)


def build_train_dataset(dataset: str, tokenizer, cfg: Config):
    """Validate the file's structure, apply the profile, tokenize once.

    The validator runs without the tokenizer: token lengths are measured by ``build_dataset``
    on the records as trained (profile and system prompt included), which also applies
    ``data.overlong_policy``; its errors are reported with the file's line number."""
    from trainer.data.tokenization import DatasetError, build_dataset
    from trainer.data.validator import validate_file
    profile, system_prompt = _profile_and_prompt(cfg)
    report = validate_file(dataset, tokenizer=None, max_length=cfg.data.max_length,
                           overlong_policy=cfg.data.overlong_policy,
                           drop_duplicates=cfg.data.drop_duplicates,
                           max_line_bytes=cfg.data.max_line_bytes, profile=profile)
    if not report.ok:
        raise DataError(f"{dataset}: not trainable: {report.summary()}", report.to_dict())
    # Plain-text records are language-modelling data: no chat framing, no profile.
    records = [ex if "text" in ex else profile.transform_example(ex, i, system_prompt)
               for i, ex in enumerate(report.examples)]
    try:
        ds = build_dataset(tokenizer, records, max_length=cfg.data.max_length, loss_on=cfg.data.loss_on,
                           overlong_policy=cfg.data.overlong_policy)
    except DatasetError as e:
        line = report.example_lines[e.index] if e.index is not None else None
        err = {"line": line, "field": "messages", "reason": e.reason, "message": e.message}
        raise DataError(f"{dataset}:{line}: {e.reason}: {e.message}",
                        {**report.to_dict(), "ok": False, "errors": [err]}) from e
    if len(ds) == 0:
        raise DataError(f"{dataset}: no trainable example after tokenization", report.to_dict())
    return ds


def eval_records(job: TrainJob, cfg: Config) -> list[dict]:
    """The validation suite's records rendered for the active profile (at most
    ``data.max_eval_examples``); no folder: no evaluation."""
    from syllo.puzzles import rerender_record
    from trainer.data.records import normalize_record
    folder = Path(job.eval_dir or cfg.data.validation_dir)
    if not folder.is_absolute() and job.config.get("_base_dir"):
        folder = Path(job.config["_base_dir"]) / folder
    if not folder.is_dir():
        return []
    profile, system_prompt = _profile_and_prompt(cfg)
    recs: list[dict] = []
    for f in sorted(folder.glob("*.jsonl")):
        with open(f, encoding="utf-8") as fh:
            for line in fh:
                line = line.strip()
                if not line:
                    continue
                try:
                    rec = normalize_record(json.loads(line))
                    # Suite items are stored in plain form; render them for the active profile.
                    rec = rerender_record(rec, cfg.profile.name, index=len(recs))
                    recs.append(rec if "text" in rec else
                                profile.transform_example(rec, len(recs), system_prompt))
                except (ValueError, TypeError):
                    continue  # the suite is validated when generated; a bad line is not eval data
                if len(recs) >= cfg.data.max_eval_examples:
                    return recs
    return recs


def build_eval_dataset(job: TrainJob, cfg: Config, tokenizer):
    """The tokenized validation suite, or None when there is none (over-long items are truncated,
    never a reason to fail the job)."""
    from trainer.data.tokenization import build_dataset
    recs = eval_records(job, cfg)
    if not recs:
        return None
    return build_dataset(tokenizer, recs, max_length=cfg.data.max_length, loss_on=cfg.data.loss_on,
                         overlong_policy="truncate")
