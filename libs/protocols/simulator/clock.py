"""The clock meters read their state from: a real one, and a manual one for tests.

Meter state (energy, volume, frozen values, the meter's own clock) is a function of the
time this clock reports, so a test can advance a day in a microsecond. Byte timing on the
wire is *not* taken from here: it always uses the event loop's monotonic time.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    """Where simulated meters get "now" from (always timezone-aware, UTC)."""

    def now(self) -> datetime:
        """Return the current time, timezone-aware."""
        ...


class RealClock:
    """The wall clock."""

    def now(self) -> datetime:
        """Return the current UTC time."""
        return datetime.now(UTC)


class ManualClock:
    """A clock that only moves when told to; starts at ``start`` (default 2026-01-01 08:00Z)."""

    def __init__(self, start: datetime | None = None) -> None:
        start = start or datetime(2026, 1, 1, 8, 0, tzinfo=UTC)
        if start.tzinfo is None:
            raise ValueError("ManualClock needs a timezone-aware start")
        self._now = start

    def now(self) -> datetime:
        """Return the time last set."""
        return self._now

    def advance(self, seconds: float = 0.0, **delta: float) -> datetime:
        """Move forward by ``seconds`` (plus any ``timedelta`` keywords); return the new time."""
        step = timedelta(seconds=seconds, **delta)
        if step < timedelta(0):
            raise ValueError("a clock does not run backwards")
        self._now += step
        return self._now

    def set(self, when: datetime) -> None:
        """Jump to ``when`` (forward only)."""
        if when < self._now:
            raise ValueError("a clock does not run backwards")
        self._now = when
