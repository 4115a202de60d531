"""Camera-aware fitting: the model's coordinates fitted to 2D keypoints through 1..N cameras.

Marker IK (inverse_kinematics, streaming_ik) fits the model to 3D markers. From one video those
markers are the estimator's 3D body placed in the world: right across the line of sight (their
projections are the 2D keypoints) but 8-10 cm off along it (depth). This fitter instead fits
the coordinates (pelvis pose in the world included) to what the cameras saw:

    sum_views,markers  rho(|pi_c(x_k(q_f)) - u_ckf|^2 * c_ckf w_k / sigma_px^2)    reprojection
  + sum_markers |(x_k - x_mean) - (m_k - m_mean)|^2 w_k / sigma_rel^2               relative 3D prior
  + |x_mean - m_mean|^2 / sigma_abs^2                                               absolute 3D prior
  + sum_stance (h_k - h_k,ground)^2 / sigma_h^2 + |dx_k,horizontal|^2 / sigma_slide^2   foot contact
  + sum_coords (q_f+1 - 2 q_f + q_f-1)^2 / (sigma_acc dt^2)^2                       smoothness
  + the marker IK's coordinate tasks (weak priors, unobserved holds)

with joint ranges as bounds; pi_c is the pinhole projection of camera c (world->camera R, t
and intrinsics K; pixels undistorted by the caller), c the keypoint confidence, w the marker-set
weight, m the 3D markers the pipeline made (monocular: the world-frame markers; multi-view: the
triangulation; with one camera, offline, the foot points' prior weight is scaled by
`foot_prior_weight`: a monocular estimator's 3D feet are its least trustworthy part), rho
Huber's loss (iteratively reweighted). Stance: a foot point whose 3D marker moves slower than
`stance_speed_m_s` near its lowest height; its ground height is the median of its stance
heights in the data.

Offline (`fit_trial`): the whole trial as one sparse least-squares problem (Levenberg-Marquardt
on the normal equations, block-banded: each frame's coordinates couple to its neighbours only),
started from the streaming marker IK. With `marker_placement_min_views` or more cameras, each
keypoint's place on the model is then refined from the 2D keypoints (`marker_placement`) and
the trial refitted (one camera: off, the offsets would absorb the pose's depth errors). Live (`StreamingCameraFit`): the same terms for one
frame, smoothness and slide against the previous frames (causal), warm-started from the
prediction, a few iterations.

Confidence per coordinate and frame (`fit_confidence`): the 1-sigma posterior std from the
frame's own information (its reprojection, prior, contact and task rows; J^T J block of that
frame), scaled by the fit's robust residual level, and the expected error from the limbs' depth
flips that one camera cannot tell apart (each flip's probability from its reprojection cost,
prior left out), and, offline, for a coordinate held at its range limit while the fit pulls it
further, that pull past the bound (`fit_confidence.pinned_msq`, limit_msq);
1 / (1 + (std^2 + flip_msq + limit_msq) / ref^2) with ref 5 deg / 5 cm, gate at 0.5
(`fit_confidence.GATE_CONFIDENCE`). Coordinates no marker moves: std inf, confidence 0.
`FitResult.local_confidence`: the std alone mapped with 2 deg / 2 cm (the confidence before
the flip test).
"""

from __future__ import annotations

import collections
import logging
import threading
import time as _time
from dataclasses import dataclass, field, fields
from typing import Any, Mapping, Sequence

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from .errors import Sam4dcapError
from .fit_confidence import (SMOOTH_S, combined_confidence, flip_ambiguity, limb_segments, pinned_msq,
                             smooth_flips)
from .marker_placement import PlacementSettings, place_markers
from .model_builder import RESTING_POSE
from .streaming_ik import IKFrame, StreamingIK, solve_trial
from .timeseries import TimeSeries

log = logging.getLogger(__name__)

# Foot points kept on the ground in stance, per marker set (heel and toe of each foot).
FOOT_MARKERS = {
    "blazepose33": (("left_heel", "left_foot_index"), ("right_heel", "right_foot_index")),
    "opencap43": (("L_calc_study", "L_toe_study"), ("r_calc_study", "r_toe_study")),
}
# Confidence mapping, as streaming_ik: 0.5 at 2 deg / 2 cm posterior std.
_REF_ROTATION_RAD = np.deg2rad(2.0)
_REF_TRANSLATION_M = 0.02
# Gauss-Newton steps of each limb's depth-flip solve (fit_confidence): offline, live (one step
# is too short a reach for a flip: on the demo's cam04 it left the far knee unflagged). Live, a
# frame tests every FLIP_ROUNDS_LIVE-th limb segment in turn (the result is averaged over
# fit_confidence.SMOOTH_S anyway): a third of the CPU.
FLIP_ITERATIONS_TRIAL = 3
FLIP_ITERATIONS_LIVE = 3
FLIP_ROUNDS_LIVE = 3
# Rounds of marker placement and refit (stops early once no marker moves 2 mm more).
PLACEMENT_ROUNDS = 4
# A coordinate within this of a clamped bound counts as "at the range limit".
AT_LIMIT_RAD = np.deg2rad(0.5)


@dataclass(frozen=True)
class PinholeCamera:
    """World -> camera (x right, y down, z forward): p = R x + t; pixels = K p / p_z (undistorted)."""
    name: str
    K: np.ndarray
    R: np.ndarray
    t: np.ndarray

    @property
    def center(self) -> np.ndarray:
        return -np.asarray(self.R).T @ np.asarray(self.t)

    def project(self, points: np.ndarray) -> np.ndarray:
        p = np.asarray(points, float) @ np.asarray(self.R).T + self.t
        with np.errstate(invalid="ignore", divide="ignore"):
            uv = p[..., :2] / p[..., 2:3]
        return uv * np.diag(self.K)[:2] + self.K[:2, 2]

    def project_with_jacobian(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Pixels (M, 2), d(pixels)/d(world point) (M, 2, 3), depth (M,)."""
        R = np.asarray(self.R, float)
        p = np.asarray(points, float) @ R.T + self.t
        z = p[:, 2]
        fx, fy = self.K[0, 0], self.K[1, 1]
        with np.errstate(invalid="ignore", divide="ignore"):
            pix = np.stack([fx * p[:, 0] / z + self.K[0, 2], fy * p[:, 1] / z + self.K[1, 2]], axis=1)
            d = np.zeros((p.shape[0], 2, 3))
            d[:, 0, 0] = fx / z
            d[:, 0, 2] = -fx * p[:, 0] / z ** 2
            d[:, 1, 1] = fy / z
            d[:, 1, 2] = -fy * p[:, 1] / z ** 2
        return pix, d @ R, z


@dataclass(frozen=True)
class CameraView:
    """What one camera saw: undistorted pixels (N, K, 2) of the markers `names` (NaN = missing),
    and their confidence (N, K) 0..1, on the trial's frames."""
    camera: PinholeCamera
    names: tuple[str, ...]
    pixels: np.ndarray
    confidence: np.ndarray


@dataclass(frozen=True)
class FitSettings:
    """Weights of the fit's terms as 1-sigma values (see the module docstring). Built from the
    config section camera_fit at the edge: `FitSettings.from_params(load_config().params("camera_fit"))`."""
    pixel_sigma_px: float
    huber_sigmas: float
    relative_prior_sigma_m: float
    absolute_prior_sigma_m: float
    contact_height_sigma_m: float
    contact_slide_sigma_m: float
    smooth_rotation_sigma_rad_s2: float
    smooth_translation_sigma_m_s2: float
    stance_speed_m_s: float
    stance_height_m: float
    max_iterations: int
    live_iterations: int
    neutral_prior_sigma_deg: float
    outlier_px: float
    foot_prior_weight: float
    marker_placement_min_views: int
    marker_placement_sigma_m: float
    marker_placement_max_m: float

    @classmethod
    def from_params(cls, params: Mapping) -> "FitSettings":
        """From the config's camera_fit section (`load_config().params("camera_fit")`)."""
        missing = [f.name for f in fields(cls) if f.name not in params]
        if missing:
            raise Sam4dcapError(f"camera_fit settings lack {', '.join(missing)} (config section camera_fit)")
        values: dict[str, Any] = {f.name: int(params[f.name]) if f.name.endswith(("iterations", "_views"))
                                   else float(params[f.name])
                                  for f in fields(cls)}
        return cls(**values)


@dataclass
class FitResult:
    """coordinates: every model coordinate (rad / m), N frames. q_std, confidence (N, C).
    reprojection_px (V, N, K) per view (NaN where unseen); marker_error_m (N, K) the fit's error:
    each marker's reprojection error as a distance at its depth (px * depth / f), mean over the
    views that saw it; marker_to_3d_m (N, K) model marker to the 3D marker given (the prior:
    monocular 3D markers are 8-14 cm off along the line of sight); at_limit (N, C) clamped
    coordinate within 0.5 deg of its range."""
    coordinates: TimeSeries
    q_std: np.ndarray
    confidence: np.ndarray
    reprojection_px: np.ndarray
    marker_names: tuple[str, ...]
    marker_error_m: np.ndarray
    marker_to_3d_m: np.ndarray
    at_limit: np.ndarray
    stance: np.ndarray
    info: dict = field(default_factory=dict)
    local_confidence: np.ndarray | None = None    # (N, C) the local std alone, 2 deg / 2 cm
    flip_rms: np.ndarray | None = None            # (N, C) expected error from the depth flips (rad / m)
    limit_rms: np.ndarray | None = None           # (N, C) expected error of coordinates held at a range limit
    marker_offsets_m: dict = field(default_factory=dict)   # marker -> offset placed (its body's frame, m)

    @property
    def marker_rms_m(self) -> np.ndarray:
        with np.errstate(invalid="ignore"):
            return np.sqrt(np.nanmean(self.marker_error_m ** 2, axis=1))

    @property
    def marker_max_m(self) -> np.ndarray:
        return np.nanmax(np.where(np.isfinite(self.marker_error_m), self.marker_error_m, -np.inf), axis=1)

    def confidence_series(self) -> TimeSeries:
        return TimeSeries(self.coordinates.time, self.coordinates.names, self.confidence, unit="1",
                          meta={"description": "per-coordinate confidence of the camera fit, 0..1; below 0.5 the "
                                                 "expected error exceeds 5 deg / 5 cm (untrusted)"})


class _Problem:
    """The fit's terms for the tracked markers of a StreamingIK model; shared by the trial and
    the streaming fitter."""

    def __init__(self, ik: StreamingIK, views: Sequence[CameraView], settings: FitSettings, *,
                 foot_prior_weight: float = 1.0):
        if not ik.supports_jacobian:
            raise Sam4dcapError("the camera fit needs a model without kinematic constraints "
                                "(coordinate couplers); use --fit markers for this model")
        self.ik = ik
        self.s = settings
        self.names = ik.tracked_marker_names
        w = ik.tracked_marker_weights
        self.wn = w / w.mean()
        self.free = ik.free_coordinates
        self.nf = self.free.size
        lo, hi = ik.coordinate_bounds
        self.lo, self.hi = lo[self.free], hi[self.free]
        self.rot = ik.rotational[self.free]
        self.views: list[tuple[PinholeCamera, np.ndarray, np.ndarray]] = []
        for v in views:
            idx = [v.names.index(n) if n in v.names else -1 for n in self.names]
            pix = np.full(v.pixels.shape[:1] + (len(self.names), 2), np.nan)
            conf = np.zeros(v.pixels.shape[:1] + (len(self.names),))
            for k, j in enumerate(idx):
                if j >= 0:
                    pix[:, k] = v.pixels[:, j]
                    conf[:, k] = v.confidence[:, j]
            conf = np.where(np.isfinite(pix).all(axis=2), np.clip(conf, 0.0, 1.0), 0.0)
            self.views.append((v.camera, pix, conf))
        task_idx, task_w, task_v = ik.task_terms()
        col = {c: i for i, c in enumerate(self.free)}
        keep = [i for i, c in enumerate(task_idx) if c in col]
        self.task_col = np.array([col[task_idx[i]] for i in keep], dtype=int)
        self.task_w = task_w[keep]
        self.task_v = task_v[keep]
        self.task_sigma_m = 0.02     # replaced by the pixel sigma's size in metres at the subject
        # Neutral-pose prior on the joint rotations (not the pelvis' six, not the tasked ones):
        # keeps coordinates the keypoints barely see (wrists, subtalar, forearm rotation) off
        # their range limits. Neutral = the resting posture (model_builder.RESTING_POSE: the
        # forearm mid-prone, not its default full supination at the end of its range; on the
        # demo's cam01 that alone took pro_sup_l off its limit in 66 % of the frames) where it
        # lies inside the coordinate's range, else the default pose.
        pelvis = {i for i, n in enumerate(ik.coordinate_names) if n.startswith("pelvis_")}
        tasked = set(task_idx.tolist())
        self.neutral_col = np.array([k for k, c in enumerate(self.free) if self.rot[k] and c not in pelvis
                                     and c not in tasked], dtype=int)
        self.neutral_v = ik.default_q[self.free[self.neutral_col]]
        margin = np.deg2rad(10.0)
        for i, k in enumerate(self.neutral_col):
            rest = RESTING_POSE.get(ik.coordinate_names[self.free[k]])
            if rest is not None and self.lo[k] + margin <= rest <= self.hi[k] - margin:
                self.neutral_v[i] = rest
        self.feet = _foot_indices(self.names)
        # Weights of the relative 3D prior: the foot points' (heel, toe) scaled by foot_prior_weight
        # (a monocular estimator's 3D foot is the least trustworthy part: on the Pose2Sim demo its
        # heel-toe distance is 5-14 cm against the 4-view 18 cm).
        self.prior_wn = self.wn.copy()
        if self.feet:
            self.prior_wn[self.feet] *= foot_prior_weight

    def set_task_scale(self, depth_m: float) -> None:
        """Coordinate tasks are weighted as in marker IK (W per rad^2 against the weighted mean
        squared marker error): one marker-error metre here is pixel_sigma * depth / f."""
        f = np.mean([cam.K[0, 0] for cam, _, _ in self.views]) if self.views else 1000.0
        self.task_sigma_m = max(self.s.pixel_sigma_px * depth_m / f, 1e-3)

    def frame_rows(self, f: int, q_free_full, prior: np.ndarray, contact: Sequence[Sequence[tuple[int, float]]] | None,
                   x=None, jac=None):
        """Rows of frame f that involve only its coordinates: residuals r (R,), Jacobian (R, nf),
        and a mask of reprojection rows (for the robust weights; pairs of rows per point)."""
        if x is None:
            x, jac = self.ik.marker_kinematics(q_free_full)
        rs, js, kinds = [], [], []
        sig_px = self.s.pixel_sigma_px
        for cam, pix, conf in self.views:
            c = conf[f]
            ok = c > 0
            if not ok.any():
                continue
            uv, duv, _ = cam.project_with_jacobian(x[ok])
            sw = np.sqrt(c[ok] * self.wn[ok]) / sig_px
            rs.append(((uv - pix[f, ok]) * sw[:, None]).reshape(-1))
            js.append((np.einsum("kij,kjn->kin", duv, jac[ok]) * sw[:, None, None]).reshape(-1, self.nf))
            kinds.append(np.ones(2 * int(ok.sum()), bool))
        m = prior[f]
        ok = np.isfinite(m).all(axis=1)
        if ok.sum() >= 3:
            wk = self.prior_wn[ok]
            wsum = wk.sum()
            xm = (wk[:, None] * x[ok]).sum(0) / wsum
            mm = (wk[:, None] * m[ok]).sum(0) / wsum
            jm = np.einsum("k,kin->in", wk, jac[ok]) / wsum
            sw = np.sqrt(wk) / self.s.relative_prior_sigma_m
            rs.append((((x[ok] - xm) - (m[ok] - mm)) * sw[:, None]).reshape(-1))
            js.append(((jac[ok] - jm[None]) * sw[:, None, None]).reshape(-1, self.nf))
            rs.append((xm - mm) / self.s.absolute_prior_sigma_m)
            js.append(jm / self.s.absolute_prior_sigma_m)
            kinds += [np.zeros(3 * int(ok.sum()), bool), np.zeros(3, bool)]
        if contact is not None:
            for k, h in contact[f]:
                rs.append(np.array([(x[k, 1] - h) / self.s.contact_height_sigma_m]))
                js.append(jac[k, 1][None] / self.s.contact_height_sigma_m)
                kinds.append(np.zeros(1, bool))
        if self.neutral_col.size and self.s.neutral_prior_sigma_deg > 0:
            q = q_free_full[self.free]
            sw = 1.0 / np.deg2rad(self.s.neutral_prior_sigma_deg)
            rs.append(sw * (q[self.neutral_col] - self.neutral_v))
            j = np.zeros((self.neutral_col.size, self.nf))
            j[np.arange(self.neutral_col.size), self.neutral_col] = sw
            js.append(j)
            kinds.append(np.zeros(self.neutral_col.size, bool))
        if self.task_col.size:
            q = q_free_full[self.free]
            sw = np.sqrt(self.task_w * self.wn.sum()) / self.task_sigma_m
            rs.append(sw * (q[self.task_col] - self.task_v))
            j = np.zeros((self.task_col.size, self.nf))
            j[np.arange(self.task_col.size), self.task_col] = sw
            js.append(j)
            kinds.append(np.zeros(self.task_col.size, bool))
        if not rs:
            return np.zeros(0), np.zeros((0, self.nf)), np.zeros(0, bool), x, jac
        return np.concatenate(rs), np.vstack(js), np.concatenate(kinds), x, jac

    def smooth_sigma(self, dt: float) -> np.ndarray:
        acc = np.where(self.rot, self.s.smooth_rotation_sigma_rad_s2, self.s.smooth_translation_sigma_m_s2)
        return acc * dt * dt


def _foot_indices(names: Sequence[str]) -> list[int]:
    for feet in FOOT_MARKERS.values():
        flat = [n for foot in feet for n in foot]
        if all(n in names for n in flat):
            return [list(names).index(n) for n in flat]
    return []


def huber_weights(r: np.ndarray, is_point: np.ndarray, threshold: float) -> np.ndarray:
    """IRLS weights of Huber's loss on reprojection rows (per 2D point: both rows share the
    weight of the point's norm); other rows 1."""
    w = np.ones_like(r)
    idx = np.flatnonzero(is_point)
    if idx.size:
        pts = r[idx].reshape(-1, 2)
        norm = np.linalg.norm(pts, axis=1)
        wp = np.where(norm > threshold, threshold / np.maximum(norm, 1e-12), 1.0)
        w[idx] = np.repeat(wp, 2)
    return w


def detect_stance(markers: np.ndarray, time_s: np.ndarray, foot_idx: Sequence[int], *, speed_m_s: float,
                  height_m: float) -> tuple[np.ndarray, np.ndarray]:
    """Stance mask (N, F) of the foot points and each point's ground height (F,): slower than
    speed_m_s horizontally and within height_m of the point's low (5th percentile) height."""
    if not foot_idx:
        return np.zeros((len(time_s), 0), bool), np.zeros(0)
    feet = markers[:, foot_idx]
    h = feet[..., 1]
    if len(time_s) >= 3:
        vel = np.gradient(feet, time_s, axis=0)
        speed = np.linalg.norm(vel[..., [0, 2]], axis=-1)
    else:
        speed = np.zeros(h.shape)
    with np.errstate(invalid="ignore"):
        low = np.nanpercentile(h, 5, axis=0)
        stance = (speed < speed_m_s) & (h < low + height_m) & np.isfinite(h)
    ground = np.array([np.nanmedian(h[stance[:, j], j]) if stance[:, j].any() else np.nan
                       for j in range(h.shape[1])])
    stance &= np.isfinite(ground)[None]
    return stance, ground


def _initial_coordinates(ik: StreamingIK, markers: TimeSeries) -> np.ndarray:
    """Streaming marker IK on the 3D markers (the old path), gaps filled by interpolation."""
    frames, _ = solve_trial(ik, markers)
    n = markers.n_frames
    q = np.full((n, len(ik.coordinate_names)), np.nan)
    for i, fr in enumerate(frames):
        if fr is not None:
            q[i] = fr.q
    ok = np.isfinite(q).all(axis=1)
    if not ok.any():
        raise Sam4dcapError("the camera fit cannot start: marker IK solved no frame (too few markers)")
    idx = np.arange(n)
    for c in range(q.shape[1]):
        q[:, c] = np.interp(idx, idx[ok], q[ok, c])
    return q


def _confidence(std: np.ndarray, rotational: np.ndarray) -> np.ndarray:
    ref = np.where(rotational, _REF_ROTATION_RAD, _REF_TRANSLATION_M)
    with np.errstate(over="ignore", invalid="ignore"):
        c = 1.0 / (1.0 + (std / ref) ** 2)
    return np.where(np.isfinite(std), c, 0.0)


def fit_trial(ik: StreamingIK, markers: TimeSeries, views: Sequence[CameraView], settings: FitSettings, *,
              q_init: np.ndarray | None = None) -> FitResult:
    """Fit the whole trial at once. markers: the 3D markers (world, metres; prior and start),
    views: what each camera saw on the same frames (pixels undistorted)."""
    t0 = _time.perf_counter()
    markers = markers.to_unit("m") if markers.unit != "m" else markers
    # One camera: the 3D prior is a monocular estimator's, whose feet are the least trustworthy
    # part (foot_prior_weight); several: the triangulation's, feet as measured as the rest.
    problem = _Problem(ik, views, settings,
                       foot_prior_weight=settings.foot_prior_weight if len(views) == 1 else 1.0)
    n = markers.n_frames
    for cam, pix, _ in problem.views:
        if pix.shape[0] != n:
            raise Sam4dcapError(f"view {cam.name}: {pix.shape[0]} frames of keypoints for {n} frames of markers")
    names = problem.names
    prior = np.stack([markers.get(nm) if nm in markers.names else np.full((n, 3), np.nan) for nm in names], axis=1)
    if q_init is None:
        ik.reset()
        q_init = _initial_coordinates(ik, markers.select([nm for nm in ik.marker_names if nm in markers.names]))
    q_all = np.array(q_init, float)
    free, nf = problem.free, problem.nf
    lo, hi = problem.lo, problem.hi
    x0 = np.clip(q_all[:, free], lo, hi)
    time_s = markers.time
    dt = float(np.median(np.diff(time_s))) if n > 1 else 1.0 / 30.0

    # Stance is found on the model's foot points after a first fit without contact (the 3D
    # markers' depth noise makes their speed useless for it: ~0.8 m/s of noise on the demo).
    stance = np.zeros((n, len(problem.feet)), bool)
    contact: list[list[tuple[int, float]]] = [[] for _ in range(n)]
    depths = [np.nanmedian(cam.project_with_jacobian(prior[f])[2]) for cam, _, _ in problem.views
              for f in range(0, n, max(1, n // 10)) if np.isfinite(prior[f]).any()]
    problem.set_task_scale(float(np.nanmedian(depths)) if depths else 3.0)
    smooth = 1.0 / problem.smooth_sigma(dt)
    slide = 1.0 / settings.contact_slide_sigma_m

    def evaluate(x):
        """All residuals, the sparse Jacobian and the mask of 2D-point rows (robust loss)."""
        rows, cols, vals, res, is_pt = [], [], [], [], []
        kin = []
        r0 = 0
        for f in range(n):
            q = q_all[f].copy()
            q[free] = x[f]
            r, j, kind, xm, jac = problem.frame_rows(f, q, prior, contact)
            kin.append((xm, jac))
            rr, cc = np.nonzero(j)
            rows.append(rr + r0)
            cols.append(cc + f * nf)
            vals.append(j[rr, cc])
            res.append(r)
            is_pt.append(kind)
            r0 += r.size
        # Smoothness: second differences of each free coordinate.
        if n >= 3:
            k = np.arange(n - 2)
            for c in range(nf):
                rr = r0 + k
                for off, coef in ((0, 1.0), (1, -2.0), (2, 1.0)):
                    rows.append(rr)
                    cols.append((k + off) * nf + c)
                    vals.append(np.full(k.size, coef * smooth[c]))
                res.append((x[2:, c] - 2 * x[1:-1, c] + x[:-2, c]) * smooth[c])
                is_pt.append(np.zeros(k.size, bool))
                r0 += k.size
        # Foot contact: no horizontal slide between consecutive stance frames.
        for f in range(1, n):
            both = np.flatnonzero(stance[f] & stance[f - 1])
            for j in both:
                mk = problem.feet[j]
                (xa, ja), (xb, jb) = kin[f], kin[f - 1]
                for axis in (0, 2):
                    rows.append(np.full(2 * nf, r0))
                    cols.append(np.concatenate([f * nf + np.arange(nf), (f - 1) * nf + np.arange(nf)]))
                    vals.append(np.concatenate([ja[mk, axis], -jb[mk, axis]]) * slide)
                    res.append(np.array([(xa[mk, axis] - xb[mk, axis]) * slide]))
                    is_pt.append(np.zeros(1, bool))
                    r0 += 1
        jmat = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                             shape=(r0, n * nf))
        return np.concatenate(res), jmat, np.concatenate(is_pt), None

    lo_f, hi_f = np.tile(lo, n), np.tile(hi, n)
    x, r, jmat, is_pt, cost0, cost, it1 = _levenberg_marquardt(evaluate, x0, lo_f, hi_f, settings,
                                                                max(1, settings.max_iterations // 2))
    fitted = np.array([ik.marker_kinematics(_with_free(q_all[f], free, x[f]))[0] for f in range(n)])
    # Keypoints the first pass leaves far off (a left/right swap in one view, a keypoint on the
    # wrong limb) are dropped for the second.
    dropped = 0
    for cam, pix, conf in problem.views:
        far = np.linalg.norm(cam.project(fitted) - pix, axis=-1) > settings.outlier_px
        far &= conf > 0
        conf[far] = 0.0
        dropped += int(far.sum())

    def find_contact(fitted: np.ndarray) -> None:
        if problem.feet:
            stance[:], ground = detect_stance(fitted[:, problem.feet], time_s, list(range(len(problem.feet))),
                                              speed_m_s=settings.stance_speed_m_s, height_m=settings.stance_height_m)
            contact[:] = [[(problem.feet[j], ground[j]) for j in np.flatnonzero(stance[f])] for f in range(n)]
    find_contact(fitted)
    x, r, jmat, is_pt, _, cost, it2 = _levenberg_marquardt(evaluate, x, lo_f, hi_f, settings,
                                                           settings.max_iterations - it1)
    it = it1 + it2
    q_all[:, free] = x
    offsets: dict[str, np.ndarray] = {}
    if 0 < settings.marker_placement_min_views <= len(views):
        # Where each keypoint sits on the model, from the 2D keypoints (outliers dropped) at the
        # poses found, then the trial refitted with the markers in their places. Pose and
        # placement share what the keypoints show (a fit leans the femur toward a misplaced knee
        # marker), so a few rounds of place-and-refit.
        seen = [CameraView(cam, names, pix, conf) for cam, pix, conf in problem.views]
        placement = PlacementSettings(pixel_sigma_px=settings.pixel_sigma_px, huber_sigmas=settings.huber_sigmas,
                                      prior_sigma_m=settings.marker_placement_sigma_m,
                                      max_offset_m=settings.marker_placement_max_m)
        for _ in range(PLACEMENT_ROUNDS):
            move = place_markers(ik, q_all, seen, placement, applied=offsets)
            ik.move_markers(move)
            offsets = {k: offsets.get(k, np.zeros(3)) + move.get(k, np.zeros(3)) for k in {*offsets, *move}}
            find_contact(np.array([ik.marker_kinematics(q_all[f])[0] for f in range(n)]))
            x, r, jmat, is_pt, _, cost, it3 = _levenberg_marquardt(evaluate, x, lo_f, hi_f, settings,
                                                                   max(1, settings.max_iterations // 3))
            it += it3
            q_all[:, free] = x
            if max((float(np.linalg.norm(v)) for v in move.values()), default=0.0) < 0.002:
                break

    # Diagnostics and confidence.
    pt_res = r[is_pt].reshape(-1, 2)
    # Robust residual level (MAD of the normalised point errors, per axis): scales the std.
    level = float(1.4826 * np.median(np.abs(pt_res))) if pt_res.size else 1.0
    w = huber_weights(r, is_pt, settings.huber_sigmas)
    std_free = marginal_std(jmat, w, n, nf) * max(level, 1.0)
    c_all = len(ik.coordinate_names)
    std = np.zeros((n, c_all))
    std[:, free] = std_free
    unobserved = [ik.coordinate_names.index(nm) for nm in ik.unobserved_coordinates]
    std[:, unobserved] = np.inf
    local_confidence = _confidence(std, ik.rotational)
    flip_msq = np.zeros_like(std)
    for f in range(n):
        flip_msq[f] = flip_ambiguity(ik, q_all[f], [(cam, pix[f], conf[f] * problem.wn) for cam, pix, conf in problem.views],
                                     sigma_px=settings.pixel_sigma_px, huber=settings.huber_sigmas,
                                     level=level, iterations=FLIP_ITERATIONS_TRIAL)[0]
    flip_msq = smooth_flips(flip_msq, time_s)
    # A coordinate held at its range limit while the fit pulls it further is the bound, not a
    # measurement (subtalar, pro_sup and wrist deviation on real video): its pull past the bound
    # enters the expected error.
    limit_msq = np.zeros_like(std)
    # Curvature: 1 / the marginal variance (the Newton step with the frame's other coordinates
    # moving along: they compensate for the held one, so its own diagonal would under-state it).
    with np.errstate(divide="ignore"):
        curvature = 1.0 / (std_free / max(level, 1.0)) ** 2
    limit_msq[:, free] = pinned_msq(x, lo, hi, np.asarray(jmat.T @ (w * r)).reshape(n, nf), curvature,
                                    tol=AT_LIMIT_RAD)
    confidence = combined_confidence(std, flip_msq + limit_msq, ik.rotational)
    reproj = np.full((len(problem.views), n, len(names)), np.nan)
    at_depth = np.full((len(problem.views), n, len(names)), np.nan)
    err3d = np.full((n, len(names)), np.nan)
    for f in range(n):
        xm, _ = ik.marker_kinematics(q_all[f])
        for v, (cam, pix, conf) in enumerate(problem.views):
            seen = conf[f] > 0
            uv, _, z = cam.project_with_jacobian(xm[seen])
            reproj[v, f, seen] = np.linalg.norm(uv - pix[f, seen], axis=1)
            at_depth[v, f, seen] = reproj[v, f, seen] * z / cam.K[0, 0]
        err3d[f] = np.linalg.norm(xm - prior[f], axis=1)
    lo_all, hi_all = ik.coordinate_bounds
    at_limit = (np.isfinite(lo_all) & (q_all <= lo_all + AT_LIMIT_RAD)) | \
               (np.isfinite(hi_all) & (q_all >= hi_all - AT_LIMIT_RAD))
    units = {nm: ("rad" if rot else "m") for nm, rot in zip(ik.coordinate_names, ik.rotational)}
    coords = TimeSeries(time_s, ik.coordinate_names, q_all, unit="rad", channel_units=units,
                        meta={"source": "camera fit"})
    seconds = _time.perf_counter() - t0
    info = {"iterations": it, "cost_start": float(cost0), "cost_end": float(cost), "views": len(views),
            "residual_level": level, "seconds": seconds, "stance_share": float(stance.mean()) if stance.size else 0.0,
            "reprojection_median_px": float(np.nanmedian(reproj)) if np.isfinite(reproj).any() else float("nan"),
            "outliers_dropped": dropped, "markers_placed": len(offsets)}
    log.info("camera fit: %d frames, %d view(s), %d iterations, cost %.4g -> %.4g, median reprojection "
             "%.1f px, %.1f s", n, len(views), it, cost0, cost, info["reprojection_median_px"], seconds)
    return FitResult(coordinates=coords, q_std=std, confidence=confidence, reprojection_px=reproj,
                     marker_names=names, marker_error_m=_mean_over_views(at_depth), marker_to_3d_m=err3d,
                     at_limit=at_limit, stance=stance, info=info, local_confidence=local_confidence,
                     flip_rms=np.sqrt(flip_msq), limit_rms=np.sqrt(limit_msq), marker_offsets_m=offsets)


def _with_free(q: np.ndarray, free: np.ndarray, values: np.ndarray) -> np.ndarray:
    out = q.copy()
    out[free] = values
    return out


def _levenberg_marquardt(evaluate, x0, lo_f, hi_f, settings: FitSettings, max_iterations: int):
    """Levenberg-Marquardt on the sparse normal equations with Huber reweighting of the 2D points
    and bounds by an active set (a coordinate at a bound whose gradient points outward is held).
    Returns x, residuals, Jacobian, point mask, start cost, final cost, iterations."""
    n, nf = x0.shape
    x = x0.copy()
    r, jmat, is_pt, _ = evaluate(x)
    cost = cost0 = _robust_cost(r, is_pt, settings.huber_sigmas)
    lam = 1e-3
    it = 0
    for it in range(1, max_iterations + 1):
        w = huber_weights(r, is_pt, settings.huber_sigmas)
        xf = x.reshape(-1)
        g = jmat.T @ (w * r)
        a = (jmat.T @ jmat.multiply(w[:, None]).tocsr()).tocsc()
        held = ((xf <= lo_f) & (g > 0)) | ((xf >= hi_f) & (g < 0))
        keep = np.flatnonzero(~held)
        diag = a.diagonal()
        improved = False
        while lam < 1e10:
            mat = (a + sp.diags(lam * np.maximum(diag, 1e-9) + 1e-12)).tocsr()[keep][:, keep].tocsc()
            step = np.zeros_like(xf)
            step[keep] = spla.spsolve(mat, -g[keep])
            trial = np.clip(xf + step, lo_f, hi_f).reshape(n, nf)
            r_t, j_t, pt_t, _ = evaluate(trial)
            cost_t = _robust_cost(r_t, pt_t, settings.huber_sigmas)
            if cost_t < cost:
                gain = (cost - cost_t) / max(cost, 1e-12)
                x, r, jmat, is_pt, cost = trial, r_t, j_t, pt_t, cost_t
                lam = max(lam * 0.3, 1e-7)
                improved = True
                break
            lam *= 10.0
        if not improved or gain < 1e-4:
            break
    return x, r, jmat, is_pt, cost0, cost, it


def marginal_std(jmat, w: np.ndarray, n: int, nf: int, *, half_window: int = 4, chunk: int = 5) -> np.ndarray:
    """Posterior 1-sigma of each frame's free coordinates (N, nf) from the whole problem's
    information J^T W J, marginalised over a window of neighbouring frames (the coupling through
    smoothness and contact decays within a few frames); columns no row sees: inf."""
    info = (jmat.T @ jmat.multiply(w[:, None]).tocsr()).tocsc()
    seen = np.asarray(abs(jmat).sum(axis=0)).ravel() > 1e-9
    std = np.full((n, nf), np.inf)
    for start in range(0, n, chunk):
        a, b = max(0, start - half_window), min(n, start + chunk + half_window)
        cols = np.arange(a * nf, b * nf)
        cols = cols[seen[cols]]
        block = info[cols][:, cols].toarray()
        try:
            cov = np.linalg.inv(block + 1e-12 * np.eye(cols.size))
        except np.linalg.LinAlgError:
            cov = np.linalg.pinv(block)
        var = np.clip(np.diag(cov), 0.0, None)
        for k, c in enumerate(cols):
            f, j = divmod(int(c), nf)
            if start <= f < start + chunk:
                std[f, j] = np.sqrt(var[k])
    return std


def _mean_over_views(values: np.ndarray) -> np.ndarray:
    """(V, N, K) -> (N, K): mean over the views with a value, NaN where none has one."""
    n = np.isfinite(values).sum(axis=0)
    total = np.where(np.isfinite(values), values, 0.0).sum(axis=0)
    return np.where(n > 0, total / np.maximum(n, 1), np.nan)


def _robust_cost(r: np.ndarray, is_point: np.ndarray, threshold: float) -> float:
    """0.5 * sum of squares, with Huber's loss on the 2D points' norms."""
    other = r[~is_point]
    pts = r[is_point].reshape(-1, 2)
    norm = np.linalg.norm(pts, axis=1)
    hub = np.where(norm <= threshold, 0.5 * norm ** 2, threshold * (norm - 0.5 * threshold))
    return float(0.5 * other @ other + hub.sum())


class StreamingCameraFit:
    """The camera fit frame by frame (live): causal, warm-started from the previous frames.

    Per frame the same reprojection / 3D-prior / task rows as `fit_trial`, plus smoothness as a
    prior toward the constant-velocity prediction from the last two solutions and, for a foot
    point in stance (slow and low in the previous frames), its height and no slide from the last
    frame. `live_iterations` Gauss-Newton steps (bounded, damped). The first frame (or after
    `reset`) is solved by the StreamingIK (marker IK on the 3D markers) and refined.
    Returns streaming_ik.IKFrame, with q_std / confidence from the frame's information and marker
    errors = reprojection errors as distances at each marker's depth.
    """

    def __init__(self, ik: StreamingIK, cameras: Sequence[PinholeCamera], settings: FitSettings, *,
                 flip_iterations: int = FLIP_ITERATIONS_LIVE):
        self.ik = ik
        self.cameras = list(cameras)
        self.settings = settings
        self.flip_iterations = int(flip_iterations)     # 0: no flip test (local std only)
        self._flips: dict[str, list[tuple[float, np.ndarray]]] = {}
        self._flip_turn = 0
        self._segments = limb_segments(ik.tracked_marker_names)
        self._names = ik.marker_names
        self._problem: _Problem | None = None
        self._history: list[tuple[float, np.ndarray]] = []
        self._feet_hist: list[np.ndarray] = []
        self._ground: np.ndarray | None = None

    def reset(self) -> None:
        self._history.clear()
        self._feet_hist.clear()
        self._flips.clear()
        self.ik.reset()

    def solve(self, time_s: float, markers: np.ndarray, pixels: Sequence[np.ndarray],
              confidence: Sequence[np.ndarray]):
        """markers (M, 3) world metres in ik.marker_names order (NaN = missing); pixels / confidence
        per camera (M, 2) undistorted / (M,), same order. None when too few markers are seen."""
        markers = np.asarray(markers, float)
        views = [CameraView(c, self._names, np.asarray(p, float)[None], np.asarray(w, float)[None])
                 for c, p, w in zip(self.cameras, pixels, confidence)]
        problem = _Problem(self.ik, views, self.settings)
        if self._problem is not None:
            problem.task_sigma_m = self._problem.task_sigma_m
        nf, free = problem.nf, problem.free
        prior = np.stack([markers[self._names.index(n)] for n in problem.names])[None]
        seen = sum(int((conf[0] > 0).sum()) for _, _, conf in problem.views)
        if seen < self.ik.min_markers and np.isfinite(prior[0]).all(axis=1).sum() < self.ik.min_markers:
            return None
        if not self._history:
            start = self.ik.solve(time_s, markers)
            if start is None:
                return None
            q = start.q.copy()
            depth = np.nanmedian(self.cameras[0].project_with_jacobian(prior[0])[2]) if self.cameras else 3.0
            problem.set_task_scale(float(depth) if np.isfinite(depth) else 3.0)
        else:
            q = self._history[-1][1].copy()
            if len(self._history) >= 2:
                (t1, q1), (t2, q2) = self._history[-2], self._history[-1]
                if t2 > t1:
                    q = q2 + (q2 - q1) * (time_s - t2) / (t2 - t1)
        self._problem = problem
        q_pred = q.copy()
        dt = time_s - self._history[-1][0] if self._history else 0.0
        sig = problem.smooth_sigma(dt) * np.sqrt(6.0) if dt > 0 and len(self._history) >= 2 else None
        contact, slide_ref = self._contact(problem)
        lo, hi = problem.lo, problem.hi
        q[free] = np.clip(q[free], lo, hi)
        lam = 1e-3
        for _ in range(self.settings.live_iterations):
            r, j, is_pt = self._rows(problem, q, prior, contact, slide_ref, q_pred, sig)
            w = huber_weights(r, is_pt, self.settings.huber_sigmas)
            jw = j * w[:, None]
            a = j.T @ jw
            g = jw.T @ r
            x = q[free]
            held = ((x <= lo) & (g > 0)) | ((x >= hi) & (g < 0))
            keep = ~held
            step = np.zeros(nf)
            m = a[np.ix_(keep, keep)] + lam * np.diag(np.maximum(np.diag(a)[keep], 1e-9))
            step[keep] = -np.linalg.solve(m + 1e-12 * np.eye(int(keep.sum())), g[keep])
            q[free] = np.clip(x + step, lo, hi)
            if np.max(np.abs(step)) < 1e-5:
                break
        r, j, is_pt = self._rows(problem, q, prior, contact, slide_ref, q_pred, sig)
        w = huber_weights(r, is_pt, self.settings.huber_sigmas)
        info = j.T @ (j * w[:, None])
        pts = r[is_pt].reshape(-1, 2)
        level = max(float(1.4826 * np.median(np.abs(pts))) if pts.size else 1.0, 1.0)
        std = np.zeros(len(q))
        try:
            cov = np.linalg.inv(info + 1e-12 * np.eye(nf))
            std[free] = level * np.sqrt(np.clip(np.diag(cov), 0.0, None))
        except np.linalg.LinAlgError:
            std[free] = np.inf
        std[[self.ik.coordinate_names.index(n) for n in self.ik.unobserved_coordinates]] = np.inf
        flip_msq = self._flip_msq(time_s, q, problem, level)
        x_model, _ = self.ik.marker_kinematics(q)
        # Marker errors of the fit to what the cameras saw: each seen marker's reprojection error
        # as a distance at its depth (px * depth / f), the mean over the views that saw it (the 3D
        # markers are only a prior here: monocular ones are 8-14 cm off along the line of sight).
        err_sum, seen_n = np.zeros(len(problem.names)), np.zeros(len(problem.names))
        for cam, pix, conf in problem.views:
            ok = conf[0] > 0
            if ok.any():
                uv, _, z = cam.project_with_jacobian(x_model[ok])
                err_sum[ok] += np.linalg.norm(uv - pix[0, ok], axis=1) * z / cam.K[0, 0]
                seen_n[ok] += 1
        with np.errstate(invalid="ignore"):
            err = np.where(seen_n > 0, err_sum / np.maximum(seen_n, 1), np.nan)
        used = np.isfinite(err)
        qdot = None
        if self._history and dt > 0:
            qdot = (q - self._history[-1][1]) / dt
        self._history = (self._history + [(float(time_s), q.copy())])[-2:]
        if problem.feet:
            self._feet_hist = (self._feet_hist + [x_model[problem.feet]])[-3:]
        errors = {n: float(e) for n, e, u in zip(problem.names, err, used) if u}
        worst = max(errors, key=errors.__getitem__) if errors else ""
        return IKFrame(time_s=float(time_s), coordinate_names=self.ik.coordinate_names, q=q, qdot=qdot,
                       marker_rms_m=float(np.sqrt(np.mean(err[used] ** 2))) if used.any() else float("nan"),
                       marker_max_m=float(err[used].max()) if used.any() else float("nan"),
                       max_error_marker=worst, markers_used=int(used.sum()), marker_errors_m=errors,
                       q_std=std, confidence=combined_confidence(std, flip_msq, self.ik.rotational), cold_start=len(self._history) == 1)

    def _flip_msq(self, time_s: float, q: np.ndarray, problem: _Problem, level: float) -> np.ndarray:
        """The limbs' depth-flip expected squared error (C,): this frame's share of the segments
        tested (round robin), each segment's results averaged over the last SMOOTH_S (causal, as
        the offline fit's centred window)."""
        if self.flip_iterations <= 0:
            return np.zeros(len(q))
        turn = self._flip_turn % FLIP_ROUNDS_LIVE
        self._flip_turn += 1
        _, detail = flip_ambiguity(self.ik, q, [(cam, pix[0], conf[0] * problem.wn) for cam, pix, conf in problem.views],
                                   sigma_px=self.settings.pixel_sigma_px, huber=self.settings.huber_sigmas,
                                   level=level, iterations=self.flip_iterations,
                                   segments=self._segments[turn::FLIP_ROUNDS_LIVE])
        for key, (p, dq, _) in detail.items():
            self._flips.setdefault(key, []).append((float(time_s), p * dq ** 2))
        total = np.zeros(len(q))
        for key in list(self._flips):
            kept = [(t, m) for t, m in self._flips[key] if 0.0 <= time_s - t < SMOOTH_S]
            if kept:
                self._flips[key] = kept
                total += np.mean([m for _, m in kept], axis=0)
            else:
                del self._flips[key]
        return total

    def _contact(self, problem: _Problem):
        """Foot points in stance now (slow over the last frames and near their running low height)."""
        if not problem.feet or len(self._feet_hist) < 2:
            return None, None
        f1, f2 = self._feet_hist[-2], self._feet_hist[-1]
        dt = self._history[-1][0] - self._history[-2][0] if len(self._history) >= 2 else 0.0
        if dt <= 0:
            return None, None
        speed = np.linalg.norm((f2 - f1)[:, [0, 2]], axis=1) / dt
        h = f2[:, 1]
        self._ground = h.copy() if self._ground is None else np.minimum(self._ground + 0.001, np.maximum(h, self._ground - 0.05))
        low = self._ground
        stance = (speed < self.settings.stance_speed_m_s) & (h < low + self.settings.stance_height_m)
        contact = [[(problem.feet[j], float(low[j])) for j in np.flatnonzero(stance)]]
        return contact, [(problem.feet[j], f2[j]) for j in np.flatnonzero(stance)]

    def _rows(self, problem, q, prior, contact, slide_ref, q_pred, sig):
        r, j, is_pt, x, jac = problem.frame_rows(0, q, prior, contact)
        rs, js, pts = [r], [j], [is_pt]
        free = problem.free
        if sig is not None:
            rs.append((q[free] - q_pred[free]) / sig)
            js.append(np.diag(1.0 / sig))
            pts.append(np.zeros(free.size, bool))
        if slide_ref:
            s = 1.0 / self.settings.contact_slide_sigma_m
            for k, ref in slide_ref:
                rs.append((x[k, [0, 2]] - ref[[0, 2]]) * s)
                js.append(jac[k, [0, 2]] * s)
                pts.append(np.zeros(2, bool))
        return np.concatenate(rs), np.vstack(js), np.concatenate(pts)


class LiveCameraFit:
    """The ik_node's camera fit (ik_node.live_fit = camera), ROS-free: the camera's intrinsics and
    pose in the world (from CameraInfo and the markers node's /tf_static), the 2D keypoints by
    capture time, and a StreamingCameraFit per StreamingIK (a recalibrated model starts afresh).
    `solve` returns None until the camera and that frame's keypoints are known: the node then
    uses marker IK. Thread-safe (keypoints arrive on the executor, solves may run on a worker)."""

    def __init__(self, settings: FitSettings, *, keep_frames: int = 600):
        self.settings = settings
        self._lock = threading.Lock()
        self._K: np.ndarray | None = None
        self._pose: tuple[np.ndarray, np.ndarray] | None = None
        self._keypoints: collections.OrderedDict = collections.OrderedDict()
        self._keep = int(keep_frames)
        self._fit: StreamingCameraFit | None = None

    @staticmethod
    def _key(time_s: float) -> int:
        return int(round(float(time_s) * 1e6))      # capture stamps, to the microsecond

    def set_intrinsics(self, K: np.ndarray) -> None:
        K = np.asarray(K, float).reshape(3, 3)
        with self._lock:
            if self._K is None or not np.allclose(K, self._K):
                self._K, self._fit = K, None

    def set_world_from_camera(self, rotation: np.ndarray, translation: np.ndarray) -> None:
        """The camera's pose in the world (world point = rotation @ camera point + translation)."""
        R = np.asarray(rotation, float).reshape(3, 3)
        t = np.asarray(translation, float).reshape(3)
        with self._lock:
            if self._pose is None or not (np.allclose(R, self._pose[0]) and np.allclose(t, self._pose[1])):
                self._pose, self._fit = (R, t), None

    @property
    def ready(self) -> bool:
        return self._K is not None and self._pose is not None

    def add_keypoints(self, time_s: float, names: Sequence[str], pixels: np.ndarray, confidence: np.ndarray) -> None:
        with self._lock:
            self._keypoints[self._key(time_s)] = (tuple(names), np.asarray(pixels, float)[:, :2],
                                                  np.asarray(confidence, float))
            while len(self._keypoints) > self._keep:
                self._keypoints.popitem(last=False)

    def reset(self) -> None:
        with self._lock:
            if self._fit is not None:
                self._fit.reset()

    def solve(self, ik: StreamingIK, time_s: float, positions: np.ndarray):
        """IKFrame of the camera fit for the markers of one frame, or None (no camera / keypoints yet)."""
        with self._lock:
            kp = self._keypoints.pop(self._key(time_s), None)
            if kp is None or not self.ready:
                return None
            if self._fit is None or self._fit.ik is not ik:
                assert self._pose is not None and self._K is not None   # self.ready
                R, t = self._pose
                cam = PinholeCamera("camera", self._K, R.T, -R.T @ t)
                self._fit = StreamingCameraFit(ik, [cam], self.settings)
            names, pix, conf = kp
            index = {n: i for i, n in enumerate(names)}
            rows = [index.get(n, -1) for n in ik.marker_names]
            pixels = np.array([pix[i] if i >= 0 else (np.nan, np.nan) for i in rows])
            weights = np.array([conf[i] if i >= 0 else 0.0 for i in rows])
            weights = np.where(np.isfinite(pixels).all(axis=1), weights, 0.0)
            return self._fit.solve(time_s, positions, [pixels], [weights])
