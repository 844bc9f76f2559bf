"""One writer per run directory: the lock ``genloom train`` holds on its run directory.

Two trainers writing one run directory prune each other's checkpoints, interleave
``metrics.jsonl`` and collide on ``checkpoints/latest``. The first to start holds the lock
until it exits; a second is refused with a message that names the holder.

The exclusion itself is ``fcntl.flock`` on ``.genloom.lock``: the kernel releases it
when the holder dies, even by ``kill -9``, so a lock can never be left stale and no guess
about whether a holder is alive decides who writes. The file also holds the holder's pid,
host and start time, for the refusal message and for the warning given when a run takes
over the file a killed one left behind (its pid no longer running). ``flock`` works on local
file systems and on NFS (Linux emulates it with byte-range locks there); on a file system
that does not support it, taking the lock fails with that file system's error.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import logging
import os
import socket
import sys
from pathlib import Path
from types import TracebackType

log = logging.getLogger(__name__)

LOCK_FILE = ".genloom.lock"


class RunDirectoryBusy(RuntimeError):
    """Another genloom process is writing the run directory."""


class RunDirLock:
    """The run directory's lock, held from construction until :meth:`release` (or exit)."""

    def __init__(self, run_dir: Path) -> None:
        run_dir.mkdir(parents=True, exist_ok=True)
        self.path = run_dir / LOCK_FILE
        self._fd: int | None = None
        while self._fd is None:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read(fd)
                os.close(fd)
                raise RunDirectoryBusy(
                    f"run directory {run_dir} is in use by another genloom process "
                    f"({_describe(holder)}): two trainers in one run directory overwrite each other's "
                    "checkpoints and metrics. Wait for it to finish or stop it, or choose another "
                    f"hydra.run.dir (the lock is {self.path})"
                ) from None
            # The holder before us may have removed the file after we opened it: lock the new one.
            if not self.path.exists() or os.stat(self.path).st_ino != os.fstat(fd).st_ino:
                os.close(fd)
                continue
            self._fd = fd
        previous = _read(self._fd)
        if previous.get("pid") is not None:
            log.warning("taking over %s, left by %s, which ended without releasing it", self.path,
                        _describe(previous))
        me = {"pid": os.getpid(), "host": socket.gethostname(), "command": " ".join(sys.argv),
              "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, (json.dumps(me) + "\n").encode(), 0)
        os.fsync(self._fd)

    def release(self) -> None:
        """Remove the lock file and let go (idempotent)."""
        if self._fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # while still locked: the next holder re-checks the inode
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> RunDirLock:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


def is_held(run_dir: Path) -> bool | None:
    """Whether a live process holds ``run_dir``'s lock now; None when there is no lock file.

    Asks the lock itself (a shared ``flock`` that fails while the holder lives), so a reused pid
    or another user's process cannot mislead it. A file left by a killed holder is not held.
    """
    try:
        fd = os.open(run_dir / LOCK_FILE, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops a lock this probe took
    return False


def _read(fd: int) -> dict:
    try:
        holder = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


def _describe(holder: dict) -> str:
    if not holder:
        return "pid unknown"
    parts = [f"pid {holder.get('pid')} on {holder.get('host')}", f"started {holder.get('started')}"]
    if holder.get("command"):
        parts.append(f"command {holder['command']!r}")
    return ", ".join(parts)
