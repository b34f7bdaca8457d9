"""When a round stops waiting for one silo's assignment: a pure decision over its state and the clock.

A silo gone longer than a reconnect allows is dropped at once. Otherwise the round's deadline
holds, except for an upload still arriving then: it is waited for while it makes progress, keeps
an average of ``min_upload_rate`` bytes a second since it began (its first second free), and for
at most ``transfer_grace_s`` past the deadline. So no valid silo can hold a round open longer than
its deadline plus the grace, however it paces its bytes.
"""

from __future__ import annotations

from fedsilo.transport.grpc.hub import Assignment
from fedsilo.transport.timing import ServerLimits
from fedsilo.wire.messages import Failure

LATE = "no reply before the round's deadline"


def given_up(job: Assignment, now: float, deadline: float, gone: float | None, limits: ServerLimits) -> Failure | None:
    """The Failure the round records for ``job`` now, or None while it is still waited for.

    ``gone``: seconds since the silo's session ended (None while it is connected).
    """
    if gone is not None and gone > limits.reconnect_s:
        return Failure(job.silo, "disconnected during the round", "disconnected")
    if now <= deadline:
        return None
    up = job.upload
    if up is None:
        return Failure(job.silo, LATE, "timeout")
    if now > deadline + limits.transfer_grace_s:
        return Failure(
            job.silo, f"{LATE}: its upload was still arriving {limits.transfer_grace_s:g}s after it", "timeout"
        )
    if now - job.last_progress >= limits.stall_timeout_s:
        return Failure(job.silo, f"{LATE}: its upload made no progress for {limits.stall_timeout_s:g}s", "timeout")
    if up.received < up.total and up.received < limits.min_upload_rate * (now - up.started - 1.0):
        rate = up.received / max(now - up.started, 1e-9)
        return Failure(
            job.silo,
            f"{LATE}: its upload averaged {rate:.0f} bytes/s, under the {limits.min_upload_rate:g} required",
            "timeout",
        )
    return None
