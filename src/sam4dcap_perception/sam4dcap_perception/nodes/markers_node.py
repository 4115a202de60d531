"""markers_node: /sam4dcap/keypoints (+ /camera/camera_info) -> /sam4dcap/markers in the world frame.

Thin adapter of `virtual_markers.StreamingMarkerEstimator`: the first `ground_window_s` of
keypoints fix the world frame (y up, metres, scaled to `subject_height_m`); one VirtualMarkers
goes out per keypoints message, NaN (confidence 0) while the world frame is being found or
when the person is lost, so every capture stamp flows downstream. Once the world frame is fixed, the world -> camera transform goes out on /tf_static
(tf2_msgs/TFMessage, latched). Frame acks on /sam4dcap/progress after every input.
The estimator's `take_backlog()` (markers of the window frames, known once the world frame is
fixed) is not published: those stamps already went out as NaN, and a live stream stays in
capture-time order (offline `sam4dcap process` has the whole trial).
"""

from __future__ import annotations

import numpy as np
from geometry_msgs.msg import Point
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo

from sam4dcap_biomech.nodes.ros_common import (DEEP_QOS, LATCHED_QOS, RESULTS_QOS, FrameAcks, announce_ready,
                                               declare_parameters, run_node, stamp_to_sec, subscribe_like_publisher)

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
        self.camera_frame = "camera"
        self.tf_sent = False
        self.frames = 0
        self.markers_pub = self.create_publisher(VirtualMarkers, "/sam4dcap/markers", DEEP_QOS)
        self.tf_pub = self.create_publisher(TFMessage, "/tf_static", LATCHED_QOS)
        self.acks = FrameAcks(self)
        self.create_subscription(BodyKeypoints, "/sam4dcap/keypoints", self._on_keypoints, RESULTS_QOS)
        self._info_timer = subscribe_like_publisher(
            self, CameraInfo, "/camera/camera_info", self._on_info, reliable_depth=DEEP_QOS.depth,
            on_subscribed=lambda sub: setattr(self, "_ready_pub", announce_ready(self, [sub.topic_name])))

    def _on_info(self, msg: CameraInfo) -> None:
        if self.intrinsics is None:
            self.intrinsics = intrinsics_from_camera_info(msg)
            self.camera_frame = msg.header.frame_id or self.camera_frame

    def _on_keypoints(self, msg) -> None:
        from tf2_msgs.msg import TFMessage

        from sam4dcap_msgs.msg import VirtualMarkers

        try:
            obs = keypoints_to_observation(msg, self.frames)
            self.frames += 1
            if self.intrinsics is None:
                # (a restarted node sees keypoints before its first CameraInfo): NaN markers.
                self.get_logger().warning("keypoints before any camera_info: markers unknown (NaN)",
                                          throttle_duration_sec=5.0)
            elif self.estimator is None:
                from ..virtual_markers import StreamingMarkerEstimator

                self.estimator = StreamingMarkerEstimator(self.p, self.intrinsics, extrinsics=self.extrinsics)
            try:
                mf = self.estimator.push(obs) if self.estimator is not None else None
            except Exception as exc:  # noqa: BLE001 - reported; the frame goes out as NaN
                self.get_logger().error(f"keypoints at {obs.time_s:.3f} s: {type(exc).__name__}: {exc}",
                                        throttle_duration_sec=5.0)
                mf = None
            if mf is None:
                # World frame not fixed yet (or the frame failed): its markers are unknown,
                # published as NaN so every capture stamp reaches IK (frame acks) and the trial.
                from ..virtual_markers import MarkerFrame, marker_set_of

                names = tuple(msg.names)
                mf = MarkerFrame(time_s=obs.time_s, names=names, positions=np.full((len(names), 3), np.nan),
                                 raw=np.full((len(names), 3), np.nan), confidence=np.zeros(len(names)),
                                 tracked=False, frame_id=self.p["world_frame"], marker_set=marker_set_of(names))
            if not self.tf_sent and self.estimator.world is not None:
                self.tf_pub.publish(TFMessage(transforms=[transform_msg(self.estimator.world, self.camera_frame,
                                                                       msg.header.stamp)]))
                self.tf_sent = True
            out = VirtualMarkers()
            out.header.stamp = msg.header.stamp
            out.header.frame_id = mf.frame_id
            out.person_id = int(msg.person_id)
            out.marker_set = mf.marker_set
            out.names = list(mf.names)
            out.positions = [Point(x=float(x), y=float(y), z=float(z)) for x, y, z in np.asarray(mf.positions, float)]
            out.confidence = [float(c) for c in np.nan_to_num(np.asarray(mf.confidence, float), nan=0.0)]
            self.markers_pub.publish(out)
        except Exception as exc:  # noqa: BLE001 - a bad frame must not stop the node
            self.get_logger().error(f"keypoints at {stamp_to_sec(msg.header.stamp):.3f} s: "
                                    f"{type(exc).__name__}: {exc}")
        finally:
            self.acks.ack(msg.header.stamp)


def main(args=None) -> int:
    return run_node(MarkersNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
