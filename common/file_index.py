"""An index of the files of one directory, kept by the programs that write and remove them.

What each file holds and when it was last known used, and the files and bytes of
them all, so that nobody walks or sums the directory to know: the janitor finds
the least recently used without listing, the spill knows the bytes it holds and
its oldest uploads at any size (nginx's cache manager and Squid's swap.state do
the same). SQLite in WAL mode, `<directory>/.index.sqlite3` (hidden: no walk
counts it), shared by every process of the host; a write costs about 0.05 ms.

The index may lag the disk, and that is allowed for: a file read since it was
indexed has a newer access time (common.files.touch), a file may be removed by
hand, a program may die between a file's rename and its row. The janitor
corrects the first two as it meets them (a file read again gets a second
chance, as in a CLOCK cache), and a walk of the directory rebuilds the index
when there is none, or when a program could not write to it (`.index-stale`).
"""

from __future__ import annotations

import dataclasses
import logging
import sqlite3
import threading
import time
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger(__name__)
INDEX_NAME = ".index.sqlite3"
STALE_NAME = ".index-stale"  # a program failed to write a row: rebuild
SWEEPER_CACHE_KIB = 65536  # the janitor's page cache while it evicts (emptied after)
SWEEPER_CHECKPOINT_PAGES = 8192  # WAL pages between its checkpoints (32 MiB)
_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    name TEXT PRIMARY KEY, size INTEGER NOT NULL, used_s REAL NOT NULL
) WITHOUT ROWID;
-- Covering (a WITHOUT ROWID index holds the key, name): the oldest are read in order
-- without one lookup of the table per row.
CREATE INDEX IF NOT EXISTS files_by_age ON files (used_s, size);
DROP INDEX IF EXISTS files_by_use;
CREATE TABLE IF NOT EXISTS totals (
    id INTEGER PRIMARY KEY CHECK (id = 0), files INTEGER NOT NULL, bytes INTEGER NOT NULL
);
INSERT OR IGNORE INTO totals VALUES (0, 0, 0);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TRIGGER IF NOT EXISTS file_added AFTER INSERT ON files BEGIN
    UPDATE totals SET files = files + 1, bytes = bytes + NEW.size;
END;
CREATE TRIGGER IF NOT EXISTS file_removed AFTER DELETE ON files BEGIN
    UPDATE totals SET files = files - 1, bytes = bytes - OLD.size;
END;
CREATE TRIGGER IF NOT EXISTS file_resized AFTER UPDATE OF size ON files BEGIN
    UPDATE totals SET bytes = bytes + NEW.size - OLD.size;
END;
"""


@dataclasses.dataclass(frozen=True)
class Entry:
    name: str  # the file's path under the directory, with "/"
    size: int
    used_s: float  # when it was last known used (written, or read: epoch seconds)


class FileIndex:
    def __init__(self, directory: Path, sweeper: bool = False) -> None:
        """`sweeper`: the connection removes rows by the thousand (the janitor):
        it keeps more pages and checkpoints less often, so a page of the table
        is written about once for all the rows it loses, not once per batch."""
        self.directory = directory
        self._sweeper = sweeper
        self._lock = threading.Lock()  # one connection, used by every thread of a process
        self._db: sqlite3.Connection | None = None  # opened at first use

    def name_of(self, path: Path) -> str:
        return path.relative_to(self.directory).as_posix()

    # --- what the programs that write and remove files say -----------------------

    def added(self, path: Path, size: int, used_s: float | None = None) -> None:
        """`path` (under the directory) now holds `size` bytes (written again: replaced)."""
        used_s = time.time() if used_s is None else used_s
        self._change(
            "INSERT INTO files VALUES (?, ?, ?) ON CONFLICT (name) "
            "DO UPDATE SET size = excluded.size, used_s = excluded.used_s",
            (self.name_of(path), size, used_s),
        )

    def removed(self, path: Path) -> None:
        self._change("DELETE FROM files WHERE name = ?", (self.name_of(path),))

    def removed_starting(self, prefix: str) -> None:
        """Every file whose name (under the directory) begins with `prefix` is gone."""
        # A range on the primary key (not LIKE, which would scan): past the prefix,
        # its last character's successor.
        past = prefix[:-1] + chr(ord(prefix[-1]) + 1)
        self._change("DELETE FROM files WHERE name >= ? AND name < ?", (prefix, past))

    # --- what the janitor and the uploader ask -----------------------------------

    def totals(self) -> tuple[int, int]:
        """Files and bytes indexed."""
        with self._lock:
            files, size = self._connection().execute("SELECT files, bytes FROM totals").fetchone()
        return int(files), int(size)

    def oldest(self, limit: int, after: float = float("-inf")) -> list[Entry]:
        """Up to `limit` entries least recently used first, used after `after`."""
        query = "SELECT name, size, used_s FROM files WHERE used_s > ? ORDER BY used_s LIMIT ?"
        with self._lock:
            rows = self._connection().execute(query, (after, limit)).fetchall()
        return [Entry(name, size, used_s) for name, size, used_s in rows]

    def settle(self, gone: list[str], used_again: list[tuple[str, float]]) -> None:
        """What a sweep found, in one transaction: the files `gone` (evicted, or
        removed by other means), and those read since they were indexed (name,
        when: their rows move)."""
        try:
            with self._lock:
                db = self._connection()
                db.execute("BEGIN")
                db.executemany("DELETE FROM files WHERE name = ?", [(name,) for name in gone])
                moved = [(used_s, name) for name, used_s in used_again]
                db.executemany("UPDATE files SET used_s = ? WHERE name = ?", moved)
                db.execute("COMMIT")
        except (sqlite3.Error, OSError) as exc:
            self._mark_stale(exc)

    # --- rebuilding --------------------------------------------------------------

    def built(self) -> bool:
        """Whether the index was built (or rebuilt) and no program has failed to write to it."""
        if (self.directory / STALE_NAME).exists():
            return False
        with self._lock:
            row = self._connection().execute("SELECT value FROM meta WHERE key = 'built'")
            return row.fetchone() is not None

    def rebuilt(self, entries: Iterable[Entry]) -> int:
        """Add `entries` (a walk of the directory) that the index lacks, in batches;
        mark the index built. Rows the programs write meanwhile are kept."""
        (self.directory / STALE_NAME).unlink(missing_ok=True)
        count, batch = 0, []
        for entry in entries:
            batch.append((entry.name, entry.size, entry.used_s))
            if len(batch) >= 1000:
                count += self._insert_missing(batch)
                batch = []
        count += self._insert_missing(batch)
        self._change("INSERT OR REPLACE INTO meta VALUES ('built', ?)", (str(time.time()),))
        return count

    def _insert_missing(self, rows: list[tuple[str, int, float]]) -> int:
        with self._lock:
            db = self._connection()
            db.execute("BEGIN")
            added = db.executemany("INSERT OR IGNORE INTO files VALUES (?, ?, ?)", rows).rowcount
            db.execute("COMMIT")
            return max(0, added)

    # --- the database ------------------------------------------------------------

    def _change(self, statement: str, values: tuple[object, ...]) -> None:
        """Run one change; a failure costs the index its accuracy, never the caller
        its work: the directory is marked for a rebuild."""
        try:
            with self._lock:
                self._connection().execute(statement, values)
        except (sqlite3.Error, OSError) as exc:
            self._mark_stale(exc)

    def _mark_stale(self, exc: Exception) -> None:
        log.warning("index of %s not updated (%s): it will be rebuilt", self.directory, exc)
        try:
            (self.directory / STALE_NAME).touch()
        except OSError:
            pass

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            self.directory.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(
                self.directory / INDEX_NAME,
                timeout=30,
                isolation_level=None,  # each statement commits, unless in BEGIN...COMMIT
                check_same_thread=False,
            )
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")  # WAL: durable at checkpoints
            if self._sweeper:
                db.execute(f"PRAGMA cache_size=-{SWEEPER_CACHE_KIB}")
                db.execute(f"PRAGMA wal_autocheckpoint={SWEEPER_CHECKPOINT_PAGES}")
            db.executescript(f"BEGIN IMMEDIATE; {_SCHEMA} COMMIT;")
            self._db = db
        return self._db

    def shrink_memory(self) -> None:
        """Let the pages this connection keeps go (a sweeper's, after a pass)."""
        with self._lock:
            if self._db is not None:
                self._db.execute("PRAGMA shrink_memory")

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None
