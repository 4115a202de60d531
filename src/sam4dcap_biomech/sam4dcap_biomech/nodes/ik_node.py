"""ik_node: /sam4dcap/markers -> streaming IK -> /sam4dcap/joint_kinematics + REP-155 JointState.

- Subscribes VirtualMarkers (world frame, y up, metres, NaN = missing) of body `person_id`.
- Publishes, stamped with the capture stamp of the source frame:
    /sam4dcap/joint_kinematics                JointKinematics (q, qdot, per-coordinate confidence,
                                              marker errors)
    /humans/bodies/<person_id>/joint_states   sensor_msgs/JointState (OpenSim coordinate names,
                                              rad / m, velocity when estimated)
  Safe output: for a frame with fewer than `min_markers` markers (person lost), a frame the model
  cannot be assembled to, or a fit worse than `max_marker_rms_m`, nothing goes out on joint_states
  and JointKinematics carries state LOST / UNTRUSTED with NaN positions (no stale or invented
  values downstream); the next solve after such a frame starts cold (fresh OpenSim assembly).
  Free-joint angles are canonical (wrapped, one Euler form: ik_problem.canonical_coordinates),
  clamped coordinates stay in their ranges. Health (tracking state, marker RMS, solve time) on
  /diagnostics.
- Latches the path of the model in use on /sam4dcap/model_path (std_msgs/String): consumers that
  need the model (id_node, the visualization's twin) follow a calibration's hot swap through it.
- Calibration (`live_calibration.LiveCalibrator`, on a background thread beside the solver):
  automatically once, as soon as `auto_calibrate_min_s` of frames show the body well enough,
  from those frames (trial calibration: no still moment needed), latched; and on the service
  ~/calibrate (CalibrateSubject) from a still window of the recent stream (kept for
  `calibration_buffer_s`) or, without one, from the whole buffer. The scaled model's solver is
  built in the background and swapped in between two frames: JointState keeps flowing while
  a calibration runs; the new (absolute) model path goes out on /sam4dcap/model_path.
- Frame acks on /sam4dcap/progress after every marker message solved (offline flow control).
- `realtime` (live streams, set by the graph): only the newest markers are solved. Messages are
  taken off the DDS queue at once; a worker thread solves the newest one, and a message that
  a newer one replaced before its solve started is skipped (counted, logged every 10 s and at
  shutdown, not acked). Offline every message is solved in order.
With `model_path` empty the project's generated model for the subject height/mass is used,
written once into the cache folder.
"""

from __future__ import annotations

import math
import threading
from pathlib import Path

import numpy as np
from rclpy.node import Node

from ..errors import Sam4dcapError
from ..ik_stream import IGNORED, LOST, VALID, IKStream
from ..ros.msg_conversion import points_to_array, stamp_to_sec
from ..ros.node_plumbing import (DEEP_QOS, LATCHED_QOS, RESULTS_QOS, CoreReport, FrameAcks, NodeDiagnostics,
                                 declare_parameters, run_node, subscribe_like_publisher)
# (keypoints, camera_info and tf_static only with ik_node.live_fit = camera)
from ..ros.topics import (CAMERA_INFO_TOPIC, KEYPOINTS_TOPIC, KINEMATICS_TOPIC, MARKERS_TOPIC, MODEL_PATH_TOPIC,
                          OPENSIM_WORLD_FRAME, TF_STATIC_TOPIC, WORLD_FRAME, joint_states_topic, relative_topic)


# Parameters a `ros2 param set` changes while running; the others are read-only.
RUNTIME_PARAMETERS = ("min_markers", "max_marker_rms_m", "static_min_duration_s", "static_max_speed_m_s",
                      "calibration_buffer_s", "output_dir")


class IKNode(Node):
    def __init__(self):
        super().__init__("ik_node")
        from sensor_msgs.msg import JointState
        from std_msgs.msg import String

        from sam4dcap_msgs.msg import JointKinematics, VirtualMarkers
        from sam4dcap_msgs.srv import CalibrateSubject

        from ..opensim_logging import quiet_opensim

        quiet_opensim("warn")
        # Applied while running (read at their next use); the rest is read-only.
        self.p = p = declare_parameters(self, "ik_node", runtime=RUNTIME_PARAMETERS, on_change=self._on_parameter)
        self.stream = IKStream(p, accepted_frames=(OPENSIM_WORLD_FRAME, WORLD_FRAME), report=CoreReport(self))
        self._JointKinematics, self._JointState, self._String = JointKinematics, JointState, String
        self.kinematics_pub = self.create_publisher(JointKinematics, relative_topic(KINEMATICS_TOPIC), RESULTS_QOS)
        self.joint_states_pub = self.create_publisher(JointState, relative_topic(joint_states_topic(p["person_id"])),
                                                      RESULTS_QOS)
        self.model_pub = self.create_publisher(String, relative_topic(MODEL_PATH_TOPIC), LATCHED_QOS)
        self.acks = FrameAcks(self)
        self.diagnostics = NodeDiagnostics(self)
        self.diagnostics.set(NodeDiagnostics.WARN, "waiting for markers", tracking="none yet")
        # One lock around the IK stream: the realtime worker solves under it, calibration swaps
        # the solver under it (the calibration itself runs on the calibrator's own thread).
        self._ik_lock = threading.Lock()
        self.realtime = bool(p["realtime"])
        self.solved = 0
        self.skipped = 0
        self._newest = None
        self._wake = threading.Condition()
        self._stopping = False
        self._worker = None
        if self.realtime:
            self._worker = threading.Thread(target=self._solve_newest_loop, name="ik_realtime", daemon=True)
            self._worker.start()
            self.create_timer(10.0, self._report_skipped)
        self.create_subscription(VirtualMarkers, relative_topic(MARKERS_TOPIC), self._on_markers, DEEP_QOS)
        self.stream.live_fit = self._start_live_fit() if p["live_fit"] == "camera" else None
        self._start_calibration_service(CalibrateSubject)
        self._publish_model_path()
        self.get_logger().info(f"IK on {self.stream.model_path} ({self.stream.ik.model.getName()}); "
                               f"publishing {joint_states_topic(p['person_id'])}"
                               + ("; realtime: newest markers only" if self.realtime else ""))

    # --- setup ---------------------------------------------------------------------------
    def _on_parameter(self, name: str, value) -> None:
        with self._ik_lock:
            self.stream.apply_parameter(name, value)

    def _start_live_fit(self):
        """ik_node.live_fit = camera: the camera fit on the 2D keypoints (camera_fit.LiveCameraFit)."""
        from scipy.spatial.transform import Rotation
        from sensor_msgs.msg import CameraInfo
        from tf2_msgs.msg import TFMessage

        from sam4dcap_msgs.msg import BodyKeypoints

        from ..camera_fit import FitSettings, LiveCameraFit
        from ..config import load_config

        live = LiveCameraFit(FitSettings.from_params(load_config().params("camera_fit")))

        def on_keypoints(msg):
            pts = points_to_array(msg.keypoints_2d, dims=2)
            live.add_keypoints(stamp_to_sec(msg.header.stamp), msg.names, pts, np.asarray(msg.visibility, float))

        def on_tf(msg):
            for tf in msg.transforms:
                if tf.header.frame_id == OPENSIM_WORLD_FRAME:   # camera pose in the markers' y-up frame
                    r, t = tf.transform.rotation, tf.transform.translation
                    live.set_world_from_camera(Rotation.from_quat([r.x, r.y, r.z, r.w]).as_matrix(), [t.x, t.y, t.z])

        self.create_subscription(BodyKeypoints, relative_topic(KEYPOINTS_TOPIC), on_keypoints, DEEP_QOS)
        self.create_subscription(TFMessage, relative_topic(TF_STATIC_TOPIC), on_tf, LATCHED_QOS)
        self._info_timer = subscribe_like_publisher(self, CameraInfo, CAMERA_INFO_TOPIC,
                                                    lambda m: live.set_intrinsics(np.array(m.k)),
                                                    reliable_depth=DEEP_QOS.depth)
        return live

    def _publish_model_path(self) -> None:
        self.model_pub.publish(self._String(data=str(Path(self.stream.model_path).resolve())))

    # --- stream --------------------------------------------------------------------------
    def _on_markers(self, msg) -> None:
        if self.realtime:
            with self._wake:
                if self._newest is not None:
                    self.skipped += 1   # a newer frame arrived before this one's solve started
                self._newest = msg
                self._wake.notify()
            return
        try:
            with self._ik_lock:
                self._process(msg)
        finally:
            self.solved += 1
            self.acks.ack(msg.header.stamp)

    def _solve_newest_loop(self) -> None:
        while True:
            with self._wake:
                while self._newest is None and not self._stopping:
                    self._wake.wait(0.5)
                if self._stopping:
                    return
                msg, self._newest = self._newest, None
            try:
                with self._ik_lock:
                    self._process(msg)
            except Exception as exc:  # noqa: BLE001 - a bad frame must not stop the worker
                self.get_logger().error(f"markers at {stamp_to_sec(msg.header.stamp):.3f} s: "
                                        f"{type(exc).__name__}: {exc}")
            finally:
                self.solved += 1
                if self.context.ok():
                    self.acks.ack(msg.header.stamp)

    def _report_skipped(self) -> None:
        if self.skipped:
            self.get_logger().info(f"realtime: solved {self.solved} markers frames, skipped {self.skipped} "
                                   "stale ones (newer markers arrived first)")

    def close(self) -> None:
        """Stop the realtime worker (run_node calls this before destroying the node)."""
        with self._wake:
            self._stopping = True
            self._wake.notify_all()
        self.stream.close()
        self._service_executor.shutdown(timeout_sec=1.0)
        self._service_thread.join(2.0)
        self._service_node.destroy_node()
        if self._worker is not None:
            self._worker.join(5.0)
            if self.realtime:
                import sys

                # (the ROS context is already shut down here: plain stderr, where the node logs go)
                print(f"[ik_node] realtime: solved {self.solved} markers frames, skipped {self.skipped} stale ones",
                      file=sys.stderr, flush=True)

    def _process(self, msg) -> None:
        """One marker message through the IK stream's gates (caller holds the IK lock)."""
        self._swap_in_calibration()
        step = self.stream.step(stamp_to_sec(msg.header.stamp), person_id=msg.person_id, frame_id=msg.header.frame_id,
                                names=msg.names, points=points_to_array(msg.positions), confidence=msg.confidence)
        if step.state == IGNORED:
            return
        # In the frame of the markers (the free joint's translations are expressed in it).
        self._frame_id = msg.header.frame_id or OPENSIM_WORLD_FRAME
        if step.state == VALID:
            self._publish(msg.header.stamp, step.frame)
            self.diagnostics.processed(step.solve_s)
            self.diagnostics.set(NodeDiagnostics.OK, "tracking", tracking="valid",
                                 marker_rms_m=float(step.frame.marker_rms_m), markers_used=int(step.frame.markers_used),
                                 frames_skipped=self.skipped, solves_stopped_by_budget=self.stream.budget_stops)
            return
        state = self._JointKinematics.STATE_LOST if step.state == LOST else self._JointKinematics.STATE_UNTRUSTED
        self._publish_invalid(msg.header.stamp, state, step.n_valid, step.reason, marker_rms_m=step.marker_rms_m)

    def _publish_invalid(self, stamp, state: int, n_markers: int, reason: str, *,
                         marker_rms_m: float = float("nan")) -> None:
        """JointKinematics saying this frame has no usable pose (NaN positions); no JointState."""
        names = list(self.stream.ik.coordinate_names)
        kin = self._kinematics_msg(stamp, names, [math.nan] * len(names))
        kin.confidence = [0.0] * len(names)
        kin.marker_error_rms = float(marker_rms_m)
        kin.marker_error_max = math.nan
        kin.markers_used = int(n_markers)
        kin.state = state
        self.kinematics_pub.publish(kin)
        level = NodeDiagnostics.WARN if state == self._JointKinematics.STATE_LOST else NodeDiagnostics.ERROR
        self.diagnostics.set(level, reason, tracking="lost" if state == self._JointKinematics.STATE_LOST
                             else "untrusted", marker_rms_m=float(marker_rms_m), markers_used=int(n_markers))

    def _kinematics_msg(self, stamp, names: list, position: list):
        # In the frame of the markers (the free joint's translations are expressed in it).
        frame_id = getattr(self, "_frame_id", OPENSIM_WORLD_FRAME)
        kin = self._JointKinematics()
        kin.header.stamp = stamp
        kin.header.frame_id = frame_id
        kin.person_id = self.p["person_id"]
        kin.model_name = self.stream.ik.model.getName()
        kin.name = names
        kin.position = position
        return kin

    def _publish(self, stamp, frame) -> None:
        names = list(frame.coordinate_names)
        q = [float(v) for v in frame.q]
        # Velocity always has one entry per joint: NaN where not estimable yet (the first frame
        # after a start, a reset or a source jump), so consumers never see a ragged message.
        qdot = [math.nan] * len(q) if frame.qdot is None else \
            [float(v) if math.isfinite(v) else math.nan for v in frame.qdot]
        kin = self._kinematics_msg(stamp, names, q)
        kin.velocity = qdot
        if frame.confidence is not None:
            kin.confidence = [float(c) for c in frame.confidence]
        kin.marker_error_rms = float(frame.marker_rms_m)
        kin.marker_error_max = float(frame.marker_max_m)
        kin.marker_error_max_name = frame.max_error_marker
        kin.markers_used = int(frame.markers_used)
        kin.state = kin.STATE_VALID
        self.kinematics_pub.publish(kin)
        js = self._JointState()
        js.header.stamp = stamp
        js.header.frame_id = kin.header.frame_id
        js.name = names
        js.position = q
        js.velocity = qdot
        self.joint_states_pub.publish(js)

    # --- calibration -----------------------------------------------------------------------
    def _swap_in_calibration(self) -> None:
        """Between two frames (caller holds the IK lock): use a finished calibration's solver."""
        outcome = self.stream.take_calibration()
        if outcome is None:
            return
        self._publish_model_path()
        self.get_logger().info(f"calibration ({outcome.method}) in use: {outcome.message()}")

    def _start_calibration_service(self, srv_type) -> None:
        """~/calibrate on a helper node spun by its own thread: the call waits for the
        calibration there, while this node's executor keeps delivering markers (rclpy's
        single-threaded spin would stall the stream for the whole calibration otherwise)."""
        from rclpy.executors import SingleThreadedExecutor

        service_name = f"{self.get_fully_qualified_name()}/calibrate"
        self._service_node = Node(f"{self.get_name()}_calibration", namespace=self.get_namespace(),
                                  context=self.context, start_parameter_services=False)
        self._service_node.create_service(srv_type, service_name, self._on_calibrate)
        self._service_executor = SingleThreadedExecutor(context=self.context)
        self._service_executor.add_node(self._service_node)
        self._service_thread = threading.Thread(target=self._spin_service, name="calibrate_service", daemon=True)
        self._service_thread.start()

    def _spin_service(self) -> None:
        from rclpy.executors import ExternalShutdownException, ShutdownException

        try:
            self._service_executor.spin()
        except (ExternalShutdownException, ShutdownException):
            pass

    def _on_calibrate(self, request, response):
        """Service thread: waits for the calibration (which runs on the calibrator's thread)."""
        try:
            outcome = self.stream.calibrator.request(request.height_m, request.mass_kg, request.window_s).result()
        except Sam4dcapError as exc:
            return self._refuse(response, exc)
        except Exception as exc:  # noqa: BLE001 - OpenSim failures arrive as other errors
            return self._refuse(response, Sam4dcapError(f"{type(exc).__name__}: {exc}"))
        with self._ik_lock:
            self._swap_in_calibration()   # in use now, not only from the next frame on
        response.success = True
        response.scaled_model_path = str(outcome.model_path)
        response.static_start_s, response.static_end_s = (float(v) for v in outcome.window)
        response.marker_error_rms = float(outcome.marker_rms_m)
        response.message = outcome.message()
        self.get_logger().info(response.message)
        return response

    def _refuse(self, response, exc):
        response.success = False
        response.message = str(exc)
        self.get_logger().warning(f"calibration refused: {exc}")
        return response


def main(args=None) -> int:
    return run_node(IKNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
