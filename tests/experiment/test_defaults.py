"""One place owns each default: the Python API and the YAML schema agree (the YAML reads them from the API)."""

from __future__ import annotations

from dataclasses import fields

import pytest

from fedsilo.experiment.defaults import default_of
from fedsilo.experiment.privacy_config import CentralDPConfig, CompressionConfig, LocalDPConfig, SecureAggregationConfig
from fedsilo.experiment.sections import ServerConfig, TrainConfig
from fedsilo.server.secure_aggregation import SecAggSettings
from fedsilo.server.settings import LoopSettings
from fedsilo.strategy.central_dp import CentralDP
from fedsilo.wire.codecs import Codec
from fedsilo.wire.instructions import LocalDP, TrainSettings

# (Python type, YAML model with its required keys, {Python field: YAML key}) for every pair that shares defaults.
PAIRS = [
    (TrainSettings, TrainConfig(), {f: f for f in TrainConfig.model_fields}),
    (
        LoopSettings,
        ServerConfig(),
        {
            "round_timeout": "round_timeout_s",
            "wait_timeout": "wait_timeout_s",
            "failed_rounds_allowed": "failed_rounds_allowed",
            "evaluate_every": "evaluate_every",
        },
    ),
    (SecAggSettings, SecureAggregationConfig(), {f: f for f in SecureAggregationConfig.model_fields}),
    (
        LocalDP,
        LocalDPConfig(noise_multiplier=1.0),
        {f: f for f in LocalDPConfig.model_fields if f != "noise_multiplier"},
    ),
    (
        CentralDP,
        CentralDPConfig(noise_multiplier=1.0),
        {
            f: f
            for f in (
                "delta",
                "target_epsilon",
                "adaptive",
                "target_quantile",
                "clip_learning_rate",
                "count_stddev",
                "accountant",
            )
        },
    ),
    (Codec, CompressionConfig(), {"name": "codec", "topk_fraction": "topk_fraction"}),
]


@pytest.mark.parametrize(("python", "yaml", "keys"), PAIRS, ids=lambda p: getattr(p, "__name__", ""))
def test_the_yaml_default_is_the_python_default(python: type, yaml: object, keys: dict[str, str]) -> None:
    assert keys, "no shared keys listed"
    known = {f.name for f in fields(python)}
    for field, key in keys.items():
        assert field in known, f"{python.__name__} has no field {field}"
        assert getattr(yaml, key) == default_of(python, field), f"{python.__name__}.{field} vs YAML {key}"


def test_the_loop_waits_as_long_for_silos_as_the_yaml_says() -> None:
    """The defect that started this: LoopSettings waited 60 s where `server.wait_timeout_s` said 120."""
    assert LoopSettings(rounds=1).wait_timeout == ServerConfig().wait_timeout_s == 120.0


def test_the_transport_waits_as_the_yaml_and_the_cli_say() -> None:
    from fedsilo.runtime.deploy import SiloOptions
    from fedsilo.transport.grpc.silo import SiloSettings
    from fedsilo.transport.timing import ServerLimits

    yaml = ServerConfig()
    for key in ("heartbeat_s", "stall_timeout_s", "transfer_grace_s", "min_upload_rate"):
        assert default_of(ServerLimits, key) == getattr(yaml, key), key
    for silo in (default_of(SiloSettings, "stall_timeout_s"), default_of(SiloOptions, "stall_timeout_s")):
        assert silo == yaml.stall_timeout_s
    assert default_of(SiloSettings, "connect_timeout_s") == default_of(SiloOptions, "connect_timeout_s")
