"""What a simulated meter *is*, protocol aside: registers, relay/valve, balance, clock, freezes.

State is advanced lazily from the site clock: every read first calls :meth:`advance`, which
integrates the load profile since the last advance. A tripped relay or a closed valve stops
the registers; registers wrap past 999999.99 like the six-integer-digit counters of real
meters; at each local midnight the registers are frozen (daily), and on the 1st also monthly.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from .clock import Clock
from .profile import LoadProfile
from .site import MeterConfig, MeterModel, Rate

ROLLOVER = 1_000_000.0  # registers show XXXXXX.XX; 999999.99 + 0.01 -> 0.00
RATES: tuple[Rate, ...] = ("sharp", "peak", "flat", "valley")
KEEP_DAILY = 62
KEEP_MONTHLY = 12
KEEP_INSTANT = 3  # DL/T 645-2007 keeps the last 3 instantaneous freezes (05 01 xx 01..03)


@dataclass(frozen=True)
class Snapshot:
    """Registers frozen at an instant (meter time)."""

    at: datetime
    total: float
    rates: dict[Rate, float]


@dataclass
class Instant:
    """Instantaneous quantities of an electricity meter."""

    voltage: float
    current: float
    power_kw: float
    reactive_kvar: float
    power_factor: float
    frequency: float


def _spread(address: str, salt: str) -> float:
    """A stable pseudo-random number in [0, 1) per meter, so the site is reproducible."""
    digest = hashlib.sha256(f"{address}/{salt}".encode()).digest()
    return int.from_bytes(digest[:4], "big") / 2**32


@dataclass
class MeterState:
    """State shared by electricity and water/gas meters; ``total`` is kWh or m³."""

    address: str
    model: MeterModel
    profile: LoadProfile
    clock: Clock
    peak: float
    total: float = 0.0
    rates: dict[Rate, float] = field(default_factory=lambda: dict.fromkeys(RATES, 0.0))
    reactive: float = 0.0
    balance: float = 0.0
    price: float = 0.6
    purchases: int = 0
    relay_closed: bool = True  # electricity: relay; water/gas: valve open
    keep_power: bool = False  # DL/T 645 保电: blocks automatic trips
    alarm: bool = False
    replaced_count: int = 0
    clear_count: int = 0  # DL/T 645-2007 meter clears carried out (电表清零总次数, 03300100)
    frozen_daily: dict[date, Snapshot] = field(default_factory=dict)
    frozen_monthly: dict[tuple[int, int], Snapshot] = field(default_factory=dict)
    clock_offset: timedelta = timedelta(0)  # meter clock minus true time at drift_since
    drift_ppm: float = 0.0
    drift_since: datetime | None = None
    last: datetime | None = None
    frozen_instant: list[Snapshot] = field(default_factory=list)  # newest first
    tariff_prices: dict[Rate, float] = field(default_factory=dict)  # per rate; else ``price``
    settings: dict[str, object] = field(default_factory=dict)  # written parameters, by name
    ident: str | None = None  # M-Bus identification number (secondary address)
    baud: int | None = None  # line speed the meter listens at (None: the bus's)

    @classmethod
    def from_config(
        cls, cfg: MeterConfig, model: MeterModel, profile: LoadProfile, clock: Clock
    ) -> MeterState:
        """Build a meter from its site entry; the per-meter load varies ±30 % around ``peak_kw``."""
        peak = cfg.peak_kw * (0.7 + 0.6 * _spread(cfg.address, "load"))
        now = clock.now()
        state = cls(
            address=cfg.address,
            model=model,
            profile=profile,
            clock=clock,
            peak=peak,
            total=cfg.energy_kwh,
            balance=cfg.balance,
            price=cfg.price,
            purchases=cfg.purchases,
            relay_closed=cfg.relay_closed if model.kind == "electricity" else cfg.valve_open,
            drift_ppm=model.drift_ppm,
            drift_since=now,
            last=now,
            ident=cfg.ident,
        )
        # Spread the starting total over the rates in a plausible proportion.
        for rate, share in zip(RATES, (0.1, 0.35, 0.3, 0.25), strict=True):
            state.rates[rate] = cfg.energy_kwh * share
        state.reactive = cfg.energy_kwh * 0.2
        return state

    @property
    def flowing(self) -> bool:
        """Whether the registers advance (relay closed / valve open)."""
        return self.relay_closed

    # -- time -------------------------------------------------------------------------
    def advance(self) -> None:
        """Integrate consumption from the last advance up to the clock's now."""
        now = self.clock.now()
        if self.last is None or now <= self.last:
            self.last = now if self.last is None else self.last
            return
        for piece in self.profile.pieces(self.last, now, self.peak):
            if self.flowing:
                self._consume(piece.rate, piece.amount, piece.end)
            if self.profile.is_local_midnight(piece.end):
                self._freeze(piece.end)
        self.last = now

    def _consume(self, rate: Rate, amount: float, at: datetime) -> None:
        self.total = (self.total + amount) % ROLLOVER
        self.rates[rate] = (self.rates[rate] + amount) % ROLLOVER
        self.reactive = (self.reactive + amount * 0.25) % ROLLOVER
        if self.model.prepaid:
            self.balance -= amount * self.tariff_prices.get(rate, self.price)
            if self.balance <= 0 and self.relay_closed and not self.keep_power:
                self.relay_closed = False  # arrears: a prepaid meter trips itself

    def _freeze(self, at: datetime) -> None:
        snap = Snapshot(at=self.meter_time(at), total=self.total, rates=dict(self.rates))
        day = self.profile.local(at).date() - timedelta(days=1)  # the day that just ended
        self.frozen_daily[day] = snap
        while len(self.frozen_daily) > KEEP_DAILY:
            del self.frozen_daily[min(self.frozen_daily)]
        if self.profile.local(at).day == 1:
            self.frozen_monthly[(day.year, day.month)] = snap
            while len(self.frozen_monthly) > KEEP_MONTHLY:
                del self.frozen_monthly[min(self.frozen_monthly)]

    def freeze_now(self) -> Snapshot:
        """Instantaneous freeze (DL/T 645 16H with pattern 99999999): snapshot the registers."""
        self.advance()
        snap = Snapshot(at=self.meter_time(), total=self.total, rates=dict(self.rates))
        self.frozen_instant = [snap, *self.frozen_instant][:KEEP_INSTANT]
        return snap

    def meter_time(self, at: datetime | None = None) -> datetime:
        """The meter's own clock (local time, aware), including its offset and drift."""
        at = at or self.clock.now()
        since = self.drift_since or at
        drift = (at - since).total_seconds() * self.drift_ppm * 1e-6
        return self.profile.local(at + self.clock_offset + timedelta(seconds=drift))

    def set_meter_time(self, local: datetime) -> None:
        """Set the meter clock (e.g. broadcast time sync); naive times are site-local."""
        if local.tzinfo is None:
            local = local.replace(tzinfo=self.profile.tz)
        now = self.clock.now()
        self.clock_offset = local - now
        self.drift_since = now

    def set_drift(self, ppm: float | None = None, offset_s: float | None = None) -> None:
        """Fault: make the meter clock drift by ``ppm`` from now on and/or jump by ``offset_s``."""
        self.clock_offset = self.meter_time() - self.profile.local(self.clock.now())
        self.drift_since = self.clock.now()
        if ppm is not None:
            self.drift_ppm = ppm
        if offset_s is not None:
            self.clock_offset += timedelta(seconds=offset_s)

    # -- operations -------------------------------------------------------------------
    def instant(self) -> Instant:
        """Voltage, current, power, PF and frequency now (zero current when tripped)."""
        now = self.clock.now()
        minute = now.timestamp() / 60
        voltage = 220.0 + 4.0 * (_spread(self.address, "v") - 0.5) + 1.5 * ((minute % 7) / 7 - 0.5)
        pf = 0.88 + 0.1 * _spread(self.address, "pf")
        power = self.peak * self.profile.factor_at(now) if self.flowing else 0.0
        current = power * 1000 / (voltage * pf) if power else 0.0
        reactive = power * ((1 / pf**2 - 1) ** 0.5)
        freq = 50.0 + 0.04 * ((minute % 11) / 11 - 0.5)
        return Instant(
            round(voltage, 1),
            round(current, 3),
            round(power, 4),
            round(reactive, 4),
            round(pf, 3),
            round(freq, 2),
        )

    def flow_rate(self) -> float:
        """Water/gas flow in m³/h now (zero when the valve is closed)."""
        return self.peak * self.profile.factor_at(self.clock.now()) if self.flowing else 0.0

    def recharge(self, amount: float) -> None:
        """Add a purchase: balance up, purchase count +1; closes an arrears trip."""
        self.advance()
        self.balance += amount
        self.purchases += 1
        if self.balance > 0 and not self.relay_closed and self.model.prepaid:
            self.relay_closed = True

    def set_relay(self, closed: bool) -> None:
        """Trip (``False``) or close (``True``) the relay / valve, accounting up to now first."""
        self.advance()
        self.relay_closed = closed

    def set_total(self, value: float) -> None:
        """Fault helper: put the total register at ``value`` (e.g. 999999.5 to see a rollover)."""
        self.advance()
        self.total = value % ROLLOVER

    def clear(self) -> None:
        """DL/T 645-2007 meter clear 1AH: energy registers and freezes restart at zero.

        Accounts up to now first. The relay, the clock, written parameters and the prepaid
        wallet (balance, purchase count: ESAM-secured on real meters, not named by 1AH) stay.
        """
        self.advance()
        self.total = 0.0
        self.rates = dict.fromkeys(RATES, 0.0)
        self.reactive = 0.0
        self.frozen_daily.clear()
        self.frozen_instant.clear()
        self.frozen_monthly.clear()
        self.clear_count += 1

    def replace(self, new_address: str | None = None) -> None:
        """Fault: the meter was swapped for a new one; registers, freezes and counts restart."""
        self.advance()
        self.total = 0.0
        self.rates = dict.fromkeys(RATES, 0.0)
        self.reactive = 0.0
        self.purchases = 0
        self.balance = 0.0 if self.model.prepaid else self.balance
        self.relay_closed = True
        self.frozen_daily.clear()
        self.frozen_instant.clear()
        self.frozen_monthly.clear()
        self.replaced_count += 1
        if new_address is not None:
            self.address = new_address
