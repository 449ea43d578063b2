"""Calibration arithmetic, regression rules and the composite ranking, on fixed numbers."""
from __future__ import annotations

import pytest

from monitoring.evaluation.calibration import bin_index, calibrate, sequence_confidence
from monitoring.evaluation.regression import find_regressions
from monitoring.evaluation.comparison import rank


def test_calibration_bins_and_ece_by_hand():
    conf = [0.05, 0.10, 0.30, 0.35, 0.50, 0.70, 0.90, 0.95, 1.00, 0.99]
    ok = [False, False, True, False, True, True, True, False, True, True]
    cal = calibrate(conf, ok)
    assert cal["n_bins"] == 6 and len(cal["bins"]) == 6
    assert sum(b["count"] for b in cal["bins"]) == cal["n"] == 10
    # bins of width 1/6: [0,.167) [.167,.333) [.333,.5) [.5,.667) [.667,.833) [.833,1]
    assert [b["count"] for b in cal["bins"]] == [2, 1, 1, 1, 1, 4]
    # by hand: |acc - conf| per bin, weighted by count / 10
    #   bin0: acc 0,   conf .075 -> .075 * 2
    #   bin1: acc 1,   conf .30  -> .70  * 1
    #   bin2: acc 0,   conf .35  -> .35  * 1
    #   bin3: acc 1,   conf .50  -> .50  * 1
    #   bin4: acc 1,   conf .70  -> .30  * 1
    #   bin5: acc .75, conf .96  -> .21  * 4
    expected = (0.075 * 2 + 0.70 + 0.35 + 0.50 + 0.30 + 0.21 * 4) / 10
    assert cal["ece"] == pytest.approx(expected)  # 0.284
    assert cal["bins"][5]["accuracy"] == 0.75 and cal["bins"][5]["mean_confidence"] == pytest.approx(0.96)
    empty = calibrate([], [])
    assert empty["n"] == 0 and empty["ece"] is None and all(b["accuracy"] is None for b in empty["bins"])
    perfect = calibrate([1.0, 1.0, 0.0, 0.0], [True, True, False, False])
    assert perfect["ece"] == 0.0


def test_calibration_edges_and_bad_input():
    assert bin_index(0.0) == 0 and bin_index(1 / 6) == 1 and bin_index(0.9999) == 5 and bin_index(1.0) == 5
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        calibrate([1.5], [True])
    with pytest.raises(ValueError, match="2 confidences but 1"):
        calibrate([0.1, 0.2], [True])
    assert sequence_confidence([0.5, 0.5]) == pytest.approx(0.25)
    assert sequence_confidence([]) == 1.0


def _ev(i, step, loss, acc, ece=None, path=None):
    return {"checkpoint_id": i, "checkpoint_path": path or f"models/checkpoints/j/step-{step:08d}",
            "abs_path": "/nonexistent", "global_step": step, "checkpoint_created_at": f"t{step:04d}",
            "validation_loss": loss, "train_validation_loss": None, "accuracy": acc,
            "calibration": None if ece is None else {"ece": ece}, "evaluated_at": f"e{step}",
            "by_difficulty": {}, "n_items": 10, "job_id": "j", "source_file": "f.jsonl"}


def test_regression_rules():
    evals = [
        _ev(1, 10, 2.00, 0.50),
        _ev(2, 20, 1.00, 0.60),   # new best
        _ev(3, 30, 1.15, 0.50),   # exactly 1.15x and exactly -0.10: not flagged
        _ev(4, 40, 1.16, 0.60),   # loss 16% above best -> flagged
        _ev(5, 50, 0.90, 0.49),   # accuracy 0.11 below best -> flagged (loss is fine)
        _ev(6, 5, 9.00, 0.00),    # first by global step: nothing before it, never flagged
    ]
    res = find_regressions(evals, loss_ratio=1.15, accuracy_drop=0.10)
    assert res["flagged"] == ["models/checkpoints/j/step-00000040", "models/checkpoints/j/step-00000050"]
    by = {(a["checkpoint"], a["metric"]) for a in res["alerts"]}
    assert by == {("models/checkpoints/j/step-00000040", "validation_loss"),
                  ("models/checkpoints/j/step-00000050", "accuracy")}
    loss_alert = next(a for a in res["alerts"] if a["metric"] == "validation_loss")
    assert loss_alert["best"] == 1.0 and loss_alert["threshold"] == pytest.approx(1.15)
    assert loss_alert["best_checkpoint"] == "models/checkpoints/j/step-00000020"
    assert res["best_so_far"]["validation_loss"]["value"] == 0.9
    assert res["best_so_far"]["accuracy"]["value"] == 0.6 and res["n_checked"] == 6
    # the trainer's validation loss stands in when the suite loss is missing
    alt = [_ev(1, 1, 1.0, None), dict(_ev(2, 2, None, None), train_validation_loss=2.0)]
    assert find_regressions(alt)["flagged"] == ["models/checkpoints/j/step-00000002"]


def test_composite_rank():
    w = {"validation_loss": 0.4, "accuracy": 0.5, "calibration": 0.1}
    evals = [_ev(1, 10, 2.0, 0.9, ece=0.0), _ev(2, 20, 1.0, 0.5, ece=0.5), _ev(3, 30, None, 0.8, ece=None),
             _ev(4, 40, 1.0, 0.5, ece=0.5)]
    r = rank(evals, w, flagged={"models/checkpoints/j/step-00000030"})
    score = {x["global_step"]: x["score"] for x in r}
    assert score[10] == pytest.approx(0.4 * 0.5 + 0.5 * 0.9 + 0.1 * 1.0)   # 0.75
    assert score[20] == pytest.approx(0.4 * 1.0 + 0.5 * 0.5 + 0.1 * 0.5)   # 0.70
    assert score[30] == pytest.approx(0.8)                                  # only accuracy present
    assert [x["global_step"] for x in r] == [30, 10, 40, 20]  # equal scores: the newer first
    assert [x["rank"] for x in r] == [1, 2, 3, 4]
    assert r[0]["flagged"] is True and r[1]["flagged"] is False
    assert r[1]["parts"] == {"validation_loss": 2.0, "loss_score": 0.5, "accuracy": 0.9, "ece": 0.0,
                             "calibration_score": 1.0}
