"""Accuracy-matrix metrics against hand-computed values."""
from __future__ import annotations

import math

import numpy as np
import pytest

from latent_replay.metrics import (accuracy_matrix_frame, average_forgetting, backward_transfer,
                                   final_average_accuracy, forward_transfer, summary)

# A[i, j]: accuracy on experience j after training experience i
A = np.array([[0.90, 0.85, 0.20],
              [0.70, 0.80, 0.30],
              [0.60, 0.50, 0.95]])


def test_final_average_accuracy():
    assert final_average_accuracy(A) == pytest.approx((0.60 + 0.50 + 0.95) / 3)


def test_average_forgetting_uses_every_earlier_evaluation_by_default():
    # j=0: max(0.90, 0.70) - 0.60 = 0.30; j=1: max(0.85, 0.80) - 0.50 = 0.35
    assert average_forgetting(A) == pytest.approx(0.325)
    # only after the experience was trained: j=1 uses max(0.80) - 0.50 = 0.30
    assert average_forgetting(A, since_trained=True) == pytest.approx(0.30)


def test_backward_transfer():
    # (0.60 - 0.90 + 0.50 - 0.80) / 2
    assert backward_transfer(A) == pytest.approx(-0.30)


def test_forward_transfer_with_scalar_and_per_experience_baseline():
    # j=1: A[0,1] - b1, j=2: A[1,2] - b2
    assert forward_transfer(A, 0.1) == pytest.approx(((0.85 - 0.1) + (0.30 - 0.1)) / 2)
    assert forward_transfer(A, [0.0, 0.2, 0.3]) == pytest.approx(((0.85 - 0.2) + (0.30 - 0.3)) / 2)


def test_no_forgetting_when_accuracy_never_drops():
    perfect = np.triu(np.ones((4, 4))) + np.tril(np.ones((4, 4)), -1)
    assert average_forgetting(perfect) == 0.0 and backward_transfer(perfect) == 0.0
    assert final_average_accuracy(perfect) == 1.0


def test_single_experience_and_validation():
    one = np.array([[0.7]])
    assert final_average_accuracy(one) == pytest.approx(0.7)
    assert math.isnan(average_forgetting(one)) and math.isnan(backward_transfer(one))
    assert math.isnan(forward_transfer(one, 0.0))
    with pytest.raises(ValueError, match="square"):
        final_average_accuracy(np.ones((2, 3)))
    with pytest.raises(ValueError, match="square"):
        average_forgetting(np.ones(3))


def test_summary():
    s = summary(A)
    assert s == pytest.approx({"final_average_accuracy": 2.05 / 3, "average_forgetting": 0.325,
                               "backward_transfer": -0.30})


def test_accuracy_matrix_frame_is_tidy_long_format():
    df = accuracy_matrix_frame(A)
    assert list(df.columns) == ["train_exp", "eval_exp", "accuracy"]
    assert len(df) == 9
    assert df.iloc[:3].to_dict("list") == {"train_exp": [0, 0, 0], "eval_exp": [0, 1, 2], "accuracy": [0.90, 0.85, 0.20]}
    back = df.pivot(index="train_exp", columns="eval_exp", values="accuracy").to_numpy()
    np.testing.assert_array_equal(back, A)
    named = accuracy_matrix_frame(A, names=["e0", "e1", "e2"])
    assert named.loc[5, ["train_exp", "eval_exp"]].tolist() == ["e1", "e2"]
    with pytest.raises(ValueError, match="names"):
        accuracy_matrix_frame(A, names=["a"])
