from __future__ import annotations

from datetime import timedelta

from libs.events import AccountOpened, AccountTariffChanged, TariffPublished
from libs.events.billing import AlarmThresholdsSet, BillingMode
from services.control.domain.parameters import ParameterBook, apply, decide, due, prices
from tests.services.control.helpers import P, at, env

T = at(2024, 1, 1)


def tariff(definition, version=1, tid="t1"):
    return TariffPublished(**env(T, tid), tariff_id=tid, version=version, name="t", effective_from=T,
                           definition=definition)  # fmt: skip


def account(aid="a1", meters=("m1", "m2"), tid="t1"):
    return AccountOpened(**env(T, aid), account_id=aid, mode=BillingMode.PREPAID, meter_ids=meters,
                         tariff_id=tid, holder="x", opened_by="op-1")  # fmt: skip


def step(book, fact):
    commands = decide(book, fact, fact.time)
    book = apply(book, fact)
    for c in commands:
        book = apply(book, c)
    return book, commands


def test_prices_of_each_kind() -> None:
    assert prices({"kind": "single", "price_fen": "52.83"}) == {"price.total": "52.83"}
    compound = {
        "kind": "compound",
        "components": [{"name": "e", "price_fen": "50"}, {"name": "s", "price_fen": "2.5"}],
    }
    assert prices(compound) == {"price.total": "52.5"}
    tou = {
        "kind": "tou",
        "prices": {"peak": "80", "valley": "30"},
        "extras": [{"name": "fund", "price_fen": "1"}],
    }
    assert prices(tou) == {"price.peak": "81", "price.valley": "31"}
    tiered = {"kind": "tiered", "period": "month", "base": {"kind": "single", "price_fen": "50"},
              "tiers": [{"up_to": "230", "surcharge_fen": "0"}, {"up_to": None, "surcharge_fen": "5"}]}  # fmt: skip
    assert prices(tiered) == {
        "price.total": "50", "tier.1.up_to": "230", "tier.1.surcharge": "0", "tier.2.up_to": "", "tier.2.surcharge": "5",
    }  # fmt: skip
    assert prices({"kind": "proportional", "shares": []}) == {}


def test_download_on_change_only() -> None:
    book = ParameterBook(P)
    book, c0 = step(book, tariff({"kind": "single", "price_fen": "52.83"}))
    assert c0 == []  # no meter uses it yet
    book, c1 = step(book, account())
    assert [(c.meter_id, c.params["price.total"]) for c in c1] == [("m1", "52.83"), ("m2", "52.83")]
    assert c1[0].params["operation"] == "parameters" and c1[0].requested_by == "op-1"
    book, c2 = step(book, tariff({"kind": "single", "price_fen": "52.83"}, version=2))  # same prices
    assert c2 == []
    book, c3 = step(book, tariff({"kind": "single", "price_fen": "55"}, version=3))
    assert [c.params["price.total"] for c in c3] == ["55", "55"] and "t1 v3" in c3[0].reason
    book, c4 = step(book, tariff({"kind": "single", "price_fen": "40"}, version=2))  # older version, late
    assert c4 == []
    limits = AlarmThresholdsSet(
        **env(T, "a1"), account_id="a1", level1_fen=2000, level2_fen=500, operator_id="op-5"
    )
    book, c5 = step(book, limits)
    assert [c.params["alarm1_fen"] for c in c5] == ["2000", "2000"] and c5[0].requested_by == "op-5"
    book, c6 = step(book, limits)  # redelivered
    assert c6 == []


def test_a_tariff_change_downloads_the_new_tariffs_prices_whatever_the_order() -> None:
    def change(tid: str, hours: int, n: int) -> AccountTariffChanged:
        when = T + timedelta(hours=hours)
        return AccountTariffChanged(**{**env(when, "a1"), "event_id": f"chg-{n}"}, account_id="a1", tariff_id=tid,
                                    effective_from=when, operator_id="op-2")  # fmt: skip

    cheap, dear = (
        tariff({"kind": "single", "price_fen": "50"}),
        tariff({"kind": "single", "price_fen": "80"}, tid="t2"),
    )
    book = ParameterBook(P)
    for fact in (cheap, dear, account()):
        book, _ = step(book, fact)
    book, moved = step(book, change("t2", 1, 1))
    assert [(c.meter_id, c.params["price.total"]) for c in moved] == [("m1", "80"), ("m2", "80")]
    book, stale = step(book, change("t1", 0, 2))  # an older change recorded late: the later one stands
    assert stale == []
    book, republished = step(book, tariff({"kind": "single", "price_fen": "85"}, version=2, tid="t2"))
    assert [c.params["price.total"] for c in republished] == ["85", "85"]
    # the change before the account and the tariffs (a replay's order): the same end state
    other = ParameterBook(P)
    for fact in (change("t2", 1, 1), account(), cheap, dear):
        other, commands = step(other, fact)
    assert [c.params["price.total"] for c in commands] == ["80", "80"]


def test_prices_recorded_ahead_of_their_time_are_downloaded_when_they_take_effect() -> None:
    """A new version published today for next month, and a tariff change recorded ahead: the
    meter keeps deducting today's prices until each takes effect (billing charges so too)."""
    book = ParameterBook(P)
    for fact in (
        tariff({"kind": "single", "price_fen": "50"}),
        tariff({"kind": "single", "price_fen": "80"}, tid="t2"),
    ):
        book, _ = step(book, fact)
    book, opened = step(book, account())
    assert [c.params["price.total"] for c in opened] == ["50", "50"]
    book, nothing = due(book, T + timedelta(hours=1))  # the service's clock: what took effect is held
    assert nothing == [] and book.next_edge is None
    rise_at, move_at = T + timedelta(days=31), T + timedelta(days=60)
    rise = TariffPublished(**env(T + timedelta(days=1), "t1"), tariff_id="t1", version=2, name="t",
                           effective_from=rise_at, definition={"kind": "single", "price_fen": "55"})  # fmt: skip
    book, early = step(book, rise)
    assert early == [] and book.next_edge == rise_at
    move = AccountTariffChanged(**env(T + timedelta(days=2), "a1"), account_id="a1", tariff_id="t2",
                                effective_from=move_at, operator_id="op-2")  # fmt: skip
    book, early = step(book, move)
    assert early == []
    book, none_yet = due(book, rise_at - timedelta(seconds=1))
    assert none_yet == [] and book.next_edge == rise_at
    book, risen = due(book, rise_at)
    assert [(c.meter_id, c.params["price.total"], c.causation_id) for c in risen] == [
        ("m1", "55", rise.event_id), ("m2", "55", rise.event_id),
    ]  # fmt: skip
    for c in risen:
        book = apply(book, c)
    assert book.next_edge == move_at
    book, again = due(book, rise_at + timedelta(hours=1))
    assert again == []  # each instant once
    book, moved = due(book, move_at + timedelta(days=3))  # the service was down at the instant
    assert [c.params["price.total"] for c in moved] == ["80", "80"] and book.next_edge is None
    # the same facts folded after both instants (a late delivery or a replay): the same ids
    late = ParameterBook(P)
    for fact in (
        tariff({"kind": "single", "price_fen": "50"}),
        tariff({"kind": "single", "price_fen": "80"}, tid="t2"),
        account(),
    ):
        late, _ = step(late, fact)
    late, _ = due(late, T)
    late, risen_late = step(late, rise.model_copy(update={"time": rise_at + timedelta(days=1)}))
    assert [c.command_id for c in risen_late] == [c.command_id for c in risen]
