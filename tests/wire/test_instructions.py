"""wire/instructions.py: one typed object per call, the same JSON on every wire, parsed strictly."""

from __future__ import annotations

import json

import pytest

from fedsilo.errors import ParameterError, ProtocolError
from fedsilo.wire.codecs import Codec
from fedsilo.wire.instructions import (
    DistributedNoise,
    EvaluateInstructions,
    FitInstructions,
    LocalDP,
    SecAggRequest,
    StrategyExtras,
    TrainSettings,
)

FULL = FitInstructions(
    train=TrainSettings(epochs=2, lr=0.05, optimizer="adam", seed=7),
    strategy=StrategyExtras(proximal_mu=0.1),
    codec=Codec("topk", 0.25),
    local_dp=LocalDP(1.1, 0.5),
    secagg=SecAggRequest(DistributedNoise(0.8, 1.0, 3)),
    run="exp-20261206-120000",
)


def test_every_part_round_trips_through_json() -> None:
    assert FitInstructions.from_json(FULL.to_json()) == FULL
    assert FitInstructions.from_json(FitInstructions().to_json()) == FitInstructions()
    assert EvaluateInstructions.from_json(EvaluateInstructions(3).to_json()) == EvaluateInstructions(3)
    data = json.loads(FULL.to_json())
    assert data["train"]["lr"] == 0.05 and data["codec"] == {"name": "topk", "topk_fraction": 0.25}


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (lambda d: d["train"].update(epochz=2), "train.epochz: unknown key"),
        (lambda d: d.update(proximal_mu=0.1), "proximal_mu: unknown key"),
        (lambda d: d["secagg"]["noise"].update(clip=1.0), "secagg.noise.clip: unknown key"),
        (lambda d: d["train"].update(epochs="2"), "train.epochs"),
        (lambda d: d["train"].update(epochs=True), "train.epochs"),
        (lambda d: d["codec"].update(name="zip"), "codec.name"),
        (lambda d: d["train"].update(lr=-1.0), "lr must be > 0"),
        (lambda d: d.update(run="../../etc"), "run must be a plain folder name"),
    ],
)
def test_a_typo_or_a_wrong_value_from_the_server_is_an_error_naming_it(change, named: str) -> None:  # noqa: ANN001
    data = json.loads(FULL.to_json())
    change(data)
    with pytest.raises(ProtocolError, match="fit instructions do not parse") as info:
        FitInstructions.from_json(json.dumps(data))
    assert named in info.value.message
    assert "same fedsilo version" in info.value.one_line()


def test_what_is_not_json_or_not_an_object_is_refused() -> None:
    for text in ("nope", "[1, 2]", '{"train": 3}'):
        with pytest.raises(ProtocolError):
            FitInstructions.from_json(text)


def test_constructors_refuse_values_out_of_range_with_one_error_type() -> None:
    with pytest.raises(ParameterError, match="epochs must be >= 1"):
        TrainSettings(epochs=0)
    with pytest.raises(ParameterError, match="optimizer must be one of"):
        TrainSettings(optimizer="rmsprop")  # type: ignore[arg-type]
    with pytest.raises(ParameterError, match="max_grad_norm must be > 0"):
        LocalDP(1.0, 0.0)
    with pytest.raises(ValueError):  # a ParameterError is a ValueError too
        Codec("topk", 2.0)


def test_the_learning_rate_decays_per_round_and_per_baseline_epoch() -> None:
    s = TrainSettings(lr=0.1, lr_decay=0.5, round=3)
    assert s.lr_at(0) == pytest.approx(0.025)
    baseline = TrainSettings(lr=0.1, lr_decay=0.5, epochs=4, epochs_per_round=2)
    assert [baseline.lr_at(e) for e in range(4)] == pytest.approx([0.1, 0.1, 0.05, 0.05])
