"""The engine without Kafka: a round over a pty, a dead meter costs only its timeout, simsite."""

from __future__ import annotations

import json
import time
from decimal import Decimal
from pathlib import Path

import pytest

from libs.events.acquisition import MeterOnline, Rate, ReadingFailed, ReadingRecorded
from libs.events.base import Event, utcnow
from libs.settings import ConfigError, load
from services.acquisition.engine import Engine, Job
from services.acquisition.schedule import JobKind
from services.acquisition.settings import AcquisitionSettings
from services.acquisition.simsite import load_registry, registry_from_lines

from .helpers import E1, engine_config, running_site, site_config


class Memory:
    def __init__(self) -> None:
        self.events: list[Event] = []

    async def put(self, events: list[Event]) -> None:
        self.events.extend(events)


async def test_round_over_a_pty_and_a_dead_meter_costs_only_its_timeout() -> None:
    async with running_site(pty=True) as site:
        registry = registry_from_lines(site.endpoints(), site_config(), transport="pty")
        sink = Memory()
        engine = Engine(registry, sink, engine_config())
        worker = engine.workers["e"]
        site.set_offline(E1)
        started = time.monotonic()
        reads = await worker.run_round([Job(JobKind.READ, m, utcnow()) for m in worker.meters])
        elapsed = time.monotonic() - started
        assert reads == {E1: False, "e/000000000002": True, "e/000000000003": True}
        recorded = [e for e in sink.events if isinstance(e, ReadingRecorded)]
        assert {r.meter_id: r.registers["active_import_kwh"][Rate.TOTAL] for r in recorded} == {
            "e/000000000002": Decimal("200"),
            "e/000000000003": Decimal("300"),
        }
        failed = [e for e in sink.events if isinstance(e, ReadingFailed)]
        assert [(f.meter_id, f.reason, f.attempts) for f in failed] == [(E1, "timeout", 3)]
        # three attempts at the dead meter's timeout plus the other meters' reads, nothing more
        per_attempt = worker.links[None].bus.timeout_for(16, None)
        assert elapsed < 3 * per_attempt + 4.0
        assert all(
            isinstance(e, MeterOnline)
            for e in sink.events
            if not isinstance(e, ReadingRecorded | ReadingFailed)
        )
        await worker.drop(None)


async def test_simulator_lines_file_makes_a_registry(tmp_path: Path) -> None:
    async with running_site() as site:
        lines = tmp_path / "sim.jsonl"

        lines.write_text(
            "\n".join(json.dumps(x) for x in site.endpoints()) + '\n{"control": "127.0.0.1:1"}\n'
        )
        registry = load_registry(lines, site_config(), project_id="demo")
        bus = registry.bus("e")
        assert str(bus.transport) == f"127.0.0.1:{site.tcp['e'].port}"
        assert bus.alternate_routes[0].concentrator_id == "c2"
        assert registry.concentrator("c1").alternates == ("c2",)
        assert registry.meter("m/1").model == "single_phase_prepaid"
        assert (
            registry.meter(E1).password is not None
            and registry.meter(E1).password.get_secret_value() == "00123456"
        )


def test_settings_validate_topology_and_schedule(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lines = tmp_path / "sim.jsonl"
    lines.write_text("")
    monkeypatch.setenv("MF_ACQ_SIMULATOR", str(lines))
    settings = load(AcquisitionSettings, state_dir=tmp_path, acq_instance_id="a1")
    assert settings.acq_http_port == 8701
    assert settings.outbox_path == tmp_path / "acquisition-a1.outbox.db"
    assert settings.plans["default"][0].trigger.minutes == 30  # type: ignore[union-attr]
    monkeypatch.setenv("MF_ACQ_DEFAULT_SCHEDULE", "7")
    with pytest.raises(ConfigError, match="MF_ACQ_DEFAULT_SCHEDULE"):
        load(AcquisitionSettings)
    monkeypatch.setenv("MF_ACQ_DEFAULT_SCHEDULE", "cron:*/5 * * * *")
    assert load(AcquisitionSettings).plans["default"][0].trigger.type == "cron"
    monkeypatch.delenv("MF_ACQ_SIMULATOR")
    with pytest.raises(ConfigError, match="no topology"):
        load(AcquisitionSettings)
    monkeypatch.setenv("MF_ACQ_SIMULATOR", str(tmp_path / "missing.jsonl"))
    with pytest.raises(ConfigError, match="not found"):
        load(AcquisitionSettings)


def test_check_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import argparse

    from services.acquisition import main

    lines = tmp_path / "sim.jsonl"
    lines.write_text("")
    monkeypatch.setenv("MF_ACQ_SIMULATOR", str(lines))
    assert main.run(argparse.Namespace(check_config=True)) == 0
    assert "configuration ok" in capsys.readouterr().out
    monkeypatch.setenv("MF_ACQ_TZ", "Mars/Olympus")
    assert main.run(argparse.Namespace(check_config=True)) == 2
    assert "MF_ACQ_TZ" in capsys.readouterr().err
