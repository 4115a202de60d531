"""A synthetic BlazePose-33 subject seen by a known pinhole camera (tests of the world frame).

The body is built from Winter's anthropometric fractions of the height H (ankle 0.039 H, knee
0.285 H, hip 0.530 H, shoulder 0.818 H, eye 0.936 H), so its segment chain is exactly
0.897 H. It glides along a straight line on the ground (y = 0, y up), one foot rolling onto its
toes now and then (the chain is unchanged). Everything is known: world points, camera pose,
2D projections, and the hip-centred "estimator" 3D keypoints in camera axes at a wrong scale.
"""

from __future__ import annotations

import numpy as np

from sam4dcap_biomech.markersets import BLAZEPOSE33
from sam4dcap_perception.observations import BodyObservation, CameraIntrinsics

NAMES = BLAZEPOSE33


def standing_body(height_m: float) -> np.ndarray:
    """(33, 3) body in a y-up world, facing +x, feet on y = 0, pelvis above the origin and above
    the middle of the feet (so the feet->pelvis up prior is exact while standing)."""
    H = height_m
    p = {}
    for side, z in (("left", -1.0), ("right", 1.0)):
        p[f"{side}_hip"] = (0.0, 0.530 * H, z * 0.05 * H)
        p[f"{side}_knee"] = (0.0, 0.285 * H, z * 0.05 * H)
        p[f"{side}_ankle"] = (0.0, 0.039 * H, z * 0.05 * H)
        p[f"{side}_heel"] = (-0.065 * H, 0.0, z * 0.05 * H)
        p[f"{side}_foot_index"] = (0.065 * H, 0.0, z * 0.05 * H)
        p[f"{side}_shoulder"] = (0.0, 0.818 * H, z * 0.10 * H)
        p[f"{side}_elbow"] = (0.0, 0.630 * H, z * 0.12 * H)
        p[f"{side}_wrist"] = (0.02 * H, 0.485 * H, z * 0.12 * H)
        p[f"{side}_pinky"] = (0.03 * H, 0.440 * H, z * 0.13 * H)
        p[f"{side}_index"] = (0.04 * H, 0.440 * H, z * 0.12 * H)
        p[f"{side}_thumb"] = (0.04 * H, 0.455 * H, z * 0.11 * H)
        p[f"{side}_eye_inner"] = (0.0, 0.936 * H, z * 0.015 * H)
        p[f"{side}_eye"] = (0.0, 0.936 * H, z * 0.02 * H)
        p[f"{side}_eye_outer"] = (0.0, 0.936 * H, z * 0.03 * H)
        p[f"{side}_ear"] = (0.0, 0.925 * H, z * 0.045 * H)
        p[f"mouth_{side}"] = (0.055 * H, 0.895 * H, z * 0.015 * H)
    p["nose"] = (0.065 * H, 0.915 * H, 0.0)
    return np.array([p[n] for n in NAMES], float)


def look_at(camera_position, target) -> np.ndarray:
    """World->camera rotation (rows: camera x right, y down, z forward in world axes), y-up world."""
    z = np.asarray(target, float) - np.asarray(camera_position, float)
    z /= np.linalg.norm(z)
    x = np.cross(np.array([0.0, -1.0, 0.0]), z)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    return np.stack([x, y, z])


def rot_y(angle_rad: float) -> np.ndarray:
    c, s = np.cos(angle_rad), np.sin(angle_rad)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


class Scene:
    """A subject walking `travel_m` along world direction `heading_rad` (about y), seen by a camera."""

    def __init__(self, *, height_m=1.8, n_frames=120, rate_hz=60.0, travel_m=1.5, heading_rad=0.4,
                 camera_position=(3.5, 1.6, 1.0), estimator_scale=0.9, width=1080, height=1920, fov_deg=60.0,
                 world=None, camera_roll_rad=0.0):
        """`world` (N, 33, 3): a y-up trajectory of the body to film instead of the glide (its
        travel direction is taken as +x); `camera_roll_rad` turns the camera about its optical
        axis (a camera that isn't level)."""
        self.height_m = height_m
        self.time = np.arange(n_frames if world is None else len(world)) / rate_hz
        self.intrinsics = CameraIntrinsics.from_fov(width, height, fov_deg)
        body = standing_body(height_m)
        R_heading = rot_y(heading_rad if world is None else 0.0)   # body faces/travels along R_heading @ x
        self.direction = R_heading @ np.array([1.0, 0.0, 0.0])
        start = np.array([-0.5, 0.0, 0.3])
        frames = [] if world is None else list(np.asarray(world, float))
        names = list(NAMES)
        for i, t in enumerate(self.time if world is None else ()):
            b = body.copy()
            # Every other half second one heel rises (toe-off): rotate that foot about its toes.
            side = "left" if int(t * 2) % 2 == 0 else "right"
            phase = (t * 2) % 1.0
            lift = 0.25 * np.sin(np.pi * phase)   # rad
            toe = b[names.index(f"{side}_foot_index")].copy()
            c, s = np.cos(lift), np.sin(lift)
            rz = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])  # heel goes up when rotating about z
            k = names.index(f"{side}_heel")
            b[k] = toe + rz.T @ (b[k] - toe)
            frames.append(b @ R_heading.T + start + self.direction * travel_m * t / self.time[-1])
        self.world = np.array(frames)                       # (N, 33, 3) y-up world
        pelvis = self.world[:, [names.index("left_hip"), names.index("right_hip")]].mean(1)
        self.pelvis = pelvis
        self.camera_position = np.asarray(camera_position, float)
        c, s_ = np.cos(camera_roll_rad), np.sin(camera_roll_rad)
        roll = np.array([[c, -s_, 0.0], [s_, c, 0.0], [0.0, 0.0, 1.0]])
        self.R_cw = roll @ look_at(self.camera_position, pelvis.mean(0))
        self.camera = (self.world - self.camera_position) @ self.R_cw.T   # true metric camera frame
        K = self.intrinsics
        self.pixels = np.stack([K.fx * self.camera[..., 0] / self.camera[..., 2] + K.cx,
                                K.fy * self.camera[..., 1] / self.camera[..., 2] + K.cy], -1)
        pel_cam = (pelvis - self.camera_position) @ self.R_cw.T
        # What a BlazePose-like estimator returns: hip-centred, camera axes, its own scale.
        self.estimator_3d = estimator_scale * (self.camera - pel_cam[:, None, :])

    def expected_world(self) -> np.ndarray:
        """Ground truth in the pipeline's world frame: x = travel direction, y up, origin on the
        ground under the first pelvis."""
        x = self.direction
        y = np.array([0.0, 1.0, 0.0])
        z = np.cross(x, y)
        R = np.stack([x, y, z])
        origin = self.pelvis[0] * np.array([1.0, 0.0, 1.0])
        return (self.world - origin) @ R.T

    def observations(self, *, missing=()) -> list[BodyObservation]:
        out = []
        k = len(NAMES)
        for i, t in enumerate(self.time):
            if i in set(missing):
                out.append(BodyObservation(frame_index=i, time_s=float(t), person_id=1, tracked=False,
                                           names=NAMES, keypoints_2d=np.full((k, 2), np.nan),
                                           keypoints_3d=np.full((k, 3), np.nan),
                                           visibility=np.full(k, np.nan), confidence=np.full(k, np.nan)))
                continue
            out.append(BodyObservation(frame_index=i, time_s=float(t), person_id=1, tracked=True, names=NAMES,
                                       keypoints_2d=self.pixels[i].copy(), keypoints_3d=self.estimator_3d[i].copy(),
                                       visibility=np.ones(k), confidence=np.ones(k)))
        return out


def drop_jump_world(height_m: float = 1.75, *, box_height_m: float = 0.45, rate_hz: float = 60.0,
                    stand_s: float = 1.2, after_s: float = 1.5, take_off_speed_m_s: float = 1.2,
                    forward_speed_m_s: float = 0.8) -> tuple[np.ndarray, np.ndarray]:
    """(world (N, 33, 3), airborne (N,) bool): a subject standing (stepping in place) on a box
    `box_height_m` high, jumping off it forward (ballistic flight: up at `take_off_speed_m_s`,
    then falling to the floor), landing, then stepping on the floor. y up, feet on y = 0 / box."""
    g = 9.81
    body = standing_body(height_m)
    names = list(NAMES)
    # Flight: y(t) = box + v t - g t^2 / 2 reaches 0 at t_f.
    t_f = (take_off_speed_m_s + np.sqrt(take_off_speed_m_s ** 2 + 2 * g * box_height_m)) / g
    total = stand_s + t_f + after_s
    time = np.arange(int(round(total * rate_hz))) / rate_hz
    frames, airborne = [], []
    for t in time:
        b = body.copy()
        if t < stand_s or t >= stand_s + t_f:
            # Stepping in place: a heel rises now and then (rotation about the toes).
            side = "left" if int(t * 2) % 2 == 0 else "right"
            lift = 0.2 * np.sin(np.pi * ((t * 2) % 1.0))
            toe = b[names.index(f"{side}_foot_index")].copy()
            c, s_ = np.cos(lift), np.sin(lift)
            rz = np.array([[c, -s_, 0], [s_, c, 0], [0, 0, 1]])
            k = names.index(f"{side}_heel")
            b[k] = toe + rz.T @ (b[k] - toe)
        if t < stand_s:
            offset = np.array([0.0, box_height_m, 0.0])
            airborne.append(False)
        elif t < stand_s + t_f:
            tau = t - stand_s
            offset = np.array([forward_speed_m_s * tau, box_height_m + take_off_speed_m_s * tau - g * tau ** 2 / 2,
                               0.0])
            airborne.append(True)
        else:
            offset = np.array([forward_speed_m_s * t_f + 0.3 * (t - stand_s - t_f) / after_s, 0.0, 0.0])
            airborne.append(False)
        frames.append(b + offset)
    return np.array(frames), np.array(airborne)
