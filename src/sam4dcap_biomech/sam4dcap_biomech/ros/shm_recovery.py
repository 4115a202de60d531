"""Fast DDS shared-memory ports left behind by a killed node: release them before a restart.

Why (measured with bench/ik_node_restart.py): a node restarted after SIGKILL gets the same DDS
participant id, hence the same shared-memory port numbers, as the dead process. Fast DDS in the
new process sees the dead port as a "zombie" (its `_el` reader lock file is no longer locked),
unlinks it and creates a fresh port under the same name; but the surviving processes keep the
dead port mapped and go on writing into it until their SHM watchdog (1 s period, two checks)
notices the dead reader. Markers sent to the restarted ik_node were lost for 1-3 s that way.

Removing the dead, unlocked `_el` file first makes Fast DDS take its other path: it opens the
existing port, which the survivors still write to, and either reads from it or (after the
profile's `healthy_check_timeout_ms`) marks it broken, which makes every writer reopen the new
port on its next send. Only ports of this ROS domain that a live process still maps are touched:
a port nobody maps is left to Fast DDS's own zombie handling.

No rclpy here: run_node() calls release_stale_shm_ports() before rclpy.init().
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
from pathlib import Path

log = logging.getLogger(__name__)

SHM_DIR = Path("/dev/shm")
# RTPS well-known ports (spec 9.6.1.1, Fast DDS defaults, not overridden in our profile):
# PB + DG * domain + offsets + PG * participant id.
PORT_BASE, DOMAIN_GAIN = 7400, 250
# Environment switch for measuring the baseline (bench/ik_node_restart.py): "0" disables.
ENABLE_ENV = "SAM4DCAP_DDS_SHM_RECOVERY"
_LOCK_RE = re.compile(r"^fastdds_port(\d+)_el$")


def domain_port_range(domain_id: int) -> range:
    start = PORT_BASE + DOMAIN_GAIN * domain_id
    return range(start, start + DOMAIN_GAIN)


def _lock_is_free(path: Path) -> bool:
    """True if nobody holds the flock Fast DDS takes on a port's `_el` file (its reader died)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    finally:
        os.close(fd)  # also releases the probe's lock
    return True


def _mapped_shm_ports(ports: set[int]) -> set[int]:
    """The subset of `ports` whose segment /dev/shm/fastdds_port<N> some live process maps."""
    wanted = {f"/dev/shm/fastdds_port{p}": p for p in ports}
    found: set[int] = set()
    for maps in Path("/proc").glob("[0-9]*/maps"):
        try:
            text = maps.read_text()
        except OSError:  # process gone or not ours
            continue
        for name, port in wanted.items():
            if port not in found and name + "\n" in text:
                found.add(port)
        if len(found) == len(wanted):
            break
    return found


def stale_shm_ports(domain_id: int | None = None) -> list[int]:
    """Shared-memory ports of `domain_id` (default ROS_DOMAIN_ID or 0) whose exclusive reader is
    dead while a live process still maps the port: the ones a restarted node must take over."""
    if domain_id is None:
        domain_id = int(os.environ.get("ROS_DOMAIN_ID", "0") or 0)
    if not SHM_DIR.is_dir():
        return []
    in_domain = domain_port_range(domain_id)
    dead = set()
    for path in SHM_DIR.iterdir():
        match = _LOCK_RE.match(path.name)
        if match and int(match.group(1)) in in_domain and _lock_is_free(path):
            dead.add(int(match.group(1)))
    return sorted(_mapped_shm_ports(dead)) if dead else []


def release_stale_shm_ports(domain_id: int | None = None) -> list[int]:
    """Remove the `_el` lock files of stale_shm_ports(); returns the ports released.

    Safe against live readers: a file is removed only while this process holds its lock.
    Disabled with SAM4DCAP_DDS_SHM_RECOVERY=0. Never raises (a failure only costs recovery time).
    """
    if os.environ.get(ENABLE_ENV, "1") == "0":
        return []
    released = []
    try:
        for port in stale_shm_ports(domain_id):
            path = SHM_DIR / f"fastdds_port{port}_el"
            try:
                fd = os.open(path, os.O_RDONLY)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                path.unlink()
                released.append(port)
            except OSError:  # locked meanwhile by a starting reader, or already removed
                pass
            finally:
                os.close(fd)
    except Exception as exc:  # never keep a node from starting
        log.warning("could not check for stale shared-memory ports: %s", exc)
    if released:
        log.info("released stale Fast DDS shared-memory ports %s", released)
    return released


def remove_dead_segments() -> int:
    """Delete Fast DDS shared-memory files (segments and ports, 64 MB each with our profile)
    whose owner is dead: the `_el` lock is free and no live process maps the file. What
    `fastdds shm clean` does; crashed or killed nodes otherwise leave them in /dev/shm for good.
    Returns the number of files removed. Never raises."""
    removed = 0
    try:
        locks = [p for p in SHM_DIR.glob("fastdds_*_el")] if SHM_DIR.is_dir() else []
        mapped = set()
        for maps in Path("/proc").glob("[0-9]*/maps"):
            try:
                mapped.update(line.rsplit(" ", 1)[-1] for line in maps.read_text().splitlines()
                              if "/dev/shm/fastdds_" in line)
            except OSError:
                continue
        for lock in locks:
            data = lock.with_name(lock.name[:-3])
            if str(data) in mapped:
                continue
            try:
                fd = os.open(lock, os.O_RDONLY)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                for p in (data, lock):
                    if p.exists():
                        p.unlink()
                        removed += 1
            except OSError:  # alive (locked) or gone meanwhile
                pass
            finally:
                os.close(fd)
    except Exception as exc:  # cleanup must never fail a run
        log.warning("could not clean Fast DDS shared memory: %s", exc)
    return removed
