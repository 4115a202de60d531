"""remove_dead_segments deletes only Fast DDS shared memory whose owner is gone."""

import fcntl
import mmap
import os
import uuid
from pathlib import Path

from sam4dcap_biomech.ros.shm_recovery import SHM_DIR, remove_dead_segments


def _segment(tag):
    name = f"fastdds_sam4dcaptest{tag}{uuid.uuid4().hex[:8]}"
    data, lock = SHM_DIR / name, SHM_DIR / f"{name}_el"
    data.write_bytes(b"\0" * 4096)
    lock.write_bytes(b"")
    return data, lock


def test_dead_segments_go_live_ones_stay():
    dead = _segment("dead")
    locked = _segment("locked")
    mapped = _segment("mapped")
    fd_lock = os.open(locked[1], os.O_RDONLY)
    fcntl.flock(fd_lock, fcntl.LOCK_EX)          # a live reader holds its lock
    f = open(mapped[0], "r+b")
    mm = mmap.mmap(f.fileno(), 4096)             # a live process maps the segment
    try:
        remove_dead_segments()
        assert not dead[0].exists() and not dead[1].exists()
        assert locked[0].exists() and locked[1].exists()
        assert mapped[0].exists() and mapped[1].exists()
    finally:
        mm.close()
        f.close()
        os.close(fd_lock)
        for p in (*locked, *mapped):
            Path(p).unlink(missing_ok=True)
