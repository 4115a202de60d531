"""Where each keypoint sits on the model, refined from the trial's 2D keypoints through the cameras.

The model's markers for a keypoint set (model_markers) are anatomical guesses: BlazePose's "ear"
or "hip" is not exactly where the generic model puts them, and a scaled model moves them with its
bodies. After a camera fit (poses q_f), each tracked marker k gets one offset d_k in its body's
frame, the same in every frame:

    min_d  sum_views,frames rho(|pi_c(p_bf + R_bf (l_k + d)) - u_ckf|^2 c_ckf / sigma_px^2) + |d|^2 / sigma_d^2

(p_bf, R_bf the body's pose in frame f, l_k the marker's location on it, u the keypoint, c its
confidence, rho Huber's loss; linearised at the current offset, a few reweighted Gauss-Newton
rounds). Then, per body, the part of its markers' offsets that turns them together is removed
(a body's markers turned about its joint would be a constant joint angle in disguise: heel and
toe turned = an ankle angle bias); a common shift and a change of their shape stay. Each is
bounded to |d| <= max_offset_m ("anatomical bounds": a keypoint stays near the landmark it names).

Why the 2D keypoints and not the 3D markers: with one camera the 3D markers' depth is the
estimator's (8-10 cm off along the line of sight); placing markers on them would build that
bias into the model. A constant offset shows in the 2D keypoints across each camera's line of
sight; a direction no camera sees over the trial stays at the prior (the model's location). With
several calibrated cameras every direction is seen. camera_fit places markers only then (one
camera: the offsets absorbed the pose's depth errors on the Pose2Sim demo).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from .errors import Sam4dcapError


@dataclass(frozen=True)
class PlacementSettings:
    """prior_sigma_m: 1-sigma of an offset (the pull toward the model's location); max_offset_m:
    the bound on |offset|; min_observations: 2D observations (view x frame, confidence > 0) a
    marker needs to be moved; rounds: reweighted Gauss-Newton rounds."""
    pixel_sigma_px: float = 8.0
    huber_sigmas: float = 2.0
    prior_sigma_m: float = 0.03
    max_offset_m: float = 0.08
    min_observations: int = 10
    rounds: int = 3


def body_poses(ik, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per frame and tracked marker: the rotation (N, M, 3, 3) and origin (N, M, 3) in ground of
    the marker's parent frame, at the coordinates q (N, C; NaN rows stay NaN)."""
    n, m = len(q), len(ik.tracked_marker_names)
    rot = np.full((n, m, 3, 3), np.nan)
    org = np.full((n, m, 3), np.nan)
    frames = [mk.getParentFrame() for mk in ik.tracked_markers]
    for f in range(n):
        if not np.isfinite(q[f]).all():
            continue
        ik.marker_kinematics(q[f])          # sets the state at q_f (positions realised)
        for k, fr in enumerate(frames):
            tr = fr.getTransformInGround(ik.state)
            mat = tr.R().asMat33()
            rot[f, k] = [[mat.get(i, j) for j in range(3)] for i in range(3)]
            p = tr.p()
            org[f, k] = [p.get(0), p.get(1), p.get(2)]
    return rot, org


def place_markers(ik, q: np.ndarray, views: Sequence, settings: PlacementSettings, *,
                  applied: Mapping[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """Offsets (metres, in each marker's parent frame) of the tracked markers of a StreamingIK
    model, from the poses q (N, C, coordinate_names order) and the views (camera_fit.CameraView:
    pixels (N, K, 2) undistorted, confidence (N, K)). Each marker is placed on its own; then the
    markers of one body lose the part of their offsets that turns them together about the body
    (`without_rotation`): that part is a constant joint angle in disguise, which the keypoints
    cannot tell from a misplaced marker (heel and toe turned = an ankle angle bias). Markers seen
    fewer than min_observations times keep offset 0 (absent from the result). applied: offsets
    the markers were already moved by (an earlier round): the prior, the rotation and the bound hold the total, and the result is the
    further move."""
    names = ik.tracked_marker_names
    q = np.asarray(q, float)
    rot, org = body_poses(ik, q)
    local = np.array([mk.get_location().to_numpy() for mk in ik.tracked_markers])
    applied = applied or {}
    total: dict[str, np.ndarray] = {}
    info_prior = np.eye(3) / settings.prior_sigma_m ** 2
    for k, name in enumerate(names):
        obs = []
        for v in views:
            if name not in v.names:
                continue
            j = v.names.index(name)
            conf = np.where(np.isfinite(v.pixels[:, j]).all(axis=1), np.nan_to_num(v.confidence[:, j]), 0.0)
            ok = (conf > 0) & np.isfinite(org[:, k]).all(axis=1)
            if ok.any():
                obs.append((v.camera, np.flatnonzero(ok), v.pixels[ok, j], conf[ok]))
        if sum(len(o[1]) for o in obs) < settings.min_observations:
            continue
        d0 = np.asarray(applied.get(name, np.zeros(3)), float)
        d = np.zeros(3)
        for _ in range(settings.rounds):
            a = info_prior.copy()
            b = -info_prior @ (d0 + d)
            for cam, idx, pix, conf in obs:
                x = org[idx, k] + np.einsum("nij,j->ni", rot[idx, k], local[k] + d)
                uv, jac, z = cam.project_with_jacobian(x)
                r = (pix - uv) / settings.pixel_sigma_px
                good = np.isfinite(r).all(axis=1) & (z > 0)
                norm = np.linalg.norm(r, axis=1)
                w = conf * np.where(norm > settings.huber_sigmas, settings.huber_sigmas / np.maximum(norm, 1e-12), 1.0)
                w = np.where(good, w, 0.0)
                jd = np.einsum("nij,njk->nik", jac, rot[idx, k]) / settings.pixel_sigma_px   # d(r)/d(offset)
                jd = np.where(good[:, None, None], jd, 0.0)
                r = np.where(good[:, None], r, 0.0)
                a += np.einsum("n,nji,njk->ik", w, jd, jd)
                b += np.einsum("n,nji,nj->i", w, jd, r)
            step = np.linalg.solve(a, b)
            d = d + step
            if np.linalg.norm(step) < 1e-4:
                break
        total[name] = d0 + d
    # Per body: the original places (location minus what was applied) and the total offsets.
    groups: dict[str, list[int]] = {}
    for k, mk in enumerate(ik.tracked_markers):
        if names[k] in total:
            groups.setdefault(mk.getParentFrame().getAbsolutePathString(), []).append(k)
    out: dict[str, np.ndarray] = {}
    for members in groups.values():
        base = np.array([local[k] - np.asarray(applied.get(names[k], np.zeros(3)), float) for k in members])
        offs = without_rotation(base, np.array([total[names[k]] for k in members]))
        for k, t in zip(members, offs):
            size = float(np.linalg.norm(t))
            if size > settings.max_offset_m:
                t = t * (settings.max_offset_m / size)
            out[names[k]] = t - np.asarray(applied.get(names[k], np.zeros(3)), float)
    return out


def without_rotation(points: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Offsets (M, 3) of points (M, 3) on one body less their best-fitting small rotation about
    the points' centroid (least squares w x (p - c) ~ d - mean d): what stays is a common shift
    and a change of the points' shape. One point: unchanged."""
    if len(points) < 2:
        return offsets
    c = points - points.mean(axis=0)
    dm = offsets - offsets.mean(axis=0)
    # w x c_i = -[c_i]x w: stack -[c_i]x and solve for w (min-norm: rotation about a line of points is free).
    skew = np.array([[[0.0, -p[2], p[1]], [p[2], 0.0, -p[0]], [-p[1], p[0], 0.0]] for p in c])
    a = -skew.reshape(-1, 3)
    w = np.linalg.lstsq(a, dm.reshape(-1), rcond=None)[0]
    return offsets - np.cross(w, c)


def write_placed_model(model_path: str | Path, offsets: Mapping[str, np.ndarray], out_path: str | Path) -> Path:
    """A copy of the model with each named marker moved by its offset (its parent frame, metres)."""
    import opensim

    model = opensim.Model(str(model_path))
    markers = model.getMarkerSet()
    for name, d in offsets.items():
        if not markers.contains(name):
            raise Sam4dcapError(f"{model_path}: no marker {name!r} to place")
        mk = markers.get(name)
        loc = mk.get_location().to_numpy() + np.asarray(d, float)
        mk.set_location(opensim.Vec3(*[float(v) for v in loc]))
    model.finalizeConnections()
    model.printToXML(str(out_path))
    return Path(out_path)
