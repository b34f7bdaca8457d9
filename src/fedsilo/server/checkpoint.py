"""Checkpoints: the global model, the strategy's state and the round, in one safetensors file.

Sampling and per-silo seeds are derived from (seed, round), so these are all a resumed run needs to
end with exactly the model an uninterrupted run ends with. Files are written atomically, with a
digest of the arrays, the round and the strategy's values (:func:`~fedsilo.wire.arrays.digest`):
a checkpoint changed since (one weight, one bit) is named as damaged, never resumed from.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedsilo.errors import RunDirError
from fedsilo.strategy.base import StrategyState
from fedsilo.wire.arrays import ArrayDict, Damaged, load_file, read_metadata, save_file, written_digest
from fedsilo.wire.files import dumps

FORMAT = "fedsilo-checkpoint/1"
DELETE_IT = "delete it to resume from the one before"
_NAME = re.compile(r"round_(\d+)\.safetensors$")


@dataclass(frozen=True, slots=True)
class Checkpoint:
    round: int
    parameters: ArrayDict
    state: StrategyState


def checkpoint_path(folder: Path, round: int) -> Path:
    return Path(folder) / f"round_{round:04d}.safetensors"


def save_checkpoint(folder: Path, round: int, parameters: ArrayDict, state: StrategyState) -> Path:
    arrays = {f"model/{k}": v for k, v in parameters.items()}
    arrays.update({f"strategy/{k}": v for k, v in state.arrays.items()})
    meta = {
        "format": FORMAT,
        "round": str(round),
        "strategy_values": dumps(dict(state.values)),
    }
    path = checkpoint_path(folder, round)
    save_file(arrays, path, meta)
    return path


def load_checkpoint(path: Path) -> Checkpoint:
    try:
        meta = read_metadata(path)
        arrays = load_file(path)
    except Damaged:
        raise RunDirError(
            f"checkpoint {path} is damaged: its weights or state differ from the digest it was written with",
            DELETE_IT,
        ) from None
    except Exception as exc:
        raise RunDirError(f"checkpoint {path} is unreadable: {exc}", DELETE_IT) from exc
    if meta.get("format") != FORMAT:
        raise RunDirError(f"{path} is not a fedsilo checkpoint (format {meta.get('format')!r})", DELETE_IT)
    if written_digest(path) is None:
        raise RunDirError(
            f"checkpoint {path} has no digest, so it cannot be checked (written by an earlier fedsilo, or edited)",
            "start the run again; a checkpoint is resumed only when its digest proves it unchanged",
        )
    params = {k[len("model/") :]: v for k, v in arrays.items() if k.startswith("model/")}  # written order
    bad = sorted(k for k, v in params.items() if v.dtype.kind == "f" and not np.isfinite(v).all())
    if bad:  # written so (a server step overflowed): resuming would blame the silos for it
        raise RunDirError(f"checkpoint {path} is damaged: non-finite weights in {', '.join(bad)}", DELETE_IT)
    strategy = {k[len("strategy/") :]: v for k, v in arrays.items() if k.startswith("strategy/")}
    return Checkpoint(int(meta["round"]), params, StrategyState(strategy, json.loads(meta["strategy_values"])))


def latest_checkpoint(folder: Path) -> Path | None:
    found = [(int(m.group(1)), p) for p in Path(folder).glob("round_*.safetensors") if (m := _NAME.search(p.name))]
    return max(found)[1] if found else None
