"""The bot's state in SQLite (the standard library's sqlite3), next to its results: the
events cursor, every series seen with its decision, base tree and runs, and every check
posted. One bot at a time: the state is locked (flock) for as long as it is open, and a
second poller on it refuses with one line.

A series' status goes new -> waiting (not every patch received yet) | not ours |
queued -> running -> done | errored. A series left 'running' (its bot was killed) is
run again by the next poll, once; a second interruption marks it errored."""

import fcntl
import os
import sqlite3
import time
from pathlib import Path

from mptcp_nvme.errors import UsageError

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS series (
    id INTEGER PRIMARY KEY, name TEXT, version INTEGER, status TEXT NOT NULL,
    decision TEXT, tree TEXT, folder TEXT, attempts INTEGER NOT NULL DEFAULT 0,
    seen REAL, updated REAL);
CREATE TABLE IF NOT EXISTS checks (
    patch INTEGER, series INTEGER, state TEXT, description TEXT, target_url TEXT,
    posted REAL);
"""
PENDING = ("new", "waiting", "queued", "running")
FINAL = ("success", "warning", "fail")


class State:
    """The state database at ``path``, locked while open (a context manager)."""

    def __init__(self, path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = open(self.path.with_name(self.path.name + ".lock"), "a+")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.seek(0)
            holder = self._lock.read().strip() or "?"
            self._lock.close()
            raise UsageError(f"{self.path}: another patchwork bot (pid {holder}) uses this "
                             "state; one at a time") from None
        self._lock.seek(0)
        self._lock.truncate()
        self._lock.write(str(os.getpid()))
        self._lock.flush()
        self.db = sqlite3.connect(self.path, isolation_level=None)
        self.db.row_factory = sqlite3.Row
        self.db.executescript(SCHEMA)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        self.db.close()
        fcntl.flock(self._lock, fcntl.LOCK_UN)
        self._lock.close()

    # the cursor
    def cursor(self):
        row = self.db.execute("SELECT value FROM meta WHERE key = 'cursor'").fetchone()
        return row["value"] if row else None

    def set_cursor(self, value):
        self.db.execute("INSERT OR REPLACE INTO meta VALUES ('cursor', ?)", (value,))

    # series
    def see(self, series_id, name, version):
        """Record a series from an event; False when it was already known."""
        found = self.db.execute("INSERT OR IGNORE INTO series (id, name, version, status, seen, "
                                "updated) VALUES (?, ?, ?, 'new', ?, ?)",
                                (series_id, name, version, time.time(), time.time()))
        return found.rowcount == 1

    def series(self, series_id):
        row = self.db.execute("SELECT * FROM series WHERE id = ?", (series_id,)).fetchone()
        return dict(row) if row else None

    def update(self, series_id, **values):
        values["updated"] = time.time()
        names = ", ".join(f"{k} = ?" for k in values)
        self.db.execute(f"UPDATE series SET {names} WHERE id = ?", (*values.values(), series_id))

    def pending(self):
        """Series still to decide or run, oldest first."""
        marks = ", ".join("?" * len(PENDING))
        return [dict(r) for r in self.db.execute(
            f"SELECT * FROM series WHERE status IN ({marks}) ORDER BY id", PENDING)]

    def earlier_tree(self, name, version):
        """The base tree an earlier version of the series ``name`` got, else None."""
        row = self.db.execute("SELECT tree FROM series WHERE name = ? AND version < ? AND "
                              "tree IS NOT NULL ORDER BY version DESC LIMIT 1",
                              (name, version)).fetchone()
        return row["tree"] if row else None

    def all_series(self):
        return [dict(r) for r in self.db.execute("SELECT * FROM series ORDER BY id DESC")]

    # checks
    def posted(self, patch_id, series_id, state, description, target_url):
        self.db.execute("INSERT INTO checks VALUES (?, ?, ?, ?, ?, ?)",
                        (patch_id, series_id, state, description, target_url, time.time()))

    def final_posted(self, patch_id, series_id):
        """Whether a final (not pending) check went on this patch for this series."""
        marks = ", ".join("?" * len(FINAL))
        return self.db.execute(f"SELECT 1 FROM checks WHERE patch = ? AND series = ? AND "
                               f"state IN ({marks})", (patch_id, series_id, *FINAL)).fetchone() \
            is not None

    def checks(self, series_id):
        return [dict(r) for r in self.db.execute(
            "SELECT * FROM checks WHERE series = ? ORDER BY posted", (series_id,))]
