"""Settings of ``meterflow acquisition`` (prefix ``MF_``), validated at start; ``--check-config``.

The topology comes from either two import files (``MF_ACQ_CONCENTRATORS`` + ``MF_ACQ_METERS``,
CSV or XLSX) or the endpoints a running simulator announced (``MF_ACQ_SIMULATOR``: a file of the
JSON lines ``meterflow simulate`` prints). Acquisition fields carry an ``acq_`` prefix so that a
process started by ``meterflow dev`` does not pick up the dev stack's own ``MF_HTTP_PORT``.
"""

from __future__ import annotations

import socket
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator, model_validator

from libs.settings import CommonSettings
from services.acquisition.schedule import DEFAULT_PLAN, Cron, Interval, JobKind, Schedule


def parse_schedule(text: str) -> Interval | Cron:
    """``30`` or ``interval:30`` → every 30 min; ``cron:<expression>`` → a cron trigger."""
    text = text.strip()
    if text.startswith("cron:"):
        return Cron(expression=text[5:].strip())
    minutes = text.removeprefix("interval:").strip()
    if not minutes.isdigit():
        raise ValueError(f"expected minutes, 'interval:<minutes>' or 'cron:<expression>', got {text!r}")
    return Interval(minutes=int(minutes))


class AcquisitionSettings(CommonSettings):
    """Where the topology comes from, where events wait for Kafka, how status is judged."""

    acq_concentrators: Path | None = Field(default=None, description="concentrator import file (CSV/XLSX)")
    acq_meters: Path | None = Field(default=None, description="meter import file (CSV/XLSX)")
    acq_simulator: Path | None = Field(
        default=None, description="file of the simulator's JSON endpoint lines (instead of import files)"
    )
    acq_http_port: int = Field(
        default=8701, ge=1, le=65535, description="port of /healthz, /readyz, /metrics"
    )
    acq_outbox_path: Path | None = Field(
        default=None,
        description="SQLite outbox file; default <MF_STATE_DIR>/acquisition-<instance>.outbox.db",
    )
    acq_instance_id: str = Field(
        default_factory=socket.gethostname,
        min_length=1,
        max_length=64,
        description="this instance's id (its command consumer group); default the host name",
    )
    acq_lost_after: int = Field(default=3, ge=1, le=100, description="failed reads before a meter is lost")
    acq_switch_back_after: int = Field(
        default=3, ge=1, le=100, description="healthy rounds before switching back from failover"
    )
    acq_tz: str = Field(default="Asia/Shanghai", description="time zone of schedules and statistics")
    acq_default_schedule: str = Field(
        default="30", description="read schedule of the 'default' plan: minutes, interval:N or cron:EXPR"
    )
    acq_command_max_age_s: int = Field(
        default=600, ge=1, description="commands without expires_at older than this are skipped"
    )
    acq_outbox_capacity: int = Field(
        default=1_000_000, ge=100, description="events buffered before polling waits"
    )

    @field_validator("acq_tz")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}") from None
        return value

    @field_validator("acq_default_schedule")
    @classmethod
    def _schedule(cls, value: str) -> str:
        parse_schedule(value)
        return value

    @model_validator(mode="after")
    def _topology(self) -> AcquisitionSettings:
        files = (self.acq_concentrators, self.acq_meters)
        if self.acq_simulator is not None:
            if any(files):
                raise ValueError(
                    "set either MF_ACQ_SIMULATOR or MF_ACQ_CONCENTRATORS + MF_ACQ_METERS, not both"
                )
            sources = [self.acq_simulator]
        elif all(files):
            sources = [p for p in files if p is not None]
        else:
            raise ValueError("no topology: set MF_ACQ_CONCENTRATORS and MF_ACQ_METERS, or MF_ACQ_SIMULATOR")
        missing = [str(p) for p in sources if not p.is_file()]
        if missing:
            raise ValueError(f"topology file not found: {', '.join(missing)}")
        return self

    @property
    def outbox_path(self) -> Path:
        """The outbox file (its directory also holds the sequence / command state)."""
        return self.acq_outbox_path or self.state_dir / f"acquisition-{self.acq_instance_id}.outbox.db"

    @property
    def plans(self) -> dict[str, tuple[Schedule, ...]]:
        """The 'default' plan: reads on the configured schedule, plus freezes and time sync."""
        read = Schedule(kind=JobKind.READ, trigger=parse_schedule(self.acq_default_schedule), tz=self.acq_tz)
        rest = tuple(s.model_copy(update={"tz": self.acq_tz}) for s in DEFAULT_PLAN if s.kind != JobKind.READ)
        return {"default": (read, *rest)}
