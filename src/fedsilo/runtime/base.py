"""What a runtime is to a run: something that builds the run's transport, and releases what it started.

A runtime may start work before the run folder exists (the simulation's workers import the task
and torch while the server builds its model); :meth:`Runtime.transport` is called once the run
folder exists (kits and the silo store go in it), and :meth:`Runtime.close` always, at the end,
with the exception that ended the run if one did (a networked runtime tells its silos that the
run failed, and what kind of failure it was).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from fedsilo.transport.base import Transport

if TYPE_CHECKING:
    from fedsilo.experiment.plan import Plan
    from fedsilo.tracking.run_dir import RunDir

#: The run folder's sub-folder where simulated silos keep their state between rounds.
SILO_STORE = "silo_store"


class Runtime(Protocol):
    def transport(self, plan: Plan, run: RunDir) -> Transport:
        """The transport the run's server loop talks to its silos through."""

    def close(self, failure: BaseException | None = None) -> None:
        """Release processes and buffers (the transport's too); safe to call twice. ``failure``: what ended the run."""
