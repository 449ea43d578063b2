"""Curriculum optimizer: which difficulty mix the next generated batch should have, chosen by a
published method and checked by an A/B test against uniform sampling.

Strategies (``autonomy.curriculum_arms`` picks the ones compared):

* ``learning_progress`` -- Matiisen, Oliver, Cohen, Schulman, "Teacher-Student Curriculum
  Learning", arXiv 1707.00183, the *Window* teacher: a level's learning progress is the slope of a
  least-squares line through its last K suite accuracies (x = global step; reported per 1000
  steps); levels are sampled in proportion to |slope|, so a level whose accuracy *drops*
  (forgetting) is practised again, with epsilon-greedy exploration (a share epsilon spread
  uniformly). Parameters: K = ``curriculum_window`` (5 evaluations), epsilon =
  ``curriculum_epsilon`` (0.1). With fewer than two evaluations (no slope yet) the starting mix
  ``datagen_default_mix`` (easy-heavy) is used. Our adaptation: the curve is of the chance-corrected
  accuracy (below), clipped at 0, so a level at chance has no slope however its guesses flip (a
  model that turns from always "invalid" to always "valid" moves a level's raw accuracy by its
  answer balance, which is not learning); while no level has left chance the starting mix holds.
* ``difficulty_filter`` -- Bae et al., "Online Difficulty Filtering for Reasoning Oriented
  Reinforcement Learning", arXiv 2504.03380: learning is fastest on items the model passes about
  half the time (the pass-rate variance p(1-p) lower-bounds the improvement). Levels whose pass rate
  lies in ``curriculum_filter_band`` ([0.2, 0.8]) are kept, weighted by p(1-p); when none does, the
  level closest to 0.5 is taken; plus the same epsilon exploration. Our adaptation: syllo answers
  are balanced, so a guessing model passes half the time; the pass rate used is the chance-corrected
  one, (acc - c) / (1 - c) with c = ``curriculum_chance`` (0.5), clipped to [0, 1]. It pools the
  newest suite evaluation with the adversarial miner's probe of fresh puzzles.
* ``uniform`` -- equal weight on every level: the baseline.

A/B test (equal training steps): the published recommendation carries ``strategy`` and a
``batch_tag`` (``ab-<strategy>-<seq>``). A batch belongs to a tag when its file name carries the tag,
or else when it is the data generator's ``last_batch`` (``status/data_generation.json``) first seen
while that tag was the published one (``ab.files`` keeps that map). The tag advances once a batch
of it shows up (inbox/, queue/, the model registry, or that map), and the next tag goes to the arm
with the fewest batches so far, so batches alternate. The model registry
records which file produced every checkpoint, so each interval between two consecutive suite
evaluations is attributed to an arm when every checkpoint in it came from that arm's batches
(intervals with mixed or untagged files are counted as ``unattributed``). An interval's evidence is
its accuracy gain per 1000 trained steps (comparing rates is comparing at equal steps). Intervals
before learning starts, where the model is at chance on every level at both ends (no level above
chance by more than 1.64 binomial standard errors of a guesser), are left out and counted as
``at_chance``: a model that has learnt nothing yet shows no difference between curricula except
where its escape from chance happens to fall, and a run of zero gains has no variance, so one
lucky interval would decide the test (it did, in a 30-minute run: uniform "won" on the interval
in which learning began).

Switching rule: once every arm has ``curriculum_ab_min_intervals`` (3) intervals, the arm with the
highest mean gain per 1000 steps wins when its lead over each other arm exceeds
``curriculum_ab_z`` (1.64, one-sided 95%) standard errors (Welch: sqrt(se_a^2 + se_b^2)); when every
arm has ``curriculum_ab_max_intervals`` (20) intervals without that, the higher mean wins ("budget").
The decision is kept (``ab.decided``) and every later batch uses the winner.

``status/curriculum_optimization.json``: ``strategy``, ``batch_tag``, ``mix`` (the next batch's),
``arms`` (each arm's mix), ``methods`` (paper and parameters), ``evidence`` (suite version, the
per-level accuracy window, slopes, pass rates (suite, probe, pooled, corrected)), ``ab`` (state,
per-arm n/steps/mean/se/gain at equal steps, winner, rule, attributed, unattributed and at-chance
intervals),
``inputs`` (a line per input file or registry that is missing or malformed), ``history`` (newest
last, at most 50: tag, strategy, mix, at).
"""
from __future__ import annotations

import math
import os
import re
from typing import Any, Callable

from foundation.paths import PRIORITIES
from monitoring.autonomy.inputs import as_dict, as_list, read_input
from monitoring.autonomy.sidecar import Sidecar, click_command

ARMS = ("learning_progress", "difficulty_filter", "uniform")
TAG_RE = re.compile(r"ab-(learning_progress|difficulty_filter|uniform)-(\d+)")
MAX_HISTORY = 50
MAX_FILES = 500
PAPERS = {"learning_progress": "Matiisen et al., Teacher-Student Curriculum Learning, arXiv 1707.00183 (Window teacher)",
          "difficulty_filter": "Bae et al., Online Difficulty Filtering for Reasoning Oriented RL, arXiv 2504.03380",
          "uniform": "baseline: equal weight per level"}


def batch_tag(arm: str, seq: int) -> str:
    return f"ab-{arm}-{seq:04d}"


def tag_of_name(name: str) -> tuple[str, int] | None:
    """(arm, seq) of a batch file name that carries a tag (``gen-ab-uniform-0003-....jsonl``)."""
    m = TAG_RE.search(os.path.basename(name or ""))
    return (m.group(1), int(m.group(2))) if m else None


# --------------------------------------------------------------------------- the strategies
def normalise(weights: dict[str, float], levels: list[str]) -> dict[str, float]:
    w = {lv: max(0.0, float(weights.get(lv, 0.0))) for lv in levels}
    total = sum(w.values())
    if total <= 0:
        return {lv: 1.0 / len(levels) for lv in levels}
    return {lv: round(v / total, 4) for lv, v in w.items()}


def explore(weights: dict[str, float], levels: list[str], epsilon: float) -> dict[str, float]:
    """Epsilon-greedy as a mix: a share epsilon spread uniformly, the rest by ``weights``."""
    base = normalise(weights, levels)
    return normalise({lv: epsilon / len(levels) + (1 - epsilon) * base[lv] for lv in levels}, levels)


def slope_per_1k(points: list[tuple[int, float]]) -> float | None:
    """Least-squares slope of accuracy over global step, per 1000 steps (None: < 2 distinct steps)."""
    if len(points) < 2:
        return None
    xs = [p[0] / 1000.0 for p in points]
    ys = [p[1] for p in points]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        return None
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx


def level_windows(evals: list[dict], levels: list[str], k: int, chance: float) -> dict[str, list[tuple[int, float]]]:
    """The last ``k`` (global step, chance-corrected accuracy clipped at 0: ``corrected``) points per
    level, from evaluations ordered by step."""
    out: dict[str, list[tuple[int, float]]] = {lv: [] for lv in levels}
    for e in evals:
        for lv in levels:
            acc = as_dict(as_dict(e.get("by_difficulty")).get(lv)).get("accuracy")
            if isinstance(acc, (int, float)):
                out[lv].append((int(e["global_step"]), corrected(float(acc), chance)))
    return {lv: pts[-k:] for lv, pts in out.items()}


def learning_progress_mix(windows: dict, levels: list[str], epsilon: float, prior: dict) -> tuple[dict, dict, str]:
    slopes = {lv: slope_per_1k(windows.get(lv, [])) for lv in levels}
    known = {lv: abs(s) for lv, s in slopes.items() if s is not None}
    if not known or sum(known.values()) == 0:
        return normalise(prior, levels), slopes, "no learning curve yet: the starting mix"
    return explore(known, levels, epsilon), slopes, "sampled by |slope| with epsilon exploration"


def corrected(acc: float, chance: float) -> float:
    return min(1.0, max(0.0, (acc - chance) / (1.0 - chance)))


def difficulty_filter_mix(rates: dict[str, float], levels: list[str], epsilon: float, band: list,
                          prior: dict) -> tuple[dict, str]:
    """``rates``: chance-corrected pass rate per level (levels without data are left out)."""
    if not rates:
        return normalise(prior, levels), "no pass rates yet: the starting mix"
    lo, hi = (float(band[0]), float(band[1])) if len(band) == 2 else (0.2, 0.8)
    inside = {lv: p * (1 - p) for lv, p in rates.items() if lo <= p <= hi and p * (1 - p) > 0}
    if inside:
        return explore(inside, levels, epsilon), f"levels with pass rate in [{lo}, {hi}], weighted by p(1-p)"
    nearest = min(rates, key=lambda lv: (abs(rates[lv] - 0.5), levels.index(lv)))
    return explore({nearest: 1.0}, levels, epsilon), f"no level in [{lo}, {hi}]: the closest to 0.5 ({nearest})"


# --------------------------------------------------------------------------- A/B evidence
def left_chance(evaluation: dict, levels: list[str], chance: float) -> bool:
    """True when some level's suite accuracy is above chance by more than 1.64 binomial standard
    errors of a guesser (sqrt(c(1-c)/n), one-sided 95%): the model has started to learn."""
    by = as_dict(evaluation.get("by_difficulty"))
    for lv in levels:
        d = as_dict(by.get(lv))
        acc, n = d.get("accuracy"), d.get("n")
        if isinstance(acc, (int, float)) and isinstance(n, int) and n > 0:
            if acc - chance > 1.64 * math.sqrt(chance * (1 - chance) / n):
                return True
    return False


def ab_intervals(evals: list[dict], checkpoints: list[dict], files: dict[str, str],
                 informative: Callable[[dict], bool]) -> tuple[list[dict], int, int]:
    """Consecutive evaluation pairs attributed to one arm: ({arm, from_step, to_step, steps, gain,
    rate_per_1k}, ...), how many intervals could not be attributed, and how many were left out
    because the model was at chance at both ends (``informative(evaluation)`` False for both).
    ``files``: batch file name -> tag, for batches whose name carries none."""
    steps_files = sorted((int(c["global_step"]), c.get("source_file") or "") for c in checkpoints)
    out: list[dict] = []
    unattributed = at_chance = 0
    for a, b in zip(evals, evals[1:]):
        s0, s1 = int(a["global_step"]), int(b["global_step"])
        if s1 <= s0 or a.get("accuracy") is None or b.get("accuracy") is None:
            continue
        if not (informative(a) or informative(b)):
            at_chance += 1
            continue
        trained = {f for s, f in steps_files if s0 < s <= s1} or {b.get("source_file") or ""}
        arms = {(tag_of_name(f) or tag_of_name(files.get(os.path.basename(f), "")) or (None,))[0] for f in trained}
        if len(arms) != 1 or None in arms:
            unattributed += 1
            continue
        gain = float(b["accuracy"]) - float(a["accuracy"])
        out.append({"arm": arms.pop(), "from_step": s0, "to_step": s1, "steps": s1 - s0,
                    "gain": round(gain, 4), "rate_per_1k": gain / (s1 - s0) * 1000.0})
    return out, unattributed, at_chance


def ab_decision(intervals: list[dict], arms: list[str], min_n: int, z: float, max_n: int) -> dict:
    """Per-arm statistics and the switching rule's verdict (``winner`` None while undecided)."""
    stats: dict[str, dict] = {}
    for arm in arms:
        rates = [iv["rate_per_1k"] for iv in intervals if iv["arm"] == arm]
        n = len(rates)
        mean = sum(rates) / n if n else None
        var = sum((r - mean) ** 2 for r in rates) / (n - 1) if n >= 2 else None
        stats[arm] = {"n": n, "steps": sum(iv["steps"] for iv in intervals if iv["arm"] == arm),
                      "mean_gain_per_1k": None if mean is None else round(mean, 5),
                      "se": None if var is None else round(math.sqrt(var / n), 5)}
    ready = [a for a in arms if stats[a]["n"] >= min_n]
    equal = min((stats[a]["steps"] for a in arms), default=0)
    for a in arms:
        m = stats[a]["mean_gain_per_1k"]
        stats[a]["gain_at_equal_steps"] = None if m is None else round(m * equal / 1000.0, 4)
    verdict = {"equal_steps": equal, "stats": stats, "winner": None, "rule": None,
               "state": "collecting" if len(ready) < len(arms) else "comparing"}
    if len(ready) < len(arms) or len(arms) < 2:
        return verdict
    best = max(arms, key=lambda a: stats[a]["mean_gain_per_1k"])
    zs = {}
    for other in arms:
        if other == best:
            continue
        se = math.sqrt((stats[best]["se"] or 0) ** 2 + (stats[other]["se"] or 0) ** 2)
        diff = stats[best]["mean_gain_per_1k"] - stats[other]["mean_gain_per_1k"]
        zs[other] = math.inf if se == 0 and diff > 0 else (diff / se if se > 0 else 0.0)
    verdict["z"] = {k: (None if math.isinf(v) else round(v, 3)) for k, v in zs.items()}
    if all(v >= z for v in zs.values()):
        verdict.update(winner=best, rule=f"{best} leads every arm by >= {z} standard errors", state="decided")
    elif all(stats[a]["n"] >= max_n for a in arms):
        verdict.update(winner=best, rule=f"budget of {max_n} intervals per arm reached: higher mean wins",
                       state="decided")
    return verdict


# --------------------------------------------------------------------------- the daemon
class CurriculumOptimizer(Sidecar):
    name = "curriculum_optimizer"
    status_name = "curriculum_optimization"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        prev, _ = read_input(self.status_path)  # our own last status: the A/B state survives restarts
        prev = prev or {}
        for key in ("batch_tag", "strategy", "history", "ab"):
            if key in prev:
                self.doc[key] = prev[key]

    def interval(self) -> float:
        return float(self.cfg.autonomy.curriculum_interval)

    # ------------------------------------------------------------------ inputs
    def _evaluations(self, problems: list[str]) -> tuple[list[dict], list[dict], str | None]:
        testing, problem = read_input(self.paths.status_file("automated_testing.json"))
        if problem:
            problems.append(problem)
        if not self.paths.model_db.exists():
            problems.append("model registry: none yet (no checkpoint evaluated)")
            return [], [], None
        from foundation.model_db import ModelDB
        db = ModelDB(self.paths.model_db, base_dir=self.paths.base)
        try:
            version = as_dict(testing).get("suite_version")
            evals = db.latest_evaluations(version if isinstance(version, str) else None)
            if not isinstance(version, str) and evals:
                version = evals[-1]["suite_version"]  # scores are comparable on one suite version only
                evals = [e for e in evals if e["suite_version"] == version]
            return evals, db.list_checkpoints(), version if isinstance(version, str) else None
        finally:
            db.close()

    def _probe(self, problems: list[str]) -> dict:
        doc, problem = read_input(self.paths.status_file("adversarial_mining.json"))
        if problem:
            problems.append(problem)
        return as_dict(as_dict(as_dict(doc).get("probe")).get("by_difficulty"))

    def _generated_files(self) -> dict[str, str]:
        """Batch file name -> tag, for batches whose name carries no tag: the data generator's last
        batch was made with the recommendation in effect (a tag only moves once a batch is seen)."""
        files = dict(as_dict(as_dict(self.doc.get("ab")).get("files")))
        doc, _ = read_input(self.paths.status_file("data_generation.json"))
        name = os.path.basename(str(as_dict(as_dict(doc).get("last_batch")).get("file") or ""))
        cur = self.doc.get("batch_tag")
        if name and name not in files and not tag_of_name(name) and tag_of_name(str(cur or "")):
            files[name] = cur
        return dict(list(files.items())[-MAX_FILES:])

    def _batches_seen(self, checkpoints: list[dict], files: dict[str, str]) -> dict[str, set[int]]:
        names: list[str] = []
        for folder in (self.paths.inbox, self.paths.inbox / "high", self.paths.inbox / "low",
                       *(self.paths.queue / q for q in (*PRIORITIES, "processing", "recently_completed", "failed"))):
            try:
                names.extend(os.listdir(folder))
            except OSError:
                continue
        names.extend(c.get("source_file") or "" for c in checkpoints)
        names.extend(files.values())
        seen: dict[str, set[int]] = {}
        for n in names:
            t = tag_of_name(n)
            if t:
                seen.setdefault(t[0], set()).add(t[1])
        return seen

    # ------------------------------------------------------------------ one pass
    def run_once(self) -> dict[str, Any]:
        a = self.cfg.autonomy
        problems: list[str] = []
        levels = [lv for lv in a.curriculum_levels if lv in ("easy", "medium", "hard", "expert")] or ["easy"]
        arms = [x for x in a.curriculum_arms if x in ARMS]
        if "uniform" not in arms:
            arms.append("uniform")  # the baseline is always compared
        if len(arms) < 2:
            arms.insert(0, "learning_progress")
        evals, ckpts, version = self._evaluations(problems)
        prior = {k: v for k, v in as_dict(a.datagen_default_mix).items() if k in levels}

        windows = level_windows(evals, levels, a.curriculum_window, a.curriculum_chance)
        lp_mix, slopes, lp_why = learning_progress_mix(windows, levels, a.curriculum_epsilon, prior)
        rates = self._pass_rates(evals, self._probe(problems), levels)
        cor = {lv: r["corrected"] for lv, r in rates.items() if r["corrected"] is not None}
        df_mix, df_why = difficulty_filter_mix(cor, levels, a.curriculum_epsilon, a.curriculum_filter_band, prior)
        mixes = {"learning_progress": lp_mix, "difficulty_filter": df_mix, "uniform": normalise({}, levels)}

        files = self._generated_files()
        intervals, unattributed, at_chance = ab_intervals(
            evals, ckpts, files, informative=lambda e: left_chance(e, levels, a.curriculum_chance))
        verdict = ab_decision(intervals, arms, a.curriculum_ab_min_intervals, a.curriculum_ab_z,
                              a.curriculum_ab_max_intervals)
        decided = as_dict(as_dict(self.doc.get("ab")).get("decided")) or None
        if decided is None and verdict["winner"]:
            decided = {"winner": verdict["winner"], "rule": verdict["rule"], "at": self.now(),
                       "stats": verdict["stats"]}
            self.log.info("A/B decided: %s (%s)", decided["winner"], decided["rule"])
        strategy, tag = self._next_tag(arms, decided, ckpts, files)
        history = as_list(self.doc.get("history"))
        if not history or history[-1].get("batch_tag") != tag:
            history = (history + [{"batch_tag": tag, "strategy": strategy, "mix": mixes[strategy],
                                   "at": self.now()}])[-MAX_HISTORY:]
        return {
            "state": "idle", "strategy": strategy, "batch_tag": tag, "mix": mixes[strategy], "levels": levels,
            "arms": {arm: {"mix": mixes[arm]} for arm in arms},
            "methods": {
                "learning_progress": {"paper": PAPERS["learning_progress"], "window": a.curriculum_window,
                                      "epsilon": a.curriculum_epsilon, "slope_unit": "accuracy per 1000 steps",
                                      "why": lp_why},
                "difficulty_filter": {"paper": PAPERS["difficulty_filter"], "band": a.curriculum_filter_band,
                                      "chance": a.curriculum_chance, "epsilon": a.curriculum_epsilon,
                                      "weight": "p(1-p) of the chance-corrected pass rate", "why": df_why},
                "uniform": {"paper": PAPERS["uniform"]}},
            "evidence": {"suite_version": version, "n_evaluations": len(evals),
                         "window": {lv: [list(p) for p in pts] for lv, pts in windows.items()},
                         "slopes_per_1k": {lv: None if s is None else round(s, 5) for lv, s in slopes.items()},
                         "pass_rates": rates},
            "ab": {"arms": arms, "state": "decided" if decided else verdict["state"], "decided": decided,
                   "rule": (f"each arm >= {a.curriculum_ab_min_intervals} intervals, then the best mean gain per "
                            f"1000 steps wins when it leads every arm by >= {a.curriculum_ab_z} standard errors, "
                            f"or at {a.curriculum_ab_max_intervals} intervals per arm"),
                   "current": verdict, "intervals": len(intervals), "unattributed": unattributed,
                   "at_chance": at_chance,
                   "recent_intervals": intervals[-10:], "files": files},
            "inputs": problems, "history": history,
        }

    def _pass_rates(self, evals: list[dict], probe: dict, levels: list[str]) -> dict[str, dict]:
        last = as_dict(evals[-1].get("by_difficulty")) if evals else {}
        out: dict[str, dict] = {}
        for lv in levels:
            n = correct = 0
            parts: dict[str, Any] = {}
            for src, d in (("suite", as_dict(last.get(lv))), ("probe", as_dict(probe.get(lv)))):
                sn, sc = d.get("n"), d.get("correct")
                if isinstance(sn, int) and isinstance(sc, int) and sn > 0:
                    n, correct = n + sn, correct + sc
                    parts[src] = round(sc / sn, 4)
            pooled = correct / n if n else None
            out[lv] = {**parts, "n": n, "pooled": None if pooled is None else round(pooled, 4),
                       "corrected": None if pooled is None else round(corrected(pooled, self.cfg.autonomy.curriculum_chance), 4)}
        return out

    def _next_tag(self, arms: list[str], decided: dict | None, ckpts: list[dict],
                  files: dict[str, str]) -> tuple[str, str]:
        """Keep the current tag until a batch carries it; then the next goes to the arm with the fewest
        batches (the winner once decided)."""
        seen = self._batches_seen(ckpts, files)
        cur = tag_of_name(str(self.doc.get("batch_tag") or ""))
        if cur and cur[0] in arms and cur[1] not in seen.get(cur[0], set()) \
                and (decided is None or cur[0] == decided["winner"]):
            return cur[0], batch_tag(*cur)
        seq = max([s for ss in seen.values() for s in ss] + [cur[1] if cur else 0]) + 1
        if decided is not None:
            arm = decided["winner"]
        else:
            last = cur[0] if cur else None
            arm = min(arms, key=lambda x: (len(seen.get(x, ())), x == last, arms.index(x)))
        return arm, batch_tag(arm, seq)


def make(base_dir=None, config=None, **kw: Any) -> CurriculumOptimizer:
    return CurriculumOptimizer(base_dir, config, **kw)


curriculum_command = click_command(make, CurriculumOptimizer.name, "Recommend the next generated batch's difficulty mix (learning progress / difficulty filter, A/B against uniform).")
