"""trial_writer_node in its own process: start, feed, stop -> TRC/MOT/STO that OpenSim reads back;
SIGTERM (what the graph runner sends at the end of a file source) writes the trial in progress."""

from __future__ import annotations

import signal
from pathlib import Path

import numpy as np
import opensim

from sam4dcap_biomech.ros.msg_conversion import sec_to_stamp
from sam4dcap_biomech.ros.node_plumbing import RESULTS_QOS
from sam4dcap_msgs.msg import JointKinematics, JointKinetics, VirtualMarkers
from sam4dcap_msgs.srv import StartTrial, StopTrial

from ros_harness import markers_msg, node_log, start_node, stop_node

MARKERS = ("left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle")
COORDS = ("pelvis_tx", "pelvis_ty", "hip_flexion_r", "knee_angle_r", "ankle_angle_r")
RATE_HZ = 60.0
T0 = 42.0


def trial_data(n=45):
    """~0.75 s at 60 Hz: markers (one missing sample), coordinates (rad/m), generalized forces."""
    t = T0 + np.arange(n) / RATE_HZ
    phase = 2 * np.pi * np.arange(n) / n
    base = np.array([[0, 0.95, -0.09], [0, 0.95, 0.09], [0.02, 0.5, -0.09], [0.02, 0.5, 0.09],
                     [0, 0.08, -0.09], [0, 0.08, 0.09]])
    markers = base[None] + np.stack([1.2 * (t - T0), 0.02 * np.sin(phase), 0 * t], 1)[:, None, :]
    markers[7, 3] = np.nan
    q = np.stack([1.2 * (t - T0), 0.93 + 0.02 * np.sin(phase), 0.4 * np.sin(phase),
                  0.6 * (1 - np.cos(phase)), 0.2 * np.sin(2 * phase)], 1)
    tau = np.stack([5 * np.sin(phase), 700 + 20 * np.cos(phase), 40 * np.sin(phase), -30 * np.cos(phase),
                    90 * np.sin(phase) ** 2], 1)
    return t, markers, q, tau


def kinematics_msg(t, q):
    msg = JointKinematics(person_id=1, model_name="sam4dcap_test", name=list(COORDS), position=[float(v) for v in q],
                          marker_error_rms=0.012, marker_error_max=0.03, marker_error_max_name="left_knee",
                          markers_used=6)
    msg.header.stamp = sec_to_stamp(t)
    return msg


def kinetics_msg(t, tau):
    msg = JointKinetics(person_id=1, model_name="sam4dcap_test", name=list(COORDS),
                        generalized_force=[float(v) for v in tau], no_external_loads=True)
    msg.header.stamp = sec_to_stamp(t)
    return msg


def feed(ros, proc, t, markers, q, tau):
    pubs = [ros.node.create_publisher(cls, topic, RESULTS_QOS) for cls, topic in
            ((VirtualMarkers, "/sam4dcap/markers"), (JointKinematics, "/sam4dcap/joint_kinematics"),
             (JointKinetics, "/sam4dcap/joint_kinetics"))]
    for pub in pubs:
        ros.wait_for_subscriber(pub, procs=[proc])
    for i in range(len(t)):
        pubs[0].publish(markers_msg(t[i], MARKERS, markers[i]))
        pubs[1].publish(kinematics_msg(t[i], q[i]))
        pubs[2].publish(kinetics_msg(t[i], tau[i]))
    ros.spin_until(lambda: False, 2.0)  # reliable delivery of ~140 small messages on loopback


def check_files(folder: Path, name: str, t, markers, q, tau):
    trc = opensim.TimeSeriesTableVec3(str(folder / f"{name}.trc"))
    assert list(trc.getColumnLabels()) == list(MARKERS)
    flat = trc.flatten()
    matrix = flat.getMatrix()
    np.testing.assert_allclose(np.array(trc.getIndependentColumn()), t, atol=1e-8)
    np.testing.assert_allclose(matrix.to_numpy().reshape(len(t), len(MARKERS), 3), markers, atol=1e-7, equal_nan=True)

    mot = opensim.TimeSeriesTable(str(folder / f"{name}_ik.mot"))
    assert list(mot.getColumnLabels()) == list(COORDS)
    assert mot.getTableMetaDataAsString("inDegrees") == "yes"
    values = mot.getMatrix().to_numpy()
    np.testing.assert_allclose(values[:, :2], q[:, :2], atol=1e-8)               # metres
    np.testing.assert_allclose(values[:, 2:], np.degrees(q[:, 2:]), atol=1e-6)   # degrees

    sto = opensim.Storage(str(folder / f"{name}_id.sto"))  # the legacy reader ID/analyses use
    assert sto.getSize() == len(t)
    table = opensim.TimeSeriesTable(str(folder / f"{name}_id.sto"))
    assert list(table.getColumnLabels()) == ["pelvis_tx_force", "pelvis_ty_force", "hip_flexion_r_moment",
                                             "knee_angle_r_moment", "ankle_angle_r_moment"]
    forces = table.getMatrix().to_numpy()
    np.testing.assert_allclose(forces, tau, atol=1e-6)


def test_start_feed_stop_writes_opensim_files(ros, tmp_path):
    proc = start_node("trial_writer_node", {"output_dir": str(tmp_path / "trials"), "auto_start": False},
                      log_path=tmp_path / "writer.log")
    try:
        start = ros.node.create_client(StartTrial, "/trial_writer_node/start_trial")
        stop = ros.node.create_client(StopTrial, "/trial_writer_node/stop_trial")

        nothing = ros.call(stop, StopTrial.Request(), procs=[proc])
        assert not nothing.success and "start_trial" in nothing.message
        bad = ros.call(start, StartTrial.Request(trial_name="../x"), procs=[proc])
        assert not bad.success and "letters" in bad.message

        started = ros.call(start, StartTrial.Request(trial_name="walk_a"), procs=[proc])
        assert started.success, started.message
        assert Path(started.output_dir) == tmp_path / "trials" / "walk_a"
        t, markers, q, tau = trial_data()
        feed(ros, proc, t, markers, q, tau)
        stopped = ros.call(stop, StopTrial.Request(), procs=[proc])
        assert stopped.success, stopped.message
        assert "no external loads" in stopped.message
        folder = tmp_path / "trials" / "walk_a"
        assert sorted(Path(f).name for f in stopped.files) == sorted(
            ["walk_a.trc", "walk_a_ik.mot", "walk_a_ik_errors.sto", "walk_a_id.sto", "walk_a_trial.json"])
        check_files(folder, "walk_a", t, markers, q, tau)

        # A trial that receives nothing writes nothing and says why.
        assert ros.call(start, StartTrial.Request(trial_name="empty"), procs=[proc]).success
        empty = ros.call(stop, StopTrial.Request(), procs=[proc])
        assert not empty.success and "received no" in empty.message and list(empty.files) == []
    finally:
        assert stop_node(proc) == 0, node_log(proc)[-2000:]


def test_sigterm_writes_the_trial_in_progress(ros, tmp_path):
    proc = start_node("trial_writer_node", {"output_dir": str(tmp_path / "trials"), "trial_name": "session"},
                      log_path=tmp_path / "writer.log")
    try:
        t, markers, q, tau = trial_data()
        feed(ros, proc, t, markers, q, tau)  # auto_start (default): no service call
    finally:
        code = stop_node(proc, sig=signal.SIGTERM)
    assert code == 0, node_log(proc)[-2000:]
    check_files(tmp_path / "trials" / "session", "session", t, markers, q, tau)
    assert "trial 'session'" in node_log(proc)


def test_bad_parameter_refuses_to_start(tmp_path):
    proc = start_node("trial_writer_node", {"trial_name": "no spaces allowed"}, log_path=tmp_path / "writer.log")
    try:
        code = proc.wait(timeout=60)
    finally:
        stop_node(proc)
    assert code != 0 and "trial_name" in node_log(proc)
