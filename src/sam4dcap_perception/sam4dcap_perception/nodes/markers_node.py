"""markers_node: /sam4dcap/keypoints (+ /camera/camera_info) -> /sam4dcap/markers in the world frame.

Thin adapter of `marker_stream.MarkerStream` (ROS-free, around the streaming marker estimator):
the first `ground_window_s` of keypoints fix the world frame (y up, metres, scaled to `subject_height_m`); then one
VirtualMarkers goes out per keypoints message processed (NaN, confidence 0, when the person is
lost), so every capture stamp flows downstream offline, in capture-time order. Once the world frame is fixed, the
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
Live, only the newest waiting keypoints are processed: older ones a busy node has not reached
are skipped (counted: frames_skipped on /diagnostics), so a CPU that can't keep up delays no
frame by a queue; offline every message is processed in order.
"""

from __future__ import annotations

import time

import numpy as np
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo

from rclpy.qos import ReliabilityPolicy
from std_msgs.msg import Header

from sam4dcap_biomech.ros.msg_conversion import (array_to_points, keypoints_are_hip_centred, points_to_array,
                                                 stamp_to_ns, stamp_to_sec, transform_stamped)
from sam4dcap_biomech.ros.node_plumbing import (DEEP_QOS, LATCHED_QOS, RESULTS_QOS, CoreReport, FrameAcks,
                                                NodeDiagnostics, announce_ready, declare_parameters, run_node,
                                                subscribe_like_publisher)
from sam4dcap_biomech.ros.topics import (CAMERA_INFO_TOPIC, END_OF_STREAM_TOPIC, KEYPOINTS_TOPIC, MARKERS_TOPIC,
                                         OPENSIM_WORLD_IN_WORLD_XYZW, TF_STATIC_TOPIC, WORLD_FRAME, relative_topic)

from ..marker_stream import MarkerStream
from ..observations import BodyObservation
from .image_conversion import intrinsics_from_camera_info


def keypoints_to_observation(msg, index: int) -> BodyObservation:
    k2 = points_to_array(msg.keypoints_2d, dims=2)
    k3 = points_to_array(msg.keypoints_3d)
    tracked = bool(np.isfinite(k3).any())
    in_camera_frame = not keypoints_are_hip_centred(msg.header.frame_id)
    return BodyObservation(
        frame_index=index, time_s=stamp_to_sec(msg.header.stamp), person_id=int(msg.person_id), tracked=tracked,
        skeleton=msg.skeleton, names=tuple(msg.names), keypoints_2d=k2, keypoints_3d=k3,
        confidence=np.asarray(msg.confidence, float), visibility=np.asarray(msg.visibility, float),
        extra={"keypoints_3d_frame": "camera"} if in_camera_frame else {})


def world_to_opensim_msg(opensim_frame: str, stamp):
    """TransformStamped world (z up, REP-103) -> the y-up OpenSim frame of the markers."""
    return transform_stamped(WORLD_FRAME, opensim_frame, stamp, quaternion_xyzw=OPENSIM_WORLD_IN_WORLD_XYZW)


def transform_msg(world, camera_frame: str, stamp):
    """TransformStamped world -> camera (the camera's pose in the world)."""
    return transform_stamped(world.frame_id, camera_frame, stamp, world.world_from_camera.translation,
                             world.world_from_camera.quaternion_xyzw)


class MarkersNode(Node):
    def __init__(self):
        super().__init__("markers_node")
        from tf2_msgs.msg import TFMessage

        from sam4dcap_msgs.msg import BodyKeypoints, VirtualMarkers

        self.p = declare_parameters(self, "markers_node")
        extrinsics = None
        if self.p["extrinsics_file"]:
            from ..world_frame import load_extrinsics

            extrinsics = load_extrinsics(self.p["extrinsics_file"])
        self.stream = MarkerStream(self.p, extrinsics=extrinsics, report=CoreReport(self))
        self.camera_frame = "camera_optical_frame"
        self.tf_sent = False
        self.markers_pub = self.create_publisher(VirtualMarkers, relative_topic(MARKERS_TOPIC), DEEP_QOS)
        self.tf_pub = self.create_publisher(TFMessage, relative_topic(TF_STATIC_TOPIC), LATCHED_QOS)
        self.acks = FrameAcks(self)
        self.diagnostics = NodeDiagnostics(self)
        self.diagnostics.set(NodeDiagnostics.WARN, "waiting for keypoints", tracking="none yet")
        self._keypoints_sub = self.create_subscription(BodyKeypoints, relative_topic(KEYPOINTS_TOPIC),
                                                       self._on_keypoints, RESULTS_QOS)
        self.skipped = 0   # live: keypoints a newer message replaced before they were processed
        self.create_subscription(Header, relative_topic(END_OF_STREAM_TOPIC), self._on_end_of_stream, LATCHED_QOS)
        self.create_timer(1.0, lambda: self._publish_all(self.stream.check_eos_timeout(time.monotonic())))

        def on_subscribed(sub):
            # Offline (reliable CameraInfo = file/bag source): the window's frames are held back.
            self.stream.offline = sub.qos_profile.reliability == ReliabilityPolicy.RELIABLE
            self._ready_pub = announce_ready(self, [sub.topic_name])

        self._info_timer = subscribe_like_publisher(
            self, CameraInfo, CAMERA_INFO_TOPIC, self._on_info, reliable_depth=DEEP_QOS.depth,
            on_subscribed=on_subscribed)

    def _on_info(self, msg: CameraInfo) -> None:
        if self.stream.intrinsics is None:
            self.stream.set_intrinsics(intrinsics_from_camera_info(msg))
            self.camera_frame = msg.header.frame_id or self.camera_frame

    # --- output ----------------------------------------------------------------------------
    def _publish(self, stamp, person_id: int, mf) -> None:
        from sam4dcap_msgs.msg import VirtualMarkers

        out = VirtualMarkers()
        out.header.stamp = stamp
        out.header.frame_id = mf.frame_id
        out.person_id = int(person_id)
        out.marker_set = mf.marker_set
        out.names = list(mf.names)
        out.positions = array_to_points(np.asarray(mf.positions, float).reshape(-1, 3))
        out.confidence = np.nan_to_num(np.asarray(mf.confidence, float), nan=0.0).tolist()
        self.markers_pub.publish(out)
        if mf.extra.get("lr_swapped"):
            self.get_logger().info(f"left/right: the estimator's labels swapped back in "
                                   f"{self.stream.estimator.lr_swapped_frames} frame(s) so far",
                                   throttle_duration_sec=10.0)

    def _send_tf(self, stamp) -> None:
        from tf2_msgs.msg import TFMessage

        world = self.stream.world
        if not self.tf_sent and world is not None:
            self.tf_pub.publish(TFMessage(transforms=[world_to_opensim_msg(world.frame_id, stamp),
                                                      transform_msg(world, self.camera_frame, stamp)]))
            self.tf_sent = True

    def _publish_all(self, outputs) -> None:
        """Markers of frames the stream released (the world frame's transforms first)."""
        if outputs:
            self._send_tf(outputs[-1].stamp)
        for o in outputs:
            self._publish(o.stamp, o.person_id, o.frame)

    # --- input -----------------------------------------------------------------------------
    def _newest_keypoints(self, msg):
        """Live: the newest keypoints waiting behind `msg` (the older ones are skipped and
        counted: a queue would only grow while the CPU is short; the acks are watermarks)."""
        sub = self._keypoints_sub
        while True:
            with sub.handle:
                taken = sub.handle.take_message(sub.msg_type, sub.raw)
            if taken is None:
                return msg
            msg = taken[0]
            self.skipped += 1

    def _on_keypoints(self, msg) -> None:
        if self.stream.offline is False:
            msg = self._newest_keypoints(msg)
        stamp = msg.header.stamp
        t0 = time.monotonic()
        try:
            step = self.stream.push(stamp, stamp_to_ns(stamp), keypoints_to_observation(msg, self.stream.frames),
                                    int(msg.person_id), now_s=t0)
            self._send_tf(stamp)
            self._publish_all(step.outputs)
            if step.hold:
                self.acks.hold(stamp)
            self.diagnostics.processed(time.monotonic() - t0)
            self._report_health()
        except Exception as exc:  # noqa: BLE001 - a bad frame must not stop the node
            self.get_logger().error(f"keypoints at {stamp_to_sec(stamp):.3f} s: {type(exc).__name__}: {exc}")
            self.diagnostics.set(NodeDiagnostics.ERROR, f"frame failed: {type(exc).__name__}", tracking="error")
        finally:
            finished = self.stream.consumed(stamp_to_ns(stamp))
            self.acks.ack(stamp)
        self._publish_all(finished)

    def _report_health(self) -> None:
        if not self.stream.ready:
            self.diagnostics.set(NodeDiagnostics.WARN, "finding the world frame", tracking="world frame pending")
        elif self.stream.estimator.last_tracked:
            self.diagnostics.set(NodeDiagnostics.OK, "markers placed", tracking="tracked", frames_skipped=self.skipped)
        else:
            self.diagnostics.set(NodeDiagnostics.WARN, "no person: markers NaN", tracking="lost")

    def _on_end_of_stream(self, msg: Header) -> None:
        self.get_logger().info(f"source ended at {stamp_to_sec(msg.stamp):.3f} s")
        self._publish_all(self.stream.end_of_stream(stamp_to_ns(msg.stamp)))


def main(args=None) -> int:
    return run_node(MarkersNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
