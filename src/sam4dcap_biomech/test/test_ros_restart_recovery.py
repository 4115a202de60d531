"""Restart of a killed node, the mechanisms behind the 1 s recovery (the time itself is measured
by bench/ik_node_restart.py, never asserted here):

- the Fast DDS profile loads (a broken file silently falls back to defaults: no 64 MB segment);
- shm_recovery releases exactly the dead, still-mapped shared-memory ports, never a live one;
- with a real ik_node killed mid-stream: its port is left stale (dead reader, still mapped by the
  surviving publisher), the restarted node takes it over and JointState resumes, and the
  profile's 5 s lease drops the dead subscriber (Fast DDS's default lease is 20 s).
"""

from __future__ import annotations

import fcntl
import mmap
import os
import re
import signal
from pathlib import Path

import opensim
import pytest
from sensor_msgs.msg import JointState

from sam4dcap_biomech.markersets import BLAZEPOSE33
from sam4dcap_biomech.model_builder import write_model
from sam4dcap_biomech.ros import shm_recovery
from sam4dcap_biomech.ros.topics import joint_states_topic
from sam4dcap_biomech.ros.node_plumbing import RESULTS_QOS
from sam4dcap_biomech.synthetic import gait_trajectory, markers_from_coordinates
from sam4dcap_msgs.msg import VirtualMarkers

from ros_harness import Harness, markers_msg, node_log, start_node, stop_node

SHM = Path("/dev/shm")
# A domain no test run uses (conftest picks 10..99): fake ports for the unit tests live there.
FAKE_DOMAIN = 200


def own_segment_sizes_mb() -> list[float]:
    sizes = []
    for line in Path(f"/proc/{os.getpid()}/maps").read_text().splitlines():
        m = re.match(r"([0-9a-f]+)-([0-9a-f]+) .* /dev/shm/fastdds_[0-9a-f]{16}$", line)
        if m:
            sizes.append((int(m.group(2), 16) - int(m.group(1), 16)) / 2**20)
    return sizes


def test_profile_is_loaded_with_the_64mb_segment():
    harness = Harness("profile_check")
    try:
        sizes = own_segment_sizes_mb()
    finally:
        harness.close()
    assert any(s >= 64 for s in sizes), f"no 64 MB shared-memory segment ({sizes} MB): profile not loaded"


@pytest.fixture
def fake_ports():
    """Creates fake port files in FAKE_DOMAIN; removes whatever is left."""
    made: list[Path] = []

    def make(index: int, *, mapped: bool):
        port = shm_recovery.domain_port_range(FAKE_DOMAIN).start + 11 + 2 * index
        lock = SHM / f"fastdds_port{port}_el"
        lock.touch()
        made.append(lock)
        mapping = None
        if mapped:
            segment = SHM / f"fastdds_port{port}"
            segment.write_bytes(b"\0" * 4096)
            made.append(segment)
            fd = os.open(segment, os.O_RDWR)
            mapping = mmap.mmap(fd, 4096)
            os.close(fd)
        return port, lock, mapping

    yield make
    for path in made:
        path.unlink(missing_ok=True)


def test_release_takes_only_dead_ports_that_someone_still_maps(fake_ports):
    dead_mapped, dead_mapped_lock, m1 = fake_ports(0, mapped=True)
    live_mapped, live_lock, m2 = fake_ports(1, mapped=True)
    dead_unmapped, dead_unmapped_lock, _ = fake_ports(2, mapped=False)
    # A live reader holds its lock (Fast DDS: flock on the `_el` file) in another open file.
    holder = os.open(live_lock, os.O_RDONLY)
    fcntl.flock(holder, fcntl.LOCK_EX | fcntl.LOCK_NB)
    try:
        assert shm_recovery.stale_shm_ports(FAKE_DOMAIN) == [dead_mapped]
        assert shm_recovery.release_stale_shm_ports(FAKE_DOMAIN) == [dead_mapped]
        assert not dead_mapped_lock.exists()
        assert live_lock.exists() and dead_unmapped_lock.exists()
        assert shm_recovery.stale_shm_ports(FAKE_DOMAIN) == []
    finally:
        os.close(holder)
        m1.close()
        m2.close()


def test_release_can_be_disabled(fake_ports, monkeypatch):
    port, lock, mapping = fake_ports(0, mapped=True)
    monkeypatch.setenv(shm_recovery.ENABLE_ENV, "0")
    try:
        assert shm_recovery.release_stale_shm_ports(FAKE_DOMAIN) == []
        assert lock.exists()
    finally:
        mapping.close()


def test_ports_of_other_domains_are_left_alone(fake_ports):
    port, lock, mapping = fake_ports(0, mapped=True)
    try:
        assert shm_recovery.release_stale_shm_ports(FAKE_DOMAIN + 1) == []
        assert lock.exists()
    finally:
        mapping.close()


def test_killed_node_port_is_taken_over_by_its_restart(tmp_path):
    opensim.Logger.setLevelString("warn")
    model = write_model(tmp_path / "model.osim", height_m=1.75, mass_kg=70.0)
    markers = markers_from_coordinates(opensim.Model(str(model)), gait_trajectory(1.0, 30.0),
                                       marker_names=BLAZEPOSE33)
    domain = int(os.environ["ROS_DOMAIN_ID"])
    ros = Harness("restart_recovery_test")
    states = ros.collect(JointState, joint_states_topic(1))
    pub = ros.node.create_publisher(VirtualMarkers, "/sam4dcap/markers", RESULTS_QOS)
    counter = {"i": 0}

    def publish_next():  # live source: the surviving writer into the node's port
        i = counter["i"]
        counter["i"] += 1
        pub.publish(markers_msg(100.0 + i / 30.0, BLAZEPOSE33, markers.values[i % markers.n_frames]))

    ros.node.create_timer(1.0 / 30.0, publish_next)
    first = start_node("ik_node", {"model_path": str(model)}, log_path=tmp_path / "ik1.log")
    second = None
    try:
        assert ros.spin_until(lambda: len(states) >= 5, 60.0, procs=[first]), node_log(first)[-2000:]
        # Other tests' leftovers in this domain, if any, are not this node's (it holds its locks).
        before = set(shm_recovery.stale_shm_ports(domain))
        os.kill(first.pid, signal.SIGKILL)
        first.wait(timeout=10)
        ros.spin_until(lambda: False, 0.3)  # the harness keeps writing into the dead port
        stale = set(shm_recovery.stale_shm_ports(domain)) - before
        assert stale, "the killed node left no stale shared-memory port (mechanism changed?)"
        assert all(p in shm_recovery.domain_port_range(domain) for p in stale)

        n_before = len(states)
        second = start_node("ik_node", {"model_path": str(model)}, log_path=tmp_path / "ik2.log")
        assert ros.spin_until(lambda: len(states) > n_before + 5, 60.0, procs=[second]), node_log(second)[-2000:]
        # The restarted node released the dead lock and reads from that port now.
        assert not stale & set(shm_recovery.stale_shm_ports(domain))
        # Lease 5 s (profile): the dead subscriber is dropped; with Fast DDS's 20 s default it
        # would still be matched when this bound ends.
        assert ros.spin_until(lambda: pub.get_subscription_count() == 1, 15.0), \
            f"{pub.get_subscription_count()} subscribers still matched: is the profile's lease in force?"
    finally:
        stop_node(first)
        if second is not None:
            assert stop_node(second) == 0, node_log(second)[-2000:]
        ros.close()
