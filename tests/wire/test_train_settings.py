"""The training settings a client gets, and the per-round learning rate."""

from __future__ import annotations

import pytest

from fedsilo.wire.instructions import TrainSettings


def test_learning_rate_decays_once_per_round() -> None:
    s = TrainSettings(lr=0.1, lr_decay=0.5, round=3, epochs=2)
    assert [s.lr_at(e) for e in (0, 1)] == pytest.approx([0.025, 0.025])  # 0.1 * 0.5**2
    assert TrainSettings(lr=0.1, round=7).lr_at(0) == pytest.approx(0.1)  # no decay by default


def test_a_baseline_steps_down_every_epochs_per_round() -> None:
    # Training 3 rounds' worth (2 epochs each) in one go from round 1: 0.1, 0.1, 0.05, 0.05, 0.025, 0.025
    s = TrainSettings(lr=0.1, lr_decay=0.5, round=1, epochs=6, epochs_per_round=2)
    assert [s.lr_at(e) for e in range(6)] == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.025, 0.025])
