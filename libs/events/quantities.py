"""The vocabulary of quantity names used in `ReadingRecorded` (and by drivers, billing, reports).

Cumulative registers (``ReadingRecorded.registers[name][rate]``) — these are what billing charges:

- ``active_import_kwh``   forward (import) active energy, DL/T 645 0001xx00
- ``active_export_kwh``   reverse (export) active energy, DL/T 645 0002xx00
- ``active_combined_kwh`` combined active energy, DL/T 645 0000xx00
- ``reactive_import_kvarh`` / ``reactive_export_kvarh`` combined reactive 1 / 2, DL/T 645 0003/0004
- ``volume_m3``           water / gas cumulative volume (CJ/T 188 901F current cumulative)
- ``heat_kwh``            heat meters' cumulative heat

Instantaneous values (``ReadingRecorded.instant[name]``):

- ``voltage_a_v``, ``voltage_b_v``, ``voltage_c_v``; ``current_a_a``, ``current_b_a``, ``current_c_a``
- ``power_kw`` (total active), ``power_a_kw`` …; ``reactive_power_kvar``; ``power_factor``
- ``frequency_hz``; ``flow_m3h`` (water/gas flow rate)

Rates are :class:`libs.events.acquisition.Rate` (total, sharp, peak, flat, valley = DL/T 645 rates 0–4).
"""

from __future__ import annotations

REGISTERS: frozenset[str] = frozenset(
    {
        "active_import_kwh",
        "active_export_kwh",
        "active_combined_kwh",
        "reactive_import_kvarh",
        "reactive_export_kvarh",
        "volume_m3",
        "heat_kwh",
    }
)
INSTANT: frozenset[str] = frozenset(
    {
        "voltage_a_v",
        "voltage_b_v",
        "voltage_c_v",
        "current_a_a",
        "current_b_a",
        "current_c_a",
        "power_kw",
        "power_a_kw",
        "power_b_kw",
        "power_c_kw",
        "reactive_power_kvar",
        "power_factor",
        "frequency_hz",
        "flow_m3h",
    }
)
