"""Monthly energy report over N readings rows in chDB (target < 500 ms for 10 million rows).

Generates readings directly into a fresh chDB store (INSERT … SELECT from numbers(), through the
materialized views exactly as the sink's inserts go), then times the report queries that
services/api/analytics/queries.py builds. Prints figures; exits 0.

    .venv/bin/python bench/analytics_report.py            # 10 million rows
    .venv/bin/python bench/analytics_report.py --rows 1000000 --meters 2000
    .venv/bin/python bench/analytics_report.py --generate-only DIR   # a store for bench/api_load.py
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import clickhouse_connect

from libs.stack.clickhouse import migrate
from services.api.analytics import queries as q

PROJECT = "bench"


def generate(client: object, rows: int, meters: int, chunk: int) -> float:
    """Insert ``rows`` register readings: ``meters`` meters read every 4 hours from 2024-01-01."""
    started = time.perf_counter()
    for low in range(0, rows, chunk):
        n = min(chunk, rows - low)
        client.command(  # type: ignore[attr-defined]
            "INSERT INTO readings (project_id, meter_id, time, quantity, rate, kind, value, event_id, "
            "received_at, concentrator_id) "
            f"SELECT '{PROJECT}', concat('m', toString(number % {meters})), "
            "toDateTime64('2024-01-01 00:00:00', 3, 'UTC') + intDiv(number, "
            f"{meters}) * 14400 AS t, 'active_import_kwh', 'total', 'register', "
            f"toDecimal128(intDiv(number, {meters}) * 0.75 + number % {meters}, 6), "
            "toString(number), t, concat('c', toString(number % 97)) "
            f"FROM numbers({low}, {n})"
        )
    return time.perf_counter() - started


def timed(client: object, query: tuple[str, dict[str, object]], runs: int) -> tuple[float, float, int]:
    sql, params = query
    times, count = [], 0
    for _ in range(runs):
        started = time.perf_counter()
        count = len(client.query(sql, parameters=params).result_rows)  # type: ignore[attr-defined]
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), max(times), count


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--meters", type=int, default=10_000)
    parser.add_argument("--chunk", type=int, default=2_000_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--generate-only", metavar="DIR", help="fill the chDB store in DIR and exit")
    args = parser.parse_args()
    if args.generate_only:
        client = clickhouse_connect.get_client(dsn=f"chdb://{args.generate_only}")
        migrate(client)
        seconds = generate(client, args.rows, args.meters, args.chunk)
        print(f"generated {args.rows:,} readings rows for {args.meters:,} meters in {seconds:.1f} s")
        client.close()
        return 0
    with tempfile.TemporaryDirectory(prefix="mf-bench-") as path:
        client = clickhouse_connect.get_client(dsn=f"chdb://{path}")
        migrate(client)
        seconds = generate(client, args.rows, args.meters, args.chunk)
        months = client.command("SELECT count() FROM consumption_monthly")
        print(f"generated {args.rows:,} readings rows for {args.meters:,} meters in {seconds:.1f} s "
              f"({args.rows / seconds:,.0f} rows/s); consumption_monthly holds {months:,} rows")  # fmt: skip
        start, end = date(2024, 1, 1), date(2025, 1, 1)
        reports = {
            "monthly energy per meter": q.energy_report(PROJECT, "month", "meter", start, end),
            "monthly energy per building": q.energy_report(PROJECT, "month", "building", start, end),
            "yearly energy per account": q.energy_report(PROJECT, "year", "account", start, end),
            "daily energy per meter (one month)": q.energy_report(
                PROJECT, "day", "meter", start, date(2024, 2, 1)
            ),
            "top 20 consumers (year)": q.top_consumers(PROJECT, start, end, limit=20),
        }
        for name, query in reports.items():
            median, worst, count = timed(client, query, args.runs)
            verdict = (
                ""
                if name != "monthly energy per meter"
                else ("  (target < 500 ms: " + ("met" if median < 500 else "MISSED") + ")")
            )
            print(f"{name:<38} median {median:8.1f} ms  max {worst:8.1f} ms  rows {count:>7,}{verdict}")
        client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
