"""Camera intrinsics from a calibration file (ROS camera_info YAML or OpenCV YAML). ROS-free:
used by video_source_node (`camera_info_file` parameter) and the offline marker pipeline."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sam4dcap_biomech.errors import Sam4dcapError

from .observations import CameraIntrinsics

PARAMETER = "video_source_node.camera_info_file"


def load_camera_info_file(path, width: int, height: int) -> CameraIntrinsics:
    """Pinhole intrinsics from a ROS camera_info YAML (`camera_matrix.data`, and its
    image_width/image_height when given) or an OpenCV FileStorage YAML (`K`, `camera_matrix` or
    `cameraMatrix`). `width`/`height`: the image size when the file does not say."""
    p = Path(path)
    if not p.is_file():
        raise Sam4dcapError(f"parameter {PARAMETER}: {p} not found")
    k = None
    try:
        import yaml

        doc = yaml.safe_load(p.read_text())
        if isinstance(doc, dict) and isinstance(doc.get("camera_matrix"), dict):
            k = np.reshape(np.asarray(doc["camera_matrix"]["data"], float), (3, 3))
            width, height = int(doc.get("image_width", width)), int(doc.get("image_height", height))
    except Exception:  # noqa: BLE001 - OpenCV YAML (%YAML:1.0 + !!opencv-matrix) is not plain YAML
        k = None
    if k is None:
        import cv2

        fs = cv2.FileStorage(str(p), cv2.FILE_STORAGE_READ)
        try:
            for key in ("K", "camera_matrix", "cameraMatrix"):
                node = fs.getNode(key)
                if not node.empty():
                    k = node.mat()
                    break
        finally:
            fs.release()
    if k is None or np.shape(k) != (3, 3) or not np.all(np.isfinite(k)) or k[0][0] <= 0 or k[1][1] <= 0:
        raise Sam4dcapError(f"parameter {PARAMETER}: {p} has no 3x3 camera matrix with positive focal lengths "
                            "(ROS camera_info YAML `camera_matrix` or OpenCV `K`/`camera_matrix`)")
    return CameraIntrinsics(int(width), int(height), float(k[0][0]), float(k[1][1]), float(k[0][2]), float(k[1][2]))
