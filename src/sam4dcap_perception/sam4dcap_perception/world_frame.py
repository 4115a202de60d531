"""A metric, y-up world frame from one uncalibrated video (no calibration rig).

Monocular body estimators give the body's shape in metres but centred on the hips (BlazePose
world landmarks) and 2D keypoints in pixels. This module turns them into a world frame:

1. Translation: per frame, the camera-frame position t of the hip-centred body that makes its
   3D keypoints project onto the 2D keypoints (pinhole intrinsics: CameraInfo, or the documented
   field-of-view default `CameraIntrinsics.from_fov`). Linear least squares on the 2D-3D
   correspondences weighted by visibility, refined by Gauss-Newton on the pixel error with
   Huber weights. `recover_translation`.
2. Metric scale: scaling every camera-frame point by s keeps the projections unchanged, so the
   size is fixed by the subject's height instead: s = height / stature estimated from the body's
   segment chain (ankle-knee-hip, hip-shoulder, shoulder-eye; posture-invariant, median over
   frames) divided by the chain's fraction of stature. `stature_from_segments`.
3. Ground and up: a robust plane (Tukey-weighted least squares) through the lowest heel/toe
   points of every frame, iterated with the up axis it gives. Contacts often do not spread (a
   subject standing, stepping in place or sideways leaves them along a line, which leaves the
   plane free to roll about it), so a prior up fills the directions in which they spread less
   than `prior_spread_m`: the mean direction from the supporting foot to the body's centre of
   mass (`balance_up_direction`: a balancing body keeps its centre of mass over its support),
   or feet centre -> pelvis for marker sets without the segments for a centre of mass.
   `estimate_ground`. The prior is only as good as the body's orientation in the camera frame:
   monocular estimators get the tilt toward/away from the camera wrong (BlazePose keeps bodies
   seen from above too upright by 5-18 deg), which `recover_pose` corrects per frame from the
   2D keypoints under perspective (`virtual_markers` applies it, low-passed). On the Pose2Sim
   demo's 4 views plus 20 virtual views (each camera turned by +-12 deg pitch / +-15 deg roll
   by a homography, BlazePose rerun), both together cut the up error from median 9.3 / max
   17.8 deg (translation only, feet->pelvis) to median 4.2 / max 8.0 deg.
4. Forward (OpenSim x): the horizontal direction of travel of the pelvis when it moves more
   than `min_travel_m`; otherwise the horizontal direction from the subject to the camera (the
   subject faces +x when facing the camera). z = x cross y (right-handed, y up).
5. Origin on the ground plane under the first tracked pelvis position.

6. Contact correction (`ground_contact_shift`): per-frame depth from one image is noisy (a few
   % of the distance), and with a camera looking down that noise moves the feet up and down by
   several cm. The slow part of the lowest heel/toe height (a low-pass at
   `ground_contact_cutoff_hz`) is removed by the most likely shift: along the camera ray through
   the pelvis (a depth correction; its projection is unchanged) and vertically, split by the
   variances of depth noise and other height errors (a shallow ray would need a large depth
   change: mostly vertical then). It assumes a foot is on the ground most of the time; airborne
   phases shorter than ~1/cutoff are kept.

The pieces of 2-3 (landmarks by name, stature, ground plane, up axis, stance contacts) live in
`body_geometry`. `estimate_world_frame` does 2-5 and returns a `WorldFrame`: the scale applied to the raw
camera-frame points and the rigid transform world<-camera (metric), i.e. the camera's pose in
the world, which the ROS markers node publishes as a TF.

Conventions: camera frame x right, y down, z forward (OpenCV / ROS optical); world frame is
OpenSim's (y up, metres). Missing points are NaN everywhere and stay NaN.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from sam4dcap_biomech.errors import Sam4dcapError

from .body_geometry import (COM_REQUIRED, FOOT_POINTS, balance_up_direction, body_up_direction, estimate_ground,
                            has_landmarks, landmarks, stance_mask, stature_from_segments, unit_vector)
from .observations import CameraIntrinsics

log = logging.getLogger(__name__)



# --------------------------------------------------------------------------------------------
# Rigid transforms
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RigidTransform:
    """p_target = rotation @ p_source + translation (metres)."""
    rotation: np.ndarray
    translation: np.ndarray

    def __post_init__(self):
        r = np.asarray(self.rotation, float).reshape(3, 3)
        t = np.asarray(self.translation, float).reshape(3)
        if not np.allclose(r @ r.T, np.eye(3), atol=1e-6) or np.linalg.det(r) < 0:
            raise Sam4dcapError("rotation is not a proper rotation matrix (orthonormal, det +1)")
        object.__setattr__(self, "rotation", r)
        object.__setattr__(self, "translation", t)

    def apply(self, points: np.ndarray) -> np.ndarray:
        """Points (..., 3) -> (..., 3); NaN stays NaN."""
        return np.asarray(points, float) @ self.rotation.T + self.translation

    def inverse(self) -> "RigidTransform":
        return RigidTransform(self.rotation.T, -self.rotation.T @ self.translation)

    def compose(self, other: "RigidTransform") -> "RigidTransform":
        """self after other: p -> self(other(p))."""
        return RigidTransform(self.rotation @ other.rotation, self.rotation @ other.translation + self.translation)

    @property
    def matrix(self) -> np.ndarray:
        m = np.eye(4)
        m[:3, :3], m[:3, 3] = self.rotation, self.translation
        return m

    @property
    def quaternion_xyzw(self) -> np.ndarray:
        """Rotation as a unit quaternion (x, y, z, w), the order of geometry_msgs/Quaternion."""
        from scipy.spatial.transform import Rotation

        return Rotation.from_matrix(self.rotation).as_quat()

    @classmethod
    def identity(cls) -> "RigidTransform":
        return cls(np.eye(3), np.zeros(3))


def load_extrinsics(path: str | Path) -> RigidTransform:
    """Camera extrinsics world<-camera from a JSON or YAML file (metres).

    Accepted keys: `rotation` (3x3 matrix, world<-camera) and `translation` (camera position in
    the world); or OpenCV-style `rvec`/`tvec` (Rodrigues vector and translation of
    world->camera, as cv2.calibrateCamera/solvePnP return them).
    """
    path = Path(path)
    if not path.is_file():
        raise Sam4dcapError(f"extrinsics file not found: {path}")
    text = path.read_text()
    try:
        if path.suffix.lower() == ".json":
            doc = json.loads(text)
        else:
            from ruamel.yaml import YAML

            doc = YAML(typ="safe").load(text)
    except Exception as exc:  # noqa: BLE001 - any parse error is the user's file
        raise Sam4dcapError(f"{path}: cannot parse extrinsics ({exc})") from None
    if not isinstance(doc, dict):
        raise Sam4dcapError(f"{path}: extrinsics must be a mapping with rotation/translation or rvec/tvec")
    try:
        if "rotation" in doc and "translation" in doc:
            return RigidTransform(np.asarray(doc["rotation"], float), np.asarray(doc["translation"], float))
        if "rvec" in doc and "tvec" in doc:
            from scipy.spatial.transform import Rotation

            r_cw = Rotation.from_rotvec(np.asarray(doc["rvec"], float).reshape(3)).as_matrix()
            return RigidTransform(r_cw, np.asarray(doc["tvec"], float).reshape(3)).inverse()
    except (ValueError, TypeError) as exc:
        raise Sam4dcapError(f"{path}: bad extrinsics values ({exc})") from None
    raise Sam4dcapError(f"{path}: extrinsics need keys rotation+translation (world<-camera) or rvec+tvec (OpenCV)")


# --------------------------------------------------------------------------------------------
# 1. Translation from 2D-3D correspondences
# --------------------------------------------------------------------------------------------
def recover_translation(points_3d: np.ndarray, pixels: np.ndarray, intrinsics: CameraIntrinsics, *,
                        weights: np.ndarray | None = None, iterations: int = 5,
                        huber_px: float = 8.0) -> tuple[np.ndarray, float]:
    """Translation t (3,) such that pixels ~ project(points_3d + t); and the RMS pixel error.

    `points_3d` (K, 3) are in camera axes (any origin, e.g. hip-centred), `pixels` (K, 2).
    Points with NaN or zero weight are ignored; fewer than 3 usable points -> (NaN*3, NaN).
    """
    X = np.asarray(points_3d, float)
    uv = np.asarray(pixels, float)
    w = np.ones(len(X)) if weights is None else np.nan_to_num(np.asarray(weights, float), nan=0.0)
    ok = np.isfinite(X).all(1) & np.isfinite(uv).all(1) & (w > 0)
    if ok.sum() < 3:
        return np.full(3, np.nan), float("nan")
    X, uv, w = X[ok], uv[ok], w[ok]
    a = (uv[:, 0] - intrinsics.cx) / intrinsics.fx
    b = (uv[:, 1] - intrinsics.cy) / intrinsics.fy
    # Linear: X + tx = a (Z + tz), Y + ty = b (Z + tz).
    n = len(X)
    A = np.zeros((2 * n, 3))
    A[:n, 0], A[:n, 2] = 1.0, -a
    A[n:, 1], A[n:, 2] = 1.0, -b
    rhs = np.concatenate([a * X[:, 2] - X[:, 0], b * X[:, 2] - X[:, 1]])
    sw = np.sqrt(np.concatenate([w, w]))
    t, *_ = np.linalg.lstsq(A * sw[:, None], rhs * sw, rcond=None)
    if not np.isfinite(t).all():
        return np.full(3, np.nan), float("nan")
    # Gauss-Newton on the pixel error, Huber-weighted (a few mislocated keypoints barely pull).
    f = np.array([intrinsics.fx, intrinsics.fy])
    c = np.array([intrinsics.cx, intrinsics.cy])
    for _ in range(iterations):
        P = X + t
        z = P[:, 2]
        if np.any(z <= 1e-6):
            return np.full(3, np.nan), float("nan")
        proj = f * P[:, :2] / z[:, None] + c
        r = (proj - uv).reshape(-1)
        J: np.ndarray = np.zeros((n, 2, 3))
        J[:, 0, 0] = f[0] / z
        J[:, 0, 2] = -f[0] * P[:, 0] / z ** 2
        J[:, 1, 1] = f[1] / z
        J[:, 1, 2] = -f[1] * P[:, 1] / z ** 2
        J = J.reshape(-1, 3)
        res_norm = np.repeat(np.linalg.norm((proj - uv), axis=1), 2)
        hub = np.where(res_norm <= huber_px, 1.0, huber_px / np.maximum(res_norm, 1e-12))
        ww = np.repeat(w, 2) * hub
        H = J.T @ (J * ww[:, None])
        g = J.T @ (ww * r)
        try:
            step = np.linalg.solve(H, -g)
        except np.linalg.LinAlgError:
            break
        t = t + step
        if np.linalg.norm(step) < 1e-7:
            break
    P = X + t
    if np.any(P[:, 2] <= 1e-6):
        return np.full(3, np.nan), float("nan")
    proj = f * P[:, :2] / P[:, 2:3] + c
    rms = float(np.sqrt(np.average(((proj - uv) ** 2).sum(1), weights=w)))
    return t, rms


def recover_translations(points_3d: np.ndarray, pixels: np.ndarray, intrinsics: CameraIntrinsics, *,
                         weights: np.ndarray | None = None, **kw) -> tuple[np.ndarray, np.ndarray]:
    """`recover_translation` per frame: (N, K, 3), (N, K, 2) -> t (N, 3), RMS pixel error (N,)."""
    n = len(points_3d)
    t = np.full((n, 3), np.nan)
    rms = np.full(n, np.nan)
    for i in range(n):
        t[i], rms[i] = recover_translation(points_3d[i], pixels[i], intrinsics,
                                           weights=None if weights is None else weights[i], **kw)
    return t, rms


# A refined orientation further than this from the estimator's is a mirror-image (depth-flip)
# solution of the 2D fit, not a correction (corrections seen on the demo views: up to ~28 deg with
# the camera looking 35 deg down).
_MAX_POSE_CORRECTION_DEG = 45.0
_MIN_POSE_POINTS = 6
_POSE_STEP_TOL = 5e-5


def recover_pose(points_3d: np.ndarray, pixels: np.ndarray, intrinsics: CameraIntrinsics, *,
                 weights: np.ndarray | None = None, iterations: int = 20,
                 huber_px: float = 8.0) -> tuple[np.ndarray, np.ndarray, float]:
    """Rotation R (3, 3) about the points' origin and translation t (3,) such that
    pixels ~ project(points_3d @ R.T + t) (perspective-n-point); and the RMS pixel error.

    Monocular estimators get the body's tilt toward or away from the camera wrong by several
    degrees (BlazePose makes bodies seen from above too upright); under perspective the 2D
    keypoints fix it, since the parts nearer to the camera look larger. Gauss-Newton with Huber
    weights from `recover_translation`'s solution (R = I). Fewer than 6 usable points, a
    non-converging fit or a correction beyond 45 deg (a depth-flipped body) -> NaN.
    """
    nan = (np.full((3, 3), np.nan), np.full(3, np.nan), float("nan"))
    X = np.asarray(points_3d, float)
    uv = np.asarray(pixels, float)
    w = np.ones(len(X)) if weights is None else np.nan_to_num(np.asarray(weights, float), nan=0.0)
    ok = np.isfinite(X).all(1) & np.isfinite(uv).all(1) & (w > 0)
    if ok.sum() < _MIN_POSE_POINTS:
        return nan
    t, _ = recover_translation(X, uv, intrinsics, weights=w, huber_px=huber_px)
    if not np.isfinite(t).all():
        return nan
    X, uv, w = X[ok], uv[ok], w[ok]
    f = np.array([intrinsics.fx, intrinsics.fy])
    c = np.array([intrinsics.cx, intrinsics.cy])
    R = np.eye(3)

    def residuals(R, t):
        P = X @ R.T + t
        if np.any(P[:, 2] <= 1e-6):
            return P, None
        return P, f * P[:, :2] / P[:, 2:3] + c - uv

    def cost(r):
        e = np.linalg.norm(r, axis=1)
        rho = np.where(e <= huber_px, 0.5 * e ** 2, huber_px * (e - 0.5 * huber_px))
        return float(np.sum(w * rho))

    P, r = residuals(R, t)
    if r is None:
        return nan
    current = cost(r)
    for _ in range(iterations):
        z = P[:, 2]
        # d proj / d P (K, 2, 3), then d P / d (omega, t): a left rotation update R <- exp([omega]x) R
        # moves P by omega x (R X) = -[R X]x omega.
        Jp = np.zeros((len(P), 2, 3))
        Jp[:, 0, 0] = f[0] / z
        Jp[:, 0, 2] = -f[0] * P[:, 0] / z ** 2
        Jp[:, 1, 1] = f[1] / z
        Jp[:, 1, 2] = -f[1] * P[:, 1] / z ** 2
        RX = P - t
        skew = np.zeros((len(P), 3, 3))
        skew[:, 0, 1], skew[:, 0, 2] = RX[:, 2], -RX[:, 1]
        skew[:, 1, 0], skew[:, 1, 2] = -RX[:, 2], RX[:, 0]
        skew[:, 2, 0], skew[:, 2, 1] = RX[:, 1], -RX[:, 0]
        J = np.concatenate([Jp @ skew, Jp], axis=2).reshape(-1, 6)
        e = np.linalg.norm(r, axis=1)
        hub = np.where(e <= huber_px, 1.0, huber_px / np.maximum(e, 1e-12))
        ww = np.repeat(w * hub, 2)
        H = J.T @ (J * ww[:, None])
        g = J.T @ (ww * r.reshape(-1))
        try:
            step = np.linalg.solve(H + 1e-9 * np.trace(H) * np.eye(6), -g)
        except np.linalg.LinAlgError:
            return nan
        # Halve the step until the robust cost goes down (Gauss-Newton can overshoot far from R = I).
        for _ in range(10):
            R_new = _rotation_from_vector(step[:3]) @ R
            t_new = t + step[3:]
            P_new, r_new = residuals(R_new, t_new)
            if r_new is not None and cost(r_new) <= current:
                break
            step = step / 2
        else:
            break
        R, t, P, r, current = R_new, t_new, P_new, r_new, cost(r_new)
        # The Huber reweighting converges linearly (each step ~0.66 times the last on BlazePose
        # keypoints): a step under 5e-5 rad / 5e-5 m leaves ~1e-4 rad (0.006 deg) and 0.1 mm to
        # go, and stopping there halves the iterations (a fixed cost of every live frame).
        if np.abs(step[:3]).max() < _POSE_STEP_TOL and np.abs(step[3:]).max() < _POSE_STEP_TOL:
            break
    angle = np.degrees(np.arccos(np.clip((np.trace(R) - 1) / 2, -1.0, 1.0)))
    if not np.isfinite(R).all() or angle > _MAX_POSE_CORRECTION_DEG:
        return nan
    rms = float(np.sqrt(np.average((r ** 2).sum(1), weights=w)))
    return R, t, rms


def _rotation_from_vector(v: np.ndarray) -> np.ndarray:
    """Rodrigues: rotation by |v| rad about v."""
    angle = float(np.linalg.norm(v))
    if angle < 1e-15:
        return np.eye(3)
    k = v / angle
    Kx = np.array([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
    return np.eye(3) + np.sin(angle) * Kx + (1 - np.cos(angle)) * Kx @ Kx


def project(points_cam: np.ndarray, intrinsics: CameraIntrinsics) -> np.ndarray:
    """Camera-frame points (..., 3) -> pixels (..., 2)."""
    P = np.asarray(points_cam, float)
    with np.errstate(invalid="ignore", divide="ignore"):
        u = intrinsics.fx * P[..., 0] / P[..., 2] + intrinsics.cx
        v = intrinsics.fy * P[..., 1] / P[..., 2] + intrinsics.cy
    return np.stack([u, v], axis=-1)


# --------------------------------------------------------------------------------------------
# 4-5. Forward axis, origin, and the whole world frame
# --------------------------------------------------------------------------------------------
def horizontal(v: np.ndarray, up: np.ndarray) -> np.ndarray:
    return np.asarray(v, float) - (np.asarray(v, float) @ up)[..., None] * up


def forward_direction(pelvis: np.ndarray, up: np.ndarray, *, min_travel_m: float,
                      camera_position: np.ndarray | None = None) -> tuple[np.ndarray, str]:
    """Forward (unit, horizontal) and how it was chosen: "travel" or "camera".

    Travel: the horizontal pelvis displacement from the first to the last valid frame, if
    longer than `min_travel_m`. Camera: the horizontal direction from the median pelvis to the
    camera centre (origin of the camera frame unless given).
    """
    pel = np.asarray(pelvis, float)
    pel = pel[np.isfinite(pel).all(1)]
    if len(pel) == 0:
        raise Sam4dcapError("no frame with a pelvis position: cannot orient the world frame")
    # Robust ends: median of the first/last 10% of frames (single-frame depth is noisy).
    m = max(1, len(pel) // 10)
    travel = horizontal(np.median(pel[-m:], axis=0) - np.median(pel[:m], axis=0), up)
    if np.linalg.norm(travel) > min_travel_m:
        return unit_vector(travel), "travel"
    cam = np.zeros(3) if camera_position is None else np.asarray(camera_position, float)
    to_cam = horizontal(cam - np.median(pel, axis=0), up)
    if np.linalg.norm(to_cam) < 1e-6:
        # Camera straight above the subject: fall back to the camera's own up in the image (-y).
        to_cam = horizontal(np.array([0.0, -1.0, 0.0]), up)
    return unit_vector(to_cam), "camera"


@dataclass(frozen=True)
class WorldFrame:
    """world_point = world_from_camera.apply(scale * raw_camera_point).

    `scale` turns the estimator's camera-frame points (BlazePose metric scale) into the
    subject's metric scale; `world_from_camera` is rigid: its translation is the camera centre
    in the world and its rotation the camera's orientation (the TF world -> camera).
    """
    scale: float
    world_from_camera: RigidTransform
    frame_id: str = "world"
    stats: dict = field(default_factory=dict)

    def apply(self, raw_camera_points: np.ndarray) -> np.ndarray:
        return self.world_from_camera.apply(self.scale * np.asarray(raw_camera_points, float))


def estimate_world_frame(raw_camera_points: np.ndarray, names: Sequence[str], *, height_m: float,
                         min_travel_m: float, prior_spread_m: float, contact_band_m: float = 0.03,
                         ground_inlier_m: float = 0.03,
                         frame_id: str = "world", time_s: np.ndarray | None = None) -> WorldFrame:
    """The world frame of a trial from camera-frame body points (N, K, 3) (NaN = missing).

    With `time_s` (N,), only stance phases are evidence for up and ground (`stance_mask`):
    feet in flight (jumps, drops, running) neither pull the up axis nor become contacts, and
    contacts on a raised surface and on the floor are separate levels of one ground normal.
    """
    if height_m is None or not np.isfinite(height_m) or height_m <= 0:
        raise Sam4dcapError(f"subject height must be a positive number of metres; got {height_m!r}")
    P = np.asarray(raw_camera_points, float)
    stature_raw, n_scale = stature_from_segments(P, names)
    if not np.isfinite(stature_raw) or stature_raw <= 0:
        raise Sam4dcapError("no frame shows the ankles, knees, hips, shoulders and eyes: cannot scale to the height")
    scale = float(height_m / stature_raw)
    Pm = scale * P
    stance = stance_mask(Pm, names, time_s) if time_s is not None and has_landmarks(names, FOOT_POINTS) else None
    # Balance evidence from frames with a foot in stance (in flight the centre of mass is not
    # over any support), when there are enough of them.
    evidence = Pm if stance is None or stance.any(1).sum() < 10 else Pm[stance.any(1)]
    up_feet_pelvis = body_up_direction(evidence, names)
    if has_landmarks(names, COM_REQUIRED):
        up0 = balance_up_direction(evidence, names, up_guess=up_feet_pelvis, contact_band_m=contact_band_m)
        up_cue = "support->centre of mass"
    else:
        up0, up_cue = up_feet_pelvis, "feet->pelvis"
    ground = estimate_ground(Pm, names, up_prior=up0, contact_band_m=contact_band_m,
                             inlier_m=ground_inlier_m, prior_spread_m=prior_spread_m, stance=stance)
    up = ground.plane.normal
    pelvis = landmarks(Pm, names, ("left_hip", "right_hip")).mean(-2)
    forward, forward_method = forward_direction(pelvis, up, min_travel_m=min_travel_m)
    z = np.cross(forward, up)
    # Rows: world axes in camera coordinates -> world<-camera rotation.
    R = np.stack([forward, up, z])
    valid = np.flatnonzero(np.isfinite(pelvis).all(1))
    first = pelvis[valid[0]]
    origin = first - (ground.plane.distance(first)) * up   # on the plane under the first pelvis
    world_from_camera = RigidTransform(R, -R @ origin)
    stats = {
        "scale": scale,
        "stature_raw": stature_raw,
        "scale_frames": n_scale,
        "up_camera": up.tolist(),
        "up_prior_camera": up0.tolist(),
        "up_prior_cue": up_cue,
        "up_to_prior_deg": float(np.degrees(np.arccos(np.clip(up @ up0, -1, 1)))),
        "ground_contacts": int(len(ground.contacts)),
        "ground_inlier_fraction": float(ground.plane.inliers.mean()),
        "ground_rms_m": ground.plane.rms_m,
        "ground_levels_m": [float(v) for v in ground.levels_m],
        "stance_frames": int(stance.any(1).sum()) if stance is not None else -1,
        "forward_method": forward_method,
        "camera_height_m": float(world_from_camera.translation[1]),
    }
    log.debug("world frame: %s", stats)
    return WorldFrame(scale=scale, world_from_camera=world_from_camera, frame_id=frame_id, stats=stats)


def lowest_foot_height(world_points: np.ndarray, names: Sequence[str]) -> np.ndarray:
    """(N,) height (world y) of the lowest heel/toe per frame; NaN when no foot point."""
    h = landmarks(world_points, names, FOOT_POINTS)[..., 1]
    with np.errstate(invalid="ignore"):
        return np.where(np.isfinite(h).any(1), np.nanmin(np.where(np.isfinite(h), h, np.inf), axis=1), np.nan)


# A lowest foot at most this far above its support level (or anywhere below it) counts as on it.
CONTACT_TOLERANCE_M = 0.03


def height_above_support(heights: np.ndarray, levels_m: Sequence[float] = (0.0,)) -> np.ndarray:
    """Heights (world y) above the support level under them: the highest of `levels_m` not more
    than CONTACT_TOLERANCE_M above the height (the lowest level for anything below it). A foot
    mid-drop from a box is above the floor, not below the box."""
    h = np.asarray(heights, float)
    levels = np.sort(np.asarray(levels_m, float))
    idx = np.clip(np.searchsorted(levels, np.nan_to_num(h, nan=0.0) + CONTACT_TOLERANCE_M, side="right") - 1,
                  0, len(levels) - 1)
    return h - levels[idx]


def contact_height_error(world_points: np.ndarray, names: Sequence[str], time_s: np.ndarray,
                         levels_m: Sequence[float] = (0.0,)) -> np.ndarray:
    """(N,) height of the lowest foot above its support level (`height_above_support`: the
    ground 0, a platform, ...): what the contact correction removes. It is used where a foot is
    in stance or the lowest foot is on or below its level (a foot never sinks into the floor);
    frames with the feet clearly off every level and no foot in stance (flight, a drop) take the
    value interpolated from the frames around them, so an airborne body keeps its height. NaN
    where no foot is seen."""
    P = np.asarray(world_points, float)
    stance = stance_mask(P, names, time_s).any(1)
    lowest = lowest_foot_height(P, names)
    err = height_above_support(lowest, levels_m)
    use = np.isfinite(err) & (stance | (err <= CONTACT_TOLERANCE_M))
    if use.any():
        t = np.asarray(time_s, float)
        err = np.interp(t, t[use], err[use])
    err[~np.isfinite(lowest)] = np.nan
    return err


# Error model of the contact correction: per-frame depth noise as a fraction of the distance
# (the depth/reference ratio scatters by 1.6-4.6 % on the Pose2Sim demo views) and height
# errors of other origins (foot keypoints, pose), standard deviations.
_DEPTH_NOISE_FRACTION = 0.03
_OTHER_HEIGHT_NOISE_M = 0.03


def ground_contact_shift(world_points: np.ndarray, names: Sequence[str], camera_center: np.ndarray,
                         height_error_m: np.ndarray) -> np.ndarray:
    """(N, 3) world shift per frame that removes `height_error_m` (N,) from the body's height.

    The most likely shift under the error model: a depth error moves the body along the camera
    ray through the pelvis (its projection stays put), other errors move it vertically. The
    height error e is split between the two by their variances: along the ray
    a = -e r_y s_d^2 / (r_y^2 s_d^2 + s_o^2), vertically b = -e s_o^2 / (r_y^2 s_d^2 + s_o^2), with
    r_y the ray's vertical component, s_d the depth noise (a fraction of the distance) and s_o
    the other height noise; a r_y + b = -e exactly. A steep ray takes nearly all of it as depth
    (a small depth change fixes the height); a shallow one would need metres: vertical instead.
    NaN error -> zero shift.
    """
    pelvis = landmarks(world_points, names, ("left_hip", "right_hip")).mean(-2)
    ray = pelvis - np.asarray(camera_center, float)
    with np.errstate(invalid="ignore", divide="ignore"):
        distance = np.linalg.norm(ray, axis=1)
        ray = ray / distance[:, None]
    err = np.nan_to_num(np.asarray(height_error_m, float), nan=0.0)
    ok = np.isfinite(ray).all(1)
    shift = np.zeros_like(pelvis)
    ry = ray[ok, 1]
    depth_var = (_DEPTH_NOISE_FRACTION * distance[ok]) ** 2
    denominator = ry ** 2 * depth_var + _OTHER_HEIGHT_NOISE_M ** 2
    along = -err[ok] * ry * depth_var / denominator
    shift[ok] = along[:, None] * ray[ok]
    shift[ok, 1] += -err[ok] * _OTHER_HEIGHT_NOISE_M ** 2 / denominator
    shift[~ok, 1] = -err[~ok]
    return shift
