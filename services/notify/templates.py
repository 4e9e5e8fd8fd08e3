"""Message templates (zh, en) and the facts they are rendered from.

A :class:`Notice` is what a fact means for a tenant: a template, its parameters and the
reference used to de-duplicate it (the alarm id, the recharge's event id, the command id).
Money is integer fen and is rendered as yuan with two decimals by integer arithmetic, never
float. The template names are part of the events contract (:class:`libs.events.notify.Template`):
subscriptions name them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from libs.events.billing import AlarmCleared, AlarmKind, AlarmRaised, BalanceChanged, RechargeAccepted
from libs.events.control import Action, CommandAbandoned, CommandAcknowledged, Outcome
from libs.events.notify import Template

__all__ = ["TEXTS", "Fact", "Notice", "Template", "notice_for", "render", "yuan"]

TEXTS: dict[Template, dict[str, str]] = {
    Template.LOW_BALANCE_1: {
        "zh": "【{name}】电费余额不足，当前余额 {balance} 元，请及时充值。",
        "en": "[{name}] Low balance: {balance} yuan left. Please recharge soon.",
    },
    Template.LOW_BALANCE_2: {
        "zh": "【{name}】电费余额严重不足，当前余额 {balance} 元，即将停电，请尽快充值。",
        "en": "[{name}] Balance critically low: {balance} yuan left. Power will be cut soon; please recharge now.",
    },
    Template.ARREARS: {
        "zh": "【{name}】您已欠费 {arrears} 元，请立即充值以免停电。",
        "en": "[{name}] Your account is {arrears} yuan in arrears. Please recharge to avoid a power cut.",
    },
    Template.RECHARGE_ARRIVED: {
        "zh": "【{name}】充值 {amount} 元已到账，当前余额 {balance} 元。",
        "en": "[{name}] Recharge of {amount} yuan received. Balance: {balance} yuan.",
    },
    Template.POWER_CUT: {
        "zh": "【{name}】电表 {meter} 已停电，充值到账后将自动恢复供电。",
        "en": "[{name}] Power to meter {meter} has been cut; it is restored automatically after a recharge.",
    },
    Template.POWER_RESTORED: {
        "zh": "【{name}】电表 {meter} 已恢复供电。",
        "en": "[{name}] Power to meter {meter} has been restored.",
    },
    Template.VALVE_CLOSED: {
        "zh": "【{name}】表具 {meter} 的阀门已关闭。",
        "en": "[{name}] The valve of meter {meter} has been closed.",
    },
    Template.METER_LOST_CONTACT: {
        "zh": "【{name}】表具 {meter} 已失联，工作人员正在处理。",
        "en": "[{name}] Meter {meter} has lost contact; our staff are on it.",
    },
    Template.ARREARS_CLEARED: {
        "zh": "【{name}】欠费已结清，欠费提醒解除。",
        "en": "[{name}] Your arrears are settled; the arrears alert is cleared.",
    },
    Template.LOW_BALANCE_CLEARED: {
        "zh": "【{name}】电费余额已恢复正常，余额不足提醒解除。",
        "en": "[{name}] Your balance is back to normal; the low-balance alert is cleared.",
    },
    Template.METER_CONTACT_RESTORED: {
        "zh": "【{name}】表具 {meter} 已恢复通讯。",
        "en": "[{name}] Meter {meter} is back in contact.",
    },
    Template.POWER_RESTORE_FAILED: {
        "zh": "【{name}】电表 {meter} 未能恢复供电，已通知工作人员处理。",
        "en": "[{name}] Power could not be restored to meter {meter}; our staff have been told.",
    },
    Template.VALVE_OPEN_FAILED: {
        "zh": "【{name}】表具 {meter} 的阀门未能打开，已通知工作人员处理。",
        "en": "[{name}] The valve of meter {meter} could not be opened; our staff have been told.",
    },
}


def yuan(fen: int) -> str:
    """``-1234`` → ``"-12.34"``; ``5`` → ``"0.05"``."""
    sign = "-" if fen < 0 else ""
    whole, cents = divmod(abs(fen), 100)
    return f"{sign}{whole}.{cents:02d}"


@dataclass(frozen=True)
class Notice:
    """A fact's meaning for the account holder; ``dedupe_ref`` identifies the occurrence."""

    template: Template
    params: dict[str, str]
    dedupe_ref: str
    subject_id: str
    project_id: str
    correlation_id: str | None = field(default=None)


def render(template: Template, locale: str, params: dict[str, str], name: str) -> str:
    """The message text; unknown locales fall back to zh. KeyError if a parameter is missing."""
    texts = TEXTS[template]
    return texts.get(locale, texts["zh"]).format(name=name, **params)


_ALARMS = {
    AlarmKind.BALANCE_LEVEL1: Template.LOW_BALANCE_1,
    AlarmKind.BALANCE_LEVEL2: Template.LOW_BALANCE_2,
    AlarmKind.ARREARS: Template.ARREARS,
    AlarmKind.LOST_CONTACT: Template.METER_LOST_CONTACT,
}
# Level 2 ending says nothing on its own: level 1 is still active, or its own clearing follows.
_CLEARED = {
    AlarmKind.BALANCE_LEVEL1: Template.LOW_BALANCE_CLEARED,
    AlarmKind.ARREARS: Template.ARREARS_CLEARED,
    AlarmKind.LOST_CONTACT: Template.METER_CONTACT_RESTORED,
}
_ACTIONS = {
    Action.TRIP: Template.POWER_CUT,
    Action.KEEP_POWER_OFF: Template.POWER_CUT,
    Action.CLOSE: Template.POWER_RESTORED,
    Action.VALVE_CLOSE: Template.VALVE_CLOSED,
}
_STATES = {
    "tripped": Template.POWER_CUT,
    "closed": Template.POWER_RESTORED,
    "valve_closed": Template.VALVE_CLOSED,
}
# Commands whose failure leaves the holder without supply; a failed trip or valve close is the
# staff's business (control's command_timeout alarm), not the holder's.
_FAILED = {
    Action.CLOSE: Template.POWER_RESTORE_FAILED,
    Action.VALVE_OPEN: Template.VALVE_OPEN_FAILED,
}
_GAVE_UP = frozenset({Outcome.FAILED, Outcome.TIMED_OUT})  # superseded: a newer command follows

Fact = AlarmRaised | AlarmCleared | RechargeAccepted | BalanceChanged | CommandAcknowledged | CommandAbandoned


def notice_for(fact: Fact, *, balance_fen: int | None = None, action: Action | None = None) -> Notice | None:
    """The notice a fact calls for, or None if it calls for none.

    ``RechargeAccepted`` needs the ledger's ``balance_fen`` after it (else None: the
    ``BalanceChanged`` that follows carries it; both share the recharge's dedupe reference).
    ``CommandAcknowledged`` needs the command's ``action`` or a ``confirmed_state`` read back.
    ``CommandAbandoned`` (control gave up: failed or timed out) of a close or valve open is told;
    its reference is the command id.
    """

    def make(template: Template, params: dict[str, str], ref: str) -> Notice:
        return Notice(template, params, ref, fact.subject_id, fact.project_id, fact.correlation_id)

    if isinstance(fact, AlarmRaised):
        template = _ALARMS.get(fact.kind)
        if template is None:
            return None
        if template is Template.METER_LOST_CONTACT:
            params = {"meter": fact.details.get("meter_id", fact.subject_id)}
        else:
            balance = int(fact.details.get("balance_fen", "0"))
            params = {"balance": yuan(balance), "arrears": yuan(max(-balance, 0))}
            if template is not Template.ARREARS:
                params.pop("arrears")
        return make(template, params, fact.alarm_id)
    if isinstance(fact, AlarmCleared):
        template = _CLEARED.get(fact.kind)
        if template is None:
            return None
        params = {"meter": fact.subject_id} if template is Template.METER_CONTACT_RESTORED else {}
        return make(template, params, fact.alarm_id)
    if isinstance(fact, RechargeAccepted):
        if balance_fen is None:
            return None
        params = {"amount": yuan(fact.amount_fen), "balance": yuan(balance_fen)}
        return make(Template.RECHARGE_ARRIVED, params, fact.event_id)
    if isinstance(fact, BalanceChanged):
        if fact.reason != "recharge":
            return None
        params = {"amount": yuan(fact.delta_fen), "balance": yuan(fact.balance_fen)}
        return make(Template.RECHARGE_ARRIVED, params, fact.causation_id or fact.event_id)
    if isinstance(fact, CommandAbandoned):
        template = _FAILED.get(fact.action) if fact.outcome in _GAVE_UP else None
    else:
        template = _ACTIONS.get(action) if action else _STATES.get(fact.confirmed_state or "")
    if template is None:
        return None
    return make(template, {"meter": fact.meter_id}, fact.command_id)
