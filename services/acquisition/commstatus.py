"""Communication status (A6) and failover routes (A7) as a pure fold over poll rounds.

:func:`fold` takes the state, the registry and one :class:`PollRound` (which meters answered, which
uplinks answered a probe) and returns the new state and the events to emit. An event is emitted
exactly once per transition: a meter is lost (失联) after ``lost_after`` consecutive failures and
back online on its first success; a concentrator is offline when its uplink fails or every meter
read through it failed in the round, and online again on its first success. An offline concentrator
with alternates hands its meters to the first online alternate (``RouteSwitched``), and takes them
back once its own uplink has answered ``switch_back_after`` rounds in a row.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from libs.events.acquisition import (
    ConcentratorOffline,
    ConcentratorOnline,
    MeterLostContact,
    MeterOnline,
    Route,
    RouteSwitched,
)
from libs.events.base import Event, event_id_for
from services.acquisition.registry import Registry
from services.acquisition.schedule import DEFAULT_TZ


@dataclass(frozen=True)
class CommConfig:
    lost_after: int = 3
    switch_back_after: int = 3
    tz: str = DEFAULT_TZ  # days of the online-time statistics are local days


@dataclass(frozen=True)
class Link:
    """Status of one meter or concentrator; ``online`` is None until first evidence."""

    online: bool | None = None
    failures: int = 0
    last_seen: datetime | None = None
    observed_at: datetime | None = None
    online_seconds: Mapping[date, float] = field(default_factory=dict)

    def availability(self, day: date) -> float:
        """Share of the local day spent online (0–1)."""
        return self.online_seconds.get(day, 0.0) / 86400


@dataclass(frozen=True)
class RouteState:
    via: str | None = None  # alternate concentrator in use; None = the primary
    healthy_rounds: int = 0


@dataclass(frozen=True)
class CommState:
    meters: Mapping[str, Link] = field(default_factory=dict)
    concentrators: Mapping[str, Link] = field(default_factory=dict)
    routes: Mapping[str, RouteState] = field(default_factory=dict)


@dataclass(frozen=True)
class PollRound:
    at: datetime
    reads: Mapping[str, bool]  # meter id → answered (over whatever route was in use)
    uplinks: Mapping[str, bool] = field(default_factory=dict)  # concentrator id → probe answered


def _accrue(link: Link, at: datetime, tz: ZoneInfo) -> Link:
    if link.observed_at is None or not link.online or at <= link.observed_at:
        return replace(
            link, observed_at=at if link.observed_at is None or at > link.observed_at else link.observed_at
        )
    seconds = dict(link.online_seconds)
    start = link.observed_at.astimezone(tz)
    end = at.astimezone(tz)
    while start < end:  # split at local midnights
        midnight = datetime.combine(start.date() + timedelta(days=1), time(), tz)
        stop = min(midnight, end)
        seconds[start.date()] = seconds.get(start.date(), 0.0) + (stop - start).total_seconds()
        start = stop
    return replace(link, observed_at=at, online_seconds=seconds)


def route_for(state: CommState, registry: Registry, meter_id: str) -> Route:
    """The route to poll a meter over now (the failover decision)."""
    loc = registry.locate(meter_id)
    via = state.routes.get(loc.concentrator_id, RouteState()).via
    return Route(
        concentrator_id=loc.concentrator_id,
        bus_id=loc.bus_id,
        via=(via,) if via else (),
        failover=via is not None,
    )


def fold(
    state: CommState, registry: Registry, poll: PollRound, config: CommConfig = CommConfig()
) -> tuple[CommState, list[Event]]:
    """Apply one poll round; returns the new state and the transition events, in order."""
    tz, at = ZoneInfo(config.tz), poll.at
    events: list[Event] = []
    meters = dict(state.meters)
    for meter_id, ok in poll.reads.items():
        try:
            project_id = registry.locate(meter_id).project_id
        except KeyError:
            continue  # a read of a meter removed meanwhile
        link = _accrue(meters.get(meter_id, Link()), at, tz)
        common = {"project_id": project_id, "subject_id": meter_id, "meter_id": meter_id, "time": at}
        if ok:
            if link.online is not True:
                events.append(
                    MeterOnline(
                        event_id=event_id_for(project_id, meter_id, "online", at.isoformat()),
                        since=at,
                        **common,
                    )
                )
            link = replace(link, online=True, failures=0, last_seen=at)
        else:
            link = replace(link, failures=link.failures + 1)
            if link.online is not False and link.failures >= config.lost_after:
                eid = event_id_for(project_id, meter_id, "lost", at.isoformat())
                events.append(
                    MeterLostContact(
                        event_id=eid, consecutive_failures=link.failures, last_seen=link.last_seen, **common
                    )
                )
                link = replace(link, online=False)
        meters[meter_id] = link

    concentrators = dict(state.concentrators)
    health: dict[str, bool | None] = {}
    for project in registry.projects:
        for c in project.concentrators:
            on_primary = state.routes.get(c.id, RouteState()).via is None
            reads = (
                [poll.reads[m.id] for b in c.buses for m in b.meters if m.id in poll.reads]
                if on_primary
                else []
            )
            uplink = poll.uplinks.get(c.id)
            reason = (
                "uplink" if uplink is False else "all_meters_failed" if reads and not any(reads) else None
            )
            up = False if reason else True if any(reads) or uplink else None
            health[c.id] = up
            link = _accrue(concentrators.get(c.id, Link()), at, tz)
            common = {"project_id": project.id, "subject_id": c.id, "concentrator_id": c.id, "time": at}
            if up is True:
                if link.online is not True:
                    events.append(
                        ConcentratorOnline(
                            event_id=event_id_for(project.id, c.id, "online", at.isoformat()),
                            since=at,
                            **common,
                        )
                    )
                link = replace(link, online=True, failures=0, last_seen=at)
            elif up is False:
                if link.online is not False:
                    eid = event_id_for(project.id, c.id, "offline", at.isoformat())
                    events.append(
                        ConcentratorOffline(
                            event_id=eid, reason=reason or "", last_seen=link.last_seen, **common
                        )
                    )
                link = replace(link, online=False, failures=link.failures + 1)
            concentrators[c.id] = link

    new = CommState(meters=meters, concentrators=concentrators, routes=dict(state.routes))
    routes = dict(state.routes)
    for project in registry.projects:
        for c in project.concentrators:
            route = routes.get(c.id, RouteState())
            usable = [a for a in c.alternates if concentrators.get(a, Link()).online and a != route.via]
            target, reason = route.via, ""
            if route.via is None:
                if concentrators[c.id].online is False and usable:
                    target, reason = usable[0], f"concentrator {c.id} offline"
            elif health[c.id] is True:
                route = replace(route, healthy_rounds=route.healthy_rounds + 1)
                if route.healthy_rounds >= config.switch_back_after:
                    target, reason = None, f"concentrator {c.id} healthy for {route.healthy_rounds} rounds"
            else:
                # only evidence of failure resets the count: a round that says nothing about this
                # concentrator (another concentrator's buses) must not delay the switch-back
                if health[c.id] is False:
                    route = replace(route, healthy_rounds=0)
                if not concentrators.get(target or "", Link()).online and usable:
                    target, reason = usable[0], f"alternate {route.via} offline"
            if target != route.via:
                events.extend(_switched(new, registry, project.id, c.id, target, reason, at))
                route = RouteState(via=target)
            routes[c.id] = route
    return replace(new, routes=routes), events


def _switched(
    state: CommState,
    registry: Registry,
    project_id: str,
    concentrator_id: str,
    via: str | None,
    reason: str,
    at: datetime,
) -> list[Event]:
    out: list[Event] = []
    for bus in registry.buses_of(concentrator_id):
        for meter in bus.meters:
            before = route_for(state, registry, meter.id)
            after = Route(
                concentrator_id=concentrator_id,
                bus_id=bus.id,
                via=(via,) if via else (),
                failover=via is not None,
            )
            eid = event_id_for(project_id, meter.id, "route", at.isoformat(), via or "")
            out.append(
                RouteSwitched(
                    event_id=eid,
                    project_id=project_id,
                    subject_id=meter.id,
                    time=at,
                    meter_id=meter.id,
                    from_route=before,
                    to_route=after,
                    reason=reason,
                )
            )
    return out
