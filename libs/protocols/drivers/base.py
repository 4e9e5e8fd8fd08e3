"""What every protocol driver shares: the read result, a planned request, the read loop.

A driver turns "read these quantities of this meter" into a plan of :class:`Request` objects
(block reads where the protocol allows), and each request knows how to fold its reply into a
:class:`MeterRead` named in the vocabulary of :mod:`libs.events.quantities`. Drivers never touch
a transport; they run their requests through a :class:`libs.protocols.transaction.Bus`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Protocol

from libs.events.acquisition import Rate, SwitchState
from libs.events.quantities import INSTANT, REGISTERS
from libs.protocols.transaction import Bus, Decode, Priority

# Names a read can ask for beyond the register and instant vocabularies.
STATUS: frozenset[str] = frozenset({"meter_time", "relay", "valve", "remaining_fen", "purchase_count"})
KNOWN: frozenset[str] = REGISTERS | INSTANT | STATUS
RATE_ORDER: tuple[Rate, ...] = (Rate.TOTAL, Rate.SHARP, Rate.PEAK, Rate.FLAT, Rate.VALLEY)


@dataclass
class MeterRead:
    """Values of one meter read, in the shape of ``ReadingRecorded`` (minus envelope fields).

    ``errors`` names requests the meter refused (abnormal replies), e.g. ``{"00900200": "no_data"}``.
    """

    registers: dict[str, dict[Rate, Decimal]] = field(default_factory=dict)
    instant: dict[str, Decimal] = field(default_factory=dict)
    meter_time: datetime | None = None
    relay: SwitchState | None = None
    valve: SwitchState | None = None
    remaining_fen: int | None = None
    purchase_count: int | None = None
    errors: dict[str, str] = field(default_factory=dict)

    def set_register(self, name: str, rate: Rate, value: Decimal) -> None:
        """Store one cumulative register value."""
        self.registers.setdefault(name, {})[rate] = value


Fold = Callable[[Any, MeterRead], None]


@dataclass(frozen=True)
class Request:
    """One planned transaction: wire bytes, expected reply size, reply filter and fold."""

    label: str  # e.g. the DI or register block, for logs and ``MeterRead.errors``
    wire: bytes
    reply_size: int
    accept: Callable[[Any], bool]
    fold: Fold


class CommandRejected(Exception):
    """The meter answered a command with an abnormal reply; ``frame`` is that reply."""

    def __init__(self, what: str, detail: str, frame: Any) -> None:
        self.frame = frame
        super().__init__(f"{what}: {detail}")


class Driver(Protocol):
    """The reading half of every driver."""

    protocol: str
    decode: Decode

    def plan(self, address: str, quantities: Iterable[str] | None = None) -> list[Request]:
        """Requests that read ``quantities`` (vocabulary names; None = all the model has)."""
        ...


def check_names(quantities: Iterable[str] | None, supported: Iterable[str]) -> list[str]:
    """The requested names in a stable order; ValueError for names outside the vocabulary."""
    wanted = list(supported) if quantities is None else list(dict.fromkeys(quantities))
    unknown = [q for q in wanted if q not in KNOWN]
    if unknown:
        raise ValueError(f"unknown quantities {unknown}; see libs.events.quantities")
    return wanted


async def run_plan(bus: Bus, plan: list[Request], priority: Priority = Priority.ROUTINE) -> MeterRead:
    """Run every request of ``plan`` on ``bus`` in order and fold the replies into one read.

    Transaction failures (NoReply, BadReply, TransportError) propagate: a meter that stops
    answering half way through has not been read.
    """
    read = MeterRead()
    for request in plan:
        reply = await bus.transact(
            request.wire, reply_size=request.reply_size, accept=request.accept, priority=priority
        )
        request.fold(reply, read)
    return read


async def read_meter(
    bus: Bus,
    driver: Driver,
    address: str,
    quantities: Iterable[str] | None = None,
    priority: Priority = Priority.ROUTINE,
) -> MeterRead:
    """Read ``quantities`` of the meter at ``address`` through ``driver`` on ``bus``."""
    return await run_plan(bus, driver.plan(address, quantities), priority)


def to_fen(yuan: Decimal) -> int:
    """Yuan to integer fen (1 yuan = 100 fen), rounding half away from zero."""
    return int((yuan * 100).to_integral_value())
