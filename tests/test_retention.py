"""Checkpoint retention (management/checkpoint_retention.py): a property test over random histories of
save / evaluate / deploy / crash / resume / finish events on real folders, plus the known rotation bugs
(step 9000 vs 10000, a stale "best" pointer) as plain examples, the model_db marks and the cleanup CLI."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from click.testing import CliRunner
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from foundation.atomic_io import atomic_write_json
from foundation.model_db import ModelDB
from foundation.paths import Paths
from management.checkpoint_retention import Policy, inventory, run_retention

KIB = 1024


class World:
    """A base dir that training, evaluation and deployment write to as the real processes do,
    plus what the test knows must survive (computed here, not by the module under test)."""

    def __init__(self, base: Path):
        self.paths = Paths(base).ensure()
        self.step = 8990  # crosses 9999 -> 10000 early: padded and unpadded names
        self.job_no = 0
        self.job: str | None = None  # the running job
        self.saved: dict[str, list[tuple[int, str]]] = {}  # job -> [(step, folder name)]
        self.unfinished: set[str] = set()
        self.deployed: str | None = None
        self.current: tuple[str, int] | None = None
        self.candidate: str | None = None
        self.ranking: list[str] = []

    def rel(self, job: str, name: str) -> str:
        return f"models/checkpoints/{job}/{name}"

    def new_job(self) -> None:
        if self.job:  # interrupted: back to the head of its queue, resumable
            os.replace(self.paths.processing / f"{self.job}.jsonl", self.paths.queue / "normal" / f"{self.job}.jsonl")
        self.job_no += 1
        self.job = f"job{self.job_no}"
        (self.paths.checkpoints / self.job).mkdir(parents=True)
        (self.paths.processing / f"{self.job}.jsonl").write_text("{}\n")
        atomic_write_json(self.paths.queue / ".jobs" / f"{self.job}.jsonl.job.json",
                          {"job_id": self.job, "output_dir": str(self.paths.checkpoints / self.job), "started": True})
        self.saved[self.job] = []
        self.unfinished.add(self.job)

    def save(self, units: int, gap: int, padded: bool) -> None:
        if not self.job:
            self.new_job()
        self.step += gap
        name = f"step-{self.step:08d}" if padded else f"step-{self.step}"
        folder = self.paths.checkpoints / self.job / name
        if folder.exists():
            return
        tmp = folder.with_name(f"checkpoint-{self.step}")
        shutil.rmtree(tmp, ignore_errors=True)  # a partial save left at this step (``partial``) is redone
        tmp.mkdir()
        (tmp / "model.safetensors").write_bytes(b"\0" * units * KIB)
        atomic_write_json(tmp / "checkpoint_info.json", {"global_step": self.step, "complete": True, "job_id": self.job})
        os.rename(tmp, folder)
        self.saved[self.job].append((self.step, name))

    def partial(self) -> None:
        """A save in progress (or left by a crash): not a checkpoint, not a replacement."""
        if self.job:
            d = self.paths.checkpoints / self.job / f"checkpoint-{self.step + 1}"
            d.mkdir(exist_ok=True)
            (d / "model.safetensors").write_bytes(b"\0" * KIB)

    def crash_mid_delete(self) -> None:
        if self.job:
            d = self.paths.checkpoints / self.job / ".deleting-step-00000001-1-1"
            d.mkdir(exist_ok=True)
            (d / "model.safetensors").write_bytes(b"\0" * KIB)

    def existing(self) -> list[str]:
        return [i.rel for i in inventory(self.paths) if i.kind == "step"]

    def evaluate(self, order: list[int], stale_best: bool) -> None:
        present = self.existing()
        ranked = [present[i % len(present)] for i in order] if present else []
        ranked = list(dict.fromkeys(ranked))
        if stale_best:  # the best names a checkpoint deleted since (or never there)
            ranked.insert(0, "models/checkpoints/job0/step-00000005")
        self.ranking = ranked
        best_dep = ranked[0] if ranked else None
        self.candidate = best_dep if best_dep in present else None
        atomic_write_json(self.paths.status / "model_comparisons.json",
                          {"ranking": [{"rank": n + 1, "checkpoint": r, "score": 1.0 / (n + 1)} for n, r in enumerate(ranked)],
                           "best_deployable": {"checkpoint": best_dep} if best_dep else None})

    def deploy(self, pick: int) -> None:
        present = self.existing()
        if not present:
            return
        ck = present[pick % len(present)]
        version = f"v{pick}-{len(present)}"
        d = self.paths.deployed / version
        d.mkdir(parents=True, exist_ok=True)
        (d / "config.json").write_text("{}")
        atomic_write_json(d / "deploy_info.json", {"checkpoint": ck, "version": version})
        (self.paths.deployed / "current").write_text(version + "\n")
        self.deployed = ck

    def finish(self, units: int) -> None:
        if not self.job or not self.saved[self.job]:
            return
        final = self.paths.checkpoints / self.job / "final"
        final.mkdir()
        (final / "config.json").write_text("{}")
        (final / "model.safetensors").write_bytes(b"\0" * units * KIB)
        os.replace(self.paths.processing / f"{self.job}.jsonl", self.paths.completed / f"{self.job}.jsonl")
        last = self.saved[self.job][-1][0]
        self.paths.current_model.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.paths.current_model / "lineage.json", {"job_id": self.job, "global_step": last})
        self.current = (self.job, last)
        self.unfinished.discard(self.job)
        self.job = None

    def must_survive(self) -> set[str]:
        keep = set()
        if self.deployed:
            keep.add(self.deployed)
        if self.candidate:
            keep.add(self.candidate)
        for job in self.unfinished:
            if self.saved[job]:
                keep.add(self.rel(job, self.saved[job][-1][1]))
        if self.current:
            job, step = self.current
            keep.add(self.rel(job, "final"))
            keep |= {self.rel(job, n) for s, n in self.saved[job] if s == step}
        return keep


events = st.lists(st.one_of(
    st.tuples(st.just("save"), st.integers(1, 8), st.integers(1, 600), st.booleans()),
    st.tuples(st.just("save"), st.integers(1, 8), st.integers(1, 600), st.booleans()),
    st.tuples(st.just("evaluate"), st.lists(st.integers(0, 50), max_size=6), st.booleans()),
    st.tuples(st.just("deploy"), st.integers(0, 50)),
    st.tuples(st.just("finish"), st.integers(1, 8)),
    st.tuples(st.just("new_job")),
    st.tuples(st.just("partial")),
    st.tuples(st.just("crash")),
), min_size=1, max_size=25)

policies = st.builds(Policy, keep_latest=st.integers(0, 3), keep_best=st.integers(0, 2),
                     keep_every_steps=st.sampled_from([0, 1000, 4000]),
                     budget_bytes=st.sampled_from([0, 0, 12 * KIB, 30 * KIB]))


@settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(history=events, policy=policies)
@example(history=[("new_job",), ("partial",), ("save", 1, 1, False)],  # a save redone over a partial one
         policy=Policy(keep_latest=0, keep_best=0, keep_every_steps=0, budget_bytes=0))
@example(history=[("save", 1, 1, False), ("finish", 1), ("save", 1, 1, False), ("finish", 1), ("save", 1, 1, False)],
         policy=Policy(keep_latest=2, keep_best=0, keep_every_steps=0, budget_bytes=0))  # a finished job whose final/ went
def test_nothing_protected_is_ever_deleted_and_the_budget_holds(history, policy):
    with tempfile.TemporaryDirectory() as tmp:
        w = World(Path(tmp))
        for ev in history:
            kind = ev[0]
            if kind == "save":
                w.save(ev[1], ev[2], ev[3])
            elif kind == "evaluate":
                w.evaluate(ev[1], ev[2])
            elif kind == "deploy":
                w.deploy(ev[1])
            elif kind == "finish":
                w.finish(ev[1])
            elif kind == "new_job":
                w.new_job()
            elif kind == "partial":
                w.partial()
            elif kind == "crash":
                w.crash_mid_delete()  # and the running job stays in processing/: resumes later
            before = {i.rel: i for i in inventory(w.paths)}
            run_retention(w.paths, policy)
            after = {i.rel: i for i in inventory(w.paths)}
            survivors = w.must_survive()
            assert survivors <= set(after), f"protected folders deleted: {sorted(survivors - set(after))}"
            assert not list(w.paths.checkpoints.glob("*/.deleting-*")), "an interrupted delete was left behind"
            for rel in after:  # nothing half-deleted: every remaining checkpoint is whole
                assert (w.paths.base / rel / ("config.json" if rel.endswith("final") else "checkpoint_info.json")).is_file()
                assert (w.paths.base / rel / "model.safetensors").is_file()
            if w.job:  # a save in progress is never touched
                assert all((p / "model.safetensors").is_file() for p in (w.paths.checkpoints / w.job).glob("checkpoint-*"))
            total = sum(i.size for i in after.values())
            if policy.budget_bytes:
                assert total <= policy.budget_bytes or set(after) <= survivors, \
                    f"{total} bytes over the {policy.budget_bytes} budget while unprotected folders remain"
            else:  # no budget: the policy's keeps all stay, by numeric step order
                steps = sorted((i for i in before.values() if i.kind == "step"), key=lambda i: i.global_step)
                latest = {i.rel for i in steps[::-1][:policy.keep_latest]}
                best = [r for r in w.ranking if r in before][:policy.keep_best]
                every = {i.rel for i in steps if policy.keep_every_steps and i.global_step % policy.keep_every_steps == 0}
                assert latest | set(best) | every <= set(after)
                assert set(after) == latest | set(best) | every | (survivors & set(before))


def _ckpt(paths: Paths, job: str, name: str, step: int, size: int = KIB) -> str:
    d = paths.checkpoints / job / name
    d.mkdir(parents=True)
    (d / "model.safetensors").write_bytes(b"\0" * size)
    atomic_write_json(d / "checkpoint_info.json", {"global_step": step, "complete": True})
    return f"models/checkpoints/{job}/{name}"


def test_step_order_is_numeric_and_a_stale_best_keeps_nothing_extra(tmp_path):
    paths = Paths(tmp_path).ensure()
    old = _ckpt(paths, "a", "step-9000", 9000)  # unpadded: sorts after step-00010000 as text
    new = _ckpt(paths, "a", "step-00010000", 10000)
    (paths.checkpoints / "a" / "final").mkdir()  # finished job: no resume protection
    (paths.checkpoints / "a" / "final" / "config.json").write_text("{}")
    atomic_write_json(paths.current_model / "lineage.json", {"job_id": "a", "global_step": 10000})
    atomic_write_json(paths.status / "model_comparisons.json",
                      {"ranking": [{"checkpoint": "models/checkpoints/a/step-00000001"}]})
    report = run_retention(paths, Policy(keep_latest=1, keep_best=1))
    assert [d["path"] for d in report["deleted"]] == [old]
    assert (paths.base / new).is_dir() and not (paths.base / old).exists()


def test_deleted_checkpoints_stay_in_the_model_db_with_their_metrics(tmp_path):
    paths = Paths(tmp_path).ensure()
    db = ModelDB(paths.model_db, base_dir=paths.base)
    rels = [_ckpt(paths, "j", f"step-{s:08d}", s) for s in (10, 20, 30)]
    for s, rel in zip((10, 20, 30), rels):
        db.register_checkpoint(paths.base / rel, s, "j", "f.jsonl", train_loss=1.0 / s)
    db.record_evaluation(paths.base / rels[0], "v1", 0.5, {}, 10)
    (paths.checkpoints / "j" / "final").mkdir()
    (paths.checkpoints / "j" / "final" / "config.json").write_text("{}")
    atomic_write_json(paths.current_model / "lineage.json", {"job_id": "j", "global_step": 30})
    report = run_retention(paths, Policy(keep_latest=1, keep_best=0))
    assert sorted(d["path"] for d in report["deleted"]) == sorted(rels[:2] + ["models/checkpoints/j/final"]) or \
        sorted(d["path"] for d in report["deleted"]) == sorted(rels[:2])
    row = db.get_checkpoint(paths.base / rels[0])
    assert row["deleted_at"] and "latest" in row["deleted_reason"] and row["train_loss"] == 0.1
    assert db.evaluations_for(paths.base / rels[0])[0]["accuracy"] == 0.5
    assert db.get_checkpoint(paths.base / rels[2])["deleted_at"] is None


def test_cleanup_is_a_dry_run_unless_applied(tmp_path):
    from management.safe_checkpoint_cleanup import cleanup_command
    paths = Paths(tmp_path).ensure()
    rels = [_ckpt(paths, "j", f"step-{s:08d}", s) for s in (1, 2, 3, 4, 5)]
    (paths.checkpoints / "j" / "final").mkdir()
    (paths.checkpoints / "j" / "final" / "config.json").write_text("{}")
    atomic_write_json(paths.current_model / "lineage.json", {"job_id": "j", "global_step": 5})
    (tmp_path / "config.json").write_text(json.dumps({"retention": {"keep_latest": 2, "keep_best": 0}}))
    r = CliRunner().invoke(cleanup_command, ["--base-dir", str(tmp_path)])
    assert r.exit_code == 0, r.output
    assert f"would delete {rels[0]}" in r.output and "not among the latest 2" in r.output
    assert "protected: current_model came from it" in r.output and "dry run" in r.output
    assert all((tmp_path / x).is_dir() for x in rels)
    r = CliRunner().invoke(cleanup_command, ["--base-dir", str(tmp_path), "--apply", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert sorted(d["path"] for d in out["deleted"]) == rels[:3] and Path(out["backup"]).is_dir()
    assert [x for x in rels if (tmp_path / x).is_dir()] == rels[3:]
    r = CliRunner().invoke(cleanup_command, ["--base-dir", str(tmp_path), "--bogus"])
    assert r.exit_code == 2 and "No such option" in r.output
