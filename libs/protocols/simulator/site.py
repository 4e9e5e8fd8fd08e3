"""Site configuration: concentrators → buses → meters, and named meter models with quirks.

A site is a pydantic model loaded from JSON or TOML (:func:`load_site`), or the built-in
:func:`default_site` that ``make run`` polls. Meter models are fixtures: a model names the
protocol, the kind of meter, its response delay range and its quirks (e.g. a CJ/T 188 water
meter that sends the data identifier byte-reversed).
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Protocol = Literal["dlt645-2007", "dlt645-1997", "cjt188", "modbus-rtu", "mbus"]
Kind = Literal["electricity", "water", "gas", "heat"]
Rate = Literal["sharp", "peak", "flat", "valley"]

# fmt: off
# A typical Chinese time-of-use split (local time, hour → rate): valley at night, peaks in
# the morning and evening, sharp at the evening peak's top.
DEFAULT_BANDS: dict[int, Rate] = {
    0: "valley", 8: "peak", 11: "flat", 17: "peak", 19: "sharp", 21: "peak", 22: "flat", 23: "valley",
}
# Hourly load factors (fraction of a meter's peak kW) of a residential/dormitory meter.
DEFAULT_SHAPE: tuple[float, ...] = (
    0.25, 0.2, 0.18, 0.18, 0.18, 0.2, 0.3, 0.55, 0.6, 0.45, 0.4, 0.45,
    0.6, 0.5, 0.4, 0.4, 0.45, 0.6, 0.85, 1.0, 0.95, 0.9, 0.7, 0.4,
)
# fmt: on


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Link(_Strict):
    """Serial line settings of a bus; ``char_time`` is the time one character takes."""

    baud: int = Field(2400, gt=0)
    data_bits: int = Field(8, ge=5, le=8)
    parity: Literal["N", "E", "O"] = "E"
    stop_bits: Literal[1, 2] = 1

    @property
    def bits_per_char(self) -> int:
        """Start bit + data bits + parity bit (if any) + stop bits."""
        return 1 + self.data_bits + (0 if self.parity == "N" else 1) + self.stop_bits

    @property
    def char_time(self) -> float:
        """Seconds to put one character on the wire (2400 8E1: 11 bits = 4.583 ms)."""
        return self.bits_per_char / self.baud

    def label(self) -> str:
        """The usual short form, e.g. ``2400 8E1``."""
        return f"{self.baud} {self.data_bits}{self.parity}{self.stop_bits}"


class MeterModel(_Strict):
    """A named meter model: protocol, kind, timing and quirks shared by its meters."""

    protocol: Protocol
    kind: Kind = "electricity"
    response_delay_ms: tuple[float, float] = (20.0, 80.0)
    reversed_di: bool = False  # CJ/T 188 quirk: data identifier sent high byte first
    prepaid: bool = False
    modbus_map: str | None = None  # name of a register map (libs/protocols/models/<name>.json)
    password: str = "02000000"  # DL/T 645 control password PA P0 P1 P2 (wire order), hex
    operator: str = "00000000"  # DL/T 645 operator code, hex
    drift_ppm: float = 0.0  # meter clock drift, parts per million
    # DL/T 645: data bytes the meter puts in one reply (the standard allows 200); a longer
    # read reply goes out in parts, fetched with read-follow-up 12H requests.
    max_reply_data: int = Field(200, ge=8, le=200)
    manufacturer: str = Field("MFL", pattern="^[A-Z]{3}$")  # M-Bus three-letter manufacturer

    @model_validator(mode="after")
    def _check_delay(self) -> MeterModel:
        low, high = self.response_delay_ms
        if not 0 <= low <= high:
            raise ValueError("response_delay_ms must be (low, high) with 0 <= low <= high")
        return self


class MeterConfig(_Strict):
    """One meter on a bus: its address (display order, as printed on the nameplate) and state."""

    address: str
    model: str
    peak_kw: float = Field(1.5, ge=0)  # electricity: kW at the daily peak; water/gas: m³/h
    energy_kwh: float = Field(0.0, ge=0)  # electricity: starting total; water/gas: m³
    balance: float = 100.0  # prepaid remaining amount, yuan
    price: float = 0.6  # yuan per kWh (or per m³)
    purchases: int = Field(0, ge=0)
    relay_closed: bool = True
    valve_open: bool = True
    # M-Bus: identification number (secondary address, 8 digits); default: the primary
    # address padded with zeros. ``address`` is the primary address 0..250 on M-Bus buses.
    ident: str | None = Field(None, pattern="^[0-9]{8}$")


class BusConfig(_Strict):
    """One RS-485 / M-Bus segment; every meter on it speaks the bus's protocol."""

    name: str
    protocol: Protocol
    link: Link = Field(default_factory=Link)
    meters: list[MeterConfig] = Field(default_factory=list)
    # Modbus-RTU buses: also listen for Modbus-TCP (MBAP) and translate, like a TCP gateway.
    modbus_tcp: bool = False
    # Cascade (A7): another concentrator that can also reach this bus. The bus then gets a second
    # TCP pass-through port, which keeps answering while the bus's own concentrator is dead.
    alternate_concentrator: str | None = None

    @model_validator(mode="after")
    def _check(self) -> BusConfig:
        if self.modbus_tcp and self.protocol != "modbus-rtu":
            raise ValueError(f"bus {self.name}: modbus_tcp needs protocol modbus-rtu")
        if self.protocol == "mbus":
            for meter in self.meters:
                if not (meter.address.isdigit() and 0 <= int(meter.address) <= 250):
                    raise ValueError(f"bus {self.name}: M-Bus primary address 0..250, got {meter.address!r}")
        return self


class ConcentratorConfig(_Strict):
    """A concentrator / DTU / serial server with its buses."""

    name: str
    buses: list[BusConfig]


class SiteConfig(_Strict):
    """A whole site: named models, concentrators, local time zone and tariff bands."""

    name: str = "site"
    utc_offset_hours: float = 8.0
    bands: dict[int, Rate] = Field(default_factory=lambda: dict(DEFAULT_BANDS))
    shape: tuple[float, ...] = DEFAULT_SHAPE
    models: dict[str, MeterModel] = Field(default_factory=dict)
    concentrators: list[ConcentratorConfig]

    @model_validator(mode="after")
    def _check(self) -> SiteConfig:
        if len(self.shape) != 24:
            raise ValueError("shape needs 24 hourly factors")
        if 0 not in self.bands:
            raise ValueError("bands must start at hour 0")
        models = {**default_models(), **self.models}
        names: set[str] = set()
        concentrators = {c.name for c in self.concentrators}
        for conc in self.concentrators:
            for bus in conc.buses:
                alternate = bus.alternate_concentrator
                if alternate is not None and (alternate not in concentrators or alternate == conc.name):
                    raise ValueError(
                        f"bus {bus.name}: alternate concentrator {alternate!r} is not another one"
                    )
                if bus.name in names:
                    raise ValueError(f"duplicate bus name {bus.name!r}")
                names.add(bus.name)
                seen: set[str] = set()
                for meter in bus.meters:
                    model = models.get(meter.model)
                    if model is None:
                        raise ValueError(f"meter {meter.address}: unknown model {meter.model!r}")
                    if model.protocol != bus.protocol:
                        raise ValueError(
                            f"meter {meter.address}: model speaks {model.protocol}, bus {bus.name} "
                            f"speaks {bus.protocol}"
                        )
                    if meter.address in seen:
                        raise ValueError(f"bus {bus.name}: duplicate address {meter.address}")
                    seen.add(meter.address)
        return self

    def model(self, name: str) -> MeterModel:
        """The model called ``name``: the site's own, else a built-in fixture."""
        return {**default_models(), **self.models}[name]


def default_models() -> dict[str, MeterModel]:
    """Built-in meter model fixtures."""
    return {
        "ddsy-2007": MeterModel(protocol="dlt645-2007", prepaid=True, response_delay_ms=(30, 120)),
        "dds-1997": MeterModel(protocol="dlt645-1997", response_delay_ms=(50, 200)),
        "prepaid-modbus": MeterModel(
            protocol="modbus-rtu", prepaid=True, modbus_map="single_phase_prepaid", response_delay_ms=(20, 60)
        ),
        "dtsd-modbus": MeterModel(
            protocol="modbus-rtu", modbus_map="three_phase_multifunction", response_delay_ms=(20, 60)
        ),
        "sdm630": MeterModel(protocol="modbus-rtu", modbus_map="sdm630", response_delay_ms=(10, 40)),
        "lxsy-water": MeterModel(protocol="cjt188", kind="water", response_delay_ms=(80, 300)),
        "lxsy-water-rev": MeterModel(
            protocol="cjt188", kind="water", reversed_di=True, response_delay_ms=(80, 300)
        ),
        "gas-cjt188": MeterModel(protocol="cjt188", kind="gas", response_delay_ms=(100, 500)),
        "mbus-water": MeterModel(
            protocol="mbus", kind="water", manufacturer="MFW", response_delay_ms=(20, 60)
        ),
        "mbus-heat": MeterModel(protocol="mbus", kind="heat", manufacturer="MFH", response_delay_ms=(20, 60)),
    }


def _meters(model: str, first: int, count: int, width: int, **extra: float) -> list[MeterConfig]:
    return [MeterConfig(address=str(first + i).zfill(width), model=model, **extra) for i in range(count)]


def default_site() -> SiteConfig:
    """The site ``make run`` polls: 2 concentrators x 2 buses x 8 meters.

    c1: DL/T 645-2007 electricity (2400 8E1) and Modbus-RTU prepaid (9600 8N1);
    c2: CJ/T 188 water (2400 8E1, one reversed-DI model) and DL/T 645-2007 again.
    """
    e8e1 = Link(baud=2400, parity="E")
    n81 = Link(baud=9600, parity="N")
    # Households draw well under 0.1 m³/h at their daily peak.
    water = _meters("lxsy-water", 14_000_001, 6, 14, peak_kw=0.08, energy_kwh=35.2) + _meters(
        "lxsy-water-rev", 14_000_007, 2, 14, peak_kw=0.08, energy_kwh=12.6
    )
    return SiteConfig(
        name="default",
        concentrators=[
            ConcentratorConfig(
                name="c1",
                buses=[
                    BusConfig(
                        name="c1-b1",
                        protocol="dlt645-2007",
                        link=e8e1,
                        meters=_meters("ddsy-2007", 1, 8, 12, energy_kwh=1234.5),
                    ),
                    BusConfig(
                        name="c1-b2",
                        protocol="modbus-rtu",
                        link=n81,
                        meters=_meters("prepaid-modbus", 1, 8, 1, energy_kwh=321.0),
                    ),
                ],
            ),
            ConcentratorConfig(
                name="c2",
                buses=[
                    BusConfig(name="c2-b1", protocol="cjt188", link=e8e1, meters=water),
                    BusConfig(
                        name="c2-b2",
                        protocol="dlt645-2007",
                        link=e8e1,
                        meters=_meters("ddsy-2007", 101, 8, 12, energy_kwh=20.0),
                    ),
                ],
            ),
        ],
    )


def load_site(path: str | Path) -> SiteConfig:
    """Load a site from a ``.json`` or ``.toml`` file."""
    path = Path(path)
    raw = path.read_bytes()
    data = tomllib.loads(raw.decode()) if path.suffix == ".toml" else json.loads(raw)
    return SiteConfig.model_validate(data)
