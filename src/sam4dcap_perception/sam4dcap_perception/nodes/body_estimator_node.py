"""body_estimator_node: /camera/image_raw -> segmentation + keypoints (+ mesh) of the tracked person.

Publishes one PersonSegmentation and one BodyKeypoints for EVERY input frame (tracked=false,
all-zero mask and NaN keypoints when the person is lost), so downstream stages see every
capture stamp; BodyMesh only from mesh backends (sam3d); the mask alone as a mono8 Image on
/sam4dcap/mask while someone (RViz) subscribes to it. keypoints_3d frame convention:
header.frame_id is the camera frame when the backend knows the body's camera translation
(mesh backends); BlazePose's metric landmarks are hip-centred with camera axes, marked by
frame_id "<camera>_hip_centred" (the markers node recovers the translation from 2D-3D).
Frame acks on /sam4dcap/progress after each frame (offline flow control, see graph.py).

Several people (blazepose backend): every person the tracker follows gets REP-155 style
topics -- /humans/bodies/tracked (sam4dcap_msgs/IdsList: the body ids on each frame) and
/humans/bodies/body<id>/roi (sam4dcap_msgs/NormalizedRegionOfInterest2D, c = 0 while that
person is not detected or overlaps another one). The subject (whose keypoints go downstream to
the markers and the joint solver) is always body<person_id>; the others are numbered after it.
A sam4dcap_msgs/Prompt on /sam4dcap/prompt (a positive point, else the box centre, in image
pixels) re-targets the tracker on the person there; that person becomes body<person_id> and the
previous subject takes the new one's former body id. Only the subject's joints are solved.
"""

from __future__ import annotations

import math
import time

import numpy as np
from rclpy.node import Node
from sensor_msgs.msg import Image

from sam4dcap_biomech.ros.msg_conversion import (array_to_points, floats_or_nan, keypoints_frame_id, sec_to_stamp,
                                                 stamp_to_sec)
from sam4dcap_biomech.ros.node_plumbing import (RESULTS_QOS, FrameAcks, NodeDiagnostics, announce_ready,
                                                declare_parameters, run_node, subscribe_like_publisher)
from sam4dcap_biomech.ros.topics import (IMAGE_TOPIC, KEYPOINTS_TOPIC, MASK_TOPIC, MESH_TOPIC, PROMPT_TOPIC,
                                         SEGMENTATION_TOPIC, TRACKED_BODIES_TOPIC, body_id, body_roi_topic,
                                         relative_topic)

from ..observations import BodyObservation, Frame
from ..tracking import BodyIds
from .image_conversion import numpy_to_image, to_rgb8


def observation_to_msgs(obs: BodyObservation, header, image_shape: tuple[int, int]):
    """(PersonSegmentation, BodyKeypoints, BodyMesh or None) of one observation."""
    from sensor_msgs.msg import RegionOfInterest

    from sam4dcap_msgs.msg import BodyKeypoints, BodyMesh, PersonSegmentation, Prompt

    seg = PersonSegmentation()
    seg.header = header
    seg.person_id = int(obs.person_id)
    seg.backend = str(obs.extra.get("mask_backend", obs.backend))
    mask = obs.mask if obs.mask is not None else np.zeros(image_shape, np.uint8)
    numpy_to_image(np.ascontiguousarray(mask, dtype=np.uint8), "mono8", stamp=header.stamp,
                   frame_id=header.frame_id, msg=seg.mask)
    if obs.box_xyxy is not None:
        x0, y0, x1, y1 = (float(v) for v in obs.box_xyxy)
        h, w = image_shape
        x0, y0 = max(0.0, x0), max(0.0, y0)
        x1, y1 = min(float(w), x1), min(float(h), y1)
        if x1 > x0 and y1 > y0:
            seg.box = RegionOfInterest(x_offset=int(x0), y_offset=int(y0), width=int(math.ceil(x1 - x0)),
                                       height=int(math.ceil(y1 - y0)))
    seg.score = float(obs.score)
    seg.tracked = bool(obs.tracked)
    if obs.prompt is not None:
        pr = obs.prompt
        seg.prompt = Prompt(stamp=sec_to_stamp(pr.time_s), source=str(pr.source), x_min=float(pr.box_xyxy[0]),
                            y_min=float(pr.box_xyxy[1]), x_max=float(pr.box_xyxy[2]), y_max=float(pr.box_xyxy[3]),
                            points=array_to_points(np.asarray(pr.points, float).reshape(-1, 2)),
                            point_labels=[int(v) for v in np.asarray(pr.labels).ravel()], score=float(pr.score))

    kp = BodyKeypoints()
    kp.header.stamp = header.stamp
    kp.person_id = int(obs.person_id)
    kp.skeleton = str(obs.skeleton)
    kp.names = list(obs.names)
    n = len(obs.names)
    # keypoints_3d go out as the estimator gave them: camera-frame positions (mesh backends, whose
    # camera_translation is already applied) or hip-centred (BlazePose), said by the frame id.
    k3 = obs.keypoints_3d
    kp.header.frame_id = keypoints_frame_id(header.frame_id, hip_centred=not obs.keypoints_3d_in_camera_frame)
    nan_pts = np.full((n, 3), np.nan)
    kp.keypoints_2d = array_to_points(obs.keypoints_2d if obs.keypoints_2d is not None else nan_pts)
    kp.keypoints_3d = array_to_points(k3 if k3 is not None else nan_pts)
    kp.confidence = floats_or_nan(obs.confidence, n)
    kp.visibility = floats_or_nan(obs.visibility, n)

    mesh = None
    if obs.mesh_vertices is not None:
        mesh = BodyMesh()
        mesh.header = header
        mesh.person_id = int(obs.person_id)
        mesh.model = str(obs.mesh_model or "")
        mesh.topology_id = str(obs.extra.get("topology_id", ""))
        mesh.vertices = np.asarray(obs.mesh_vertices, np.float32).ravel().tolist()
        faces = obs.extra.get("faces")
        if faces is not None:
            mesh.faces = np.asarray(faces, np.uint32).ravel().tolist()
        if obs.camera_translation is not None:
            t = np.asarray(obs.camera_translation, float).ravel()
            mesh.camera_translation.x, mesh.camera_translation.y, mesh.camera_translation.z = map(float, t[:3])
    return seg, kp, mesh


class BodyEstimatorNode(Node):
    def __init__(self):
        super().__init__("body_estimator_node")
        from sam4dcap_msgs.msg import BodyKeypoints, BodyMesh, PersonSegmentation

        from ..body_estimator import create_estimator

        self.p = declare_parameters(self, "body_estimator_node")
        self.estimator = create_estimator(self.p)
        self.seg_pub = self.create_publisher(PersonSegmentation, relative_topic(SEGMENTATION_TOPIC), RESULTS_QOS)
        self.kp_pub = self.create_publisher(BodyKeypoints, relative_topic(KEYPOINTS_TOPIC), RESULTS_QOS)
        self.mask_pub = self.create_publisher(Image, relative_topic(MASK_TOPIC), RESULTS_QOS)
        self.mesh_pub = self.create_publisher(BodyMesh, relative_topic(MESH_TOPIC), RESULTS_QOS)
        from sam4dcap_msgs.msg import IdsList, Prompt

        self.tracked_pub = self.create_publisher(IdsList, relative_topic(TRACKED_BODIES_TOPIC), RESULTS_QOS)
        self.roi_pubs: dict[int, object] = {}
        self.body_ids = BodyIds(int(self.p["person_id"]))
        self.create_subscription(Prompt, relative_topic(PROMPT_TOPIC), self._on_prompt, RESULTS_QOS)
        self.acks = FrameAcks(self)
        self.diagnostics = NodeDiagnostics(self)
        self.diagnostics.set(NodeDiagnostics.WARN, "waiting for images", tracking="none yet")
        self.frames = 0
        self.last_stamp_s = -math.inf
        self._timer = subscribe_like_publisher(self, Image, IMAGE_TOPIC, self._on_image,
                                               on_subscribed=lambda sub: setattr(
                                                   self, "_ready_pub", announce_ready(self, [sub.topic_name])))
        self.get_logger().info(f"body estimator {self.estimator.backend} ready")

    def _on_image(self, msg: Image) -> None:
        t = stamp_to_sec(msg.header.stamp)
        try:
            if t <= self.last_stamp_s:
                # Replays or a restarted source: the tracker's filters need increasing times.
                self.get_logger().warning(f"frame stamp {t:.3f} s not after {self.last_stamp_s:.3f} s: "
                                          "restarting the tracker")
                self.estimator.close()
                from ..body_estimator import create_estimator

                self.estimator = create_estimator(self.p)
            self.last_stamp_s = t
            rgb = to_rgb8(msg)
            t0 = time.perf_counter()
            obs = self.estimator.process(Frame(index=self.frames, time_s=t, image=rgb, source=IMAGE_TOPIC))
            self.frames += 1
            seg, kp, mesh = observation_to_msgs(obs, msg.header, rgb.shape[:2])
            self.seg_pub.publish(seg)
            self.kp_pub.publish(kp)
            if self.mask_pub.get_subscription_count() > 0:  # image viewers (RViz) only
                self.mask_pub.publish(seg.mask)
            if mesh is not None:
                self.mesh_pub.publish(mesh)
            self._publish_bodies(obs, msg.header, rgb.shape[:2])
            self.diagnostics.processed(time.perf_counter() - t0)
            if obs.tracked:
                self.diagnostics.set(NodeDiagnostics.OK, "person tracked", tracking="tracked")
            else:
                self.diagnostics.set(NodeDiagnostics.WARN, "no person in the frame", tracking="lost")
        except Exception as exc:  # noqa: BLE001 - a bad frame must not stop the node
            self.get_logger().error(f"frame at {t:.3f} s: {type(exc).__name__}: {exc}")
            self.diagnostics.set(NodeDiagnostics.ERROR, f"frame failed: {type(exc).__name__}", tracking="error")
        finally:
            self.acks.ack(msg.header.stamp)

    def _inner(self):
        """The BlazePose estimator (possibly wrapped by the SAM 3 mask), or None."""
        est = getattr(self.estimator, "inner", self.estimator)
        return est if hasattr(est, "retarget_at") else None

    def _on_prompt(self, msg) -> None:
        est = self._inner()
        if est is None:
            self.get_logger().warning(f"prompt ignored: backend {self.estimator.backend} follows one person only")
            return
        pos = [p for p, label in zip(msg.points, msg.point_labels) if label == 1] or list(msg.points)
        if pos:
            x, y = pos[0].x, pos[0].y
        else:
            x, y = 0.5 * (msg.x_min + msg.x_max), 0.5 * (msg.y_min + msg.y_max)
        track = est.retarget_at(float(x), float(y))
        if track is None:
            self.get_logger().warning(f"prompt at ({x:.0f}, {y:.0f}) px: nobody there on the last frame")
            return
        self.body_ids.select(track)
        self.get_logger().info(f"prompt ({msg.source or 'user'}) at ({x:.0f}, {y:.0f}) px: following person {track} "
                               f"as {body_id(self.body_ids.subject_body)}")

    def _publish_bodies(self, obs: BodyObservation, header, image_shape) -> None:
        """REP-155 style: the ids of everyone tracked on this frame and each one's region."""
        from sam4dcap_msgs.msg import IdsList, NormalizedRegionOfInterest2D

        people = obs.extra.get("people")
        if people is None:
            return
        if obs.extra.get("track_id") is not None:
            self.body_ids.select(int(obs.extra["track_id"]))
        h, w = image_shape
        ids = IdsList(header=header)
        for track, box, score, seen, overlap in people:
            number = self.body_ids.body(int(track))
            ids.ids.append(body_id(number))
            pub = self.roi_pubs.get(number)
            if pub is None:
                pub = self.roi_pubs[number] = self.create_publisher(NormalizedRegionOfInterest2D,
                                                                    relative_topic(body_roi_topic(number)), RESULTS_QOS)
            x0, y0, x1, y1 = box
            pub.publish(NormalizedRegionOfInterest2D(
                header=header, xmin=float(np.clip(x0 / w, 0, 1)), ymin=float(np.clip(y0 / h, 0, 1)),
                xmax=float(np.clip(x1 / w, 0, 1)), ymax=float(np.clip(y1 / h, 0, 1)),
                c=float(score) if seen and not overlap else 0.0))
        self.tracked_pub.publish(ids)

    def close(self) -> None:
        self.estimator.close()


def main(args=None) -> int:
    return run_node(BodyEstimatorNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
