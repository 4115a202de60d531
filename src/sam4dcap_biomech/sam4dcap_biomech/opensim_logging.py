"""Route OpenSim's own log (opensim.Logger) to a per-run file while a tool runs.

OpenSim tools log a lot at info level; a run's log belongs next to its outputs, not in the
terminal. `opensim_log(path)` adds a file sink for the duration of a block and restores the
previous level afterwards. OpenSim has one global logger, so nested blocks share it (the
innermost file wins until it closes).
Some OpenSim code prints straight to the C stdout (model summaries, per-frame IK lines of the
console sink); `opensim_log` also points file descriptor 1 at the log file (or /dev/null)
for the block, so a CLI run's terminal shows sam4dcap's own messages only.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import sys
from pathlib import Path

log = logging.getLogger(__name__)


def quiet_opensim(level: str = "warn") -> None:
    """Keep OpenSim's console chatter at `level` (debug/info/warn/error/off) for library use."""
    import opensim

    opensim.Logger.setLevelString(level)


@contextlib.contextmanager
def stdout_to(path: str | Path | None):
    """Point the process's fd 1 (C and Python stdout) at `path` (appended) or /dev/null."""
    sys.stdout.flush()
    libc = ctypes.CDLL(None)
    libc.fflush(None)
    saved = os.dup(1)
    target = os.open(str(path) if path is not None else os.devnull, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.dup2(target, 1)
        yield
    finally:
        sys.stdout.flush()
        libc.fflush(None)
        os.dup2(saved, 1)
        os.close(saved)
        os.close(target)


@contextlib.contextmanager
def opensim_log(path: str | Path | None, *, level: str = "info"):
    """Send OpenSim's log to `path` (created/overwritten) inside the block; None = no file."""
    import opensim

    previous = opensim.Logger.getLevelString()
    if path is None:
        try:
            with stdout_to(None):
                yield None
        finally:
            if opensim.Logger.getLevelString().lower() != previous.lower():
                opensim.Logger.setLevelString(previous)
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        path.unlink()
    opensim.Logger.removeFileSink()
    opensim.Logger.addFileSink(str(path))
    if previous.lower() != level.lower():
        opensim.Logger.setLevelString(level)
    log.debug("OpenSim log -> %s", path)
    try:
        with stdout_to(os.devnull):
            yield path
    finally:
        opensim.Logger.removeFileSink()
        if opensim.Logger.getLevelString().lower() != previous.lower():
            opensim.Logger.setLevelString(previous)
