"""Body geometry for the world frame: landmarks by name (BlazePose names, OpenCap-43 aliases),
stature from segment chains, and the ground plane / up axis from stance-phase foot contacts
(support levels), centre of mass and balance. Split from `world_frame` (sections 2-3 there);
`world_frame.estimate_world_frame` assembles the frame from these pieces."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from sam4dcap_biomech.errors import Sam4dcapError
from sam4dcap_biomech.filters import butterworth_zero_phase
from sam4dcap_biomech.timeseries import TimeSeries

log = logging.getLogger(__name__)

FOOT_POINTS = ("left_heel", "right_heel", "left_foot_index", "right_foot_index")

# Fraction of standing height spanned by the segment chain used for the scale (Winter 2009,
# "Biomechanics and motor control of human movement", segment lengths as fractions of height
# H: shank 0.246, thigh 0.245, hip joint to shoulder 0.288, shoulder to eye 0.118 -> 0.897;
# the rest is the ankle height 0.039 and the vertex above the eyes 0.064).
CHAIN_FRACTION_OF_STATURE = 0.897
# Marker sets without eye points (OpenCap 43): legs and trunk only, 0.246 + 0.245 + 0.288.
CHAIN_NO_HEAD_FRACTION = 0.779
_CHAIN_LEGS = (("left_ankle", "left_knee", "left_hip"), ("right_ankle", "right_knee", "right_hip"))

# --------------------------------------------------------------------------------------------
# 2. Scale from the subject's height
# --------------------------------------------------------------------------------------------
# Geometry landmarks (BlazePose names) from other marker sets: the mean of the listed markers
# (the 43 OpenCap markers of mesh backends: hip joint centres, lateral+medial knee/ankle, ...).
LANDMARK_ALIASES = {
    "left_hip": ("LHJC_study",), "right_hip": ("RHJC_study",),
    "left_knee": ("L_knee_study", "L_mknee_study"), "right_knee": ("r_knee_study", "r_mknee_study"),
    "left_ankle": ("L_ankle_study", "L_mankle_study"), "right_ankle": ("r_ankle_study", "r_mankle_study"),
    "left_heel": ("L_calc_study",), "right_heel": ("r_calc_study",),
    "left_foot_index": ("L_toe_study",), "right_foot_index": ("r_toe_study",),
    "left_shoulder": ("L_shoulder_study",), "right_shoulder": ("r_shoulder_study",),
    "left_elbow": ("L_lelbow_study", "L_melbow_study"), "right_elbow": ("r_lelbow_study", "r_melbow_study"),
    "left_wrist": ("L_lwrist_study", "L_mwrist_study"), "right_wrist": ("r_lwrist_study", "r_mwrist_study"),
}


def _sources(names: Sequence[str], landmark: str) -> list[int] | None:
    names = list(names)
    if landmark in names:
        return [names.index(landmark)]
    alias = LANDMARK_ALIASES.get(landmark)
    if alias and all(a in names for a in alias):
        return [names.index(a) for a in alias]
    return None


def has_landmarks(names: Sequence[str], wanted: Sequence[str]) -> bool:
    return all(_sources(names, w) is not None for w in wanted)


def landmarks(points: np.ndarray, names: Sequence[str], wanted: Sequence[str]) -> np.ndarray:
    """Points (..., K, 3) -> the `wanted` geometry landmarks (..., len(wanted), 3), by name or
    through `LANDMARK_ALIASES`; raises naming what is missing."""
    P = np.asarray(points, float)
    out = []
    for w in wanted:
        src = _sources(names, w)
        if src is None:
            raise Sam4dcapError(f"keypoints lack {w} (needed for the world frame; marker set with "
                                f"{', '.join(list(names)[:4])}, ...)")
        out.append(P[..., src, :].mean(axis=-2))
    return np.stack(out, axis=-2)


def _nanmean_pair(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Mean of two arrays where both are finite, else whichever is finite, else NaN."""
    both = np.stack([a, b])
    count = np.isfinite(both).sum(0)
    total = np.nansum(both, axis=0) if both.size else both.sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def segment_chain_length(points: np.ndarray, names: Sequence[str]) -> np.ndarray:
    """Per frame (N,): leg (ankle-knee + knee-hip, mean of both sides) + hip-centre to
    shoulder-centre (+ shoulder-centre to eye-centre when the eyes are in `names`).
    Posture-invariant; NaN when not measurable."""
    legs = []
    for side in _CHAIN_LEGS:
        a, k, h = np.moveaxis(landmarks(points, names, side), -2, 0)
        legs.append(np.linalg.norm(a - k, axis=-1) + np.linalg.norm(k - h, axis=-1))
    leg = _nanmean_pair(*legs)
    lh, rh, ls, rs = np.moveaxis(landmarks(points, names, ("left_hip", "right_hip", "left_shoulder",
                                                           "right_shoulder")), -2, 0)
    hip_c, sho_c = (lh + rh) / 2, (ls + rs) / 2
    chain = leg + np.linalg.norm(sho_c - hip_c, axis=-1)
    if has_landmarks(names, ("left_eye", "right_eye")):
        le, re = np.moveaxis(landmarks(points, names, ("left_eye", "right_eye")), -2, 0)
        chain = chain + np.linalg.norm((le + re) / 2 - sho_c, axis=-1)
    return chain


def chain_fraction_of_stature(names: Sequence[str]) -> float:
    """The fraction of stature `segment_chain_length` spans for this marker set."""
    return CHAIN_FRACTION_OF_STATURE if has_landmarks(names, ("left_eye", "right_eye")) else CHAIN_NO_HEAD_FRACTION


def stature_from_segments(points: np.ndarray, names: Sequence[str]) -> tuple[float, int]:
    """Robust standing-height estimate (same units as `points`) and the number of frames used:
    median over frames of the segment chain / CHAIN_FRACTION_OF_STATURE."""
    chain = segment_chain_length(points, names)
    chain = chain[np.isfinite(chain)]
    if chain.size == 0:
        return float("nan"), 0
    return float(np.median(chain) / chain_fraction_of_stature(names)), int(chain.size)


# --------------------------------------------------------------------------------------------
# 3. Ground plane and up axis
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Plane:
    """Points p with normal . p = offset (normal unit)."""
    normal: np.ndarray
    offset: float
    inliers: np.ndarray        # (M,) bool for the fitted points
    rms_m: float               # RMS distance of the inliers

    def distance(self, points: np.ndarray) -> np.ndarray:
        """Signed distance along the normal, (...,)."""
        return np.asarray(points, float) @ self.normal - self.offset


def unit_vector(v: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(v)
    if not np.isfinite(n) or n < 1e-12:
        raise Sam4dcapError("degenerate direction (zero length) in world-frame estimation")
    return v / n


def fit_plane(points: np.ndarray, *, weights: np.ndarray | None = None, prior_normal: np.ndarray | None = None,
              prior_spread_m: float = 0.0, inlier_m: float = 0.03, iterations: int = 20,
              groups: np.ndarray | None = None) -> Plane:
    """Robust plane through points (M, 3): Tukey-biweight IRLS on the point-plane distances.

    With `prior_normal`, a weak prior keeps the normal near it in directions where the points
    spread less than about `prior_spread_m` (a plane through a small cluster of contacts is
    otherwise undetermined); where the points spread more, the data decide.
    `groups` (M,) int: points on parallel planes (levels: a floor and a raised platform); each
    group is centred on its own, so they share the normal but not the offset. The offset
    returned is group 0's.
    """
    P = np.asarray(points, float)
    w0 = np.ones(len(P)) if weights is None else np.asarray(weights, float)
    g0 = np.zeros(len(P), int) if groups is None else np.asarray(groups, int)
    ok = np.isfinite(P).all(1) & np.isfinite(w0) & (w0 > 0)
    P, w0, g = P[ok], w0[ok], g0[ok]
    if len(P) < 3 and prior_normal is None:
        raise Sam4dcapError(f"a plane needs at least 3 points; got {len(P)}")
    if len(P) == 0:
        raise Sam4dcapError("no points to fit the ground plane")
    n0 = None if prior_normal is None else unit_vector(np.asarray(prior_normal, float))
    w = w0.copy()
    normal = n0 if n0 is not None else np.array([0.0, 0.0, 1.0])
    for _ in range(iterations):
        c = _group_centres(P, w, g)
        d = P - c
        C = (d * w[:, None]).T @ d
        if n0 is not None and prior_spread_m > 0:
            C = C + w.sum() * prior_spread_m ** 2 * (np.eye(3) - np.outer(n0, n0))
        evals, evecs = np.linalg.eigh(C)
        new = evecs[:, 0]
        ref = n0 if n0 is not None else normal
        if new @ ref < 0:
            new = -new
        r = d @ new
        # Tukey biweight, scale from the MAD, never tighter than the inlier band.
        mad = 1.4826 * np.median(np.abs(r - np.median(r)))
        k = 4.685 * max(mad, inlier_m / 2)
        w_new = w0 * np.where(np.abs(r) < k, (1 - (r / k) ** 2) ** 2, 0.0)
        if w_new.sum() <= 0:
            break
        converged = np.allclose(new, normal, atol=1e-9) and np.allclose(w_new, w, atol=1e-9)
        normal, w = new, w_new
        if converged:
            break
    # Offset: the median distance of the points that kept weight (robust to the lifted feet), per group.
    d_all = P @ normal
    offsets = np.zeros(len(P))
    for k in np.unique(g):
        mine = g == k
        kept = mine & (w > 0)
        offsets[mine] = float(np.median(d_all[kept])) if kept.any() else float(np.median(d_all[mine]))
    offset = float(offsets[g == 0][0]) if (g == 0).any() else float(np.median(d_all))
    dist = d_all - offsets
    inl = np.abs(dist) <= inlier_m
    inliers = np.zeros(ok.shape, bool)
    inliers[np.flatnonzero(ok)[inl]] = True
    rms = float(np.sqrt(np.mean(dist[inl] ** 2))) if inl.any() else float("nan")
    return Plane(normal=normal, offset=offset, inliers=inliers, rms_m=rms)


def _group_centres(P: np.ndarray, w: np.ndarray, g: np.ndarray) -> np.ndarray:
    """(M, 3) the weighted centroid of each point's group (plain centroid when its weights are 0)."""
    c = np.empty_like(P)
    for k in np.unique(g):
        mine = g == k
        c[mine] = np.average(P[mine], axis=0, weights=w[mine]) if w[mine].sum() > 0 else P[mine].mean(0)
    return c


def body_up_direction(points: np.ndarray, names: Sequence[str]) -> np.ndarray:
    """Median direction from the feet's centre (heels, toes) to the hip centre over frames (unit).

    The initial up guess: over time the pelvis stays above the base of support, whereas the
    trunk may lean for long stretches (on the Pose2Sim demo, triangulated by its calibrated
    cameras, this direction is 3 deg from vertical; the trunk's mean direction is 23 deg off).
    """
    hips = landmarks(points, names, ("left_hip", "right_hip"))
    feet = landmarks(points, names, FOOT_POINTS)
    ok = np.isfinite(feet).all((1, 2)) & np.isfinite(hips).all((1, 2))
    if not ok.any():
        raise Sam4dcapError("no frame shows both hips, heels and toes: cannot find the up direction")
    v = hips[ok].mean(1) - feet[ok].mean(1)
    v = v / np.linalg.norm(v, axis=1, keepdims=True)
    return unit_vector(np.median(v, axis=0))


# Body segments for the centre of mass (Winter 2009, "Biomechanics and motor control of human
# movement", table 4.1): mass fraction, proximal and distal landmarks (each the mean of the
# listed points), centre of mass as the fraction of the way from proximal to distal. The head
# and neck sit between the ears; the trunk (thorax, abdomen, pelvis) halfway between the
# shoulder and hip centres.
COM_SEGMENTS = (
    (0.081, ("left_ear", "right_ear"), ("left_ear", "right_ear"), 0.0),
    (0.497, ("left_shoulder", "right_shoulder"), ("left_hip", "right_hip"), 0.5),
) + tuple(
    seg for side in ("left", "right") for seg in (
        (0.028, (f"{side}_shoulder",), (f"{side}_elbow",), 0.436),
        (0.016, (f"{side}_elbow",), (f"{side}_wrist",), 0.430),
        (0.006, (f"{side}_wrist",), (f"{side}_index", f"{side}_pinky"), 0.506),
        (0.100, (f"{side}_hip",), (f"{side}_knee",), 0.433),
        (0.0465, (f"{side}_knee",), (f"{side}_ankle",), 0.433),
        (0.0145, (f"{side}_heel",), (f"{side}_foot_index",), 0.5),
    ))
COM_REQUIRED = ("left_shoulder", "right_shoulder", "left_hip", "right_hip", "left_knee", "right_knee",
                 "left_ankle", "right_ankle")


def center_of_mass(points: np.ndarray, names: Sequence[str]) -> np.ndarray:
    """Whole-body centre of mass (..., 3) from keypoints (..., K, 3) by segment masses
    (`COM_SEGMENTS`). Segments whose landmarks the marker set lacks (e.g. the head of the OpenCap
    set) are left out and the other masses rescaled; trunk and legs are required."""
    if not has_landmarks(names, COM_REQUIRED):
        raise Sam4dcapError("keypoints lack the trunk and leg landmarks needed for the centre of mass")
    P = np.asarray(points, float)
    total = 0.0
    acc: Any = 0.0   # then (..., 3) points
    for mass, proximal, distal, fraction in COM_SEGMENTS:
        if not has_landmarks(names, proximal + distal):
            continue
        a = landmarks(P, names, proximal).mean(-2)
        b = landmarks(P, names, distal).mean(-2)
        acc = acc + mass * (a + fraction * (b - a))
        total += mass
    return acc / total


def support_centre(points: np.ndarray, names: Sequence[str], up: np.ndarray, *,
                   contact_band_m: float) -> np.ndarray:
    """(N, 3) per frame: the mean of the centres (heel-toe midpoints) of the feet in contact, i.e.
    whose lower point is within `contact_band_m` of the frame's lowest foot point along `up`.
    A stand-in for the centre of pressure. NaN when no foot is seen."""
    feet = landmarks(points, names, FOOT_POINTS)                       # (N, 4, 3): lh, rh, lt, rt
    h = np.where(np.isfinite(feet).all(-1), feet @ up, np.inf)
    foot_low = np.minimum(h[:, [0, 1]], h[:, [2, 3]])                  # (N, 2) left, right
    lowest = foot_low.min(1)
    centres = (feet[:, [0, 1]] + feet[:, [2, 3]]) / 2                  # (N, 2, 3)
    on = np.isfinite(foot_low) & (foot_low <= lowest[:, None] + contact_band_m) & np.isfinite(centres).all(-1)
    count = on.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(on[..., None], centres, 0.0).sum(1) / count[:, None]
    out[count == 0] = np.nan
    return out


def robust_mean_direction(vectors: np.ndarray, *, iterations: int = 10) -> np.ndarray:
    """Mean direction (unit) of vectors (M, 3) with Tukey-biweight weights on their angles to it
    (frames of a lunge or a stumble do not pull); NaN rows ignored. Rotation-invariant, unlike
    a per-axis median."""
    v = np.asarray(vectors, float)
    v = v[np.isfinite(v).all(1)]
    norm = np.linalg.norm(v, axis=1)
    v = v[norm > 1e-12] / norm[norm > 1e-12, None]
    if len(v) == 0:
        raise Sam4dcapError("no direction to average (no frame with the needed keypoints)")
    m = unit_vector(v.mean(0))
    for _ in range(iterations):
        angle = np.arccos(np.clip(v @ m, -1.0, 1.0))
        k = 4.685 * max(1.4826 * np.median(angle), np.radians(1.0))
        w = np.where(angle < k, (1 - (angle / k) ** 2) ** 2, 0.0)
        new = unit_vector((v * w[:, None]).sum(0))
        if np.allclose(new, m, atol=1e-10):
            break
        m = new
    return m


def balance_up_direction(points: np.ndarray, names: Sequence[str], *, up_guess: np.ndarray,
                         contact_band_m: float = 0.03, iterations: int = 4) -> np.ndarray:
    """Up (unit) as the mean direction from the support (feet in contact) to the body's centre of
    mass: a body that keeps its balance has its centre of mass above its base of support on
    average (the offset is the centre of mass' acceleration times height / g, which averages out
    over a trial). Unlike feet->pelvis it holds when a leg, the arms or the trunk reach out (on
    the Pose2Sim demo, triangulated by its calibrated cameras: 2 deg from vertical, feet->pelvis 3-6).

    Which feet are in contact depends on the up axis, and a poor guess makes a foot swinging
    out sideways look lowest: the first estimate takes the slower-moving foot of every frame as
    the support (independent of any up axis), then the feet near the lowest point along the
    current up, iterated. `up_guess` starts it instead when there are fewer than 3 frames.
    """
    P = np.asarray(points, float)
    com = center_of_mass(P, names)
    up = unit_vector(np.asarray(up_guess, float))
    if len(P) >= 3:
        feet = landmarks(P, names, FOOT_POINTS)
        centres = (feet[:, [0, 1]] + feet[:, [2, 3]]) / 2                  # (N, 2 feet, 3)
        speed = np.linalg.norm(np.gradient(centres, axis=0), axis=-1)       # per frame, same units
        speed = np.where(np.isfinite(speed), speed, np.inf)
        slower = np.argmin(speed, axis=1)
        support = centres[np.arange(len(P)), slower]
        if np.isfinite(support).all(1).any() and np.isfinite(com).all(1).any():
            up = robust_mean_direction(com - support)
    for _ in range(iterations):
        new = robust_mean_direction(com - support_centre(P, names, up, contact_band_m=contact_band_m))
        if np.allclose(new, up, atol=1e-9):
            break
        up = new
    return up


@dataclass(frozen=True)
class GroundEstimate:
    plane: Plane               # normal = up, in the frame of the input points; offset = the ground level's
    contacts: np.ndarray       # (M, 3) lowest foot points used for the fit
    contact_frames: np.ndarray  # (M,) frame index of each contact point
    levels_m: tuple = (0.0,)   # heights of the support levels above the ground (0 first): a platform, ...


# Stance: a foot (mean of heel and toe) slower than this after a low-pass at STANCE_SMOOTH_HZ
# (which takes out most of the per-frame depth noise of monocular estimates). Swing feet move at
# 2-5 m/s, falling feet in a drop faster; a planted foot rolling over its toes stays below it.
STANCE_MAX_SPEED_M_S = 0.6
STANCE_SMOOTH_HZ = 3.0
# Contact heights (along up) further apart than this belong to different support levels (floor,
# box); a level with fewer than MIN_LEVEL_FRACTION of the contacts is not support (stray frames).
LEVEL_GAP_M = 0.12
MIN_LEVEL_FRACTION = 0.1


def stance_mask(points: np.ndarray, names: Sequence[str], time_s: np.ndarray, *,
                stance_max_speed_m_s: float = STANCE_MAX_SPEED_M_S) -> np.ndarray:
    """(N, 2) True where the left / right foot is in stance (metric points, times in s): its
    heel-toe midpoint, low-passed, moves slower than `stance_max_speed_m_s`. Feet in flight (a jump, a
    drop, running) and swinging feet are not in stance. Fewer than 5 frames: every seen foot."""
    feet = landmarks(points, names, FOOT_POINTS)                       # (N, 4, 3): lh, rh, lt, rt
    centres = (feet[:, [0, 1]] + feet[:, [2, 3]]) / 2                  # (N, 2, 3)
    seen = np.isfinite(centres).all(-1)
    t = np.asarray(time_s, float)
    if len(t) < 5 or len(np.unique(t)) != len(t):
        return seen
    series = TimeSeries(t, ("left_foot", "right_foot"), centres, unit="m")
    smooth = butterworth_zero_phase(series, cutoff_hz=min(STANCE_SMOOTH_HZ, 0.45 * series.rate_hz)).values
    speed = np.linalg.norm(np.gradient(smooth, t, axis=0), axis=-1)
    with np.errstate(invalid="ignore"):
        return seen & (speed < stance_max_speed_m_s)


def contact_levels(heights: np.ndarray, *, gap_m: float = LEVEL_GAP_M,
                   min_fraction: float = MIN_LEVEL_FRACTION) -> np.ndarray:
    """(M,) support level of each contact height: 0 = the lowest level holding at least
    `min_fraction` of the contacts (the ground), 1, 2, ... the higher ones; -1 = a stray
    cluster. Levels are runs of sorted heights without a jump larger than `gap_m`."""
    h = np.asarray(heights, float)
    labels = np.full(len(h), -1)
    if len(h) == 0:
        return labels
    order = np.argsort(h)
    cluster = np.concatenate([[0], np.cumsum(np.diff(h[order]) > gap_m)])
    level = 0
    for c in range(cluster[-1] + 1):
        members = order[cluster == c]
        if len(members) >= max(1, min_fraction * len(h)):
            labels[members] = level
            level += 1
    if level == 0:       # no cluster big enough: one level
        labels[:] = 0
    return labels


def lowest_foot_points(points: np.ndarray, names: Sequence[str], up: np.ndarray, *,
                       contact_band_m: float, stance: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Contact candidates: per frame and foot, the lower of heel and toe, for the feet whose
    lowest point is within `contact_band_m` of the frame's lowest foot point, and in stance
    when `stance` (N, 2) is given (a foot in the air is not a contact, however low it is)."""
    feet = landmarks(points, names, FOOT_POINTS)                      # (N, 4, 3): lh, rh, lt, rt
    h = np.where(np.isfinite(feet).all(-1), feet @ up, np.inf)
    per_foot = np.stack([h[:, [0, 2]], h[:, [1, 3]]], axis=1)          # (N, 2 feet, heel/toe)
    which = np.argmin(per_foot, axis=2)                                 # heel (0) or toe (1)
    foot_h = np.take_along_axis(per_foot, which[..., None], axis=2)[..., 0]
    lowest = foot_h.min(1)
    sel = np.isfinite(foot_h) & (foot_h <= lowest[:, None] + contact_band_m)
    if stance is not None:
        sel &= np.asarray(stance, bool)
    frames, foot = np.nonzero(sel)
    col = np.where(which[frames, foot] == 0, foot, foot + 2)            # back to lh, rh, lt, rt
    return feet[frames, col], frames


def estimate_ground(points: np.ndarray, names: Sequence[str], *, up_prior: np.ndarray,
                    prior_spread_m: float, contact_band_m: float = 0.03, inlier_m: float = 0.03,
                    iterations: int = 4, stance: np.ndarray | None = None) -> GroundEstimate:
    """Ground plane (and thereby the up axis) from the lowest foot points over time (metric points).

    With `stance` (N, 2), only feet in stance are contacts. Contacts on several parallel levels
    (a floor and a box) share the normal, each level keeps its own height (`contact_levels`);
    the plane's offset is the lowest level's (the ground), the others are in `levels_m`.
    """
    up = unit_vector(np.asarray(up_prior, float))
    plane = None
    if stance is not None and lowest_foot_points(points, names, up, contact_band_m=contact_band_m,
                                                 stance=stance)[0].shape[0] < 3:
        stance = None   # (nearly) no foot ever still: every lowest foot point is a candidate
    for _ in range(iterations):
        contacts, frames = lowest_foot_points(points, names, up, contact_band_m=contact_band_m, stance=stance)
        if len(contacts) == 0:
            raise Sam4dcapError("no heel/toe keypoints in any frame: cannot find the ground")
        groups = contact_levels(contacts @ up)
        use = groups >= 0
        plane = fit_plane(contacts[use], prior_normal=up_prior, prior_spread_m=prior_spread_m, inlier_m=inlier_m,
                          groups=groups[use])
        if np.allclose(plane.normal, up, atol=1e-6):
            break
        up = plane.normal
    assert plane is not None   # iterations >= 1
    h = contacts[use] @ plane.normal - plane.offset
    levels = tuple(float(np.median(h[groups[use] == k])) for k in range(groups.max() + 1))
    return GroundEstimate(plane=plane, contacts=contacts, contact_frames=frames, levels_m=levels)
