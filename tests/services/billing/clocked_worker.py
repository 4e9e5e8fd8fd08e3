"""The billing worker with the clock of its allowance plans read from a file, so that a test can
move time by semesters: ``python -m tests.services.billing.clocked_worker`` with the ``MF_*``
settings of `meterflow billing` and ``BILLING_CLOCK_FILE`` (epoch seconds, rewritten by the test).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import faust

from libs.events.topics import CATALOGUE
from libs.stack.broker import ensure_topics
from libs.stack.runtime import service_settings, setup_logging
from services.billing.main import build
from services.billing.settings import BillingSettings


def main() -> int:
    settings = service_settings(BillingSettings, "billing", check_config=False)
    if isinstance(settings, int):
        return settings
    assert settings.kafka_bootstrap is not None
    clock_file = Path(os.environ["BILLING_CLOCK_FILE"])
    setup_logging(settings.log_level)
    ensure_topics(settings.kafka_bootstrap, CATALOGUE)
    app, _ = build(settings, settings.kafka_bootstrap, clock=lambda: float(clock_file.read_text()))
    faust.Worker(app, loglevel="INFO", quiet=True).execute_from_commandline()
    return 0


if __name__ == "__main__":
    sys.exit(main())
