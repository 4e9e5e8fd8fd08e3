"""Batch operations (MISSION.md C5): one request fanned out to many meters, with results.

A :class:`BatchRequested` names an operation and the meters; :func:`expand` turns it into one
``CommandRequested(action=set_parameter, params={"operation": …})`` per meter (the command id
derives from batch and meter, so re-expanding yields the same ids; ``correlation_id`` is the
batch id). Time control and load control also yield the platform-side policy fact per meter
(``TimeControlSet`` / ``LoadLimitSet``), so the platform enforces what the meter is told.

The result of each meter is folded from the ordinary lifecycle facts of its command (the batch
fold runs :mod:`.lifecycle` for the batch's meters, so superseding and retries count exactly as
they do for single commands): ``pending`` until it ends, then ``succeeded`` (acknowledged),
``failed``, ``timed_out`` or ``superseded``. :func:`summary` counts meters by outcome.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace
from enum import StrEnum

from libs.events.base import Event, event_id_for
from libs.events.control import (
    Action,
    BatchRequested,
    CommandRequested,
    LoadLimitSet,
    Operation,
    TimeControlSet,
)
from services.control.domain import lifecycle
from services.control.domain.lifecycle import MeterCommands, RetryPolicy, Status


class Outcome(StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    SUPERSEDED = "superseded"


OUTCOMES = {
    Status.PENDING: Outcome.PENDING,
    Status.SENT: Outcome.PENDING,
    Status.ACKNOWLEDGED: Outcome.SUCCEEDED,
    Status.FAILED: Outcome.FAILED,
    Status.TIMED_OUT: Outcome.TIMED_OUT,
    Status.SUPERSEDED: Outcome.SUPERSEDED,
}


def command_id(batch: BatchRequested, meter_id: str) -> str:
    return event_id_for(batch.project_id, "batch", batch.batch_id, meter_id)


def _params(batch: BatchRequested, meter_id: str) -> dict[str, str]:
    params = {**batch.params, **batch.per_meter.get(meter_id, {}), "operation": batch.operation.value}
    if batch.schedule is not None:
        params |= {"off": batch.schedule.off, "on": batch.schedule.on, "tz": batch.schedule.tz}
    if batch.limit is not None:
        params |= {"limit_kw": str(batch.limit.limit_kw), "sustain_s": str(batch.limit.sustain_s)}
    return params


def expand(batch: BatchRequested) -> list[Event]:
    """The per-meter commands (and policy facts) of a batch, in meter order."""
    out: list[Event] = []
    for meter_id in dict.fromkeys(batch.meter_ids):  # a meter listed twice gets one command
        envelope = {
            "project_id": batch.project_id,
            "subject_id": meter_id,
            "time": batch.time,
            "causation_id": batch.event_id,
            "correlation_id": batch.batch_id,
        }
        cid = command_id(batch, meter_id)
        common = {"meter_id": meter_id, "operator_id": batch.operator_id, "reason": batch.reason}
        if batch.operation is Operation.TIME_CONTROL:
            eid = event_id_for(batch.project_id, "batch_policy", batch.batch_id, meter_id)
            out.append(TimeControlSet(event_id=eid, schedule=batch.schedule, **common, **envelope))
        if batch.operation is Operation.LOAD_CONTROL:
            eid = event_id_for(batch.project_id, "batch_policy", batch.batch_id, meter_id)
            out.append(LoadLimitSet(event_id=eid, limit=batch.limit, **common, **envelope))
        out.append(
            CommandRequested(
                event_id=cid,
                command_id=cid,
                meter_id=meter_id,
                action=Action.SET_PARAMETER,
                requested_by=batch.operator_id,
                reason=batch.reason or f"batch {batch.operation.value}",
                params=_params(batch, meter_id),
                **envelope,
            )
        )
    return out


@dataclass(frozen=True)
class BatchState:
    batch: BatchRequested
    meters: dict[str, MeterCommands] = field(default_factory=dict)


def start(batch: BatchRequested, policy: RetryPolicy = RetryPolicy()) -> BatchState:
    meters = {m: MeterCommands(batch.project_id, m, policy) for m in batch.meter_ids}
    return BatchState(batch, meters)


def apply(state: BatchState, event: Event) -> BatchState:
    """Fold any lifecycle fact; facts about other meters are ignored."""
    meter_id = getattr(event, "meter_id", None)
    if not isinstance(meter_id, str) or meter_id not in state.meters:
        return state
    folded = lifecycle.apply(state.meters[meter_id], event)
    return replace(state, meters={**state.meters, meter_id: folded})


def results(state: BatchState) -> dict[str, Outcome]:
    """The outcome of every meter of the batch."""
    out = {}
    for meter_id, commands in state.meters.items():
        view = commands.commands.get(command_id(state.batch, meter_id))
        out[meter_id] = Outcome.PENDING if view is None else OUTCOMES[view.status]
    return out


def summary(state: BatchState) -> dict[Outcome, int]:
    """Meters by outcome, every outcome present (zeros included)."""
    counts = Counter(results(state).values())
    return {outcome: counts.get(outcome, 0) for outcome in Outcome}
