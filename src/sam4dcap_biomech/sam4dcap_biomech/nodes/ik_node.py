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

import dataclasses
import math
import os
import threading
import time
from pathlib import Path

import numpy as np
from rclpy.node import Node

from ..errors import Sam4dcapError
from ..live_calibration import LiveCalibrationSettings, LiveCalibrator
from ..markersets import MARKER_SETS
from ..trial_calibration import TrialCalibrationSettings
from .ros_common import (DEEP_QOS, LATCHED_QOS, OPENSIM_WORLD_FRAME, RESULTS_QOS, WORLD_FRAME, FrameAcks,
                         NodeDiagnostics, declare_parameters, relative_topic, run_node, stamp_to_sec,
                         subscribe_like_publisher)

MARKERS_TOPIC = "/sam4dcap/markers"
KINEMATICS_TOPIC = "/sam4dcap/joint_kinematics"
MODEL_PATH_TOPIC = "/sam4dcap/model_path"
KEYPOINTS_TOPIC = "/sam4dcap/keypoints"          # ik_node.live_fit = camera only
CAMERA_INFO_TOPIC = "/camera/camera_info"        # ik_node.live_fit = camera only
TF_STATIC_TOPIC = "/tf_static"                   # ik_node.live_fit = camera only


def joint_states_topic(person_id: int) -> str:
    # REP-155 body ids are strings; a ROS 2 name token may not start with a digit.
    return f"/humans/bodies/body{int(person_id)}/joint_states"


# Parameters a `ros2 param set` changes while running; the others are read-only.
RUNTIME_PARAMETERS = ("min_markers", "max_marker_rms_m", "static_min_duration_s", "static_max_speed_m_s",
                      "calibration_buffer_s", "output_dir")


def cache_dir() -> Path:
    """SAM4DCAP_CACHE (set by scripts/env.sh and the tests), else ~/.cache/sam4dcap."""
    env = os.environ.get("SAM4DCAP_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "sam4dcap"


def generated_model_path(*, height_m: float, mass_kg: float, marker_set: str) -> Path:
    """The project's model for this subject, built once and kept in the cache folder."""
    from ..model_builder import builder_version, write_model

    path = cache_dir() / "models" / (f"sam4dcap_{marker_set}_{height_m:.3f}m_{mass_kg:.2f}kg_"
                                     f"{builder_version()}.osim")
    if not path.is_file():
        # Written under a private name then renamed: two nodes starting together never read
        # a half-written model.
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.osim")
        write_model(tmp, height_m=height_m, mass_kg=mass_kg, markers=marker_set)
        os.replace(tmp, path)
    return path


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
        self.marker_names = MARKER_SETS[p["marker_set"]]
        if p["model_path"]:
            model = Path(p["model_path"]).expanduser()
            if not model.is_file():
                raise Sam4dcapError(f"parameter ik_node.model_path={p['model_path']!r}: file not found "
                                    "(give a scaled .osim, or leave it empty for the generated model)")
        else:
            model = generated_model_path(height_m=p["subject_height_m"], mass_kg=p["subject_mass_kg"],
                                         marker_set=p["marker_set"])
        self.base_model_path = model
        try:
            self.ik = self._make_ik(model)
        except Sam4dcapError as exc:
            raise Sam4dcapError(f"parameter ik_node.model_path={str(model)!r}: {exc}") from None
        self.model_path = model

        self._JointKinematics, self._JointState, self._String = JointKinematics, JointState, String
        self.kinematics_pub = self.create_publisher(JointKinematics, relative_topic(KINEMATICS_TOPIC), RESULTS_QOS)
        self.joint_states_pub = self.create_publisher(JointState, relative_topic(joint_states_topic(p["person_id"])),
                                                      RESULTS_QOS)
        self.model_pub = self.create_publisher(String, relative_topic(MODEL_PATH_TOPIC), LATCHED_QOS)
        self.acks = FrameAcks(self)
        self.diagnostics = NodeDiagnostics(self)
        self.diagnostics.set(NodeDiagnostics.WARN, "waiting for markers", tracking="none yet")
        # One lock around the IK: the realtime worker solves under it, calibration swaps the
        # solver under it (the calibration itself runs on the calibrator's own thread).
        self._ik_lock = threading.Lock()
        self.calibrator = LiveCalibrator(LiveCalibrationSettings(
            base_model=Path(model).resolve(), marker_names=tuple(self.marker_names), marker_set=p["marker_set"],
            height_m=p["subject_height_m"], mass_kg=p["subject_mass_kg"], output_dir=Path(p["output_dir"]),
            buffer_s=p["calibration_buffer_s"], auto=bool(p["auto_calibrate"]), auto_min_s=p["auto_calibrate_min_s"],
            static_min_duration_s=p["static_min_duration_s"], static_max_speed_m_s=p["static_max_speed_m_s"],
            trial=TrialCalibrationSettings.from_params(p)), make_solver=self._make_ik)
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
        self.live_fit = self._start_live_fit() if p["live_fit"] == "camera" else None
        self._start_calibration_service(CalibrateSubject)
        self._order_cache: dict[tuple[str, ...], np.ndarray] = {}
        self._last_time = -math.inf
        self._warned: set[str] = set()
        self._publish_model_path()
        self.get_logger().info(f"IK on {self.model_path} ({self.ik.model.getName()}); "
                               f"publishing {joint_states_topic(p['person_id'])}"
                               + ("; realtime: newest markers only" if self.realtime else ""))

    # --- setup ---------------------------------------------------------------------------
    def _make_ik(self, model_path: Path):
        from ..streaming_ik import StreamingIK

        options = {}
        if "regularize_unobserved" in self.p:  # the node's value, not only the file's default
            options["regularize"] = self.p["regularize_unobserved"]
        return StreamingIK(str(model_path), self.marker_names, accuracy=self.p["accuracy"],
                           min_markers=self.p["min_markers"], **options)

    def _on_parameter(self, name: str, value) -> None:
        if name == "min_markers":   # the solver keeps its own copy
            with self._ik_lock:
                self.ik.min_markers = int(value)
        # The calibrator keeps its own settings: the next calibration uses the new value.
        calibration_fields = {"static_min_duration_s": "static_min_duration_s",
                              "static_max_speed_m_s": "static_max_speed_m_s",
                              "calibration_buffer_s": "buffer_s", "output_dir": "output_dir"}
        if name in calibration_fields:
            field = calibration_fields[name]
            value = Path(value) if field == "output_dir" else float(value)
            self.calibrator.settings = dataclasses.replace(self.calibrator.settings, **{field: value})

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
            pts = np.array([[p.x, p.y] for p in msg.keypoints_2d], float).reshape(-1, 2)
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
        self.model_pub.publish(self._String(data=str(Path(self.model_path).resolve())))

    def _warn_once(self, key: str, text: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            self.get_logger().warning(text)

    # --- stream --------------------------------------------------------------------------
    def _positions(self, msg) -> tuple[np.ndarray, np.ndarray] | None:
        """Message positions and confidences reordered into marker_names order (NaN / 0 for
        names not sent; confidence 1 for present markers when the message carries none)."""
        names = tuple(msg.names)
        index = self._order_cache.get(names)
        if index is None:
            where = {n: i for i, n in enumerate(names)}
            index = np.array([where.get(n, -1) for n in self.marker_names])
            if len(self._order_cache) > 16:
                self._order_cache.clear()
            self._order_cache[names] = index
            if not (index >= 0).any():
                self._warn_once(f"names:{names[:3]}", f"markers named {', '.join(names[:5])}... match none of "
                                f"marker set {self.p['marker_set']!r}: set parameter ik_node.marker_set")
        if len(msg.positions) != len(names):
            self._warn_once("len", f"VirtualMarkers with {len(names)} names but {len(msg.positions)} positions: "
                            "skipped")
            return None
        sent = np.array([[pt.x, pt.y, pt.z] for pt in msg.positions], dtype=float).reshape(-1, 3)
        out = np.full((len(self.marker_names), 3), np.nan)
        ok = index >= 0
        out[ok] = sent[index[ok]]
        conf = np.zeros(len(self.marker_names))
        if len(msg.confidence) == len(names):
            conf[ok] = np.asarray(msg.confidence, float)[index[ok]]
        else:
            conf[ok] = 1.0
        conf[~np.isfinite(out).all(axis=1)] = 0.0
        return out, conf

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
        self.calibrator.close()
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
        if msg.person_id != self.p["person_id"]:
            self._warn_once(f"person:{msg.person_id}", f"ignoring markers of body {msg.person_id}: this node "
                            f"follows body {self.p['person_id']} (parameter ik_node.person_id)")
            return
        if msg.header.frame_id and msg.header.frame_id not in (OPENSIM_WORLD_FRAME, WORLD_FRAME):
            self._warn_once(f"frame:{msg.header.frame_id}", f"markers arrive in frame {msg.header.frame_id!r}; "
                            "IK assumes the OpenSim world frame (y up)")
        self._frame_id = msg.header.frame_id or OPENSIM_WORLD_FRAME
        sent = self._positions(msg)
        if sent is None:
            return
        positions, confidence = sent
        t = stamp_to_sec(msg.header.stamp)
        self._swap_in_calibration()
        if t <= self._last_time:
            # Source restarted or looped: velocities across the jump would be garbage, and
            # calibration must not mix the two passes.
            self.ik.reset()
            self.calibrator.reset()
            if self.live_fit is not None:
                self.live_fit.reset()
        self._last_time = t
        self.calibrator.push(t, positions, confidence)
        n_valid = int(np.isfinite(positions).all(axis=1).sum())
        t0 = time.perf_counter()
        if n_valid < self.p["min_markers"]:
            self.ik.reset()  # re-acquisition starts from a fresh solve, not the pose before the loss
            self.get_logger().warning(f"t={t:.3f}: {n_valid} markers < min_markers={self.p['min_markers']}: "
                                      "person lost, no joint states", throttle_duration_sec=5.0)
            self._publish_invalid(msg.header.stamp, self._JointKinematics.STATE_LOST, n_valid,
                                  f"person lost ({n_valid} markers < min_markers {self.p['min_markers']})")
            return
        try:
            frame = self.live_fit.solve(self.ik, t, positions) if self.live_fit is not None else None
            if frame is None:
                frame = self.ik.solve(t, positions)
        except Sam4dcapError as exc:
            self.ik.reset()
            self.get_logger().warning(f"IK failed: {exc}", throttle_duration_sec=5.0)
            self._publish_invalid(msg.header.stamp, self._JointKinematics.STATE_UNTRUSTED, n_valid, "IK failed")
            return
        if frame is None:
            self._publish_invalid(msg.header.stamp, self._JointKinematics.STATE_LOST, n_valid, "person lost")
            return
        if not (frame.marker_rms_m <= self.p["max_marker_rms_m"]) or not np.all(np.isfinite(frame.q)):
            self.ik.reset()  # never warm-start from a fit this bad
            self.get_logger().warning(
                f"t={t:.3f}: IK marker RMS {frame.marker_rms_m * 1000:.0f} mm > max_marker_rms_m="
                f"{self.p['max_marker_rms_m']} (worst {frame.max_error_marker}): no joint states",
                throttle_duration_sec=5.0)
            self._publish_invalid(msg.header.stamp, self._JointKinematics.STATE_UNTRUSTED, n_valid,
                                  f"fit not trusted (marker RMS {frame.marker_rms_m * 1000:.0f} mm)",
                                  marker_rms_m=frame.marker_rms_m)
            return
        self._publish(msg.header.stamp, frame)
        self.diagnostics.processed(time.perf_counter() - t0)
        self.diagnostics.set(NodeDiagnostics.OK, "tracking", tracking="valid",
                             marker_rms_m=float(frame.marker_rms_m), markers_used=int(frame.markers_used))

    def _publish_invalid(self, stamp, state: int, n_markers: int, reason: str, *,
                         marker_rms_m: float = float("nan")) -> None:
        """JointKinematics saying this frame has no usable pose (NaN positions); no JointState."""
        names = list(self.ik.coordinate_names)
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
        kin.model_name = self.ik.model.getName()
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
        outcome = self.calibrator.take_result()
        if outcome is None:
            return
        self.ik = outcome.solver          # atomic: the next frame is solved on the scaled model
        self.model_path = outcome.model_path
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
            outcome = self.calibrator.request(request.height_m, request.mass_kg, request.window_s).result()
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
