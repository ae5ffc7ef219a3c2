"""Which held uploads a processor wrote and no message names yet.

A processor holds an upload (writes its file, durably) before it publishes
the message that names it. Killed between the two, it would leave a file that
no message will ever name, counted in spill_max_bytes for ever (its job was
not acked: it is made again, and held again under another name). So each
process that holds uploads keeps a journal, `held/.journals/<id>`, locked
(flock) for as long as it lives: a line `+<file>` before it writes a file,
`-<file>` once that file is settled (its message confirmed, or the file
released or moved to the spill). The uploader reclaims the journals of
processes that are gone (a journal nobody holds the lock of): the files
still pending in one go, then the journal. A journal is rewritten with what
is pending every COMPACT_LINES lines, so it stays small however long its
process lives.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import secrets
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)
JOURNALS_DIR = ".journals"
COMPACT_LINES = 10_000
_TEMPORARY = ".tmp-"
_TEMPORARY_GONE_S = 60.0  # a journal being made is locked within microseconds


class HeldJournal:
    """This process's journal (made at its first line)."""

    def __init__(self, held_dir: Path) -> None:
        self._path = held_dir / JOURNALS_DIR / secrets.token_hex(8)
        self._fd: int | None = None
        self._pending: set[str] = set()
        self._lines = 0
        self._lock = threading.Lock()  # job threads write, pika's thread settles

    def writing(self, name: str) -> None:
        """The file `name` is about to be written: pending until settled. OSError
        when the journal cannot say so (then the file must not be written)."""
        with self._lock:
            self._pending.add(name)
            try:
                self._append(f"+{name}\n")
            except OSError:
                self._pending.discard(name)
                raise

    def settled(self, name: str) -> None:
        """The file `name` is named by a confirmed message, or gone, or moved.
        Never raises: a line that cannot be written (a full disk) costs at most
        that file, removed if this process dies before its journal is rewritten
        (its message then finds it gone, and the next miss makes it again)."""
        with self._lock:
            if name in self._pending:
                self._pending.remove(name)
                try:
                    self._append(f"-{name}\n")
                except OSError as exc:
                    log.warning("the journal of held uploads could not settle %s: %s", name, exc)

    def close(self) -> None:
        """This process stops: its journal goes when nothing is pending (else
        the uploader reclaims what is)."""
        with self._lock:
            if self._fd is None:
                return
            if not self._pending:
                self._path.unlink(missing_ok=True)
            os.close(self._fd)
            self._fd = None

    def _append(self, line: str) -> None:
        if self._fd is None or self._lines >= COMPACT_LINES:
            self._rewrite()
        assert self._fd is not None
        os.write(self._fd, line.encode())
        self._lines += 1

    def _rewrite(self) -> None:
        """The journal anew, with the pending files only; it is locked before its
        name appears, so nobody ever finds it unlocked while this process lives."""
        self._path.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=self._path.parent, prefix=_TEMPORARY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # never waits: nobody else knows its name
            os.write(fd, "".join(f"+{name}\n" for name in self._pending).encode())
            os.replace(temporary, self._path)
        except OSError:
            os.close(fd)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            raise
        if self._fd is not None:
            os.close(self._fd)
        self._fd, self._lines = fd, len(self._pending)


def pending_of_gone_processes(held_dir: Path) -> Iterator[set[str]]:
    """For each journal whose process is gone, the files it left pending; the
    journal is removed once the caller has dealt with them (and kept when the
    caller raises). Journals of living processes are left alone."""
    directory = held_dir / JOURNALS_DIR
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return
    for name in names:
        path = directory / name
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            continue  # its process closed it meanwhile
        try:
            if not _is_gone(fd, path):
                continue
            if name.startswith(_TEMPORARY):  # its process died as it made it
                if time.time() - os.fstat(fd).st_mtime > _TEMPORARY_GONE_S:
                    path.unlink(missing_ok=True)
                continue
            yield _replayed(fd)
            path.unlink(missing_ok=True)
        finally:
            os.close(fd)


def _is_gone(fd: int, path: Path) -> bool:
    """Whether the process of the journal open as `fd` is gone: nobody holds its
    lock, and `path` still names it (not rewritten under us)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    with contextlib.suppress(FileNotFoundError):
        current, mine = os.stat(path), os.fstat(fd)
        return (current.st_dev, current.st_ino) == (mine.st_dev, mine.st_ino)
    return False


def _replayed(fd: int) -> set[str]:
    pending: set[str] = set()
    with os.fdopen(os.dup(fd), "r", encoding="ascii", errors="replace") as journal:
        for line in journal:
            sign, name = line[:1], line[1:].strip()
            if sign == "+":
                pending.add(name)
            elif sign == "-":
                pending.discard(name)
    return pending
