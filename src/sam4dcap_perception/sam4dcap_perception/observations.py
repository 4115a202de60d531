"""Per-frame data passed between perception stages (ROS-free). Pixel coordinates: x right,
y down. Camera frame: x right, y down, z forward (OpenCV / ROS optical frame), metres."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Frame:
    """One decoded image. `time_s` is the capture time from the container (never index/fps)."""
    index: int
    time_s: float
    image: np.ndarray          # (H, W, 3) uint8 RGB
    source: str = ""


@dataclass(frozen=True)
class CameraIntrinsics:
    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float

    @classmethod
    def from_fov(cls, width: int, height: int, horizontal_fov_deg: float) -> "CameraIntrinsics":
        """Pinhole with square pixels and a centred principal point: the documented default
        when no calibration is given.

        The field of view is the sensor's horizontal one, i.e. across the image's LONG side
        whatever the video's orientation: a phone filming in portrait turns its sensor, not its
        lens. (On the Pose2Sim demo, 1080x1920 portrait, 60 deg gives f = 1663 px; the lab
        calibration says about 1680 px. Across the short side it would be 935 px.)"""
        fx = 0.5 * max(width, height) / np.tan(np.radians(horizontal_fov_deg) / 2.0)
        return cls(width, height, fx, fx, (width - 1) / 2.0, (height - 1) / 2.0)

    @property
    def matrix(self) -> np.ndarray:
        return np.array([[self.fx, 0, self.cx], [0, self.fy, self.cy], [0, 0, 1.0]])


@dataclass(frozen=True)
class Prompt:
    """Box + points that selected the tracked person (kept with the segmentation output)."""
    time_s: float
    box_xyxy: tuple[float, float, float, float]
    points: np.ndarray                 # (P, 2) pixels
    labels: np.ndarray                 # (P,) 1 positive, 0 negative
    score: float
    source: str = "auto"               # auto | user | reprompt


@dataclass
class BodyObservation:
    """What a body estimator saw of the tracked person in one frame.

    Missing keypoints are NaN (never zeros); `tracked=False` means no person in this frame.
    """
    frame_index: int
    time_s: float
    person_id: int
    tracked: bool
    skeleton: str = "blazepose33"
    names: tuple[str, ...] = ()
    keypoints_2d: np.ndarray | None = None     # (K, 2) pixels
    keypoints_3d: np.ndarray | None = None     # (K, 3) metres, camera axes, hip-centred (BlazePose world landmarks)
    confidence: np.ndarray | None = None       # (K,) presence 0..1
    visibility: np.ndarray | None = None       # (K,) 0..1
    mask: np.ndarray | None = None             # (H, W) uint8, 255 = person
    box_xyxy: tuple[float, float, float, float] | None = None
    score: float = 0.0
    prompt: Prompt | None = None
    backend: str = "blazepose"
    # Mesh backends only.
    mesh_model: str | None = None              # "MHR" | "SMPL"
    mesh_vertices: np.ndarray | None = None    # (V, 3) metres, camera frame
    camera_translation: np.ndarray | None = None  # (3,) already applied to keypoints_3d
    extra: dict = field(default_factory=dict)

    @property
    def keypoints_3d_in_camera_frame(self) -> bool:
        """True when keypoints_3d are camera-frame positions, False when hip-centred with camera
        axes (BlazePose: the translation is fitted from 2D-3D later). The one rule: mesh
        backends say so with extra["keypoints_3d_frame"] == "camera" and/or by carrying their
        `camera_translation` (already applied to keypoints_3d)."""
        return (self.extra or {}).get("keypoints_3d_frame") == "camera" or self.camera_translation is not None
