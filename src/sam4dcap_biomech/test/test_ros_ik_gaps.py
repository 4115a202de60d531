"""ik_node in its own process when the person disappears mid-stream (real rclpy processes): no
JointState while lost, JointKinematics marked LOST with NaN positions, a fresh solve (velocity NaN,
no warm start) after re-acquisition, and the node's health on /diagnostics seen by a subscriber."""

from __future__ import annotations

import numpy as np
import opensim
import pytest
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from sensor_msgs.msg import JointState

from sam4dcap_biomech.markersets import BLAZEPOSE33
from sam4dcap_biomech.model_builder import write_model
from sam4dcap_biomech.ros.node_plumbing import DIAGNOSTICS_QOS, RESULTS_QOS
from sam4dcap_biomech.ros.topics import DIAGNOSTICS_TOPIC, KINEMATICS_TOPIC, joint_states_topic
from sam4dcap_biomech.synthetic import gait_trajectory, markers_from_coordinates
from sam4dcap_msgs.msg import JointKinematics, VirtualMarkers

from ros_harness import markers_msg, node_log, start_node, stamp_key, stop_node

RATE_HZ = 30.0
T0 = 50.0
LOST = range(12, 22)        # the person out of view: the markers node sends NaN markers


def test_person_lost_mid_stream(ros, tmp_path, monkeypatch):
    monkeypatch.setenv("SAM4DCAP_CACHE", str(tmp_path / "cache"))
    model = write_model(tmp_path / "subject.osim", height_m=1.75, mass_kg=70.0)
    opensim.Logger.setLevelString("warn")
    coords = gait_trajectory(1.2, RATE_HZ, height_m=1.75)
    markers = markers_from_coordinates(opensim.Model(str(model)), coords, marker_names=BLAZEPOSE33)
    proc = start_node("ik_node", {"model_path": str(model), "regularize_unobserved": False},
                      log_path=tmp_path / "ik.log")
    try:
        states = ros.collect(JointState, joint_states_topic(1))
        kinematics = ros.collect(JointKinematics, KINEMATICS_TOPIC)
        health = ros.collect(DiagnosticArray, DIAGNOSTICS_TOPIC, DIAGNOSTICS_QOS)
        pub = ros.node.create_publisher(VirtualMarkers, "/sam4dcap/markers", RESULTS_QOS)
        ros.wait_for_subscriber(pub, procs=[proc])
        n = markers.n_frames
        for i in range(n):
            positions = np.full_like(markers.values[i], np.nan) if i in LOST else markers.values[i]
            pub.publish(markers_msg(T0 + markers.time[i], BLAZEPOSE33, positions))
            ros.spin_until(lambda: len(kinematics) > i, 10.0, procs=[proc])   # noqa: B023 (called in this iteration); one frame at a time
        assert ros.spin_until(lambda: len(kinematics) >= n, 30.0, procs=[proc]), node_log(proc)[-2000:]
        ros.spin_until(lambda: False, 1.2)      # a periodic health message after the last frame
        assert proc.poll() is None
    finally:
        assert stop_node(proc) == 0, node_log(proc)[-2000:]

    stamp = {stamp_key(markers_msg(T0 + t, (), np.zeros((0, 3))).header.stamp): i for i, t in enumerate(markers.time)}
    # JointState: only for frames with a person, never a stale or invented value in between.
    assert [stamp[stamp_key(m.header.stamp)] for m in states] == [i for i in range(n) if i not in LOST]
    # JointKinematics: every frame, with its validity.
    by_frame = {stamp[stamp_key(m.header.stamp)]: m for m in kinematics}
    assert sorted(by_frame) == list(range(n))
    for i, m in by_frame.items():
        if i in LOST:
            assert m.state == JointKinematics.STATE_LOST and np.isnan(m.position).all() and not any(m.confidence)
        else:
            assert m.state == JointKinematics.STATE_VALID and np.isfinite(m.position).all()
    # Re-acquisition: a fresh solve (no velocity carried over the gap), on the true pose.
    names = list(states[0].name)
    first_back = next(m for m in states if stamp[stamp_key(m.header.stamp)] == LOST[-1] + 1)
    assert len(first_back.velocity) == len(names) and np.isnan(first_back.velocity).all()
    q = dict(zip(names, first_back.position))
    for c in ("hip_flexion_r", "knee_angle_l", "pelvis_tilt", "pelvis_rotation"):
        assert q[c] == pytest.approx(coords.get(c)[LOST[-1] + 1], abs=1e-3), c
    later = next(m for m in states if stamp[stamp_key(m.header.stamp)] == LOST[-1] + 3)
    assert len(later.velocity) == len(names)
    # Health: WARN "person lost" during the gap, OK with the fit residual and solve time otherwise.
    statuses = [s for a in health for s in a.status if s.name == "sam4dcap/ik_node"]
    levels = [s.level for s in statuses]
    assert DiagnosticStatus.WARN in levels and DiagnosticStatus.OK in levels
    lost = next(s for s in statuses if s.level == DiagnosticStatus.WARN and "person lost" in s.message)
    assert {kv.key: kv.value for kv in lost.values}["tracking"] == "lost"
    assert statuses[-1].level == DiagnosticStatus.OK
    ok = [{kv.key: kv.value for kv in s.values} for s in statuses if s.level == DiagnosticStatus.OK]
    assert all(v["tracking"] == "valid" and float(v["marker_rms_m"]) < 1e-3 for v in ok)
    assert any(float(v["processing_time_ms_mean"]) > 0 for v in ok)    # "nan" for a period without frames
