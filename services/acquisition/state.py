"""Local state that must outlive a restart: per-meter reading sequences, the time each meter's
registers count from, and executed commands.

Kept in a small SQLite file next to the outbox (or in memory for tests). Sequences only ever
grow, so consumers can order and deduplicate a meter's readings across restarts; executed
command ids make a redelivered command harmless. ``registers_since`` is the ``replaced_at`` of
the last ``MeterReplaced`` published for a meter (its clear), which every later reading carries.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS sequences (meter_id TEXT PRIMARY KEY, seq INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS commands (command_id TEXT PRIMARY KEY, at TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS registrations (event_id TEXT PRIMARY KEY)",
    # added later: a state file without it simply has no clears yet
    "CREATE TABLE IF NOT EXISTS registers_since (meter_id TEXT PRIMARY KEY, at TEXT NOT NULL)",
)


class LocalState:
    """Per-meter sequences and ``registers_since`` (in memory, saved by :meth:`save`) and the
    executed command ids."""

    def __init__(self, path: Path | None = None) -> None:
        self.db = sqlite3.connect(str(path) if path else ":memory:", check_same_thread=False)
        for statement in _SCHEMA:
            self.db.execute(statement)
        self.db.commit()
        self._seq = dict(self.db.execute("SELECT meter_id, seq FROM sequences").fetchall())
        self._dirty: set[str] = set()
        self._since = {
            meter_id: datetime.fromisoformat(at)
            for meter_id, at in self.db.execute("SELECT meter_id, at FROM registers_since").fetchall()
        }
        self._since_dirty: set[str] = set()

    def next_sequence(self, meter_id: str) -> int:
        """The next sequence of a meter's readings (1, 2, …)."""
        value = self._seq.get(meter_id, 0) + 1
        self._seq[meter_id] = value
        self._dirty.add(meter_id)
        return value

    def registers_since(self, meter_id: str) -> datetime | None:
        """When the meter's registers last restarted (a clear's ``replaced_at``); None: never."""
        return self._since.get(meter_id)

    def set_registers_since(self, meter_id: str, at: datetime) -> None:
        """Record a published ``MeterReplaced``'s ``replaced_at`` (saved by :meth:`save`)."""
        self._since[meter_id] = at
        self._since_dirty.add(meter_id)

    def save(self) -> None:
        """Persist the sequences handed out and the ``registers_since`` set since the last save."""
        if not (self._dirty or self._since_dirty):
            return
        self.db.executemany(
            "INSERT INTO sequences (meter_id, seq) VALUES (?, ?) "
            "ON CONFLICT(meter_id) DO UPDATE SET seq = excluded.seq",
            [(m, self._seq[m]) for m in self._dirty],
        )
        self.db.executemany(
            "INSERT INTO registers_since (meter_id, at) VALUES (?, ?) "
            "ON CONFLICT(meter_id) DO UPDATE SET at = excluded.at",
            [(m, self._since[m].isoformat()) for m in self._since_dirty],
        )
        self.db.commit()
        self._dirty.clear()
        self._since_dirty.clear()

    def seen_registration(self, event_id: str) -> bool:
        """True when this meter registration (content-derived id) was published already."""
        return (
            self.db.execute("SELECT 1 FROM registrations WHERE event_id = ?", (event_id,)).fetchone()
            is not None
        )

    def remember_registration(self, event_id: str) -> None:
        """Remember a published registration (after it is in the outbox)."""
        self.db.execute("INSERT OR IGNORE INTO registrations (event_id) VALUES (?)", (event_id,))
        self.db.commit()

    def executed(self, command_id: str) -> bool:
        """True when the command was carried out already."""
        row = self.db.execute("SELECT 1 FROM commands WHERE command_id = ?", (command_id,)).fetchone()
        return row is not None

    def mark_executed(self, command_id: str) -> None:
        """Remember a command as carried out (after its outcome is in the outbox)."""
        self.db.execute(
            "INSERT OR IGNORE INTO commands (command_id, at) VALUES (?, ?)",
            (command_id, datetime.now(UTC).isoformat()),
        )
        self.db.commit()

    def close(self) -> None:
        """Save and close."""
        self.save()
        self.db.close()
