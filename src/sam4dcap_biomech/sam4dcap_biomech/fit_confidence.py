"""What one camera cannot tell: the depth flip of a limb, and the confidence it leaves per coordinate.

From one camera a limb segment (thigh, shank, foot, upper arm, forearm) may point toward or away
from the camera by the same angle: its distal joint can sit at either of the two points where its
line of sight meets the sphere of the segment's length about the proximal joint, and both project
to the same pixels. The camera fit picks one, through the estimator's 3D prior, which is wrong in
exactly these cases (the far leg of cam04 on the Pose2Sim demo: knee and ankle 18-21 deg low for
the whole clip). The fit's local information (its Jacobian, prior rows counted) cannot see this:
both poses are sharp minima.

For each segment, camera and frame, `flip_ambiguity` builds the other pose: the segment's distal
markers moved to the other intersection of their lines of sight with that sphere, every marker
further down the limb carried along with the distal joint, the rest of the body kept, solved for
the coordinates by a few bounded Gauss-Newton steps of marker IK from the fitted pose (joint
ranges hold: a flip that needs a hyperextended knee does not reach its pixels). Its image cost
(the fit's robust reprojection cost against the 2D keypoints, 3D prior left out) against the
fitted pose's gives the flip's probability, p = 1 / (1 + exp(dcost / level^2)) with level the
fit's robust residual level; each coordinate's expected squared error from the flips is
sum_flips p * dq^2 (dq: the flip's change of that coordinate). With several cameras a flip moves
the markers off the other views' keypoints: p ~ 0.

The flips' expected error is averaged over SMOOTH_S (0.25 s; centred offline, trailing live).
`combined_confidence` maps the fit's local 1-sigma std and the flips' expected error to one
number per coordinate and frame: 1 / (1 + (rms / ref)^2), rms = sqrt(std^2 + flip_msq), ref 5 deg /
5 cm: 0.5 at an expected error of 5 deg. `GATE_CONFIDENCE` (0.5) is the threshold the docs tell a
controller to gate on. ROS-free; the streaming fit tests a third of the segments per frame in
turn (camera_fit.FLIP_ROUNDS_LIVE).

What it does not see (bench/confidence_vs_error.py, Pose2Sim demo): errors that are no flip, e.g.
the monocular world frame's heading (pelvis_rotation 22 deg off on average, never flagged),
segment lengths of a depth-compressed trial calibration, wrong 2D keypoints of a hidden limb.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

# (segment, proximal joint marker, markers flipped about it (the first: its distal joint),
#  markers carried along with the distal joint) per marker set.
_LIMBS_BLAZEPOSE = []
for _s, _S in (("r", "right"), ("l", "left")):
    _LIMBS_BLAZEPOSE += [
        (f"thigh_{_s}", f"{_S}_hip", (f"{_S}_knee",), (f"{_S}_ankle", f"{_S}_heel", f"{_S}_foot_index")),
        (f"shank_{_s}", f"{_S}_knee", (f"{_S}_ankle",), (f"{_S}_heel", f"{_S}_foot_index")),
        (f"foot_{_s}", f"{_S}_ankle", (f"{_S}_foot_index", f"{_S}_heel"), ()),
        (f"upper_arm_{_s}", f"{_S}_shoulder", (f"{_S}_elbow",),
         (f"{_S}_wrist", f"{_S}_pinky", f"{_S}_index", f"{_S}_thumb")),
        (f"forearm_{_s}", f"{_S}_elbow", (f"{_S}_wrist",), (f"{_S}_pinky", f"{_S}_index", f"{_S}_thumb")),
    ]
_LIMBS_OPENCAP = []
for _s, _S, _H in (("r", "r", "RHJC"), ("l", "L", "LHJC")):
    _LIMBS_OPENCAP += [
        (f"thigh_{_s}", f"{_H}_study", (f"{_S}_knee_study", f"{_S}_mknee_study", f"{_S}_thigh1_study",
                                        f"{_S}_thigh2_study", f"{_S}_thigh3_study"),
         (f"{_S}_ankle_study", f"{_S}_mankle_study", f"{_S}_toe_study", f"{_S}_5meta_study", f"{_S}_calc_study",
          f"{_S}_sh1_study", f"{_S}_sh2_study", f"{_S}_sh3_study")),
        (f"shank_{_s}", f"{_S}_knee_study", (f"{_S}_ankle_study", f"{_S}_mankle_study", f"{_S}_sh1_study",
                                             f"{_S}_sh2_study", f"{_S}_sh3_study"),
         (f"{_S}_toe_study", f"{_S}_5meta_study", f"{_S}_calc_study")),
        (f"foot_{_s}", f"{_S}_ankle_study", (f"{_S}_toe_study", f"{_S}_5meta_study", f"{_S}_calc_study"), ()),
        (f"upper_arm_{_s}", f"{_S}_shoulder_study", (f"{_S}_lelbow_study", f"{_S}_melbow_study"),
         (f"{_S}_lwrist_study", f"{_S}_mwrist_study")),
        (f"forearm_{_s}", f"{_S}_lelbow_study", (f"{_S}_lwrist_study", f"{_S}_mwrist_study"), ()),
    ]
LIMB_SEGMENTS = {"blazepose33": tuple(_LIMBS_BLAZEPOSE), "opencap43": tuple(_LIMBS_OPENCAP)}

# Expected error at which the confidence is 0.5 (rotations / translations).
REF_ROTATION_RAD = np.deg2rad(5.0)
REF_TRANSLATION_M = 0.05
# The flips' expected error is averaged over this window (centred offline, trailing live): a
# flip the image cannot rule out in one frame is as likely in its neighbours (on the demo the
# per-frame test flickers; averaged over 0.25 s the errors > 10 deg flagged rise 45 -> 57 %, AUC
# 0.62 -> 0.64, bench/confidence_vs_error.py).
SMOOTH_S = 0.25
# The threshold a controller gates on: below it, a coordinate's expected error exceeds 5 deg / 5 cm.
GATE_CONFIDENCE = 0.5


def limb_segments(marker_names: Sequence[str]) -> list[tuple[str, int, list[int], list[int]]]:
    """The limb segments of the marker set whose proximal and distal joint markers are tracked:
    (name, proximal index, flipped indices, carried indices) into marker_names."""
    index = {n: i for i, n in enumerate(marker_names)}
    out = []
    for table in LIMB_SEGMENTS.values():
        for name, prox, flip, carry in table:
            if prox in index and flip[0] in index:
                out.append((name, index[prox], [index[n] for n in flip if n in index],
                            [index[n] for n in carry if n in index]))
    return out


def flipped_targets(x: np.ndarray, center: np.ndarray, prox: int, flip: Sequence[int],
                    carry: Sequence[int]) -> np.ndarray:
    """Marker positions (M, 3) with the segment flipped in depth as seen from `center`: each
    flipped marker X to the other point of its line of sight at |X - P| from the proximal joint
    P; carried markers moved by the distal joint's displacement."""
    y = x.copy()
    p = x[prox]
    po = p - center
    for k in flip:
        d = x[k] - center
        s = float(np.linalg.norm(d))
        if s <= 0:
            continue
        d = d / s
        b = float(d @ po)
        y[k] = center + (2.0 * b - s) * d        # the other root of |O + s d - P| = |X - P|
    delta = y[flip[0]] - x[flip[0]]
    for k in carry:
        y[k] = x[k] + delta
    return y


def robust_image_cost(x: np.ndarray, views, sigma_px: float, huber: float) -> float:
    """0.5 * sum of Huber(|reprojection| / sigma) over the views' seen markers, weighted as the fit
    (views: (camera, pixels (M, 2), weights (M,) = keypoint confidence x marker weight))."""
    total = 0.0
    for cam, pix, w in views:
        ok = w > 0
        if not ok.any():
            continue
        uv = cam.project(x[ok])
        norm = np.linalg.norm(uv - pix[ok], axis=1) * np.sqrt(w[ok]) / sigma_px
        norm = np.where(np.isfinite(norm), norm, 0.0)
        total += float(np.where(norm <= huber, 0.5 * norm ** 2, huber * (norm - 0.5 * huber)).sum())
    return total


def flip_ambiguity(ik, q: np.ndarray, views, *, sigma_px: float, huber: float, level: float = 1.0,
                   iterations: int = 3, segments=None) -> tuple[np.ndarray, dict]:
    """Expected squared error (C,) of each coordinate (coordinate_names order; rad^2 / m^2) from
    the depth flips of the limb segments in one frame, and per segment (p, dq (C,)).

    ik: the StreamingIK of the fit (marker_kinematics, bounds); q (C,) the fitted coordinates;
    views: (camera, pixels (M, 2), weights (M,)) per camera, in ik.tracked_marker_names order;
    level: the fit's robust residual level (scales the cost difference).
    detail per camera:segment: (p, dq (C,), image cost difference / level^2).
    The 3D prior is left out on purpose: weighing in the estimator's depth of the moved markers
    (1-sigma 0.1 m) lowered the ranking of the errors on the Pose2Sim demo's cam04 (AUC 0.69 ->
    0.62), the view whose far leg the estimator has on the wrong side."""
    q = np.asarray(q, float)
    free = ik.free_coordinates
    lo, hi = ik.coordinate_bounds
    lo, hi = lo[free], hi[free]
    msq = np.zeros(q.size)
    detail: dict = {}
    x0, jac0 = ik.marker_kinematics(q)
    cost0 = robust_image_cost(x0, views, sigma_px, huber)
    scale = max(float(level), 1.0) ** 2
    segments = limb_segments(ik.tracked_marker_names) if segments is None else segments
    for cam, _, w in views:
        center = cam.center
        for name, prox, flip, carry in segments:
            if w[flip[0]] <= 0:                  # the distal joint unseen in this view: no flip to test
                continue
            target = flipped_targets(x0, center, prox, flip, carry)
            if np.linalg.norm(target[flip[0]] - x0[flip[0]]) < 1e-3:
                continue
            qa = q.copy()
            x, jac = x0, jac0
            for _ in range(max(1, int(iterations))):
                r = (x - target).reshape(-1)
                j = jac.reshape(-1, free.size)
                a = j.T @ j
                step = -np.linalg.solve(a + 1e-6 * np.diag(np.maximum(np.diag(a), 1e-9)) + 1e-9 * np.eye(free.size),
                                        j.T @ r)
                qa[free] = np.clip(qa[free] + step, lo, hi)
                x, jac = ik.marker_kinematics(qa)
            dimg = (robust_image_cost(x, views, sigma_px, huber) - cost0) / scale
            p = 1.0 / (1.0 + np.exp(min(dimg, 50.0)))
            dq = qa - q
            msq += p * dq ** 2
            detail[f"{cam.name}:{name}"] = (float(p), dq, float(dimg))
    return msq, detail


def combined_confidence(std: np.ndarray, flip_msq: np.ndarray, rotational: np.ndarray) -> np.ndarray:
    """Confidence 0..1 from the local 1-sigma std and the flips' expected squared error:
    1 / (1 + (std^2 + flip_msq) / ref^2), ref 5 deg / 5 cm; inf std -> 0."""
    ref = np.where(rotational, REF_ROTATION_RAD, REF_TRANSLATION_M)
    with np.errstate(over="ignore", invalid="ignore"):
        c = 1.0 / (1.0 + (np.asarray(std, float) ** 2 + flip_msq) / ref ** 2)
    return np.where(np.isfinite(std) & np.isfinite(flip_msq), c, 0.0)


def pinned_msq(q: np.ndarray, lo: np.ndarray, hi: np.ndarray, grad: np.ndarray, curvature: np.ndarray, *,
               tol: float) -> np.ndarray:
    """Expected squared error of coordinates a fit holds at a range limit while its cost still
    pulls them outward: the value there is the bound, not a measurement. The error is taken as
    the Newton step past the bound, (grad / curvature)^2 (grad: the cost's gradient; curvature:
    1 / the coordinate's marginal variance, so that the other coordinates move along as they
    would); 0 for coordinates off their limits."""
    q, lo, hi, grad = (np.asarray(a, float) for a in (q, lo, hi, grad))
    with np.errstate(invalid="ignore"):
        held = (np.isfinite(lo) & (q <= lo + tol) & (grad > 0)) | (np.isfinite(hi) & (q >= hi - tol) & (grad < 0))
        step = np.abs(grad) / np.maximum(np.asarray(curvature, float), 1e-12)
    return np.where(held, step ** 2, 0.0)


def smooth_flips(flip_msq: np.ndarray, time_s: np.ndarray) -> np.ndarray:
    """The flips' expected squared error (N, C) averaged over a centred SMOOTH_S window."""
    from scipy.ndimage import uniform_filter1d

    n = flip_msq.shape[0]
    if n < 3:
        return flip_msq
    dt = float(np.median(np.diff(time_s)))
    width = int(round(SMOOTH_S / dt)) if dt > 0 else 1
    width = max(1, width + (1 - width % 2))
    if width == 1:
        return flip_msq
    # The running mean's sums leave -1e-17 where the flips are 0: squared errors are >= 0.
    return np.maximum(uniform_filter1d(flip_msq, width, axis=0, mode="nearest"), 0.0)
