"""LocalState: ``registers_since`` survives a restart exactly, and a state file written before it
existed still loads (no clears yet)."""

from __future__ import annotations

import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path

from services.acquisition.state import LocalState

BEIJING = timezone(timedelta(hours=8))


def reloaded(path: Path) -> datetime | None:
    state = LocalState(path)
    try:
        return state.registers_since("e/1")
    finally:
        state.close()


def test_registers_since_survives_save_and_reload(tmp_path: Path) -> None:
    path = tmp_path / "acq.state.db"
    at = datetime(2026, 11, 20, 17, 0, 0, 123_456, tzinfo=BEIJING)  # a meter clock's offset
    state = LocalState(path)
    assert state.registers_since("e/1") is None
    state.set_registers_since("e/1", at)
    assert state.next_sequence("e/1") == 1
    state.close()
    again = LocalState(path)
    since = again.registers_since("e/1")
    assert since == at and since is not None and since.utcoffset() == at.utcoffset()
    assert again.registers_since("e/2") is None and again.next_sequence("e/1") == 2
    later = at + timedelta(days=1)
    again.set_registers_since("e/1", later)  # a second clear replaces the first
    again.save()
    again.db.close()  # a crash after save: what was saved is there
    assert reloaded(path) == later


def test_a_state_file_from_before_registers_since_loads(tmp_path: Path) -> None:
    path = tmp_path / "old.state.db"
    old = sqlite3.connect(path)
    old.execute("CREATE TABLE sequences (meter_id TEXT PRIMARY KEY, seq INTEGER NOT NULL)")
    old.execute("CREATE TABLE commands (command_id TEXT PRIMARY KEY, at TEXT NOT NULL)")
    old.execute("CREATE TABLE registrations (event_id TEXT PRIMARY KEY)")
    old.execute("INSERT INTO sequences VALUES ('e/1', 41)")
    old.execute("INSERT INTO commands VALUES ('c-1', '2026-11-01T00:00:00+00:00')")
    old.commit()
    old.close()
    state = LocalState(path)
    assert state.registers_since("e/1") is None
    assert state.next_sequence("e/1") == 42 and state.executed("c-1")
    at = datetime(2026, 11, 21, 1, 2, 3, tzinfo=BEIJING)
    state.set_registers_since("e/1", at)
    state.close()
    assert reloaded(path) == at
