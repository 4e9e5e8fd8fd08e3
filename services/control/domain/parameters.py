"""Parameter download (MISSION.md C8): the prices and alarm thresholds each meter should hold.

The book folds ``TariffPublished`` (every version of each tariff), ``AccountOpened`` (which
meters use which tariff), ``AccountTariffChanged`` (an account moves to another tariff from an
instant) and ``AlarmThresholdsSet`` (an account's level-1 / level-2 alarm thresholds, or the
project's default). A meter should hold the set **in force now**: the tariff its account is on
now (its latest change effective by now, else its opening tariff) at that tariff's version in
force now (latest ``effective_from`` by now; of equal times the higher version) — billing's own
rules, so the meter deducts what the platform charges. After each fact, every affected meter's
set as of the fact's time is rebuilt, and a ``CommandRequested(action=set_parameter,
params={"operation": "parameters", …})`` is emitted only when the set differs from the last one
requested for that meter (a republished tariff with the same prices, or a redelivered fact,
downloads nothing).

**Future prices wait for their time.** A version or a tariff change recorded ahead of its
effective time is not downloaded then (the meter would deduct the new price early): the book
keeps the next such instant (``next_edge``) and :func:`due`, called on the service's clock,
downloads to the meters whose set changed once it has passed. The command id derives from the
meter and the fact whose time came (the same id whether the fact arrived late or was waited for),
so a replay or a restart repeats none.

Parameters, all strings (prices in fen per unit, as the tariff states them):

- ``price.total`` for single and compound tariffs (compound components are summed: the meter
  deducts one price); ``price.<rate>`` per rate of a time-of-use tariff (extras added to each);
- tiered tariffs: ``tier.<n>.up_to`` ("" for the last) and ``tier.<n>.price`` or
  ``tier.<n>.surcharge`` on top of the base tariff's prices;
- ``alarm1_fen`` / ``alarm2_fen`` when thresholds are set;
- ``effective_from`` (ISO time of the tariff version) rides along, but is not compared.

Proportional tariffs are billed platform-side only; their meters get thresholds alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from libs.events.base import Event, event_id_for
from libs.events.billing import AccountOpened, AccountTariffChanged, AlarmThresholdsSet, TariffPublished
from libs.events.control import Action, CommandRequested

OPERATION = "parameters"


def _sum(components: list[dict[str, Any]]) -> Decimal:
    return sum((Decimal(str(c["price_fen"])) for c in components), Decimal(0))


def prices(definition: dict[str, Any]) -> dict[str, str]:
    """The meter-side price parameters of a tariff definition (see the module docstring)."""
    kind = definition.get("kind")
    if kind == "single":
        return {"price.total": str(Decimal(str(definition["price_fen"])))}
    if kind == "compound":
        return {"price.total": str(_sum(definition["components"]))}
    if kind == "tou":
        extra = _sum(definition.get("extras", []))
        return {
            f"price.{rate}": str(Decimal(str(p)) + extra) for rate, p in sorted(definition["prices"].items())
        }
    if kind == "tiered":
        out = prices(definition["base"]) if definition.get("base") else {}
        for n, tier in enumerate(definition["tiers"], start=1):
            out[f"tier.{n}.up_to"] = "" if tier.get("up_to") is None else str(tier["up_to"])
            key, value = (
                ("surcharge", tier["surcharge_fen"])
                if "surcharge_fen" in tier
                else ("price", tier["price_fen"])
            )
            out[f"tier.{n}.{key}"] = str(Decimal(str(value)))
        return out
    return {}


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class ParameterBook:
    project_id: str
    # tariff → every version, ordered by (effective_from, version); a republished number replaces
    tariffs: dict[str, tuple[TariffPublished, ...]] = field(default_factory=dict)
    accounts: dict[str, AccountOpened] = field(default_factory=dict)
    thresholds: dict[str, AlarmThresholdsSet] = field(default_factory=dict)  # account id, or "" (project)
    # account → its tariff changes, ordered by (effective, time)
    changes: dict[str, tuple[AccountTariffChanged, ...]] = field(default_factory=dict)
    requested: dict[str, dict[str, str]] = field(default_factory=dict)  # meter → last set asked for
    seen: frozenset[str] = frozenset()
    checked: datetime = EPOCH  # effective instants up to here have been downloaded by :func:`due`
    clock: datetime = EPOCH  # the latest time seen (facts, :func:`due`): a late fact sets no older set
    next_edge: datetime | None = None  # the first effective instant after ``checked``


def parameter_set(
    book: ParameterBook, account_id: str, at: datetime
) -> tuple[dict[str, str], TariffPublished | None]:
    """The parameters the meters of an account should hold at ``at``, and the tariff version
    they come from."""
    tariff = _version_at(book.tariffs.get(_tariff_of(book, account_id, at), ()), at)
    params = prices(tariff.definition) if tariff is not None else {}
    if (limits := book.thresholds.get(account_id) or book.thresholds.get("")) is not None:
        params |= {"alarm1_fen": str(limits.level1_fen), "alarm2_fen": str(limits.level2_fen)}
    return params, tariff


def _version_at(versions: tuple[TariffPublished, ...], at: datetime) -> TariffPublished | None:
    current = None
    for version in versions:
        if version.effective_from > at:
            break
        current = version
    return current


def _tariff_of(book: ParameterBook, account_id: str, at: datetime) -> str:
    current = book.accounts[account_id].tariff_id
    for change in book.changes.get(account_id, ()):
        if change.effective > at:
            break
        current = change.tariff_id
    return current


def _edges(book: ParameterBook) -> list[tuple[datetime, Event]]:
    """Every instant a set may change at, with the fact that sets it."""
    versions = [(v.effective_from, v) for vs in book.tariffs.values() for v in vs]
    return versions + [(c.effective, c) for cs in book.changes.values() for c in cs]


def _next_edge(book: ParameterBook) -> ParameterBook:
    later = [at for at, _ in _edges(book) if at > book.checked]
    return replace(book, next_edge=min(later, default=None))


def _absorb(book: ParameterBook, event: Event) -> ParameterBook:
    if isinstance(event, TariffPublished):
        kept = [v for v in book.tariffs.get(event.tariff_id, ()) if v.version != event.version]
        ordered = tuple(sorted([*kept, event], key=lambda v: (v.effective_from, v.version)))
        return _next_edge(replace(book, tariffs={**book.tariffs, event.tariff_id: ordered}))
    elif isinstance(event, AccountOpened):
        return replace(book, accounts={**book.accounts, event.account_id: event})
    elif isinstance(event, AlarmThresholdsSet):
        return replace(book, thresholds={**book.thresholds, event.account_id or "": event})
    elif isinstance(event, AccountTariffChanged):
        changes = [*book.changes.get(event.account_id, ()), event]
        ordered_changes = tuple(sorted(changes, key=lambda c: (c.effective, c.time)))
        return _next_edge(replace(book, changes={**book.changes, event.account_id: ordered_changes}))
    elif isinstance(event, CommandRequested) and event.params.get("operation") == OPERATION:
        sent = {k: v for k, v in event.params.items() if k not in ("operation", "effective_from")}
        return replace(book, requested={**book.requested, event.meter_id: sent})
    return book


def apply(book: ParameterBook, event: Event) -> ParameterBook:
    if event.event_id in book.seen:
        return book
    after = _absorb(book, event)
    return replace(after, seen=book.seen | {event.event_id}, clock=max(after.clock, event.time))


def decide(book: ParameterBook, fact: Event, now: datetime) -> list[CommandRequested]:
    """Parameter downloads caused by ``fact`` at ``now``: one per affected meter whose set in
    force at ``now`` changed (what takes effect later is left to :func:`due`)."""
    if fact.event_id in book.seen or isinstance(fact, CommandRequested):
        return []
    after, now = _absorb(book, fact), max(now, book.clock)
    if isinstance(fact, TariffPublished):
        affected = [
            a for a in after.accounts.values() if _tariff_of(after, a.account_id, now) == fact.tariff_id
        ]
    elif isinstance(fact, AlarmThresholdsSet) and fact.account_id is None:  # the project's default
        affected = list(after.accounts.values())
    elif isinstance(fact, AccountOpened | AlarmThresholdsSet | AccountTariffChanged):
        affected = [after.accounts[fact.account_id]] if fact.account_id in after.accounts else []
    else:
        return []
    return [
        command
        for account in affected
        for meter_id in account.meter_ids
        if (command := download(after, account.account_id, meter_id, fact, now)) is not None
    ]


def due(book: ParameterBook, now: datetime) -> tuple[ParameterBook, list[CommandRequested]]:
    """The downloads of every version and tariff change whose effective time has come since
    the last call (``book.checked``), and the book with ``checked`` moved to ``now``. Apply the
    commands to the returned book as :func:`decide`'s are."""
    if book.next_edge is None or book.next_edge > now:
        return book, []
    out: dict[str, CommandRequested] = {}  # meter → its download (the latest fact's id)
    for at, fact in sorted(_edges(book), key=lambda edge: edge[0]):
        if not book.checked < at <= now:
            continue
        if isinstance(fact, TariffPublished):
            affected = [
                a for a in book.accounts.values() if _tariff_of(book, a.account_id, now) == fact.tariff_id
            ]
        else:
            assert isinstance(fact, AccountTariffChanged)
            affected = [book.accounts[fact.account_id]] if fact.account_id in book.accounts else []
        for account in affected:
            for meter_id in account.meter_ids:
                if (command := download(book, account.account_id, meter_id, fact, now)) is not None:
                    out[meter_id] = command
    return _next_edge(replace(book, checked=now, clock=max(book.clock, now))), list(out.values())


def download(
    book: ParameterBook, account_id: str, meter_id: str, fact: Event, now: datetime, force: bool = False
) -> CommandRequested | None:
    """The download that brings ``meter_id`` to its account's set in force at ``now``, or None
    when it has it (``force``: even then, e.g. a batch that issues prices again)."""
    params, tariff = parameter_set(book, account_id, now)
    if not params or (params == book.requested.get(meter_id) and not force):
        return None
    cid = event_id_for(book.project_id, "parameters", meter_id, fact.event_id)
    extra = {"effective_from": tariff.effective_from.isoformat()} if tariff is not None else {}
    version = f" ({tariff.tariff_id} v{tariff.version})" if tariff is not None else ""
    return CommandRequested(
        event_id=cid,
        project_id=book.project_id,
        subject_id=meter_id,
        time=now,
        causation_id=fact.event_id,
        correlation_id=fact.correlation_id or fact.event_id,
        command_id=cid,
        meter_id=meter_id,
        action=Action.SET_PARAMETER,
        requested_by=getattr(fact, "operator_id", None)
        or getattr(fact, "opened_by", None)
        or "policy:parameters",
        reason=f"parameter download after {type(fact).__name__}{version}",
        params={"operation": OPERATION, **params, **extra},
    )
