"""`ros2 param set` on a running node, through the real SetParameters service: a parameter is
either applied at once or refused with a reason (read-only), never accepted and ignored.

ik_node in its own process, forward-kinematics markers of a known gait in (33 valid markers):
raising min_markers above 33 stops the JointState stream at the next frame, lowering it brings
it back; raising static_max_speed_m_s is used by the very next calibrate call (a still window instead of the trial); a read-only
parameter (accuracy) is refused with the reason and keeps its value.
"""

from __future__ import annotations

import opensim
import pytest
from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
from rcl_interfaces.srv import DescribeParameters, GetParameters, SetParameters
from sensor_msgs.msg import JointState

from sam4dcap_biomech.markersets import BLAZEPOSE33
from sam4dcap_biomech.model_builder import write_model
from sam4dcap_biomech.ros.topics import joint_states_topic
from sam4dcap_biomech.ros.node_plumbing import RESULTS_QOS
from sam4dcap_biomech.synthetic import gait_trajectory, markers_from_coordinates
from sam4dcap_msgs.msg import VirtualMarkers
from sam4dcap_msgs.srv import CalibrateSubject

from ros_harness import Harness, markers_msg, node_log, start_node, stop_node

HEIGHT_M, MASS_KG = 1.75, 70.0


@pytest.fixture(scope="module")
def model_and_markers(tmp_path_factory):
    path = write_model(tmp_path_factory.mktemp("model") / "m.osim", height_m=HEIGHT_M, mass_kg=MASS_KG)
    opensim.Logger.setLevelString("warn")
    coords = gait_trajectory(1.0, 30.0, height_m=HEIGHT_M)
    return path, markers_from_coordinates(opensim.Model(str(path)), coords, marker_names=BLAZEPOSE33)


def value(v) -> ParameterValue:
    if isinstance(v, bool):
        return ParameterValue(type=ParameterType.PARAMETER_BOOL, bool_value=v)
    if isinstance(v, int):
        return ParameterValue(type=ParameterType.PARAMETER_INTEGER, integer_value=v)
    return ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=float(v))


def test_parameters_are_applied_at_run_time_or_refused(model_and_markers, tmp_path):
    model, markers = model_and_markers
    ros = Harness("param_test")
    proc = start_node("ik_node", {"model_path": str(model), "output_dir": str(tmp_path / "calib")},
                      log_path=tmp_path / "ik.log")
    try:
        states = ros.collect(JointState, joint_states_topic(1))
        pub = ros.node.create_publisher(VirtualMarkers, "/sam4dcap/markers", RESULTS_QOS)
        ros.wait_for_subscriber(pub, 90.0, procs=[proc])
        set_client = ros.node.create_client(SetParameters, "/ik_node/set_parameters")
        get_client = ros.node.create_client(GetParameters, "/ik_node/get_parameters")
        describe = ros.node.create_client(DescribeParameters, "/ik_node/describe_parameters")
        frame = iter(range(markers.n_frames))

        def send(n: int) -> int:
            """Publish n frames; returns the JointStates they produced."""
            before = len(states)
            for _ in range(n):
                i = next(frame)
                pub.publish(markers_msg(100.0 + markers.time[i], BLAZEPOSE33, markers.values[i]))
            ros.spin_until(lambda: len(states) >= before + n, 20.0, procs=[proc])
            ros.spin_until(lambda: False, 0.5)   # anything late arrives now
            return len(states) - before

        def set_param(name, v):
            return ros.call(set_client, SetParameters.Request(parameters=[Parameter(name=name, value=value(v))]),
                            procs=[proc]).results[0]

        assert send(5) == 5, node_log(proc)[-2000:]
        # min_markers above the 33 markers that arrive: applied -> nothing published
        result = set_param("min_markers", 50)
        assert result.successful, result.reason
        assert send(5) == 0, "min_markers=50 accepted but JointState kept flowing"
        result = set_param("min_markers", 8)
        assert result.successful and send(5) == 5

        # out of range: refused by the descriptor's range, naming nothing changed
        result = set_param("min_markers", 1000)
        assert not result.successful

        # read-only: refused with a reason, value unchanged
        result = set_param("accuracy", 1e-3)
        assert not result.successful and "read-only" in result.reason, result.reason
        got = ros.call(get_client, GetParameters.Request(names=["accuracy"]), procs=[proc]).values[0]
        assert got.double_value == pytest.approx(1e-6)
        desc = ros.call(describe, DescribeParameters.Request(names=["accuracy", "min_markers"]),
                        procs=[proc]).descriptors
        assert desc[0].read_only and "restart" in desc[0].additional_constraints
        assert not desc[1].read_only

        # the calibrate error advises raising static_max_speed_m_s: the next call uses it
        calibrate = ros.node.create_client(CalibrateSubject, "/ik_node/calibrate")
        request = CalibrateSubject.Request(height_m=HEIGHT_M, mass_kg=MASS_KG, window_s=0.0)
        # A walk has no still window: the calibration falls back to the trial (live_calibration)
        # and says which limit it used; the very next call uses the raised limit.
        first = ros.call(calibrate, request, 120.0, procs=[proc])
        assert first.success and "from the trial" in first.message and "0.050 m/s" in first.message, first.message
        assert set_param("static_max_speed_m_s", 0.9).successful
        second = ros.call(calibrate, request, 120.0, procs=[proc])
        assert second.success and "0.900 m/s" in second.message, second.message
        assert proc.poll() is None
    finally:
        assert stop_node(proc) == 0, node_log(proc)[-2000:]
        ros.close()
    assert "parameter min_markers = 50 (applied)" in node_log(proc)
