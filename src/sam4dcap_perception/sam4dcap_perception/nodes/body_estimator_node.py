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

In one process with the video source (perception_process, `local_images=True`), frames arrive
as arrays through `take_image` (no image message in between) and are processed on the
executor's thread: live, the newest waiting frame wins (the others are counted as skipped);
offline every frame is processed in order.
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

from ..frame_skips import SkipCounter
from ..observations import BodyObservation, Frame
from ..tracking import BodyIds
from .image_conversion import numpy_to_image, to_rgb8


def observation_to_msgs(obs: BodyObservation, header, image_shape: tuple[int, int], *, segmentation: bool = True):
    """(PersonSegmentation or None, BodyKeypoints, BodyMesh or None) of one observation
    (no PersonSegmentation when `segmentation` is False: nobody consumes it)."""
    seg = _segmentation_msg(obs, header, image_shape) if segmentation else None
    return (seg, *_keypoints_and_mesh(obs, header))


def _segmentation_msg(obs: BodyObservation, header, image_shape: tuple[int, int]):
    from sensor_msgs.msg import RegionOfInterest

    from sam4dcap_msgs.msg import PersonSegmentation, Prompt

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
    return seg


def _keypoints_and_mesh(obs: BodyObservation, header):
    from sam4dcap_msgs.msg import BodyKeypoints, BodyMesh

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
    return kp, mesh


class BodyEstimatorNode(Node):
    def __init__(self, *, local_images: bool = False, newest_only: bool = True):
        """`local_images`: frames come from `take_image` (perception_process) instead of
        IMAGE_TOPIC; `newest_only` (live) then drops frames that wait behind a newer one."""
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
        # Live images: newest frame wins (frames a busy estimator missed are dropped, not queued);
        # the drops are counted from the publisher's sequence numbers and reported.
        self.skips = SkipCounter()
        self.create_timer(10.0, self._report_skipped)
        if local_images:
            import collections
            import threading

            self._local: collections.deque = collections.deque()   # (rgb, header, sequence, error)
            self._local_lock = threading.Lock()
            self._local_seq = 0
            self._local_busy = False
            self.newest_only = newest_only
            self._local_wake = self.create_guard_condition(self._on_local_image)
            self._ready_pub = announce_ready(self, [])
        else:
            self._timer = subscribe_like_publisher(self, Image, IMAGE_TOPIC, self._on_image,
                                                   on_subscribed=lambda sub: setattr(
                                                       self, "_ready_pub", announce_ready(self, [sub.topic_name])))
        self.get_logger().info(f"body estimator {self.estimator.backend} ready"
                               + (" (frames in-process from the video source)" if local_images else ""))

    def take_image(self, rgb: np.ndarray | None, header, *, error: str = "") -> None:
        """The video source's thread (perception_process): queue one frame, wake the executor.
        An image it could not read comes as rgb None with the `error`: reported and acked here,
        as a bad image message would be."""
        with self._local_lock:
            self._local_seq += 1
            self._local.append((rgb, header, self._local_seq, error))
        self._local_wake.trigger()

    def _on_local_image(self) -> None:
        with self._local_lock:
            if not self._local:
                return
            if self.newest_only:
                item = self._local.pop()
                self._local.clear()   # older frames: skipped (seen as a gap in the sequence)
            else:
                item = self._local.popleft()
            more = bool(self._local)
            self._local_busy = True
        rgb, header, seq, error = item
        try:
            self.skips.observe(seq, b"local")
            if rgb is None:
                self.get_logger().error(f"frame at {stamp_to_sec(header.stamp):.3f} s: {error}")
                self.diagnostics.set(NodeDiagnostics.ERROR, "frame failed: unreadable image", tracking="error")
                self.acks.ack(header.stamp)
            else:
                self._process(rgb, header)
        finally:
            with self._local_lock:
                self._local_busy = False
        if more:
            self._local_wake.trigger()

    def wait_local_idle(self, timeout_s: float) -> bool:
        """The source's thread at its end (perception_process): until every handed-over frame
        is processed (its results out), at most `timeout_s`; True when idle."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._local_lock:
                if not self._local and not self._local_busy:
                    return True
            time.sleep(0.01)
        return False

    def _on_image(self, msg: Image, info) -> None:
        self.skips.observe(info.get("publication_sequence_number"), info.get("publisher_gid"))
        try:
            rgb = to_rgb8(msg)
        except Exception as exc:  # noqa: BLE001 - a bad frame must not stop the node
            self.get_logger().error(f"frame at {stamp_to_sec(msg.header.stamp):.3f} s: {type(exc).__name__}: {exc}")
            self.diagnostics.set(NodeDiagnostics.ERROR, f"frame failed: {type(exc).__name__}", tracking="error")
            self.acks.ack(msg.header.stamp)
            return
        self._process(rgb, msg.header)

    def _process(self, rgb: np.ndarray, header) -> None:
        """One frame (capture stamp in `header`) through the estimator; results and ack out."""
        t = stamp_to_sec(header.stamp)
        try:
            if t <= self.last_stamp_s:
                # Replays or a restarted source: the tracker's filters need increasing times.
                self.get_logger().warning(f"frame stamp {t:.3f} s not after {self.last_stamp_s:.3f} s: "
                                          "restarting the tracker")
                self.estimator.close()
                from ..body_estimator import create_estimator

                self.estimator = create_estimator(self.p)
            self.last_stamp_s = t
            t0 = time.perf_counter()
            # The mask (a segmentation pass + a full-frame resize + a frame-sized message) only
            # while someone subscribes to it (recorder, image viewers).
            want_mask = self.seg_pub.get_subscription_count() > 0 or self.mask_pub.get_subscription_count() > 0
            if self._inner() is not None:
                self._inner().want_mask = want_mask
            obs = self.estimator.process(Frame(index=self.frames, time_s=t, image=rgb, source=IMAGE_TOPIC))
            self.frames += 1
            seg, kp, mesh = observation_to_msgs(obs, header, rgb.shape[:2], segmentation=want_mask)
            if seg is not None:
                self.seg_pub.publish(seg)
            self.kp_pub.publish(kp)
            if seg is not None and self.mask_pub.get_subscription_count() > 0:  # image viewers (RViz) only
                self.mask_pub.publish(seg.mask)
            if mesh is not None:
                self.mesh_pub.publish(mesh)
            self._publish_bodies(obs, header, rgb.shape[:2])
            self.diagnostics.processed(time.perf_counter() - t0)
            skipped = {"frames_skipped": self.skips.skipped, "person_detector_runs": getattr(self._inner(), "n_scans", "")}
            if obs.tracked:
                self.diagnostics.set(NodeDiagnostics.OK, "person tracked", tracking="tracked", **skipped)
            else:
                self.diagnostics.set(NodeDiagnostics.WARN, "no person in the frame", tracking="lost", **skipped)
        except Exception as exc:  # noqa: BLE001 - a bad frame must not stop the node
            self.get_logger().error(f"frame at {t:.3f} s: {type(exc).__name__}: {exc}")
            self.diagnostics.set(NodeDiagnostics.ERROR, f"frame failed: {type(exc).__name__}", tracking="error")
        finally:
            self.acks.ack(header.stamp)

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

    def _report_skipped(self) -> None:
        if self.skips.skipped:
            self.get_logger().info(f"live images: processed {self.skips.received}, skipped {self.skips.skipped} "
                                   "(newest frame wins while busy)")

    def close(self) -> None:
        self._report_skipped()
        self.estimator.close()


def main(args=None) -> int:
    return run_node(BodyEstimatorNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
