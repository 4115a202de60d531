"""The IK problem batch and streaming IK both solve: marker weights, coordinate tasks and
regularisation per marker set, unobserved coordinates, the canonical form of the solution.

`inverse_kinematics.run_ik` (OpenSim's InverseKinematicsTool) and `streaming_ik.StreamingIK`
(Gauss-Newton frame by frame) both build their problem from here, so they solve the same one;
neither imports the other's internals for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .markersets import BLAZEPOSE33, OPENCAP43
from .model_builder import load_model


# The free joint of OpenSim's gait models (and of the project's model): pelvis_tilt (z),
# pelvis_list (x), pelvis_rotation (y), body-fixed. One orientation has two such triplets,
# (tilt, list, rotation) and (tilt + pi, pi - list, rotation + pi).
FREE_JOINT_ROTATIONS = ("pelvis_tilt", "pelvis_list", "pelvis_rotation")


def wrap_angle(angle):
    """Angles (rad) into [-pi, pi)."""
    return (np.asarray(angle, float) + np.pi) % (2.0 * np.pi) - np.pi


def canonical_coordinates(names: Sequence[str], q: np.ndarray, *, unbounded_rotations: np.ndarray) -> np.ndarray:
    """The canonical form of coordinates (..., n) (rad / m) describing the same pose.

    Rotational coordinates with no range to keep to (`unbounded_rotations`, (n,) bool: the free
    joint's) are wrapped into [-pi, pi): no 360 deg turns piling up. The free joint's triplet
    (`FREE_JOINT_ROTATIONS`, when all three are unbounded) takes the form with the middle angle
    (pelvis_list) within [-pi/2, pi/2], so an upright pelvis never reads tilt ~164 deg.
    NaN stays NaN.
    """
    q = np.array(q, float, copy=True)
    names = list(names)
    free = np.asarray(unbounded_rotations, bool)
    if all(n in names for n in FREE_JOINT_ROTATIONS):
        i, j, k = (names.index(n) for n in FREE_JOINT_ROTATIONS)
        if free[[i, j, k]].all():
            middle = wrap_angle(q[..., j])
            flip = np.abs(middle) > np.pi / 2
            q[..., i] = np.where(flip, q[..., i] + np.pi, q[..., i])
            q[..., j] = np.where(flip, np.pi - middle, middle)
            q[..., k] = np.where(flip, q[..., k] + np.pi, q[..., k])
    q[..., free] = wrap_angle(q[..., free])
    return q


@dataclass(frozen=True)
class CoordinateTask:
    """Pull one coordinate toward a value (OpenSim IKCoordinateTask); value None = model default."""

    weight: float
    value: float | None = None


# Relative IK weights of the project's marker sets. Joint-centre-like keypoints (hips, knees,
# ankles) and foot points carry the lower-limb pose; face and hand points are noisy and only
# orient head/hands, so they barely pull.
_BLAZEPOSE_WEIGHTS = {
    "nose": 0.2, "left_eye_inner": 0.05, "left_eye": 0.05, "left_eye_outer": 0.05,
    "right_eye_inner": 0.05, "right_eye": 0.05, "right_eye_outer": 0.05,
    "left_ear": 0.2, "right_ear": 0.2, "mouth_left": 0.05, "mouth_right": 0.05,
    "left_shoulder": 2.0, "right_shoulder": 2.0, "left_elbow": 1.0, "right_elbow": 1.0,
    "left_wrist": 1.0, "right_wrist": 1.0, "left_pinky": 0.2, "right_pinky": 0.2,
    "left_index": 0.2, "right_index": 0.2, "left_thumb": 0.2, "right_thumb": 0.2,
    "left_hip": 5.0, "right_hip": 5.0, "left_knee": 5.0, "right_knee": 5.0,
    "left_ankle": 5.0, "right_ankle": 5.0, "left_heel": 3.0, "right_heel": 3.0,
    "left_foot_index": 3.0, "right_foot_index": 3.0,
}
# OpenCap's markers are all skin landmarks of similar quality: equal weights. Measured on synthetic
# trials with 5 mm soft-tissue-like noise (bench/accuracy_synthetic.py), equal weights beat
# up-weighting the joint markers (hip rotation 2.2 vs 3.1 deg RMS): the thigh and shank
# clusters are what make segment axial rotation observable.
_OPENCAP_WEIGHTS = {name: 1.0 for name in OPENCAP43}
assert set(_BLAZEPOSE_WEIGHTS) == set(BLAZEPOSE33)
MARKER_SET_WEIGHTS: dict[str, dict[str, float]] = {"blazepose33": _BLAZEPOSE_WEIGHTS,
                                                   "opencap43": _OPENCAP_WEIGHTS}

# Weak coordinate priors per marker set (IKCoordinateTask weights toward a value; the markers goal
# is sum w_i r_i^2 / sum w_i in m^2, so 2e-4 rad^-2 makes 1 deg of prior deviation cost as much as
# 0.25 mm of weighted RMS marker error). BlazePose puts only the two hip keypoints on the pelvis, on
# its tilt axis: pelvis tilt, hip flexion and lumbar extension form a near null space, and with
# straight knees femoral rotation is barely seen. Measured (synthetic gait/squat/drop jump, 5 mm
# noise, bench/accuracy_synthetic.py and test_ik): lumbar -> 0 at 2e-4 cuts hip-flexion RMSE
# from 6-8 to 2.4-4 deg (noise-free bias = the trial's lumbar angle carried into pelvis tilt and
# hip flexion: 1.9 / 4.0 / 2.6 deg for lumbar RMS 3 / 6 / 4 deg; 2e-5 keeps most of the noise,
# 2e-3 and up the full bias); hip rotation -> 0 at 2e-4 cuts its RMSE from 6-15 to ~3 deg (noise-
# free bias 1.8 deg in gait, whose hip rotation is +-5 deg). Likewise humeral rotation trades
# against pronation with nearly straight elbows (the hand keypoints are close to the forearm axis):
# arm_rot -> 0 at 2e-4 cuts its RMSE from 5-12 to 1-3.6 deg and keeps the streaming solver out of
# that flat valley (it crawled there, up to 50 iterations a frame). OpenCap's markers observe
# every lower-limb dof: no prior.
_BLAZEPOSE_PRIORS = {name: CoordinateTask(2e-4, 0.0) for name in (
    "lumbar_extension", "lumbar_bending", "lumbar_rotation", "hip_rotation_r", "hip_rotation_l",
    "arm_rot_r", "arm_rot_l")}
MARKER_SET_PRIORS: dict[str, dict[str, CoordinateTask]] = {"blazepose33": _BLAZEPOSE_PRIORS, "opencap43": {}}
# Weight of the task holding an unobserved coordinate at its default: it is alone in its
# (zero) Jacobian column, so any positive weight holds it exactly without touching the rest.
UNOBSERVED_HOLD_WEIGHT = 1.0


def closest_marker_set(names) -> str | None:
    """The project marker set most of these names belong to (half or more of its names present),
    if any. (`virtual_markers.marker_set_of` is another question: which set the names are exactly.)"""
    names = set(names)
    best, best_share = None, 0.0
    for key, weights in MARKER_SET_WEIGHTS.items():
        share = len(names & set(weights)) / len(weights)
        if share > best_share:
            best, best_share = key, share
    return best if best_share >= 0.5 else None


def ik_regularization(marker_names, coordinate_names, *, unobserved=(), locked=()) -> dict[str, CoordinateTask]:
    """Regularising coordinate tasks for IK with these (weighted) markers on a model.

    The priors of the project marker set the names are (`MARKER_SET_PRIORS`, for coordinates the
    model has and does not lock), plus a hold at the default value for each `unobserved`
    coordinate (`unobserved_coordinates`). Used by run_ik and StreamingIK alike.
    """
    coordinate_names = set(coordinate_names)
    key = closest_marker_set(marker_names) or ""
    tasks = {name: task for name, task in MARKER_SET_PRIORS.get(key, {}).items()
             if name in coordinate_names and name not in set(locked)}
    for name in unobserved:
        tasks[name] = CoordinateTask(UNOBSERVED_HOLD_WEIGHT, None)
    return tasks


def unobserved_coordinates(model, marker_names: Sequence[str], *, state=None,
                           tolerance_m: float = 1e-9) -> tuple[str, ...]:
    """Free coordinates that move none of the named model markers: zero marker-Jacobian column.

    Each free coordinate is nudged by 0.01 (rad or m) at the default pose and at a second, bent
    pose (every free coordinate a quarter of its range from the default); a coordinate that
    moves no marker by more than tolerance_m at either is unobserved: IK cannot tell its value.
    model: path or opensim.Model (copied), or an initialised model with its `state` (restored).
    """
    own = state is None
    if own:
        model = load_model(model)
        state = model.initSystem()
    import opensim   # lazily, as everywhere: see docs/architecture.md, Imports

    q_saved = state.getQ().to_numpy().copy()
    marker_set = model.getMarkerSet()
    markers = [marker_set.get(n) for n in marker_names if marker_set.contains(n)]
    cs = model.getCoordinateSet()
    coords = [cs.get(i) for i in range(cs.getSize()) if not cs.get(i).getLocked(state)]

    def positions():
        model.realizePosition(state)
        return np.array([m.getLocationInGround(state).to_numpy() for m in markers])

    moved = np.zeros(len(coords), bool)
    for bent in (False, True):
        for c in coords:
            lo, hi, q0 = c.getRangeMin(), c.getRangeMax(), c.getDefaultValue()
            c.setValue(state, q0 + 0.25 * (hi - lo) if bent and np.isfinite(hi - lo) and hi > lo else q0, False)
        base = positions()
        for k, c in enumerate(coords):
            if moved[k]:
                continue
            q = c.getValue(state)
            c.setValue(state, q + 0.01, False)
            moved[k] = bool(np.max(np.abs(positions() - base), initial=0.0) > tolerance_m)
            c.setValue(state, q, False)
    if not own:
        state.setQ(opensim.Vector.createFromMat(q_saved))
        model.realizePosition(state)
    return tuple(c.getName() for c, m in zip(coords, moved) if not m)
