"""Parameter download (MISSION.md C8): the prices and alarm thresholds each meter should hold.

The book folds ``TariffPublished`` (latest version of each tariff), ``AccountOpened`` (which
meters use which tariff), ``AccountTariffChanged`` (an account moved to another tariff: its meters
get that tariff's prices when the change is recorded — the download does not wait for the
change's effective time, and of several changes the one effective last wins) and
``AlarmThresholdsSet`` (an account's level-1 / level-2 alarm thresholds, or the project's
default). After each fact, every affected meter's parameter set is rebuilt and a
``CommandRequested(action=set_parameter, params={"operation": "parameters", …})`` is emitted
only when the set differs from the last one requested for that meter (a republished tariff with
the same prices, or a redelivered fact, downloads nothing).

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
from datetime import datetime
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


@dataclass(frozen=True)
class ParameterBook:
    project_id: str
    tariffs: dict[str, TariffPublished] = field(default_factory=dict)
    accounts: dict[str, AccountOpened] = field(default_factory=dict)
    thresholds: dict[str, AlarmThresholdsSet] = field(default_factory=dict)  # account id, or "" (project)
    # account → its tariff change effective last
    changes: dict[str, AccountTariffChanged] = field(default_factory=dict)
    requested: dict[str, dict[str, str]] = field(default_factory=dict)  # meter → last set asked for
    seen: frozenset[str] = frozenset()


def parameter_set(book: ParameterBook, account_id: str) -> tuple[dict[str, str], TariffPublished | None]:
    """The parameters the meters of an account should hold, and the tariff version they come from."""
    tariff = book.tariffs.get(_tariff_of(book, account_id))
    params = prices(tariff.definition) if tariff is not None else {}
    if (limits := book.thresholds.get(account_id) or book.thresholds.get("")) is not None:
        params |= {"alarm1_fen": str(limits.level1_fen), "alarm2_fen": str(limits.level2_fen)}
    return params, tariff


def _tariff_of(book: ParameterBook, account_id: str) -> str:
    change = book.changes.get(account_id)
    return change.tariff_id if change is not None else book.accounts[account_id].tariff_id


def _absorb(book: ParameterBook, event: Event) -> ParameterBook:
    if isinstance(event, TariffPublished):
        known = book.tariffs.get(event.tariff_id)
        if known is None or event.version > known.version:
            return replace(book, tariffs={**book.tariffs, event.tariff_id: event})
    elif isinstance(event, AccountOpened):
        return replace(book, accounts={**book.accounts, event.account_id: event})
    elif isinstance(event, AlarmThresholdsSet):
        return replace(book, thresholds={**book.thresholds, event.account_id or "": event})
    elif isinstance(event, AccountTariffChanged):
        latest = book.changes.get(event.account_id)
        if latest is None or (event.effective, event.time) >= (latest.effective, latest.time):
            return replace(book, changes={**book.changes, event.account_id: event})
    elif isinstance(event, CommandRequested) and event.params.get("operation") == OPERATION:
        sent = {k: v for k, v in event.params.items() if k not in ("operation", "effective_from")}
        return replace(book, requested={**book.requested, event.meter_id: sent})
    return book


def apply(book: ParameterBook, event: Event) -> ParameterBook:
    if event.event_id in book.seen:
        return book
    return replace(_absorb(book, event), seen=book.seen | {event.event_id})


def decide(book: ParameterBook, fact: Event, now: datetime) -> list[CommandRequested]:
    """Parameter downloads caused by ``fact``: one per affected meter whose set changed."""
    if fact.event_id in book.seen or isinstance(fact, CommandRequested):
        return []
    after = _absorb(book, fact)
    if isinstance(fact, TariffPublished):
        affected = [a for a in after.accounts.values() if _tariff_of(after, a.account_id) == fact.tariff_id]
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


def download(
    book: ParameterBook, account_id: str, meter_id: str, fact: Event, now: datetime
) -> CommandRequested | None:
    """The download that brings ``meter_id`` to its account's set, or None when it has it."""
    params, tariff = parameter_set(book, account_id)
    if not params or params == book.requested.get(meter_id):
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
