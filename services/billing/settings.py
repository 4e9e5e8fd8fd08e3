"""Settings of the billing worker (env prefix ``MF_``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator

from libs.settings import CommonSettings


class BillingSettings(CommonSettings):
    """Where the worker keeps its snapshots, how it batches, its ports and alarm thresholds."""

    billing_http_port: int = Field(
        default=8702, ge=1, le=65535, description="billing /healthz, /readyz, /metrics"
    )
    billing_faust_port: int = Field(default=6066, ge=1, le=65535, description="Faust's own (unused) web port")
    billing_snapshot_every_s: float = Field(default=5.0, gt=0, description="seconds between state snapshots")
    billing_batch_size: int = Field(default=5000, ge=1, description="input records per batch")
    billing_alarm_level1_fen: int = Field(default=2000, description="low-balance alarm level 1 (fen)")
    billing_alarm_level2_fen: int = Field(default=500, description="low-balance alarm level 2 (fen)")
    billing_state_dir: Path | None = Field(
        default=None, description="snapshots; default MF_STATE_DIR/billing"
    )

    @model_validator(mode="after")
    def _levels(self) -> BillingSettings:
        if self.billing_alarm_level2_fen > self.billing_alarm_level1_fen:
            raise ValueError("MF_BILLING_ALARM_LEVEL2_FEN must not exceed MF_BILLING_ALARM_LEVEL1_FEN")
        return self

    @property
    def snapshot_dir(self) -> Path:
        """Directory of the worker's snapshots."""
        return (self.billing_state_dir or self.state_dir / "billing").resolve()
