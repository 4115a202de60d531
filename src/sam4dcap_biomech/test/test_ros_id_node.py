"""id_node in its own process behind a real ik_node: markers -> IK -> ID -> JointKinetics flagged
'no external loads', finite, stamped with the capture stamps of the frames they belong to."""

from __future__ import annotations

import numpy as np
import opensim

from sam4dcap_biomech.markersets import BLAZEPOSE33
from sam4dcap_biomech.model_builder import write_model
from sam4dcap_biomech.ros.node_plumbing import RESULTS_QOS
from sam4dcap_biomech.synthetic import gait_trajectory, markers_from_coordinates
from sam4dcap_msgs.msg import JointKinematics, JointKinetics, VirtualMarkers

from ros_harness import markers_msg, node_log, start_node, stamp_key, stop_node

RATE_HZ = 60.0
T0 = 7.0


def test_markers_ik_id_chain(ros, tmp_path, monkeypatch):
    monkeypatch.setenv("SAM4DCAP_CACHE", str(tmp_path / "cache"))
    model = write_model(tmp_path / "subject.osim", height_m=1.75, mass_kg=70.0)
    coords = gait_trajectory(1.0, RATE_HZ)
    markers = markers_from_coordinates(opensim.Model(str(model)), coords, marker_names=BLAZEPOSE33)
    # The id_node follows the ik_node's model through /sam4dcap/model_path (no model_path given).
    ik = start_node("ik_node", {"model_path": str(model)}, log_path=tmp_path / "ik.log")
    id_ = start_node("id_node", {"enabled": True, "delay_s": 0.3}, log_path=tmp_path / "id.log")
    procs = [ik, id_]
    try:
        kinematics = ros.collect(JointKinematics, "/sam4dcap/joint_kinematics")
        kinetics = ros.collect(JointKinetics, "/sam4dcap/joint_kinetics")
        pub = ros.node.create_publisher(VirtualMarkers, "/sam4dcap/markers", RESULTS_QOS)
        ros.wait_for_subscriber(pub, procs=procs)
        # The id_node is subscribed to the kinematics before any frame flows.
        assert ros.spin_until(lambda: ros.node.count_subscribers("/sam4dcap/joint_kinematics") >= 2, 30.0,
                              procs=procs)
        for i in range(markers.n_frames):
            pub.publish(markers_msg(T0 + markers.time[i], BLAZEPOSE33, markers.values[i]))
        delay_frames = round(0.3 * RATE_HZ)
        expected = markers.n_frames - 15 - delay_frames  # 16 frames of history, 0.3 s behind
        assert ros.spin_until(lambda: len(kinematics) >= markers.n_frames and len(kinetics) >= expected, 60.0,
                              procs=procs), f"{len(kinematics)} IK, {len(kinetics)} ID\n{node_log(id_)[-2000:]}"
        ros.spin_until(lambda: False, 0.5)
        assert len(kinetics) == expected

        ik_stamps = [stamp_key(m.header.stamp) for m in kinematics]
        assert [stamp_key(m.header.stamp) for m in kinetics] == ik_stamps[15:markers.n_frames - delay_frames]
        names = list(kinematics[0].name)
        for msg in kinetics:
            assert msg.no_external_loads is True
            assert list(msg.name) == names and msg.model_name == kinematics[0].model_name
            assert np.all(np.isfinite(msg.generalized_force))
        forces = np.array([m.generalized_force for m in kinetics])
        # Without ground reaction the pelvis carries the body weight: pelvis_ty residual ~ m g
        # (70 kg, vertical acceleration of gait averages out).
        pelvis_ty = forces[:, names.index("pelvis_ty")]
        assert 0.5 * 70 * 9.81 < np.mean(pelvis_ty) < 1.5 * 70 * 9.81
    finally:
        for proc in procs:
            assert stop_node(proc) == 0, node_log(proc)[-2000:]


def test_disabled_by_default_and_bad_parameters(ros, tmp_path):
    idle = start_node("id_node", {}, log_path=tmp_path / "idle.log")
    try:
        assert ros.spin_until(lambda: "disabled" in node_log(idle), 30.0, procs=[idle])
        assert ros.node.count_publishers("/sam4dcap/joint_kinetics") == 0
    finally:
        assert stop_node(idle) == 0
    for param, value in (("lowpass_cutoff_hz", 100.0), ("external_loads_file", "grf.xml"),
                         ("model_path", "/no/such.osim")):
        proc = start_node("id_node", {"enabled": True, param: value}, log_path=tmp_path / f"{param}.log")
        try:
            code = proc.wait(timeout=60)
        finally:
            stop_node(proc)
        assert code != 0 and param in node_log(proc), node_log(proc)


def test_kinematics_arriving_before_the_model_are_not_lost(ros, tmp_path):
    """The latched model path may reach the id_node after the first kinematics: those frames
    wait and are solved once the model loads."""
    from std_msgs.msg import String

    from sam4dcap_biomech.ros.msg_conversion import sec_to_stamp
    from sam4dcap_biomech.ros.node_plumbing import LATCHED_QOS

    model = write_model(tmp_path / "subject.osim", height_m=1.75, mass_kg=70.0)
    model_name = opensim.Model(str(model)).getName()
    coords = gait_trajectory(0.8, RATE_HZ)
    id_ = start_node("id_node", {"enabled": True, "delay_s": 0.3}, log_path=tmp_path / "id.log")
    try:
        kinetics = ros.collect(JointKinetics, "/sam4dcap/joint_kinetics")
        kin_pub = ros.node.create_publisher(JointKinematics, "/sam4dcap/joint_kinematics", RESULTS_QOS)
        ros.wait_for_subscriber(kin_pub, procs=[id_])
        for i in range(coords.n_frames):
            msg = JointKinematics(model_name=model_name, name=list(coords.names),
                                  position=[float(v) for v in coords.values[i]])
            msg.header.stamp = sec_to_stamp(T0 + coords.time[i])
            kin_pub.publish(msg)
        ros.spin_until(lambda: False, 1.0, procs=[id_])
        assert kinetics == [], "no model yet: nothing can be solved"
        path_pub = ros.node.create_publisher(String, "/sam4dcap/model_path", LATCHED_QOS)
        path_pub.publish(String(data=str(model)))
        expected = coords.n_frames - 15 - round(0.3 * RATE_HZ)
        assert ros.spin_until(lambda: len(kinetics) >= expected, 30.0, procs=[id_]), \
            f"{len(kinetics)} of {expected}\n{node_log(id_)[-2000:]}"
        assert all(m.no_external_loads for m in kinetics)
    finally:
        assert stop_node(id_) == 0, node_log(id_)[-2000:]
