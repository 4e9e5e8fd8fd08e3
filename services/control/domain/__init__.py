"""The pure domain of the control service (MISSION.md C1–C8): no Kafka, no I/O, no clock.
Its facts (operator facts, command lifecycle, batches) are in :mod:`libs.events.control`.

- :mod:`.schedules`   时控 timed on/off calendars
- :mod:`.protection`  负控 load limits and 恶性负载 malignant-load detection
- :mod:`.policy`      the desired supply state of a meter and the commands that change it
- :mod:`.lifecycle`   the command lifecycle fold: retries, timeouts, superseding, audit
- :mod:`.batch`       batch operations fanned out to many meters, with a summary
- :mod:`.parameters`  parameter download (prices, alarm thresholds)
"""
