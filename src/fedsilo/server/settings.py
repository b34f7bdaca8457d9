"""How the server runs rounds: the loop's settings, each default stated here once.

The experiment YAML's ``server:`` section takes its defaults from :class:`LoopSettings` (and
``privacy.secure_aggregation`` from :class:`~fedsilo.server.secure_aggregation.SecAggSettings`), so
the Python API and the YAML cannot disagree; a test compares the two.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fedsilo.server.secure_aggregation import SecAggSettings
from fedsilo.wire.instructions import FitInstructions
from fedsilo.wire.messages import DEFAULT_MAX_UPDATE_BYTES


@dataclass(frozen=True)
class LoopSettings:
    """``rounds`` rounds of ``instructions`` (the strategy adds its extras each round)."""

    rounds: int
    seed: int = 0
    instructions: FitInstructions = field(default_factory=FitInstructions)
    round_timeout: float = 600.0  # seconds a round waits for the silos' replies
    wait_timeout: float = 120.0  # seconds to wait for min_available_clients silos before a round
    max_update_bytes: int = DEFAULT_MAX_UPDATE_BYTES
    failed_rounds_allowed: int = 0  # consecutive failed rounds that keep the last good model and go on
    secure_aggregation: SecAggSettings | None = None  # None: silos send their models in the clear
    evaluate_every: int = 1  # central evaluation at round 0, every N rounds and at the last round
