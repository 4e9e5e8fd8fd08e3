"""Batch operations (MISSION.md C5): one request fanned out to many meters, with results.

A :class:`BatchRequested` names an operation and the meters; :func:`expand` turns it into the
facts for each meter (ids derive from batch and meter, so re-expanding yields the same ids;
``correlation_id`` is the batch id):

- ``clear`` → ``CommandRequested(action=clear)``, ``initialise`` →
  ``CommandRequested(action=initialise)``, with the batch's params (and the meter's
  ``per_meter`` ones), e.g. ``operator_code``. Acquisition carries both as DL/T 645-2007 meter
  clear 1AH and publishes the registers before and after as ``MeterReplaced(reason="cleared")``
  (services/acquisition/commands.py).
- ``issue_prices`` → a parameter download (C8), the command control's parameter download sends:
  ``action=set_parameter``, ``params={"operation": "parameters", …}`` with the meter's set from
  ``downloads`` (the worker builds it from its parameter book, re-sent even if the meter has it),
  overlaid with prices the batch states itself (``params`` / ``per_meter``, e.g. ``price.total``).
  A meter with neither gets a download without parameters, which acquisition refuses
  (``unsupported``): the batch shows the meter had nothing to issue.
- ``time_control`` / ``load_control`` → the platform policy fact only (``TimeControlSet`` /
  ``LoadLimitSet``): control's policy enforces the schedule or limit with relay commands of its
  own (C3, C4); no command goes to the meter for the batch.

The result of each meter is folded from the ordinary lifecycle facts of its command (the batch
fold runs :mod:`.lifecycle` for the batch's meters, so superseding and retries count exactly as
they do for single commands): ``pending`` until it ends, then ``succeeded`` (acknowledged),
``failed``, ``timed_out`` or ``superseded``. A policy-only meter is ``succeeded`` once its policy
fact is folded. :func:`summary` counts meters by outcome.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
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


ACTIONS = {
    Operation.CLEAR: Action.CLEAR,
    Operation.INITIALISE: Action.INITIALISE,
    Operation.ISSUE_PRICES: Action.SET_PARAMETER,
}
POLICY_ONLY = frozenset({Operation.TIME_CONTROL, Operation.LOAD_CONTROL})
PARAMETERS = "parameters"  # params["operation"] of a parameter download (domain/parameters.py)


def command_id(batch: BatchRequested, meter_id: str) -> str:
    return event_id_for(batch.project_id, "batch", batch.batch_id, meter_id)


def policy_id(batch: BatchRequested, meter_id: str) -> str:
    """The id of the policy fact a time / load control batch records for ``meter_id``."""
    return event_id_for(batch.project_id, "batch_policy", batch.batch_id, meter_id)


def _params(batch: BatchRequested, meter_id: str, downloads: Mapping[str, dict[str, str]]) -> dict[str, str]:
    stated = {**batch.params, **batch.per_meter.get(meter_id, {})}
    if batch.operation is Operation.ISSUE_PRICES:
        return {**downloads.get(meter_id, {}), **stated, "operation": PARAMETERS}
    return stated


def expand(batch: BatchRequested, downloads: Mapping[str, dict[str, str]] | None = None) -> list[Event]:
    """The per-meter commands (or policy facts) of a batch, in meter order.

    ``downloads``: for ``issue_prices``, each meter's parameter download params (C8) by meter id.
    """
    out: list[Event] = []
    for meter_id in dict.fromkeys(batch.meter_ids):  # a meter listed twice gets one command
        envelope = {
            "project_id": batch.project_id,
            "subject_id": meter_id,
            "time": batch.time,
            "causation_id": batch.event_id,
            "correlation_id": batch.batch_id,
        }
        common = {"meter_id": meter_id, "operator_id": batch.operator_id, "reason": batch.reason}
        eid = policy_id(batch, meter_id)
        if batch.operation is Operation.TIME_CONTROL:
            out.append(TimeControlSet(event_id=eid, schedule=batch.schedule, **common, **envelope))
        elif batch.operation is Operation.LOAD_CONTROL:
            out.append(LoadLimitSet(event_id=eid, limit=batch.limit, **common, **envelope))
        else:
            cid = command_id(batch, meter_id)
            out.append(
                CommandRequested(
                    event_id=cid,
                    command_id=cid,
                    meter_id=meter_id,
                    action=ACTIONS[batch.operation],
                    requested_by=batch.operator_id,
                    reason=batch.reason or f"batch {batch.operation.value}",
                    params=_params(batch, meter_id, downloads or {}),
                    **envelope,
                )
            )
    return out


@dataclass(frozen=True)
class BatchState:
    batch: BatchRequested
    meters: dict[str, MeterCommands] = field(default_factory=dict)
    recorded: frozenset[str] = frozenset()  # meters whose policy fact (time / load control) is folded


def start(batch: BatchRequested, policy: RetryPolicy = RetryPolicy()) -> BatchState:
    meters = {m: MeterCommands(batch.project_id, m, policy) for m in batch.meter_ids}
    return BatchState(batch, meters)


def apply(state: BatchState, event: Event) -> BatchState:
    """Fold any lifecycle fact, and the batch's own policy facts; facts about other meters are
    ignored."""
    meter_id = getattr(event, "meter_id", None)
    if not isinstance(meter_id, str) or meter_id not in state.meters:
        return state
    if isinstance(event, TimeControlSet | LoadLimitSet):
        if event.event_id != policy_id(state.batch, meter_id):
            return state  # another operator's setting: not this batch's result
        return replace(state, recorded=state.recorded | {meter_id})
    folded = lifecycle.apply(state.meters[meter_id], event)
    return replace(state, meters={**state.meters, meter_id: folded})


def results(state: BatchState) -> dict[str, Outcome]:
    """The outcome of every meter of the batch."""
    out = {}
    for meter_id, commands in state.meters.items():
        if state.batch.operation in POLICY_ONLY:
            out[meter_id] = Outcome.SUCCEEDED if meter_id in state.recorded else Outcome.PENDING
            continue
        view = commands.commands.get(command_id(state.batch, meter_id))
        out[meter_id] = Outcome.PENDING if view is None else OUTCOMES[view.status]
    return out


def summary(state: BatchState) -> dict[Outcome, int]:
    """Meters by outcome, every outcome present (zeros included)."""
    counts = Counter(results(state).values())
    return {outcome: counts.get(outcome, 0) for outcome in Outcome}
