"""Multi-view reference: calibrated cameras, triangulation, and a reference trial in one world.

The paper compares monocular results with a multi-view reconstruction of the same trial. This
module reads a Qualisys calibration (`Calib.qca.txt`), triangulates 2D keypoints seen by several
synchronised calibrated views (DLT weighted by keypoint visibility, dropping the worst view of a
point while its reprojection error is too large), reports the reprojection error per view, and
expresses the points in the OpenSim world (y up). `multiview_reference` then runs the same
model, scaling and IK as the monocular path, so both results can be compared with `compare`.

Qualisys conventions (as the Pose2Sim converter reads them, verified on the Pose2Sim demo: the
world origin and z axis project onto the treadmill in all four views):
- `transform` gives the camera position in the world [mm] and a rotation matrix M whose
  world->camera form, for a camera looking along its +z (OpenCV), is Rx(pi) @ M.
- `intrinsic` focal lengths and principal point are in 1/64 sensor pixels; the principal point
  is relative to the sensor, the video window (`fov_video`) starts at (left, top).
- Distortion coefficients are divided by 64 too (Pose2Sim's reading); on the demo they change
  reprojections by less than 0.1 px either way.
- The Qualisys world is z up; OpenSim's is y up: (x, y, z)_opensim = (y, z, x)_qualisys, a
  proper rotation (Pose2Sim writes its TRC the same way).
"""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from sam4dcap_biomech.errors import Sam4dcapError

log = logging.getLogger(__name__)

# Qualisys stores pixel quantities in 1/64 sensor pixels.
_QUALISYS_SUBPIXELS = 64.0
# Rotation by pi about x: Qualisys camera axes -> OpenCV camera axes (y down, z forward).
_RX_PI = np.diag([1.0, -1.0, -1.0])
# Qualisys z-up world -> OpenSim y-up world: new (x, y, z) = old (y, z, x). det = +1.
ZUP_TO_YUP = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])


@dataclass(frozen=True)
class CalibratedCamera:
    """A pinhole camera with OpenCV distortion; `R`, `t` map world points to camera: Rx + t."""
    name: str
    width: int
    height: int
    K: np.ndarray          # (3, 3) pixels
    dist: np.ndarray       # (k1, k2, p1, p2)
    R: np.ndarray          # (3, 3) world -> camera
    t: np.ndarray          # (3,) metres

    @property
    def projection(self) -> np.ndarray:
        """(3, 4) K [R | t] for undistorted pixels."""
        return self.K @ np.hstack([self.R, self.t.reshape(3, 1)])

    @property
    def center(self) -> np.ndarray:
        """Camera centre in the world [m]."""
        return -self.R.T @ self.t

    def project(self, points: np.ndarray) -> np.ndarray:
        """World points (..., 3) -> distorted pixels (..., 2); NaN in, NaN out."""
        import cv2

        pts = np.asarray(points, float)
        flat = pts.reshape(-1, 3)
        out = np.full((flat.shape[0], 2), np.nan)
        ok = np.isfinite(flat).all(axis=1)
        if ok.any():
            rvec, _ = cv2.Rodrigues(self.R)
            pix, _ = cv2.projectPoints(flat[ok].reshape(-1, 1, 3), rvec, self.t.astype(float),
                                       self.K, self.dist)
            out[ok] = pix.reshape(-1, 2)
        return out.reshape(pts.shape[:-1] + (2,))

    def undistort(self, pixels: np.ndarray) -> np.ndarray:
        """Distorted pixels (..., 2) -> ideal pinhole pixels (..., 2) of the same K."""
        import cv2

        pix = np.asarray(pixels, float)
        flat = pix.reshape(-1, 2)
        out = np.full_like(flat, np.nan)
        ok = np.isfinite(flat).all(axis=1)
        if ok.any():
            und = cv2.undistortPoints(flat[ok].reshape(-1, 1, 2), self.K, self.dist, P=self.K)
            out[ok] = und.reshape(-1, 2)
        return out.reshape(pix.shape)

    def with_world_rotation(self, rotation: np.ndarray) -> "CalibratedCamera":
        """The same camera for a world frame rotated by `rotation` (new = rotation @ old)."""
        rotation = np.asarray(rotation, float)
        return CalibratedCamera(self.name, self.width, self.height, self.K, self.dist,
                                self.R @ rotation.T, self.t)


def _attr(tag: ET.Element, name: str, path: Path) -> float:
    value = tag.get(name)
    if value is None:
        raise Sam4dcapError(f"{path}: <{tag.tag}> has no attribute {name!r}: not a Qualisys .qca.txt calibration")
    try:
        return float(value)
    except ValueError:
        raise Sam4dcapError(f"{path}: <{tag.tag} {name}={value!r}> is not a number") from None


def read_qualisys_calibration(path: str | Path, *, binning_factor: int = 1) -> list[CalibratedCamera]:
    """Parse a Qualisys `.qca.txt` calibration into cameras (world z up, metres), sorted by name."""
    path = Path(path)
    if not path.is_file():
        raise Sam4dcapError(f"calibration file not found: {path}")
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise Sam4dcapError(f"{path}: not a Qualisys .qca.txt calibration (XML error: {exc})") from None
    cameras = []
    for cam in root.findall("cameras/camera"):
        if cam.get("active", "1") == "0":
            continue
        name = cam.get("serial") or f"cam{len(cameras) + 1:02d}"
        transform, intrinsic, fov = cam.find("transform"), cam.find("intrinsic"), cam.find("fov_video")
        if transform is None or intrinsic is None or fov is None:
            raise Sam4dcapError(f"{path}: camera {name} lacks <transform>, <intrinsic> or <fov_video>")
        left, top = _attr(fov, "left", path), _attr(fov, "top", path)
        width = int(round((_attr(fov, "right", path) - left + 1) / binning_factor))
        height = int(round((_attr(fov, "bottom", path) - top + 1) / binning_factor))
        scale = _QUALISYS_SUBPIXELS * binning_factor
        fx, fy = _attr(intrinsic, "focalLengthU", path) / scale, _attr(intrinsic, "focalLengthV", path) / scale
        cx = (_attr(intrinsic, "centerPointU", path) / _QUALISYS_SUBPIXELS - left) / binning_factor
        cy = (_attr(intrinsic, "centerPointV", path) / _QUALISYS_SUBPIXELS - top) / binning_factor
        K = np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
        dist = np.array([_attr(intrinsic, k, path) for k in
                         ("radialDistortion1", "radialDistortion2", "tangentalDistortion1", "tangentalDistortion2")]) / scale
        M = np.array([[_attr(transform, f"r{i}{j}", path) for j in (1, 2, 3)] for i in (1, 2, 3)])
        position_m = np.array([_attr(transform, k, path) for k in ("x", "y", "z")]) / 1000.0
        R = _RX_PI @ M
        if abs(np.linalg.det(R) - 1.0) > 1e-3:
            raise Sam4dcapError(f"{path}: camera {name} rotation is not a rotation matrix (det {np.linalg.det(R):.4f})")
        cameras.append(CalibratedCamera(name, width, height, K, dist, R, -R @ position_m))
    if len(cameras) < 2:
        raise Sam4dcapError(f"{path}: {len(cameras)} active camera(s); a multi-view reference needs at least 2")
    return sorted(cameras, key=lambda c: _natural_key(c.name))


def _natural_key(text: str):
    import re

    return [int(p) if p.isdigit() else p.lower() for p in re.split(r"(\d+)", text)]


def _dlt(projections: np.ndarray, pixels: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted DLT for many points at once.

    projections (V, 3, 4); pixels (V, P, 2) undistorted; weights (V, P), 0 = view unused.
    Returns (P, 3); NaN where fewer than two views have weight.
    """
    V, P = weights.shape
    u = np.nan_to_num(pixels[..., 0])
    v = np.nan_to_num(pixels[..., 1])
    rows_u = u[..., None] * projections[:, None, 2, :] - projections[:, None, 0, :]   # (V, P, 4)
    rows_v = v[..., None] * projections[:, None, 2, :] - projections[:, None, 1, :]
    # Normalise each row so a view's weight, not its pixel scale or depth, sets its influence.
    rows = np.stack([rows_u, rows_v], axis=1)                                            # (V, 2, P, 4)
    rows = rows / np.maximum(np.linalg.norm(rows, axis=-1, keepdims=True), 1e-12)
    rows = rows * weights[:, None, :, None]
    A = rows.transpose(2, 0, 1, 3).reshape(P, 2 * V, 4)
    _, _, vt = np.linalg.svd(A)
    X = vt[:, -1, :]
    out = np.full((P, 3), np.nan)
    enough = (weights > 0).sum(axis=0) >= 2
    good = enough & (np.abs(X[:, 3]) > 1e-12)
    out[good] = X[good, :3] / X[good, 3:4]
    return out


def triangulate(cameras: Sequence[CalibratedCamera], pixels: np.ndarray, weights: np.ndarray | None = None, *,
                min_views: int = 2, max_error_px: float = 15.0, min_weight: float = 0.3,
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Triangulate points seen by calibrated views.

    pixels (V, ..., 2) distorted image coordinates (NaN = not seen); weights (V, ...) in 0..1
    (keypoint visibility; views below `min_weight` are not used). While a point's worst used
    view reprojects farther than `max_error_px` and more than `min_views` views remain, that
    view is dropped (a keypoint detected on the wrong limb in one view would otherwise pull the
    point). Returns points (..., 3) in the calibration's world, reprojection errors (V, ...) in
    pixels for every view that saw the point (NaN otherwise), and the used-view mask (V, ...).
    """
    V = len(cameras)
    pixels = np.asarray(pixels, float)
    if pixels.shape[0] != V or pixels.shape[-1] != 2:
        raise Sam4dcapError(f"triangulate: pixels must be ({V}, ..., 2) for {V} cameras; got {pixels.shape}")
    shape = pixels.shape[1:-1]
    flat = pixels.reshape(V, -1, 2)
    w = np.ones(flat.shape[:2]) if weights is None else np.asarray(weights, float).reshape(V, -1).copy()
    seen = np.isfinite(flat).all(axis=-1)
    w = np.where(seen & (w >= min_weight), np.clip(w, 0.0, 1.0), 0.0)
    undist = np.stack([cam.undistort(flat[i]) for i, cam in enumerate(cameras)])
    projections = np.stack([cam.projection for cam in cameras])

    def errors_of(points, observed):
        reproj = np.stack([cam.project(points) for cam in cameras])
        return np.linalg.norm(reproj - observed, axis=-1)

    points = _dlt(projections, undist, w)
    err = errors_of(points, flat)
    for _ in range(max(0, V - min_views)):
        used = w > 0
        worst = np.where(used, err, -np.inf)
        worst_view = np.argmax(worst, axis=0)
        worst_err = worst.max(axis=0)
        redo = (used.sum(axis=0) > min_views) & (worst_err > max_error_px)
        if not redo.any():
            break
        idx = np.nonzero(redo)[0]
        w[worst_view[idx], idx] = 0.0
        points[idx] = _dlt(projections, undist[:, idx], w[:, idx])
        err[:, idx] = errors_of(points[idx], flat[:, idx])
    err = np.where(seen, err, np.nan)
    return points.reshape(shape + (3,)), err.reshape((V,) + shape), (w > 0).reshape((V,) + shape)


def zup_to_yup(points: np.ndarray) -> np.ndarray:
    """Points (..., 3) from a z-up world (Qualisys) to OpenSim's y-up world."""
    return np.asarray(points, float) @ ZUP_TO_YUP.T
