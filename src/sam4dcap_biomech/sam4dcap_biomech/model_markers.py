"""Where the markers of each marker set sit on the generated model.

Positions are given on the standing body of `anthropometry.body_layout` (floor y=0, x forward,
y up, z right; left side z<0) as offsets in reference millimetres (de Leva's 1741 mm male, scaled
with the subject like every other length) from a joint centre or landmark, then attached to a
body. Assumptions, stated because they decide how markers compare with video keypoints:

BlazePose 33 (MediaPipe pose landmarks; marker names = landmark names):
- Keypoint detectors are trained on annotated *visible* body points, so several landmarks are not
  joint centres: `*_hip` sits 25 mm lateral and 5 mm above the hip joint centre (between the joint
  centre and the greater trochanter, where the annotated "hip" falls); `*_shoulder` 15 mm above
  and 10 mm lateral of the glenohumeral centre (between it and the acromion); `*_heel` on the back
  of the heel 25 mm above the floor; `*_foot_index` on the top of the forefoot 15 mm behind the toe
  tip and 20 mm above the floor.
- `*_knee`, `*_ankle`, `*_elbow`, `*_wrist` are the joint centres (mid-epicondyles/malleoli/styloids).
- Hands in the anatomical position (palms forward, thumbs lateral): `*_index` and `*_pinky` are the
  2nd and 5th metacarpophalangeal joints, `*_thumb` the thumb's interphalangeal joint; they ride on
  the hand body, so wrist and forearm rotation move them.
- Face: ears at the tragus, eyes (inner corner, centre, outer corner), nose tip and mouth corners,
  from typical adult head dimensions relative to the vertex (head length ~ 232 mm to the chin).
- Feet landmarks ride on the calcaneus body (toes are stiff for video), hands on the hand bodies,
  face on the head, hips on the pelvis, shoulders on the torso.
- Checked against MediaPipe's own 3D world landmarks (Pose2Sim demo, 4 views x 25 frames,
  medians, as ratios to the hip-knee distance): hip width 0.49 (model 0.51), shoulder width 0.84
  (0.85), shoulder-hip 1.23 (1.17), ear-ear 0.37 (0.34). MediaPipe's limbs come out 6-11 % shorter
  and its feet about half as long (heel-foot_index 0.26 vs 0.56: depth foreshortening of its
  world landmarks), so the model keeps de Leva's lengths there; scaling adapts them per subject.
- Caveat for IK: the pelvis carries only the two hip landmarks, both on the pelvis' medio-lateral
  axis, so pelvis tilt is not observable from them; it trades off against hip flexion and
  lumbar extension unless IK adds a prior.

OpenCap 43 (LaiUhlrich 2022 "_study" markers): bony landmarks with ~5-10 mm skin thickness:
ASIS/PSIS on the pelvis, C7 and acromia on the torso, femoral epicondyles and thigh cluster on
the femurs, malleoli and shank cluster on the tibias, heel/1st toe/5th metatarsal on the calcanei,
humeral epicondyles on the humeri, radial/ulnar styloids on the radii, and the hip joint centres
(RHJC_study/LHJC_study) on the pelvis.
"""

from __future__ import annotations

import numpy as np

from .anthropometry import BodyLayout
from .errors import Sam4dcapError
from .markersets import BLAZEPOSE33, OPENCAP43

# Face landmarks relative to the vertex (reference mm; z given for the right side).
_FACE = {
    "nose": (112.0, -160.0, 0.0),
    "eye_inner": (92.0, -117.0, 17.0),
    "eye": (86.0, -115.0, 32.0),
    "eye_outer": (78.0, -115.0, 48.0),
    "ear": (-5.0, -125.0, 72.0),
    "mouth": (95.0, -190.0, 25.0),
}
# Hand landmarks relative to the wrist joint centre, anatomical position (right side z).
_HAND = {"index": (0.0, -84.0, 20.0), "pinky": (0.0, -75.0, -38.0), "thumb": (20.0, -70.0, 45.0)}


def _blazepose(lay: BodyLayout) -> dict[str, tuple[str, np.ndarray]]:
    s = lay.length_scale
    P = lay.points

    def off(x, y, z, sign=1.0):
        return np.array([x, y, sign * z]) * s

    out: dict[str, tuple[str, np.ndarray]] = {}
    out["nose"] = ("head", P["vertex"] + off(*_FACE["nose"]))
    for side, tag, sign in (("left", "l", -1.0), ("right", "r", 1.0)):
        for part in ("eye_inner", "eye", "eye_outer", "ear"):
            out[f"{side}_{part}"] = ("head", P["vertex"] + off(*_FACE[part], sign))
        out[f"mouth_{side}"] = ("head", P["vertex"] + off(*_FACE["mouth"], sign))
        out[f"{side}_shoulder"] = ("torso", P[f"sjc_{tag}"] + off(0, 15, 10, sign))
        out[f"{side}_elbow"] = (f"humerus_{tag}", P[f"ejc_{tag}"].copy())
        out[f"{side}_wrist"] = (f"radius_{tag}", P[f"wjc_{tag}"].copy())
        for part, xyz in _HAND.items():
            out[f"{side}_{part}"] = (f"hand_{tag}", P[f"wjc_{tag}"] + off(*xyz, sign))
        out[f"{side}_hip"] = ("pelvis", P[f"hjc_{tag}"] + off(0, 5, 25, sign))
        out[f"{side}_knee"] = (f"femur_{tag}", P[f"kjc_{tag}"].copy())
        out[f"{side}_ankle"] = (f"tibia_{tag}", P[f"ajc_{tag}"].copy())
        heel = P[f"heel_sole_{tag}"]
        out[f"{side}_heel"] = (f"calcn_{tag}", heel + off(5, 25, 0))
        tip = P[f"toe_tip_sole_{tag}"]
        out[f"{side}_foot_index"] = (f"calcn_{tag}", tip + off(-15, 20, 0))
    return {name: out[name] for name in BLAZEPOSE33}


def _opencap(lay: BodyLayout) -> dict[str, tuple[str, np.ndarray]]:
    s = lay.length_scale
    P = lay.points

    def off(x, y, z, sign=1.0):
        return np.array([x, y, sign * z]) * s

    out: dict[str, tuple[str, np.ndarray]] = {"C7_study": ("torso", P["c7"] + off(-8, 0, 0))}
    for tag, sign, cap in (("r", 1.0, "r"), ("l", -1.0, "L")):
        out[f"{cap}_shoulder_study"] = ("torso", P[f"sjc_{tag}"] + off(-5, 35, 15, sign))
        out[f"{cap}.ASIS_study"] = ("pelvis", P[f"asis_{tag}"] + off(10, 0, 0))
        out[f"{cap}.PSIS_study"] = ("pelvis", P[f"psis_{tag}"] + off(-10, 0, 0))
        out[f"{cap}_knee_study"] = (f"femur_{tag}", P[f"kjc_{tag}"] + off(0, 0, 50, sign))
        out[f"{cap}_mknee_study"] = (f"femur_{tag}", P[f"kjc_{tag}"] + off(0, 0, -45, sign))
        out[f"{cap}_ankle_study"] = (f"tibia_{tag}", P[f"ajc_{tag}"] + off(-5, -8, 37, sign))
        out[f"{cap}_mankle_study"] = (f"tibia_{tag}", P[f"ajc_{tag}"] + off(5, 5, -35, sign))
        mtp, heel = P[f"mtp_{tag}"], P[f"heel_sole_{tag}"]
        out[f"{cap}_toe_study"] = (f"calcn_{tag}", np.array([mtp[0], 0, mtp[2]]) + off(15, 30, -10, sign))
        out[f"{cap}_5meta_study"] = (f"calcn_{tag}", np.array([mtp[0], 0, mtp[2]]) + off(-25, 20, 40, sign))
        out[f"{cap}_calc_study"] = (f"calcn_{tag}", heel + off(-5, 35, 0))
        out[f"{cap}_lelbow_study"] = (f"humerus_{tag}", P[f"ejc_{tag}"] + off(0, 0, 35, sign))
        out[f"{cap}_melbow_study"] = (f"humerus_{tag}", P[f"ejc_{tag}"] + off(0, 0, -42, sign))
        out[f"{cap}_lwrist_study"] = (f"radius_{tag}", P[f"wjc_{tag}"] + off(0, 0, 30, sign))
        out[f"{cap}_mwrist_study"] = (f"radius_{tag}", P[f"wjc_{tag}"] + off(-5, 0, -28, sign))
        hjc, kjc, ajc = P[f"hjc_{tag}"], P[f"kjc_{tag}"], P[f"ajc_{tag}"]
        for i, (f, x, z) in enumerate(((0.5, 10, 75), (0.3, 70, 35), (0.7, 60, 20)), start=1):
            out[f"{cap}_thigh{i}_study"] = (f"femur_{tag}", hjc + (kjc - hjc) * f + off(x, 0, z, sign))
        for i, (f, x, z) in enumerate(((0.3, 0, 55), (0.5, 40, 30), (0.7, 20, 45)), start=1):
            out[f"{cap}_sh{i}_study"] = (f"tibia_{tag}", kjc + (ajc - kjc) * f + off(x, 0, z, sign))
    out["RHJC_study"] = ("pelvis", P["hjc_r"].copy())
    out["LHJC_study"] = ("pelvis", P["hjc_l"].copy())
    return {name: out[name] for name in OPENCAP43}


MARKER_PLACERS = {"blazepose33": _blazepose, "opencap43": _opencap}
MARKER_SET_ALIASES = {"blazepose": "blazepose33", "blazepose33": "blazepose33", "opencap43": "opencap43",
                      "opencap": "opencap43"}


def marker_positions(layout: BodyLayout, marker_set: str) -> dict[str, tuple[str, np.ndarray]]:
    """name -> (body name, location in that body's frame, metres) for a built-in marker set."""
    key = MARKER_SET_ALIASES.get(marker_set)
    if key is None:
        raise Sam4dcapError(f"unknown marker set {marker_set!r}: use blazepose33, opencap43, none "
                            "or the path of a marker-set .xml")
    world = MARKER_PLACERS[key](layout)
    return {name: (body, layout.local(body, p)) for name, (body, p) in world.items()}
