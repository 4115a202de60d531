"""markers_node: /sam4dcap/keypoints (+ /camera/camera_info) -> /sam4dcap/markers in the world frame.

Thin adapter of `virtual_markers.StreamingMarkerEstimator`: the first `ground_window_s` of
keypoints fix the world frame (y up, metres, scaled to `subject_height_m`); then one
VirtualMarkers goes out per keypoints message (NaN, confidence 0, when the person is lost), so
every capture stamp flows downstream, in capture-time order. Once the world frame is fixed, the
transforms go out on /tf_static (tf2_msgs/TFMessage, latched): the z-up ROS `world` -> the y-up
`world_frame` of the markers (OpenSim's, default opensim_world; a fixed rotation) -> the camera's
optical frame (the CameraInfo's frame_id). Frame acks on /sam4dcap/progress after every input.

The ground-plane window:
  offline (file/bag source: its CameraInfo is reliable) the window's frames are held back and
      published with their own stamps, in order, once the world frame is found (the
      estimator's `take_backlog()`); downstream sees them late but in order. While holding,
      a "held" notice (FrameAcks.hold) tells the source not to wait for downstream acks of
      those frames. A clip shorter than the window: at the source's end of stream
      (/sam4dcap/end_of_stream) the world frame is fixed from the frames collected so far.
  live (camera, or realtime replay) causal: the window's frames go out as NaN when they arrive
      (nothing is published late); markers start once the window is complete.
"""

from __future__ import annotations

import numpy as np
from geometry_msgs.msg import Point
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo

from rclpy.qos import ReliabilityPolicy
from std_msgs.msg import Header

from sam4dcap_biomech.ros.node_plumbing import (DEEP_QOS, LATCHED_QOS, OPENSIM_WORLD_IN_WORLD_XYZW, RESULTS_QOS,
                                               WORLD_FRAME, FrameAcks, NodeDiagnostics, announce_ready,
                                               declare_parameters, relative_topic, run_node, stamp_to_sec,
                                               subscribe_like_publisher)

from ..graph import (CAMERA_INFO_TOPIC, END_OF_STREAM_TOPIC, KEYPOINTS_TOPIC, MARKERS_TOPIC,
                     TF_STATIC_TOPIC)
from ..observations import BodyObservation
from .body_estimator_node import HIP_CENTRED_SUFFIX
from .image_conversion import intrinsics_from_camera_info


def keypoints_to_observation(msg, index: int) -> BodyObservation:
    k2 = np.array([[p.x, p.y] for p in msg.keypoints_2d], float).reshape(-1, 2)
    k3 = np.array([[p.x, p.y, p.z] for p in msg.keypoints_3d], float).reshape(-1, 3)
    tracked = bool(np.isfinite(k3).any())
    absolute = not msg.header.frame_id.endswith(HIP_CENTRED_SUFFIX)
    return BodyObservation(
        frame_index=index, time_s=stamp_to_sec(msg.header.stamp), person_id=int(msg.person_id), tracked=tracked,
        skeleton=msg.skeleton, names=tuple(msg.names), keypoints_2d=k2, keypoints_3d=k3,
        confidence=np.asarray(msg.confidence, float), visibility=np.asarray(msg.visibility, float),
        camera_translation=np.zeros(3) if absolute else None)


def world_to_opensim_msg(opensim_frame: str, stamp):
    """TransformStamped world (z up, REP-103) -> the y-up OpenSim frame of the markers."""
    from geometry_msgs.msg import TransformStamped

    tf = TransformStamped()
    tf.header.stamp = stamp
    tf.header.frame_id = WORLD_FRAME
    tf.child_frame_id = opensim_frame
    q = tf.transform.rotation
    q.x, q.y, q.z, q.w = OPENSIM_WORLD_IN_WORLD_XYZW
    return tf


def transform_msg(world, camera_frame: str, stamp):
    """TransformStamped world -> camera (the camera's pose in the world)."""
    from geometry_msgs.msg import TransformStamped

    tf = TransformStamped()
    tf.header.stamp = stamp
    tf.header.frame_id = world.frame_id
    tf.child_frame_id = camera_frame
    t = world.world_from_camera.translation
    q = world.world_from_camera.quaternion_xyzw
    tf.transform.translation.x, tf.transform.translation.y, tf.transform.translation.z = map(float, t)
    tf.transform.rotation.x, tf.transform.rotation.y, tf.transform.rotation.z, tf.transform.rotation.w = map(float, q)
    return tf


class MarkersNode(Node):
    # After the end of stream, flush held frames even if the last keypoints never arrive.
    EOS_FLUSH_TIMEOUT_S = 5.0

    def __init__(self):
        super().__init__("markers_node")
        from tf2_msgs.msg import TFMessage

        from sam4dcap_msgs.msg import BodyKeypoints, VirtualMarkers

        self.p = declare_parameters(self, "markers_node")
        self.extrinsics = None
        if self.p["extrinsics_file"]:
            from ..world_frame import load_extrinsics

            self.extrinsics = load_extrinsics(self.p["extrinsics_file"])
        self.estimator = None
        self.intrinsics = None
        self.camera_frame = "camera_optical_frame"
        self.tf_sent = False
        self.frames = 0
        # Offline (reliable CameraInfo = file/bag source): the window's frames are held back.
        self.offline: bool | None = None
        self._held: list[tuple] = []          # (stamp, obs, person_id, names) awaiting the world frame
        self._eos_ns: int | None = None       # capture stamp of the source's last frame
        self._last_ns = -1                    # newest keypoints stamp handled
        self._last_input_wall = 0.0
        self.markers_pub = self.create_publisher(VirtualMarkers, relative_topic(MARKERS_TOPIC), DEEP_QOS)
        self.tf_pub = self.create_publisher(TFMessage, relative_topic(TF_STATIC_TOPIC), LATCHED_QOS)
        self.acks = FrameAcks(self)
        self.diagnostics = NodeDiagnostics(self)
        self.diagnostics.set(NodeDiagnostics.WARN, "waiting for keypoints", tracking="none yet")
        self.create_subscription(BodyKeypoints, relative_topic(KEYPOINTS_TOPIC), self._on_keypoints, RESULTS_QOS)
        self.create_subscription(Header, relative_topic(END_OF_STREAM_TOPIC), self._on_end_of_stream, LATCHED_QOS)
        self.create_timer(1.0, self._check_eos_timeout)

        def on_subscribed(sub):
            self.offline = sub.qos_profile.reliability == ReliabilityPolicy.RELIABLE
            self._ready_pub = announce_ready(self, [sub.topic_name])

        self._info_timer = subscribe_like_publisher(
            self, CameraInfo, CAMERA_INFO_TOPIC, self._on_info, reliable_depth=DEEP_QOS.depth,
            on_subscribed=on_subscribed)

    def _on_info(self, msg: CameraInfo) -> None:
        if self.intrinsics is None:
            self.intrinsics = intrinsics_from_camera_info(msg)
            self.camera_frame = msg.header.frame_id or self.camera_frame

    # --- output ----------------------------------------------------------------------------
    def _nan_frame(self, time_s: float, names: tuple):
        from ..virtual_markers import MarkerFrame, marker_set_of

        return MarkerFrame(time_s=time_s, names=names, positions=np.full((len(names), 3), np.nan),
                           raw=np.full((len(names), 3), np.nan), confidence=np.zeros(len(names)),
                           tracked=False, frame_id=self.p["world_frame"], marker_set=marker_set_of(names))

    def _publish(self, stamp, person_id: int, mf) -> None:
        from sam4dcap_msgs.msg import VirtualMarkers

        out = VirtualMarkers()
        out.header.stamp = stamp
        out.header.frame_id = mf.frame_id
        out.person_id = int(person_id)
        out.marker_set = mf.marker_set
        out.names = list(mf.names)
        # Array fields take numpy arrays (fast path: no per-element Python objects).
        positions = np.asarray(mf.positions, float)
        out.positions = [Point(x=x, y=y, z=z) for x, y, z in positions.tolist()]
        out.confidence = np.nan_to_num(np.asarray(mf.confidence, float), nan=0.0).tolist()
        self.markers_pub.publish(out)
        if mf.extra.get("lr_swapped"):
            self.get_logger().info(f"left/right: the estimator's labels swapped back in "
                                   f"{self.estimator.lr_swapped_frames} frame(s) so far", throttle_duration_sec=10.0)

    def _send_tf(self, stamp) -> None:
        from tf2_msgs.msg import TFMessage

        if not self.tf_sent and self.estimator is not None and self.estimator.world is not None:
            world = self.estimator.world
            self.tf_pub.publish(TFMessage(transforms=[world_to_opensim_msg(world.frame_id, stamp),
                                                      transform_msg(world, self.camera_frame, stamp)]))
            self.tf_sent = True

    def _release_held(self, frames) -> None:
        """Publish the held frames in order: their markers where the estimator has them, else NaN."""
        by_time = {f.time_s: f for f in frames}
        for stamp, obs, person_id, names in self._held:
            mf = by_time.get(obs.time_s) if obs is not None else None
            self._publish(stamp, person_id, mf if mf is not None else self._nan_frame(stamp_to_sec(stamp), names))
        if self._held:
            self.get_logger().info(f"published the {len(self._held)} frame(s) of the ground-plane window")
        self._held = []

    # --- input -----------------------------------------------------------------------------
    def _on_keypoints(self, msg) -> None:
        import time

        stamp = msg.header.stamp
        self._last_input_wall = time.monotonic()
        try:
            self._handle(msg)
            self.diagnostics.processed(time.monotonic() - self._last_input_wall)
            self._report_health()
        except Exception as exc:  # noqa: BLE001 - a bad frame must not stop the node
            self.get_logger().error(f"keypoints at {stamp_to_sec(stamp):.3f} s: {type(exc).__name__}: {exc}")
            self.diagnostics.set(NodeDiagnostics.ERROR, f"frame failed: {type(exc).__name__}", tracking="error")
        finally:
            self._last_ns = max(self._last_ns, _stamp_ns(stamp))
            self.acks.ack(stamp)
        self._maybe_finish_stream()

    def _report_health(self) -> None:
        if self.estimator is None or not self.estimator.ready:
            self.diagnostics.set(NodeDiagnostics.WARN, "finding the world frame", tracking="world frame pending")
        elif self.estimator.last_tracked:
            self.diagnostics.set(NodeDiagnostics.OK, "markers placed", tracking="tracked")
        else:
            self.diagnostics.set(NodeDiagnostics.WARN, "no person: markers NaN", tracking="lost")

    def _handle(self, msg) -> None:
        stamp = msg.header.stamp
        names = tuple(msg.names)
        obs = keypoints_to_observation(msg, self.frames)
        self.frames += 1
        if self.intrinsics is None:
            # (a restarted node sees keypoints before its first CameraInfo): NaN markers.
            self.get_logger().warning("keypoints before any camera_info: markers unknown (NaN)",
                                      throttle_duration_sec=5.0)
        elif self.estimator is None:
            from ..virtual_markers import StreamingMarkerEstimator

            self.estimator = StreamingMarkerEstimator(self.p, self.intrinsics, extrinsics=self.extrinsics)
        was_ready = self.estimator is not None and self.estimator.ready
        try:
            mf = self.estimator.push(obs) if self.estimator is not None else None
        except Exception as exc:  # noqa: BLE001 - reported; the frame goes out as NaN
            self.get_logger().error(f"keypoints at {obs.time_s:.3f} s: {type(exc).__name__}: {exc}",
                                    throttle_duration_sec=5.0)
            mf = None
        self._send_tf(stamp)
        ready = self.estimator is not None and self.estimator.ready
        if self.offline and not was_ready:
            # Offline: hold the window's frames until the world frame is known.
            self._held.append((stamp, obs, int(msg.person_id), names))
            if ready:
                self._release_held(self.estimator.take_backlog() + ([mf] if mf is not None else []))
            else:
                self.acks.hold(stamp)
            return
        if ready and not was_ready:
            self.estimator.take_backlog()   # live: those stamps already went out as NaN
        # World frame not fixed yet (live) or the frame failed: its markers are unknown, published
        # as NaN so every capture stamp reaches IK (frame acks) and the trial.
        self._publish(stamp, msg.person_id, mf if mf is not None else self._nan_frame(obs.time_s, names))

    # --- end of stream (offline) -----------------------------------------------------------
    def _on_end_of_stream(self, msg: Header) -> None:
        self._eos_ns = _stamp_ns(msg.stamp)
        self.get_logger().info(f"source ended at {stamp_to_sec(msg.stamp):.3f} s")
        self._maybe_finish_stream()

    def _check_eos_timeout(self) -> None:
        import time

        if self._eos_ns is not None and self._held and \
                time.monotonic() - self._last_input_wall > self.EOS_FLUSH_TIMEOUT_S:
            self.get_logger().warning("no keypoints for the source's last frame: fixing the world frame "
                                      "from the frames received")
            self._finish_stream()

    def _maybe_finish_stream(self) -> None:
        if self._eos_ns is not None and self._held and self._last_ns >= self._eos_ns:
            self._finish_stream()

    def _finish_stream(self) -> None:
        """The clip ended inside the ground-plane window: fix the world frame from the frames
        held (a window as long as they span) and publish them."""
        obs = [h[1] for h in self._held if h[1] is not None]
        frames = []
        if obs and self.intrinsics is not None:
            from ..virtual_markers import StreamingMarkerEstimator

            span = obs[-1].time_s - obs[0].time_s
            estimator = StreamingMarkerEstimator(dict(self.p, ground_window_s=span), self.intrinsics,
                                                 extrinsics=self.extrinsics)
            last = None
            try:
                for o in obs:
                    last = estimator.push(o)
            except Exception as exc:  # noqa: BLE001 - reported; the frames go out as NaN
                self.get_logger().error(f"world frame at end of stream: {type(exc).__name__}: {exc}")
            if estimator.ready:
                frames = estimator.take_backlog() + ([last] if last is not None else [])
                self.estimator = estimator
                self.get_logger().info(f"clip shorter than ground_window_s={self.p['ground_window_s']} s: world "
                                       f"frame fixed from its {len(obs)} frames ({span:.2f} s)")
            else:
                self.get_logger().warning(f"no world frame from the clip's {len(obs)} frames: markers NaN")
        self._send_tf(self._held[-1][0])
        self._release_held(frames)


def _stamp_ns(stamp) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def main(args=None) -> int:
    return run_node(MarkersNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
