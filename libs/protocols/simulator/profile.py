"""Load profile and tariff bands: how much a meter consumes between two instants, per rate.

A meter's demand is ``peak * shape(local hour)``, with the 24 hourly factors joined by
straight lines, so integrating it over a piece of an hour is exact with the trapezoid rule.
Time is cut at every local hour boundary; each piece lies in exactly one tariff band (bands
start on whole hours) and one local day.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from .site import Rate


@dataclass(frozen=True)
class Piece:
    """A stretch of time inside one local hour: its rate, and the consumption in it."""

    start: datetime
    end: datetime
    rate: Rate
    amount: float  # kWh (or m³) over the piece


class LoadProfile:
    """A daily demand shape plus the time-of-use bands of a site, in its local time zone."""

    def __init__(self, shape: Sequence[float], bands: Mapping[int, Rate], utc_offset_hours: float) -> None:
        if len(shape) != 24:
            raise ValueError("shape needs 24 hourly factors")
        self.shape = tuple(shape)
        self.tz = timezone(timedelta(hours=utc_offset_hours))
        self._band_by_hour: list[Rate] = []
        current = bands[0]
        for hour in range(24):
            current = bands.get(hour, current)
            self._band_by_hour.append(current)

    def local(self, when: datetime) -> datetime:
        """``when`` in the site's local time."""
        return when.astimezone(self.tz)

    def rate_at(self, when: datetime) -> Rate:
        """The tariff rate in force at ``when``."""
        return self._band_by_hour[self.local(when).hour]

    def factor_at(self, when: datetime) -> float:
        """The demand factor (0..1 of peak) at ``when``."""
        local = self.local(when)
        hour = local.hour + local.minute / 60 + local.second / 3600 + local.microsecond / 3.6e9
        low = int(hour) % 24
        frac = hour - int(hour)
        return self.shape[low] * (1 - frac) + self.shape[(low + 1) % 24] * frac

    def pieces(self, start: datetime, end: datetime, peak: float) -> Iterator[Piece]:
        """Cut ``[start, end)`` at local hour boundaries; yield each piece with its consumption."""
        t = start
        while t < end:
            local = self.local(t)
            next_hour = local.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
            stop = min(end, next_hour.astimezone(start.tzinfo))
            hours = (stop - t).total_seconds() / 3600
            # The factor just before the hour boundary belongs to this hour's line segment.
            f0 = self.factor_at(t)
            f1 = self.factor_at(stop) if stop < next_hour else self.shape[(local.hour + 1) % 24]
            yield Piece(t, stop, self._band_by_hour[local.hour], peak * hours * (f0 + f1) / 2)
            t = stop

    def is_local_midnight(self, when: datetime) -> bool:
        """True when ``when`` is exactly 00:00:00 local time (a daily freeze instant)."""
        local = self.local(when)
        return (local.hour, local.minute, local.second, local.microsecond) == (0, 0, 0, 0)
