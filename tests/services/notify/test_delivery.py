from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, datetime, time, timedelta

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from libs.events.notify import Channel, NotificationDelivered, NotificationFailed, NotificationRequested
from services.notify.delivery import AccountSettings, DeliveryPolicy, Limits, QuietHours, plan
from services.notify.dispatcher import Dispatcher, Outcome, sms_channel, wechat_channel
from services.notify.providers import AliyunSmsSender, ErrorKind, InMemorySmsSender, InMemoryWeChatSender
from services.notify.templates import Notice, Template

T0 = datetime(2024, 3, 1, 4, 0, tzinfo=UTC)  # 12:00 in Shanghai
QUIET = QuietHours(time(22, 0), time(7, 0), "Asia/Shanghai")
CODES = {t: f"SMS_{i}" for i, t in enumerate(Template)}


class Clock:
    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def account(**kw) -> AccountSettings:
    base = dict(account_id="acc-1", name="3-201", phone="+8613800138000", wechat_openid="oStudent1")
    return AccountSettings(**(base | kw))


def notice(template=Template.LOW_BALANCE_1, ref="al-1") -> Notice:
    return Notice(template, {"balance": "12.30"}, ref, "acc-1", "p1")


def dispatcher(clock, sms=None, wechat=None, acc=None, limits=Limits()) -> Dispatcher:
    sms = sms or InMemorySmsSender()
    wechat = wechat or InMemoryWeChatSender()
    acc = acc or account()
    return Dispatcher(
        DeliveryPolicy(limits),
        {Channel.SMS: sms_channel(sms, "校园电费", CODES), Channel.WECHAT: wechat_channel(wechat, CODES)},
        lambda _project, _account: acc,
        clock,
        random.Random(7),
    )


async def drain(d: Dispatcher, clock: Clock, limit: int = 10_000) -> None:
    for _ in range(limit):
        await d.run_due()
        due = d.next_due()
        if due is None:
            return
        clock.now = max(clock.now, due)
    raise AssertionError("did not drain")


def test_quiet_hours_wrap_midnight():
    assert QUIET.contains(datetime(2024, 3, 1, 15, 0, tzinfo=UTC))  # 23:00 local
    assert not QUIET.contains(datetime(2024, 3, 1, 23, 0, tzinfo=UTC))  # 07:00 local
    assert QUIET.end_after(datetime(2024, 3, 1, 15, 0, tzinfo=UTC)) == datetime(2024, 3, 1, 23, 0, tzinfo=UTC)


def test_plan_follows_account_settings():
    jobs, skipped = plan(
        notice(), account(channels=frozenset({Channel.SMS, Channel.WECHAT}), wechat_openid=None)
    )
    assert [j.request.channel for j in jobs] == [Channel.SMS] and skipped == ["acc-1: no wechat recipient"]
    jobs, skipped = plan(notice(), account(templates=frozenset({Template.ARREARS})))
    assert jobs == [] and skipped and "not subscribed" in skipped[0]


async def test_deferred_in_quiet_hours_not_dropped_and_power_cut_goes_through():
    clock = Clock(datetime(2024, 3, 1, 15, 0, tzinfo=UTC))  # 23:00 local
    sms = InMemorySmsSender()
    d = dispatcher(clock, sms=sms, acc=account(channels=frozenset({Channel.SMS}), quiet_hours=QUIET))
    for job in plan(notice(), account(channels=frozenset({Channel.SMS})))[0]:
        d.submit(job)
    for job in plan(notice(Template.POWER_CUT, "c-1"), account(channels=frozenset({Channel.SMS})))[0]:
        d.submit(job)
    await d.run_due()
    assert [s.template for s in sms.sent] == [CODES[Template.POWER_CUT]]
    assert any(e.what == "deferred" and "quiet_hours" in e.detail for e in d.log)
    await drain(d, clock)
    assert clock.now == datetime(2024, 3, 1, 23, 0, tzinfo=UTC)
    assert len(sms.sent) == 2 and set(d.outcomes.values()) == {Outcome.DELIVERED}


async def test_same_alarm_is_deduplicated_within_window_and_logged():
    clock = Clock()
    d = dispatcher(clock)
    jobs, _ = plan(notice(), account(channels=frozenset({Channel.SMS})))
    d.submit(jobs[0])
    await drain(d, clock)
    clock.now += timedelta(hours=1)
    again = jobs[0].request.model_copy(update={"notification_id": "other", "event_id": "other"})
    d.submit(replace(jobs[0], request=again))
    await drain(d, clock)
    assert d.outcomes == {jobs[0].notification_id: Outcome.DELIVERED, "other": Outcome.DEDUPLICATED}
    assert any(e.what == "deduplicated" for e in d.log)


async def test_projects_sharing_an_account_and_a_command_id_get_their_own_settings_and_sends():
    # ids are per project: "acc-1" and command "c-1" in two projects, and the same phone in both
    clock = Clock()
    sms = InMemorySmsSender()
    accounts = {p: account(name=f"{p} 3-201", channels=frozenset({Channel.SMS})) for p in ("p1", "p2")}
    d = Dispatcher(
        DeliveryPolicy(Limits()),
        {Channel.SMS: sms_channel(sms, "校园电费", CODES)},
        lambda project, _account: accounts[project],
        clock,
        random.Random(7),
    )
    for project, acc in accounts.items():
        d.submit(plan(replace(notice(Template.POWER_CUT, "c-1"), project_id=project), acc)[0][0])
    await drain(d, clock)
    assert sorted(sent.params["name"] for sent in sms.sent) == ["p1 3-201", "p2 3-201"]
    assert list(d.outcomes.values()) == [Outcome.DELIVERED, Outcome.DELIVERED]


async def test_retryable_failures_are_retried_then_dead_lettered():
    clock = Clock()
    sms = InMemorySmsSender()
    limits = Limits(max_attempts=3)
    d = dispatcher(clock, sms=sms, limits=limits)
    sms.faults.fail_next(ErrorKind.THROTTLED, 3)
    d.submit(plan(notice(), account(channels=frozenset({Channel.SMS})))[0][0])
    await drain(d, clock)
    failed = [e for e in d.events if isinstance(e, NotificationFailed)]
    assert [(e.attempt, e.will_retry) for e in failed] == [(1, True), (2, True), (3, False)]
    assert list(d.outcomes.values()) == [Outcome.DEAD_LETTERED] and len(d.dead_letters) == 1


async def test_permanent_failure_dead_letters_at_once():
    clock = Clock()
    sms = InMemorySmsSender()
    sms.faults.fail_next(ErrorKind.SIGNATURE)
    d = dispatcher(clock, sms=sms)
    d.submit(plan(notice(), account(channels=frozenset({Channel.SMS})))[0][0])
    await drain(d, clock)
    assert [e.will_retry for e in d.events if isinstance(e, NotificationFailed)] == [False]


async def test_throttled_real_provider_is_retried_until_delivered(providers):
    clock = Clock()
    providers.state.fail_next("throttle", 1)
    providers.state.fail_next("server_error", 1)
    async with httpx.AsyncClient(timeout=2) as http:
        sender = AliyunSmsSender(http, "ak-test", "sk-test", base_url=providers.url("aliyun"))
        d = dispatcher(clock, sms=sender)  # type: ignore[arg-type]
        d.submit(plan(notice(), account(channels=frozenset({Channel.SMS})))[0][0])
        await drain(d, clock)
    delivered = [e for e in d.events if isinstance(e, NotificationDelivered)]
    assert [e.attempt for e in delivered] == [3] and len(providers.state.received) == 1


def test_backoff_bounds_grow_and_cap():
    policy = DeliveryPolicy(
        Limits(backoff_base=timedelta(seconds=10), backoff_cap=timedelta(seconds=60), jitter=0.5)
    )
    assert policy.backoff_bounds(1) == (timedelta(seconds=5), timedelta(seconds=10))
    assert policy.backoff_bounds(3) == (timedelta(seconds=20), timedelta(seconds=40))
    assert policy.backoff_bounds(10) == (timedelta(seconds=30), timedelta(seconds=60))


@given(st.integers(1, 40), st.integers(0, 2**32))
def test_retry_delay_within_jitter_bounds(attempt, seed):
    policy = DeliveryPolicy(Limits(max_attempts=100))
    at = policy.retry_at(attempt, True, T0, random.Random(seed))
    low, high = policy.backoff_bounds(attempt)
    assert at is not None and T0 + low <= at <= T0 + high


step = st.tuples(
    st.sampled_from([Template.LOW_BALANCE_1, Template.ARREARS, Template.POWER_CUT]),
    st.sampled_from(["al-1", "al-2", "al-3"]),
    st.integers(0, 36 * 60),  # minutes after T0
    st.lists(st.sampled_from([ErrorKind.THROTTLED, ErrorKind.SERVER, ErrorKind.TEMPLATE]), max_size=3),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(step, min_size=1, max_size=12), st.booleans())
async def test_no_input_lost_quiet_hours_respected_and_no_duplicate_within_window(steps, quiet):
    clock = Clock()
    sms = InMemorySmsSender()
    acc = account(channels=frozenset({Channel.SMS}), quiet_hours=QUIET if quiet else None)
    limits = Limits(dedupe_window=timedelta(hours=6), max_attempts=3)
    d = dispatcher(clock, sms=sms, acc=acc, limits=limits)
    submitted: dict[str, tuple[Template, str]] = {}
    for i, (template, ref, minutes, faults) in enumerate(sorted(steps, key=lambda s: s[2])):
        target = T0 + timedelta(minutes=minutes)
        while (due := d.next_due()) is not None and due <= target:
            clock.now = max(clock.now, due)
            await d.run_due()
        clock.now = max(clock.now, target)
        for kind in faults:
            sms.faults.fail_next(kind)
        job = plan(notice(template, ref), acc)[0][0]
        job = replace(job, request=job.request.model_copy(update={"notification_id": f"n{i}"}))
        submitted[job.notification_id] = (template, ref)
        d.submit(job)
        await d.run_due()
    await drain(d, clock)
    # no input lost: every one ends in exactly one final state, none is still queued
    assert set(d.outcomes) == set(submitted) and d.pending() == 0
    assert len([e for e in d.events if isinstance(e, NotificationRequested)]) == len(submitted)
    delivered = [(e.notification_id, e.at) for e in d.log if e.what == "delivered"]
    assert len(delivered) == len(sms.sent) == sum(o is Outcome.DELIVERED for o in d.outcomes.values())
    last: dict[tuple[Template, str], datetime] = {}
    for nid, at in delivered:
        template, ref = submitted[nid]
        # quiet hours defer everything but the urgent power-cut notice
        if quiet and template is not Template.POWER_CUT:
            assert not QUIET.contains(at)
        # the same alarm is never delivered twice within the dedupe window
        if (template, ref) in last:
            assert at - last[(template, ref)] >= limits.dedupe_window
        last[(template, ref)] = at
