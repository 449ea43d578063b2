"""Contract: the deployment orchestrator reads exactly what the real evaluation sidecars write.

The orchestrator and the evaluation package never import each other (an import-linter
independence contract); they meet only in ``status/model_comparisons.json`` and
``status/regression_monitoring.json``. Here a real model registry (SQLite, foundation.model_db)
holds evaluations of real checkpoint folders (the tiny model in the trainer's format), the real
comparison engine and regression monitor write their status files, and the orchestrator decides
from those files alone.
"""
from __future__ import annotations

import pytest

from foundation.atomic_io import read_json
from foundation.model_db import ModelDB
from foundation.paths import Paths
from monitoring.deployment.orchestrator import DeploymentOrchestrator
from monitoring.evaluation import comparison, regression
from monitoring.prediction_client import PredictionClient
from tests.helpers.inference_server import free_port, make_base_dir, make_checkpoint
from trainer.config.loader import load_config

SUITE = "contract-suite-v1"
# Stated here rather than taken from the defaults, because the expected ranking below follows from them.
EVAL_CFG = {"evaluation": {"weight_loss": 0.4, "weight_accuracy": 0.5, "weight_calibration": 0.1,
                           "regression_loss_ratio": 1.15, "regression_accuracy_drop": 0.10}}


def evaluate(db: ModelDB, base, tiny_model_dir, step: int, loss: float, accuracy: float) -> str:
    """A real checkpoint folder, registered and evaluated in the registry; returns its path as the
    status files name it (relative to the base dir)."""
    folder = make_checkpoint(tiny_model_dir, base, "job-c", step)
    db.register_checkpoint(folder, step, "job-c", "train.jsonl", train_loss=loss, validation_loss=loss)
    db.record_evaluation(folder, SUITE, accuracy, {"easy": {"accuracy": accuracy, "n": 20}}, n_items=20,
                         validation_loss=loss, calibration={"ece": 0.05})
    return str(folder.relative_to(base))


def run_evaluation_sidecars(base, cfg) -> tuple[dict, dict]:
    comparison.run_once(base, config=cfg, suite_version=SUITE)
    regression.run_once(base, config=cfg, suite_version=SUITE)
    paths = Paths.from_base(base)
    return read_json(paths.status_file("model_comparisons")), read_json(paths.status_file("regression_monitoring"))


def test_orchestrator_picks_the_best_deployable_from_the_real_evaluation_files(tmp_path, tiny_model_dir):
    base = make_base_dir(tmp_path / "base", tiny_model_dir, EVAL_CFG)
    cfg = load_config(base_dir=base)
    db = ModelDB(Paths.from_base(base).model_db, base_dir=base)
    # b has the best score (lowest loss) but its accuracy fell 0.12 below a's: a regression
    a = evaluate(db, base, tiny_model_dir, 10, loss=2.0, accuracy=0.90)
    b = evaluate(db, base, tiny_model_dir, 20, loss=1.0, accuracy=0.78)
    c = evaluate(db, base, tiny_model_dir, 30, loss=1.12, accuracy=0.82)
    comparisons, regressions = run_evaluation_sidecars(base, cfg)

    # what the sidecars wrote (the premise of the test): b on top, flagged; c the best deployable
    assert [r["checkpoint"] for r in comparisons["ranking"]] == [b, c, a]
    assert regressions["flagged"] == [b]
    assert comparisons["best_deployable"]["checkpoint"] == c

    # nothing listens on this port: the orchestrator decides, then waits for a server
    client = PredictionClient(f"http://127.0.0.1:{free_port()}", timeout=5)
    orch = DeploymentOrchestrator(base, config=cfg, client=client)
    target, skipped = orch.policy.choose(orch.blocked.read())
    assert target is not None and target.rel == c
    assert target.global_step == 30 and target.job_id == "job-c"
    assert target.score == pytest.approx(comparisons["best_deployable"]["score"])
    assert {"checkpoint": b, "reason": "flagged by the regression monitor"} in skipped
    res = orch.check_once("contract")
    assert res["action"] == "wait" and f"will deploy {c} " in res["reason"], res
    assert orch.store.current() is None  # nothing was deployed without a server

    # a better checkpoint is evaluated: after the sidecars' next run it is the one chosen
    d = evaluate(db, base, tiny_model_dir, 40, loss=0.9, accuracy=0.93)
    comparisons, regressions = run_evaluation_sidecars(base, cfg)
    assert comparisons["best_deployable"]["checkpoint"] == d and d not in regressions["flagged"]
    target, _ = orch.policy.choose(orch.blocked.read())
    assert target is not None and target.rel == d and target.global_step == 40
