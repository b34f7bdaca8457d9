"""client/base.py: training settings read from a fit's config, and the per-round learning rate."""

from __future__ import annotations

import pytest

from fedsilo.client.base import TrainSettings


def test_from_config_takes_known_keys_and_ignores_the_rest() -> None:
    s = TrainSettings.from_config({"epochs": 3, "lr": 0.2, "seed": 9, "round": 4, "device": "cpu", "other": "x"})
    assert (s.epochs, s.lr, s.seed, s.round, s.device) == (3, 0.2, 9, 4, "cpu")
    assert s.batch_size == 32 and s.optimizer == "sgd"
    assert TrainSettings.from_config({}) == TrainSettings()


def test_learning_rate_decays_once_per_round() -> None:
    s = TrainSettings(lr=0.1, lr_decay=0.5, round=3, epochs=2)
    assert [s.lr_at(e) for e in (0, 1)] == pytest.approx([0.025, 0.025])  # 0.1 * 0.5**2
    assert TrainSettings(lr=0.1, round=7).lr_at(0) == pytest.approx(0.1)  # no decay by default


def test_a_baseline_steps_down_every_epochs_per_round() -> None:
    # Training 3 rounds' worth (2 epochs each) in one go from round 1: 0.1, 0.1, 0.05, 0.05, 0.025, 0.025
    s = TrainSettings(lr=0.1, lr_decay=0.5, round=1, epochs=6, epochs_per_round=2)
    assert [s.lr_at(e) for e in range(6)] == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.025, 0.025])
