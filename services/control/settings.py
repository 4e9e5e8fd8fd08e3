"""Settings of the control worker (env prefix ``MF_``, fields ``MF_CONTROL_*``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator

from libs.settings import CommonSettings


class ControlSettings(CommonSettings):
    """Ports, snapshots, batching, the clock, and how commands are retried and timed out."""

    control_http_port: int = Field(
        default=8703, ge=1, le=65535, description="control /healthz, /readyz, /metrics, relay states"
    )
    control_faust_port: int = Field(default=6067, ge=1, le=65535, description="Faust's own (unused) web port")
    control_snapshot_every_s: float = Field(
        default=60.0,
        gt=0,
        description="seconds between state snapshots (a crash replays at most this much input; each "
        "snapshot holds the interpreter while pickling, ~0.1 s per few thousand accounts)",
    )
    control_batch_size: int = Field(default=2000, ge=1, description="input records per batch")
    control_tick_s: float = Field(
        default=0.5, gt=0, le=60, description="seconds between checks of timeouts, retries, schedules"
    )
    control_max_attempts: int = Field(default=3, ge=1, le=20, description="attempts per command")
    control_backoff_s: float = Field(default=10.0, ge=0, description="wait before the 2nd attempt")
    control_backoff_factor: float = Field(default=2.0, ge=1, description="backoff growth per attempt")
    control_max_backoff_s: float = Field(default=300.0, ge=0, description="longest wait between attempts")
    control_attempt_timeout_s: float = Field(default=30.0, gt=0, description="reply wait per attempt")
    control_command_timeout_s: float = Field(
        default=900.0, gt=0, description="a command not acknowledged by then times out (alarm)"
    )
    control_stale_after_s: float = Field(
        default=120.0,
        gt=0,
        description="alarms and readings older than this hold the relay commands they cause until the "
        "meter's facts have been quiet for MF_CONTROL_SETTLE_S (a billing catch-up or replay never "
        "trips and restores a meter for a past arrears episode)",
    )
    control_settle_s: float = Field(default=5.0, ge=0, le=300, description="see MF_CONTROL_STALE_AFTER_S")
    control_parameter_models: str = Field(
        default="DDSY,DTSY,DSSY",
        description="meter model prefixes that keep prices and alarm limits (parameter download, C8); "
        "comma separated, empty = none",
    )
    control_state_dir: Path | None = Field(
        default=None, description="snapshots; default MF_STATE_DIR/control"
    )

    @model_validator(mode="after")
    def _timeouts(self) -> ControlSettings:
        if self.control_attempt_timeout_s > self.control_command_timeout_s:
            raise ValueError("MF_CONTROL_ATTEMPT_TIMEOUT_S must not exceed MF_CONTROL_COMMAND_TIMEOUT_S")
        return self

    @property
    def parameter_models(self) -> tuple[str, ...]:
        """Model prefixes (upper case) that get parameter downloads."""
        return tuple(m.strip().upper() for m in self.control_parameter_models.split(",") if m.strip())

    @property
    def snapshot_dir(self) -> Path:
        """Directory of the worker's snapshots."""
        return (self.control_state_dir or self.state_dir / "control").resolve()
