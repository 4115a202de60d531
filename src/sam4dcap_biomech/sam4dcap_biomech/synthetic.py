"""Synthetic ground-truth trials on the generated model: coordinate trajectories (gait, squat,
drop jump, static standing), their markers by forward kinematics, and soft-tissue-like noise.

Trajectories are TimeSeries of every coordinate of `model_builder.COORDINATE_NAMES` in radians,
with pelvis_tx/ty/tz in metres (`channel_units`). Joint curves are periodic splines through
typical adult values (gait: normative sagittal curves as in Winter 2009 / Perry 2010, rounded);
in gait the pelvis height puts the lowest foot-sole point of the 3D model on the floor in every
frame (then smoothed over 20 ms: within ~5 mm); squats keep the ankle centre planted and the
soles on the floor; drop-jump contacts keep the soles within ~2 mm of the floor.
The drop jump is kinematic only: the pelvis velocity jumps at landing/take-off (use it for IK,
not for inverse dynamics).
"""

from __future__ import annotations

import numpy as np
from scipy.interpolate import CubicSpline
from scipy.ndimage import gaussian_filter1d

from .anthropometry import body_layout
from .errors import Sam4dcapError
from .model_builder import COORDINATE_NAMES, SOLE_FRAMES, TRANSLATIONAL_COORDINATES, build_model
from .timeseries import TimeSeries

_D = np.pi / 180.0
G = 9.80665
GAIT_FLOOR_SMOOTHING_S = 0.02
CHANNEL_UNITS = {c: "m" for c in TRANSLATIONAL_COORDINATES}

# Gait cycle from right heel strike: (% cycle, degrees) keypoints of periodic curves.
GAIT_CURVES_DEG = {
    "hip_flexion": [(0, 30), (10, 28), (30, 10), (50, -8), (60, 0), (75, 25), (88, 33)],
    "knee_angle": [(0, 5), (15, 18), (30, 8), (42, 5), (60, 38), (72, 62), (85, 35), (95, 6)],
    "ankle_angle": [(0, 0), (8, -6), (30, 8), (48, 12), (62, -18), (75, -4), (90, 2)],
    "hip_adduction": [(0, 2), (15, 7), (40, 4), (60, -5), (75, -6), (90, -1)],
    "hip_rotation": [(0, 3), (25, 5), (50, 0), (75, -3)],
    "subtalar_angle": [(0, 2), (15, -4), (45, 0), (65, 5), (85, 3)],
    "mtp_angle": [(0, 0), (40, 5), (55, 25), (65, 10), (75, 0)],
    "arm_flex": [(0, -10), (25, 3), (50, 18), (75, 3)],
    "elbow_flex": [(0, 15), (25, 22), (50, 35), (75, 22)],
}
GAIT_CONSTANT_DEG = {"arm_add": -8.0, "arm_rot": 5.0, "pro_sup": 80.0, "wrist_flex": 5.0, "wrist_dev": 0.0,
                     "lumbar_extension": -3.0, "neck_extension": 0.0}


def _check_timing(duration_s: float, rate_hz: float) -> np.ndarray:
    if not np.isfinite(duration_s) or duration_s <= 0:
        raise Sam4dcapError(f"duration {duration_s!r} s must be positive")
    if not np.isfinite(rate_hz) or not 1.0 <= rate_hz <= 10000.0:
        raise Sam4dcapError(f"rate {rate_hz!r} Hz must be within 1..10000 Hz")
    n = int(round(duration_s * rate_hz)) + 1
    return np.arange(n) / float(rate_hz)


def _periodic(points_deg, phase: np.ndarray) -> np.ndarray:
    """Periodic cubic spline through (% cycle, deg) keypoints, evaluated at phase in [0, 1); rad."""
    x = np.array([p for p, _ in points_deg] + [100.0]) / 100.0
    y = np.array([v for _, v in points_deg] + [points_deg[0][1]], float) * _D
    return CubicSpline(x, y, bc_type="periodic")(np.mod(phase, 1.0))


def _empty(n: int) -> dict[str, np.ndarray]:
    return {c: np.zeros(n) for c in COORDINATE_NAMES}


def _series(time, q: dict[str, np.ndarray], trial: str, **meta) -> TimeSeries:
    return TimeSeries.from_dict(time, {c: q[c] for c in COORDINATE_NAMES}, unit="rad", frame="world",
                                channel_units=CHANNEL_UNITS, meta={"trial": trial, "synthetic": True, **meta})


def _rot(theta):
    c, s = np.cos(theta), np.sin(theta)
    return np.array([[c, -s], [s, c]]).transpose(2, 0, 1) if np.ndim(theta) else np.array([[c, -s], [s, c]])


def _foot_points(lay, side: str, tilt, hip, knee, ankle) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sagittal (x, y) of ankle centre, heel sole and toe tip relative to the pelvis origin
    (planar chain: pelvis tilt, hip flexion, knee flexion, ankle dorsiflexion; N frames)."""
    P = lay.points
    po = P["pelvis_origin"][:2]
    hjc, kjc, ajc = (P[f"{k}_{side}"][:2] for k in ("hjc", "kjc", "ajc"))
    heel, toe = P[f"heel_sole_{side}"][:2], P[f"toe_tip_sole_{side}"][:2]
    th_f = tilt + hip
    th_s = th_f - knee
    th_foot = th_s + ankle
    hip_pt = _rot(tilt) @ (hjc - po)
    knee_pt = hip_pt + _rot(th_f) @ (kjc - hjc)
    ankle_pt = knee_pt + _rot(th_s) @ (ajc - kjc)
    return ankle_pt, ankle_pt + _rot(th_foot) @ (heel - ajc), ankle_pt + _rot(th_foot) @ (toe - ajc)


def _lowest_foot_y(lay, q) -> np.ndarray:
    lows = []
    for s in ("r", "l"):
        _, heel, toe = _foot_points(lay, s, q["pelvis_tilt"], q[f"hip_flexion_{s}"], q[f"knee_angle_{s}"],
                                    q[f"ankle_angle_{s}"])
        lows += [heel[:, 1], toe[:, 1]]
    return np.min(lows, axis=0)


def lowest_sole_y(model, coordinates: TimeSeries) -> np.ndarray:
    """(N,) height of the lowest foot-sole frame (`model_builder.SOLE_FRAMES`) per frame."""
    state = model.initSystem()
    frames = [model.getComponent(f.getAbsolutePathString()) for f in model.getFrameList()
              if f.getName() in SOLE_FRAMES]
    if not frames:
        raise Sam4dcapError(f"model {model.getName()} has no foot-sole frames: use a generated model")
    coords = [model.getCoordinateSet().get(c) for c in coordinates.names]
    out = np.empty(coordinates.n_frames)
    for i, row in enumerate(coordinates.values):
        for coord, value in zip(coords, row):
            coord.setValue(state, float(value), False)
        model.realizePosition(state)
        out[i] = min(f.getPositionInGround(state).get(1) for f in frames)
    return out


def _touch_floor(q: dict[str, np.ndarray], *, height_m: float, sex: str) -> None:
    """Shift pelvis_ty so that the lowest sole point of the full 3D model is on the floor in every
    frame (pelvis_ty translates along ground y, so one forward-kinematics pass is exact)."""
    model = build_model(height_m=height_m, mass_kg=70.0, markers="none", sex=sex)
    time = np.arange(len(q["pelvis_ty"]), dtype=float)
    q["pelvis_ty"] = q["pelvis_ty"] - lowest_sole_y(model, _series(time, q, "tmp"))


def static_trajectory(duration_s: float = 1.0, rate_hz: float = 60.0, *, height_m: float = 1.75,
                      sex: str = "male") -> TimeSeries:
    """Static standing trial: default pose (anatomical position), feet on the floor."""
    time = _check_timing(duration_s, rate_hz)
    lay = body_layout(height_m, 70.0, sex)
    q = _empty(time.size)
    q["pelvis_ty"][:] = lay.points["pelvis_origin"][1]
    return _series(time, q, "static", height_m=height_m)


def gait_trajectory(duration_s: float = 3.0, rate_hz: float = 60.0, *, height_m: float = 1.75,
                    stride_s: float = 1.1, speed_m_s: float | None = None, sex: str = "male") -> TimeSeries:
    """Level walking along +x: normative joint curves, left leg half a cycle after the right.

    Default speed: stride length 0.8 x height per `stride_s` (about 1.27 m/s at 1.75 m).
    """
    time = _check_timing(duration_s, rate_hz)
    if not 0.5 <= stride_s <= 3.0:
        raise Sam4dcapError(f"stride time {stride_s!r} s must be within 0.5..3 s")
    lay = body_layout(height_m, 70.0, sex)
    speed = 0.8 * height_m / stride_s if speed_m_s is None else float(speed_m_s)
    phase = time / stride_s
    q = _empty(time.size)
    for side, shift in (("r", 0.0), ("l", 0.5)):
        ph = phase + shift
        for base, pts in GAIT_CURVES_DEG.items():
            # arm curves start with the arm back at the same side's heel strike (counter-swing)
            q[f"{base}_{side}"] = _periodic(pts, ph)
        for base, deg in GAIT_CONSTANT_DEG.items():
            key = f"{base}_{side}" if f"{base}_{side}" in q else base
            q[key] = np.full(time.size, deg * _D)
    w = 2 * np.pi * phase
    q["pelvis_tilt"] = (-5.0 + 2.0 * np.cos(2 * w)) * _D
    q["pelvis_list"] = 4.0 * np.sin(w) * _D
    q["pelvis_rotation"] = 5.0 * np.sin(w + np.pi / 2) * _D
    q["lumbar_bending"] = -2.0 * np.sin(w) * _D
    q["lumbar_rotation"] = -4.0 * np.sin(w + np.pi / 2) * _D
    q["neck_rotation"] = 2.0 * np.sin(w + np.pi / 2) * _D
    q["pelvis_tx"] = speed * time
    q["pelvis_ty"] = -_lowest_foot_y(lay, q)
    _touch_floor(q, height_m=height_m, sex=sex)
    # The three-point soles make the exact floor contact kinked (pelvis acceleration spikes of
    # 4-6 g when the lowest point switches heel -> MTP -> toe); a real foot rolls. Smooth over 20 ms:
    # soles stay within ~5 mm of the floor, vertical pelvis acceleration below ~15 m/s^2.
    q["pelvis_ty"] = gaussian_filter1d(q["pelvis_ty"], sigma=GAIT_FLOOR_SMOOTHING_S * rate_hz, mode="nearest")
    return _series(time, q, "gait", height_m=height_m, speed_m_s=speed, stride_s=stride_s)


def _planted_pelvis(lay, q) -> None:
    """Pelvis tx/ty that keep the right ankle centre where it is when standing."""
    ankle_now, _, _ = _foot_points(lay, "r", q["pelvis_tilt"], q["hip_flexion_r"], q["knee_angle_r"],
                                   q["ankle_angle_r"])
    standing = lay.points["ajc_r"][:2] - lay.points["pelvis_origin"][:2]
    q["pelvis_tx"] = standing[0] - ankle_now[:, 0]
    q["pelvis_ty"] = lay.points["pelvis_origin"][1] + standing[1] - ankle_now[:, 1]


def squat_trajectory(duration_s: float = 4.0, rate_hz: float = 60.0, *, height_m: float = 1.75,
                     depth_deg: float = 90.0, period_s: float = 2.0, sex: str = "male") -> TimeSeries:
    """Repeated bodyweight squats with feet flat: knee flexion 0 -> depth_deg -> 0 per period."""
    time = _check_timing(duration_s, rate_hz)
    if not 10.0 <= depth_deg <= 140.0:
        raise Sam4dcapError(f"squat depth {depth_deg!r} deg must be within 10..140 deg")
    lay = body_layout(height_m, 70.0, sex)
    k = depth_deg * _D * (1 - np.cos(2 * np.pi * time / period_s)) / 2
    q = _empty(time.size)
    q["pelvis_tilt"] = -0.2 * k
    for s in ("r", "l"):
        q[f"knee_angle_{s}"] = k
        q[f"hip_flexion_{s}"] = 0.9 * k
        # Feet flat: the shank's forward lean equals the ankle dorsiflexion.
        q[f"ankle_angle_{s}"] = -(q["pelvis_tilt"] + q[f"hip_flexion_{s}"] - k)
        q[f"arm_flex_{s}"] = 0.8 * k
        q[f"elbow_flex_{s}"] = 0.2 + 0.1 * k
        q[f"pro_sup_{s}"] = np.full(time.size, 80 * _D)
    q["lumbar_extension"] = -0.1 * k
    q["neck_extension"] = 0.1 * k
    _planted_pelvis(lay, q)
    _touch_floor(q, height_m=height_m, sex=sex)  # the oblique ankle axis lifts/lowers the sole ~1 mm
    return _series(time, q, "squat", height_m=height_m, depth_deg=depth_deg, period_s=period_s)


def sit_to_stand_trajectory(duration_s: float = 4.0, rate_hz: float = 60.0, *, height_m: float = 1.75,
                            period_s: float = 4.0, sex: str = "male") -> TimeSeries:
    """Rise from a seat and sit back down, feet flat: per period seated (hip 90, knee 90 deg),
    trunk lean forward, rise to standing, sit down again (smooth cosine profiles)."""
    time = _check_timing(duration_s, rate_hz)
    lay = body_layout(height_m, 70.0, sex)
    phase = np.mod(time / period_s, 1.0)
    # Seated at phase 0 and 1, standing at 0.5; the trunk leans forward most when rising/sitting.
    seated = (1 + np.cos(2 * np.pi * phase)) / 2
    lean = np.sin(2 * np.pi * phase) ** 2
    q = _empty(time.size)
    q["pelvis_tilt"] = -30 * _D * lean - 10 * _D * seated
    for s in ("r", "l"):
        q[f"knee_angle_{s}"] = 90 * _D * seated
        q[f"hip_flexion_{s}"] = 95 * _D * seated + 20 * _D * lean
        q[f"ankle_angle_{s}"] = -(q["pelvis_tilt"] + q[f"hip_flexion_{s}"] - q[f"knee_angle_{s}"])
        q[f"arm_flex_{s}"] = 30 * _D * lean
        q[f"elbow_flex_{s}"] = 0.3 + 0.2 * seated
        q[f"pro_sup_{s}"] = np.full(time.size, 80 * _D)
    q["lumbar_extension"] = -10 * _D * lean
    _planted_pelvis(lay, q)
    _touch_floor(q, height_m=height_m, sex=sex)
    return _series(time, q, "sit_to_stand", height_m=height_m, period_s=period_s)


def drop_jump_trajectory(duration_s: float = 2.5, rate_hz: float = 60.0, *, height_m: float = 1.75,
                         box_height_m: float = 0.30, jump_height_m: float = 0.25, sex: str = "male") -> TimeSeries:
    """Drop from a box, land, jump vertically, land and stand: standing on the box until 0.4 s,
    ballistic flights, 0.45 s contact phases with knee flexion up to 80 / 60 deg."""
    time = _check_timing(duration_s, rate_hz)
    if not 0.05 <= box_height_m <= 1.0 or not 0.0 < jump_height_m <= 1.0:
        raise Sam4dcapError("box height must be within 0.05..1 m and jump height within 0..1 m")
    lay = body_layout(height_m, 70.0, sex)
    y_stand = lay.points["pelvis_origin"][1]
    t_off = 0.4
    t_land1 = t_off + np.sqrt(2 * box_height_m / G)
    contact = 0.45
    t_take = t_land1 + contact
    v0 = np.sqrt(2 * G * jump_height_m)
    t_land2 = t_take + 2 * v0 / G
    n = time.size
    flex = np.zeros(n)  # knee flexion profile
    for start, length, peak in ((t_land1, contact, 80.0), (t_land2, 0.6, 60.0)):
        tau = (time - start) / length
        inside = (tau >= 0) & (tau <= 1)
        flex[inside] = peak * _D * np.sin(np.pi * tau[inside]) ** 2
    q = _empty(n)
    q["pelvis_tilt"] = -0.25 * flex
    for s in ("r", "l"):
        q[f"knee_angle_{s}"] = flex
        q[f"hip_flexion_{s}"] = 0.85 * flex
        q[f"ankle_angle_{s}"] = -(q["pelvis_tilt"] + q[f"hip_flexion_{s}"] - flex)
        q[f"arm_flex_{s}"] = 0.6 * flex + 40 * _D * np.exp(-((time - (t_take + t_land2) / 2) / 0.2) ** 2)
        q[f"elbow_flex_{s}"] = 0.3 + 0.3 * flex
        q[f"pro_sup_{s}"] = np.full(n, 80 * _D)
    q["lumbar_extension"] = -0.15 * flex
    _planted_pelvis(lay, q)
    forward = 0.35 * height_m / 1.75
    on_box = time < t_off
    fall = (time >= t_off) & (time < t_land1)
    flight = (time >= t_take) & (time < t_land2)
    q["pelvis_ty"][on_box] = y_stand + box_height_m
    tf = time[fall] - t_off
    q["pelvis_ty"][fall] = y_stand + box_height_m - 0.5 * G * tf ** 2
    tj = time[flight] - t_take
    q["pelvis_ty"][flight] = y_stand + v0 * tj - 0.5 * G * tj ** 2
    # Horizontal: step forward off the box during the fall, then stay (planted offsets keep feet fixed).
    frac = np.clip((time - t_off) / (t_land1 - t_off), 0, 1)
    q["pelvis_tx"] = q["pelvis_tx"] - forward * (1 - frac)
    return _series(time, q, "drop_jump", height_m=height_m, box_height_m=box_height_m,
                   jump_height_m=jump_height_m)


def markers_from_coordinates(model, coordinates: TimeSeries, *, marker_names=None) -> TimeSeries:
    """Forward kinematics: marker positions in ground (N, M, 3) metres for each frame of
    `coordinates` (rad/m, or deg with metre translations); model coordinates not in the series
    keep their default values; NaN coordinates give NaN markers."""
    if coordinates.is_points:
        raise Sam4dcapError("coordinates must be a scalar TimeSeries (N, K), not points")
    if coordinates.unit == "deg":
        coordinates = coordinates.to_unit("rad")
    elif coordinates.unit != "rad":
        raise Sam4dcapError(f"coordinate unit {coordinates.unit!r} not understood: use rad or deg")
    state = model.initSystem()
    coord_set = model.getCoordinateSet()
    unknown = [c for c in coordinates.names if not coord_set.contains(c)]
    if unknown:
        raise Sam4dcapError(f"coordinates not in model {model.getName()}: {', '.join(unknown[:6])}")
    marker_set = model.getMarkerSet()
    names = [marker_set.get(i).getName() for i in range(marker_set.getSize())] if marker_names is None \
        else list(marker_names)
    missing = [m for m in names if not marker_set.contains(m)]
    if missing:
        raise Sam4dcapError(f"markers not in model {model.getName()}: {', '.join(missing[:6])}")
    markers = [marker_set.get(m) for m in names]
    coords = [coord_set.get(c) for c in coordinates.names]
    out = np.full((coordinates.n_frames, len(names), 3), np.nan)
    for i in range(coordinates.n_frames):
        row = coordinates.values[i]
        if np.isnan(row).any():
            continue
        for coord, value in zip(coords, row):
            coord.setValue(state, float(value), False)
        model.realizePosition(state)
        for j, marker in enumerate(markers):
            out[i, j] = marker.getLocationInGround(state).to_numpy()
    meta = dict(coordinates.meta)
    meta.update({"model": model.getName(), "source": "forward kinematics"})
    return TimeSeries(time=coordinates.time, names=tuple(names), values=out, unit="m", frame="world", meta=meta)


def add_marker_noise(markers: TimeSeries, *, sigma_m: float, dropout_fraction: float = 0.0,
                     seed: int = 0, lowpass_hz: float = 1.5, correlated_share: float = 0.7) -> TimeSeries:
    """Soft-tissue-like noise: per marker and axis, a smooth random drift (Gaussian-smoothed white
    noise, bandwidth ~lowpass_hz) carrying `correlated_share` of the variance plus white noise
    for the rest; RMS per axis = sigma_m. `dropout_fraction` of the samples become NaN in gaps of
    1..(0.2 s) frames."""
    if not markers.is_points:
        raise Sam4dcapError("marker noise needs a points TimeSeries (N, M, 3)")
    if not np.isfinite(sigma_m) or sigma_m < 0:
        raise Sam4dcapError(f"noise sigma {sigma_m!r} m must be >= 0")
    if not 0.0 <= dropout_fraction < 1.0:
        raise Sam4dcapError(f"dropout fraction {dropout_fraction!r} must be within 0..1")
    rng = np.random.default_rng(seed)
    values = markers.to_unit("m").values.copy()
    n, m, _ = values.shape
    if sigma_m > 0:
        rate = markers.rate_hz if n > 1 else 60.0
        white = rng.standard_normal((n, m, 3))
        smooth = gaussian_filter1d(rng.standard_normal((n, m, 3)), sigma=rate / (2 * np.pi * lowpass_hz),
                                   axis=0, mode="reflect")
        std = smooth.std(axis=0, keepdims=True)
        smooth = smooth / np.where(std > 0, std, 1.0)
        values += sigma_m * (np.sqrt(correlated_share) * smooth + np.sqrt(1 - correlated_share) * white)
    if dropout_fraction > 0:
        rate = markers.rate_hz if n > 1 else 60.0
        max_gap = max(1, int(round(0.2 * rate)))
        target = int(round(dropout_fraction * n * m))
        dropped = np.zeros((n, m), bool)
        while dropped.sum() < target:
            j = rng.integers(m)
            start = rng.integers(n)
            length = rng.integers(1, max_gap + 1)
            room = target - dropped.sum()
            dropped[start:start + min(length, room), j] = True
        values[dropped] = np.nan
    meta = dict(markers.meta)
    meta.update({"noise_sigma_m": float(sigma_m), "dropout_fraction": float(dropout_fraction), "noise_seed": seed})
    return markers.with_values(values, unit="m", meta=meta)
