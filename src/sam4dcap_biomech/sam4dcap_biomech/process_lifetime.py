"""The lifetime of a process started by another one (a node under a runner or `ros2 launch`,
the live calibration's scaling process): it ends when its parent dies. ROS-free."""

from __future__ import annotations

import ctypes
import os
import signal
import sys


def die_with_parent() -> int:
    """Ask Linux to send this process SIGTERM when its parent dies (prctl PR_SET_PDEATHSIG), so
    a node started by a runner or `ros2 launch` that was SIGKILLed does not live on as an
    orphan. Returns the parent pid to watch as well (the parent may have died before the
    prctl; the spin loop also compares getppid() with it)."""
    ppid = os.getppid()
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            PR_SET_PDEATHSIG = 1
            libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        except (OSError, AttributeError):
            pass
    return ppid
