"""Config sections of the system's operations: the autonomous loop (``autonomy``), supervision
(``watchdog``), keeping models (``retention``) and disk (``disk``). Part of ``trainer.config.schema``
(which re-exports them); split out so each file stays readable. Same conventions: the string below
a field is its documentation, constraints live in the field metadata.
"""
from __future__ import annotations

from dataclasses import dataclass

from trainer.config.fields import f


@dataclass
class AutonomyConfig:
    """The autonomous sidecars (monitoring/autonomy/): data generation, curriculum, mining, self-correction."""
    datagen_enabled: bool = f(True)
    """Generate data when the queue runs low; off: the data generation sidecar only reports (waits)."""
    datagen_interval: float = f(30.0, min=0.1)
    """Seconds between checks of the training queue by the data generation automation."""
    datagen_min_queue: int = f(2, min=1)
    """Generate a batch while the training queue (inbox/ + queue/{high,normal,low,processing}) holds fewer
    files than this; at or above it the automation waits (so it never floods the queue)."""
    datagen_batch_size: int = f(200, min=1, max=100000)
    """Puzzles per generated batch file."""
    datagen_min_free_mb: float = f(500.0, min=0.0)
    """Free disk (MiB) under the base dir below which the automation waits instead of generating."""
    datagen_default_mix: dict = f(factory=lambda: {"easy": 0.6, "medium": 0.3, "hard": 0.1})
    """Difficulty mix used while status/curriculum_optimization.json has no usable ``mix`` (easy-heavy)."""
    # curriculum optimizer (monitoring/autonomy/curriculum.py)
    curriculum_interval: float = f(60.0, min=0.1)
    """Seconds between passes of the curriculum optimizer."""
    curriculum_levels: list = f(factory=lambda: ["easy", "medium", "hard", "expert"])
    """Difficulty levels the curriculum may put weight on (a subset of syllo's levels)."""
    curriculum_arms: list = f(factory=lambda: ["learning_progress", "uniform"])
    """Strategies compared by the A/B test (two or more of learning_progress, difficulty_filter, uniform);
    batches alternate between them until the switching rule picks a winner."""
    curriculum_window: int = f(5, min=2)
    """Learning progress: evaluations per level in the slope's regression window (Matiisen et al. 2017)."""
    curriculum_epsilon: float = f(0.1, min=0.0, max=1.0)
    """Exploration share: this fraction of every learnt mix is spread uniformly over the levels."""
    curriculum_chance: float = f(0.5, min=0.0, max=0.99)
    """Accuracy of guessing (the suite's answers are balanced): the difficulty filter works on the
    chance-corrected pass rate (acc - chance) / (1 - chance)."""
    curriculum_filter_band: list = f(factory=lambda: [0.2, 0.8])
    """Difficulty filter (arXiv 2504.03380): levels whose chance-corrected pass rate lies in this band are
    kept, weighted by p(1-p); when none does, the level closest to 0.5 is taken."""
    curriculum_ab_min_intervals: int = f(3, min=1)
    """A/B: evaluation intervals each arm needs before the switching rule may decide."""
    curriculum_ab_z: float = f(1.64, min=0.0)
    """A/B: switch when the per-step gain difference exceeds this many standard errors (one-sided 95%)."""
    curriculum_ab_max_intervals: int = f(20, min=1)
    """A/B: when every arm has this many intervals without a significant difference, the higher mean wins."""
    # adversarial miner (monitoring/autonomy/adversarial.py)
    miner_interval: float = f(300.0, min=0.1)
    """Seconds between probes of the deployed model."""
    miner_probe_size: int = f(40, min=1, max=2000)
    """Fresh puzzles per probe (never suite items), spread evenly over curriculum_levels."""
    miner_max_patterns: int = f(5, min=1)
    """Failing patterns (hardest first) that get new puzzles per probe."""
    replay_ratio: float = f(1.0, min=0.0, max=10.0)
    """Fresh, answer-balanced puzzles added to each adversarial or correction file per targeted
    example (experience replay): a small file of one failing pattern often has one answer, and
    training on it alone collapses a small model to always giving that answer."""
    miner_examples_per_pattern: int = f(20, min=1, max=10000)
    """New puzzles generated per failing pattern."""
    miner_max_queued: int = f(2, min=1)
    """Mining waits while this many adversarial files still wait in inbox/high/ and queue/high/."""
    # self-correction loop (monitoring/autonomy/self_correction.py)
    selfcorrect_interval: float = f(120.0, min=0.1)
    """Seconds between passes of the self-correction loop."""
    selfcorrect_per_pattern: int = f(4, min=1, max=1000)
    """Correction examples written per failing pattern."""
    selfcorrect_max_patterns: int = f(10, min=1)
    """Failing patterns (most failures first) corrected per source (evaluation or probe)."""
    selfcorrect_to_inbox: str = f("auto", choices=["auto", "always", "never"])
    """Also put each corrections file into inbox/high/: ``auto`` does so while the training daemon does not
    claim queue/corrections/ (its status ``queue`` has no ``corrections`` count)."""


@dataclass
class WatchdogConfig:
    """The supervisor (safety/daemon_watchdog.py) and its hang / crash helpers (safety/anti_stuck_monitor.py,
    safety/crash_detector.py). Restart policy after supervisord / systemd / Kubernetes CrashLoopBackOff."""
    interval: float = f(1.0, min=0.05, max=3600)
    """Seconds between supervision passes of the watchdog (--interval overrides)."""
    backoff_initial: float = f(1.0, min=0.01, max=86400)
    """Seconds before the first restart after a failure."""
    backoff_factor: float = f(2.0, min=1.0, max=100)
    """Each consecutive failure multiplies the restart delay by this."""
    backoff_cap: float = f(300.0, min=0.01, max=86400)
    """Longest delay between restarts (must be >= backoff_initial)."""
    jitter: float = f(0.2, min=0.0, max=0.99)
    """The delay is multiplied by a random factor in [1 - jitter, 1 + jitter] (no restarts in lock-step)."""
    reset_after: float = f(600.0, min=0.0)
    """Seconds alive with a fresh heartbeat after which a program's failure history is forgotten."""
    max_failures: int = f(5, min=1, max=1000)
    """Failures within failure_window that make a program FATAL (no restarts until `trainctl watchdog reset`)."""
    failure_window: float = f(600.0, min=1.0)
    """Seconds over which failures are counted for max_failures."""
    startsecs: float = f(1.0, min=0.0, max=3600)
    """Alive this long after a spawn: the start succeeded."""
    heartbeat_timeout: float = f(300.0, min=1.0)
    """A supervised program whose heartbeat is older than this (after start_grace) is hung: stopped and restarted."""
    start_grace: float = f(300.0, min=0.0)
    """Seconds after a start during which a missing heartbeat is not held against a program (model loading)."""
    evaluation_budget: float = f(1800.0, min=1.0)
    """Seconds one checkpoint's evaluation may take; longer is stuck (anti-stuck monitor). Also the floor of
    the training stall limit: max(stuck_step_factor x median step time, evaluation_budget)."""
    stuck_step_factor: float = f(10.0, min=1.0, max=10000)
    """A training global step unchanged for longer than this many median step times (and evaluation_budget) is stuck."""
    stuck_check_interval: float = f(0.0, min=0.0, max=3600)
    """Seconds between anti-stuck checks; 0: daemon.heartbeat_interval (detection within two heartbeats)."""
    crash_check_interval: float = f(10.0, min=0.1, max=3600)
    """Seconds between scans of the crash detector (failed jobs, watchdog restarts, trainer tracebacks)."""


@dataclass
class RetentionConfig:
    """Which checkpoints under models/checkpoints/ are kept (management/checkpoint_retention.py). Never
    deleted whatever these say: the deployed checkpoint, the one current_model came from, and the newest
    complete checkpoint of every job that may still resume."""
    keep_latest: int = f(3, min=0, max=100000)
    """Newest complete checkpoints kept (by global step, across all jobs)."""
    keep_best: int = f(2, min=0, max=100000)
    """Best checkpoints kept by composite score (status/model_comparisons.json ranking)."""
    keep_every_steps: int = f(0, min=0)
    """Also keep every checkpoint whose global step is a multiple of this (0: none), e.g. 1000 for a
    long-term trail."""
    max_checkpoint_gb: float = f(0.0, min=0.0)
    """Disk budget of models/checkpoints/ in GiB (0: none). Over it, checkpoints the policy would keep
    are deleted too, oldest first (protected ones never)."""
    keep_backups: int = f(5, min=1, max=10000)
    """Backups (backups/backup-*) kept by the backup manager."""
    snapshot_keep_days: int = f(7, min=1, max=3650)
    """Daily snapshots kept: one per day for this many days ..."""
    snapshot_keep_weeks: int = f(4, min=0, max=520)
    """... plus the oldest snapshot of each of this many ISO weeks before that."""


@dataclass
class DiskConfig:
    """The disk manager (management/auto_disk_manager.py): free space under the base dir."""
    interval: float = f(60.0, min=0.1)
    """Seconds between checks of free space."""
    low_free_gb: float = f(10.0, min=0.0)
    """Below this much free space (GiB): apply retention (oldest unprotected first) and compress old logs."""
    pause_free_gb: float = f(2.0, min=0.0)
    """Still below this after cleaning: pause training (control/.pause, reason disk_low)."""
    resume_free_gb: float = f(4.0, min=0.0)
    """Resume a disk_low pause once free space is back above this (above pause_free_gb, so it does not flap)."""
    compress_logs_after_days: float = f(1.0, min=0.0)
    """Rotated logs older than this are gzipped when space is low."""
    delete_logs_after_days: float = f(30.0, min=0.0)
    """Rotated (and compressed) logs older than this are deleted when space is low."""
