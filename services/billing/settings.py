"""Settings of the billing worker (env prefix ``MF_``)."""

from __future__ import annotations

from datetime import time
from pathlib import Path
from zoneinfo import ZoneInfo

from pydantic import Field, model_validator

from libs.settings import CommonSettings
from services.billing.domain.settlement import FreezeSchedule


class BillingSettings(CommonSettings):
    """Where the worker keeps its snapshots, how it batches, its ports and alarm thresholds."""

    billing_http_port: int = Field(
        default=8702, ge=1, le=65535, description="billing /healthz, /readyz, /metrics"
    )
    billing_faust_port: int = Field(default=6066, ge=1, le=65535, description="Faust's own (unused) web port")
    billing_snapshot_every_s: float = Field(
        default=60.0,
        gt=0,
        description="seconds between state snapshots (a crash replays at most this much input; each "
        "snapshot holds the interpreter while pickling, ~0.1 s per few thousand accounts)",
    )
    billing_batch_size: int = Field(default=5000, ge=1, description="input records per batch")
    billing_allowance_tick_s: float = Field(
        default=10.0, gt=0, description="seconds between looks for allowances due (allowance plans)"
    )
    billing_alarm_level1_fen: int = Field(default=2000, description="low-balance alarm level 1 (fen)")
    billing_alarm_level2_fen: int = Field(default=500, description="low-balance alarm level 2 (fen)")
    billing_timezone: str = Field(
        default="Asia/Shanghai", description="clock of monthly bills and freeze instants"
    )
    billing_freeze_daily_at: time = Field(default=time(0), description="local time of the daily freeze")
    billing_freeze_monthly_day: int = Field(
        default=1, ge=1, le=28, description="day of the month of the monthly freeze"
    )
    billing_state_dir: Path | None = Field(
        default=None, description="snapshots; default MF_STATE_DIR/billing"
    )

    @model_validator(mode="after")
    def _levels(self) -> BillingSettings:
        if self.billing_alarm_level2_fen > self.billing_alarm_level1_fen:
            raise ValueError("MF_BILLING_ALARM_LEVEL2_FEN must not exceed MF_BILLING_ALARM_LEVEL1_FEN")
        return self

    @model_validator(mode="after")
    def _zone(self) -> BillingSettings:
        try:
            ZoneInfo(self.billing_timezone)
        except Exception as exc:  # ZoneInfoNotFoundError or a malformed key
            raise ValueError(f"MF_BILLING_TIMEZONE: unknown timezone {self.billing_timezone!r}") from exc
        return self

    @property
    def freeze_schedule(self) -> FreezeSchedule:
        """When freezes are taken, and the zone of monthly bills."""
        return FreezeSchedule(
            daily_at=self.billing_freeze_daily_at,
            monthly_day=self.billing_freeze_monthly_day,
            monthly_at=self.billing_freeze_daily_at,
            timezone=self.billing_timezone,
        )

    @property
    def snapshot_dir(self) -> Path:
        """Directory of the worker's snapshots."""
        return (self.billing_state_dir or self.state_dir / "billing").resolve()
