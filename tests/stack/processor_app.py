"""A tiny processor for the runtime's tests: running recharge totals per account.

For the dead-letter tests its fold raises on a recharge by operator ``poison`` (caught per fact:
rejected), and its ``handle()`` raises outside that guard on a slice holding a recharge by
operator ``explode`` (before it folds anything of the slice).

Run as a process: ``python -m tests.stack.processor_app`` with PROC_BOOTSTRAP, PROC_STATE,
PROC_IN, PROC_OUT and PROC_PORT in the environment.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Sequence
from pathlib import Path

import faust

from libs.events import BalanceChanged, Codec, Event, RechargeAccepted, event_id_for
from libs.stack.deadletter import Rejected, reject
from libs.stack.processor import Inbound, Outbound, Processor, Snapshots, make_app


class Totals:
    """Per partition: account -> (balance, applied recharge ids)."""

    def __init__(self, out_topic: str) -> None:
        self.out_topic = out_topic
        self.parts: dict[int, dict[str, tuple[int, frozenset[str]]]] = {}
        self.codec = Codec()
        self.rejected: list[Rejected] = []

    def restore(self, partition: int, blob: bytes | None) -> None:
        self.parts[partition] = pickle.loads(blob) if blob else {}

    def snapshot(self, partition: int) -> bytes:
        return pickle.dumps(self.parts[partition])

    def forget(self, partition: int) -> None:
        self.parts.pop(partition, None)

    def handle(self, batch: Sequence[Inbound]) -> list[Outbound]:
        if any(getattr(e, "operator_id", "") == "explode" for r in batch for e in r.events):
            raise RuntimeError("explode: handle() fails outside its per-fact guard")
        out: list[Outbound] = []
        for record in batch:
            for e in record.events:
                try:
                    out += self.fold(record.group, e)
                except Exception as exc:
                    reject(self.rejected, record, e, exc)
        return out

    def fold(self, group: int, e: Event) -> list[Outbound]:
        if not isinstance(e, RechargeAccepted):
            return []
        if e.operator_id == "poison":
            raise ValueError(f"poison recharge {e.event_id}")
        state = self.parts[group]
        balance, applied = state.get(e.account_id, (0, frozenset()))
        if e.event_id in applied:
            return []
        balance += e.amount_fen
        state[e.account_id] = (balance, applied | {e.event_id})
        changed = BalanceChanged(
            event_id=event_id_for("balance", e.event_id),
            project_id=e.project_id,
            subject_id=e.account_id,
            account_id=e.account_id,
            delta_fen=e.amount_fen,
            balance_fen=balance,
            reason="recharge",
            causation_id=e.event_id,
            time=e.time,
        )
        return [Outbound(self.out_topic, changed.key, self.codec.encode(changed))]


def build() -> faust.App:
    state_dir = Path(os.environ["PROC_STATE"])
    app = make_app(
        os.environ["PROC_GROUP"],
        os.environ["PROC_BOOTSTRAP"],
        state_dir / "faust",
        int(os.environ["PROC_PORT"]),
    )
    totals = Totals(os.environ["PROC_OUT"])
    Processor(
        app,
        os.environ["PROC_BOOTSTRAP"],
        "totals",
        [os.environ["PROC_IN"]],
        totals,
        totals,
        Snapshots(state_dir / "snapshots"),
        batch_size=200,
        snapshot_every=float(os.environ["PROC_SNAPSHOT_EVERY"]),
    )
    return app


if __name__ == "__main__":
    faust.Worker(build(), loglevel="info").execute_from_commandline()
