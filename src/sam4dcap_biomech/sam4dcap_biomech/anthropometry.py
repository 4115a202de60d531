"""Anthropometry of the generated full-body model: where joints and landmarks sit on a standing
body of a given height, and the mass, centre of mass and inertia of every segment.

Sources (all published tables; the numbers below are those tables' values):
- Segment lengths, mass fractions, centre-of-mass positions and radii of gyration:
  de Leva P. (1996) "Adjustments to Zatsiorsky-Seluyanov's segment inertia parameters",
  J Biomech 29(9):1223-1230, Table 4 (male and female columns; lengths in mm of the mean
  subject, statures 1741 mm male / 1735 mm female).
- Hip joint centre in the pelvis frame: Harrington M.E. et al. (2007) "Prediction of the hip
  joint centre in adults, children, and patients with cerebral palsy based on magnetic resonance
  imaging", J Biomech 40(3):595-602 (regression on pelvis width PW and depth PD).
- Ankle height 0.039 H, acromion height 0.818 H, hand length 0.108 H: Drillis R., Contini R.
  (1966) "Body segment parameters", NYU report 1166-03 (segment lengths as fractions of stature).
- Joint axes of the ankle, subtalar and metatarsophalangeal joints: Delp S.L. et al. (1990)
  lower-limb model, as used by Gait2392, Rajagopal 2016 and LaiUhlrich 2022 (see model_builder).

Assumptions (documented because the tables do not give them):
- Pelvis width (inter-ASIS) 235 mm and depth (mid-ASIS to mid-PSIS) 160 mm at 1741 mm stature,
  typical adult values; scaled with height like every other length.
- Standing posture: thigh and shank vertical below the hip joint centre; trunk axis (mid-hip to
  C7) leaning 5 deg backwards; head segment (C7 to vertex) leaning 9.5 deg forwards; arms hanging
  vertically with palms forward (anatomical position). Joint centres of one side share one z.
- The trunk of de Leva is split at the omphalion: lower trunk = pelvis body, upper + middle
  trunk = torso body (lumbar joint at the omphalion level on the trunk axis). Head + neck is one
  body (de Leva's VERT-CERV segment) jointed at C7/T1.
- Mass fractions are normalised by their sum (100.00 % male, 99.99 % female).
- The foot mass is split 6% talus, 80% calcaneus/mid-foot, 14% toes (the proportions of the
  Rajagopal 2016 model), keeping de Leva's foot centre of mass; the forearm mass is split equally
  between ulna and radius.
- Radii of gyration: "sagittal" about the antero-posterior axis (x), "transverse" about the
  medio-lateral axis (z), "longitudinal" about the segment axis (y; x for the foot).
- All lengths scale with one factor, so that vertex height over the floor equals the requested
  height exactly (de Leva's lengths alone stack to 1.4% above the stature in this posture).

Frames: x forward, y up, z right (OpenSim / Rajagopal convention); the floor is y = 0 and the
standing body faces +x with its mid-hip above the origin's x-z position of the pelvis frame.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .errors import Sam4dcapError
from .settings import check_height_m, check_mass_kg

# de Leva 1996 Table 4: (length_mm, mass_%, com_% from the proximal end, r_sag_%, r_trans_%, r_long_%)
# Proximal ends: head VERT (vertex), upper trunk CERV, middle trunk XYPH, lower trunk OMPH,
# upper arm shoulder JC, forearm elbow JC, hand wrist JC, thigh hip JC, shank knee JC, foot heel.
DE_LEVA_1996 = {
    "male": {
        "head": (242.9, 6.94, 50.02, 30.3, 31.5, 26.1),
        "trunk": (603.3, 43.46, 44.86, 37.2, 34.7, 19.1),
        "upper_trunk": (242.1, 15.96, 29.99, 71.6, 45.4, 65.9),
        "middle_trunk": (215.5, 16.33, 45.02, 48.2, 38.3, 46.8),
        "lower_trunk": (145.7, 11.17, 61.15, 61.5, 55.1, 58.7),
        "upper_arm": (281.7, 2.71, 57.72, 28.5, 26.9, 15.8),
        "forearm": (268.9, 1.62, 45.74, 27.6, 26.5, 12.1),
        "hand": (86.2, 0.61, 79.00, 62.8, 51.3, 40.1),
        "thigh": (422.2, 14.16, 40.95, 32.9, 32.9, 14.9),
        "shank": (434.0, 4.33, 44.59, 25.5, 24.9, 10.3),
        "foot": (258.1, 1.37, 44.15, 25.7, 24.5, 12.4),
    },
    "female": {
        "head": (243.7, 6.68, 48.41, 27.1, 29.5, 26.1),
        "trunk": (614.8, 42.57, 49.64, 35.7, 33.9, 17.1),
        "upper_trunk": (228.0, 15.45, 20.77, 74.6, 50.2, 71.8),
        "middle_trunk": (205.3, 14.65, 45.12, 43.3, 35.4, 41.5),
        "lower_trunk": (181.5, 12.47, 49.20, 43.3, 40.2, 44.4),
        "upper_arm": (275.1, 2.55, 57.54, 27.8, 26.0, 14.8),
        "forearm": (264.3, 1.38, 45.59, 26.1, 25.7, 9.4),
        "hand": (78.0, 0.56, 74.74, 53.1, 45.4, 33.5),
        "thigh": (368.5, 14.78, 36.12, 36.9, 36.4, 16.2),
        "shank": (432.3, 4.81, 44.16, 27.1, 26.7, 9.3),
        "foot": (228.3, 1.29, 40.14, 29.9, 27.9, 13.9),
    },
}
DE_LEVA_STATURE_MM = {"male": 1741.0, "female": 1735.0}

# Fractions of the de Leva foot / forearm mass given to the model's bodies (Rajagopal 2016 split).
FOOT_SPLIT = {"talus": 0.06, "calcn": 0.80, "toes": 0.14}
FOREARM_SPLIT = {"ulna": 0.5, "radius": 0.5}

# Reference-stature (mm) geometry not in de Leva's table (see module docstring).
PELVIS_WIDTH_MM = 235.0      # inter-ASIS distance
PELVIS_DEPTH_MM = 160.0      # mid-ASIS to mid-PSIS distance
ANKLE_HEIGHT_FRACTION = 0.039  # Drillis & Contini 1966
TRUNK_LEAN_DEG = 5.0         # trunk axis (mid-hip -> C7) leans backwards
HEAD_LEAN_DEG = 9.5          # head segment axis (C7 -> vertex) leans forwards
C7_TO_NECK_JOINT_MM = (40.0, 0.0)      # C7 spinous process -> C7/T1 joint, forwards
# C7 -> glenohumeral centre (x, y, |z|): the acromion lies at 0.818 H (Drillis & Contini 1966),
# ~90 mm below C7, and the joint centre ~30 mm below the acromion; elbow and wrist then fall at
# 0.64 H and 0.49 H as in Drillis & Contini (0.630 H, 0.485 H).
C7_TO_SHOULDER_MM = (65.0, -115.0, 172.0)
HEEL_BEHIND_ANKLE = 0.20     # heel lies this fraction of foot length behind the ankle centre
MTP_FROM_HEEL = 0.70         # MTP joint at this fraction of foot length from the heel
MTP_HEIGHT_MM = 20.0
HAND_LENGTH_FRACTION = 0.108  # wrist to fingertip / stature (Drillis & Contini 1966)

SEXES = ("male", "female")


@dataclass(frozen=True)
class Segment:
    """Mass properties of one model body, in that body's frame (origin at its proximal joint)."""
    mass_kg: float
    com_m: np.ndarray        # (3,)
    inertia_kgm2: np.ndarray  # (3, 3) about the centre of mass, body axes


@dataclass
class BodyLayout:
    """Standing body of one subject: points in the standing frame (floor y=0), bodies and masses.

    `points` are named landmarks/joint centres (metres). `origins` gives each body's frame
    origin in the standing frame (all body frames are parallel to the standing frame in the
    default pose). `segments` holds mass properties per body.
    """
    height_m: float
    mass_kg: float
    sex: str
    length_scale: float          # metres per de Leva reference millimetre
    points: dict[str, np.ndarray] = field(default_factory=dict)
    origins: dict[str, np.ndarray] = field(default_factory=dict)
    segments: dict[str, Segment] = field(default_factory=dict)
    lengths_m: dict[str, float] = field(default_factory=dict)

    def local(self, body: str, point_world) -> np.ndarray:
        """A standing-frame point expressed in `body`'s frame (default pose)."""
        return np.asarray(point_world, float) - self.origins[body]


def validate_subject(height_m: float, mass_kg: float, sex: str = "male") -> None:
    check_height_m(height_m)
    check_mass_kg(mass_kg)
    if sex not in SEXES:
        raise Sam4dcapError(f"unknown sex {sex!r}: use one of {', '.join(SEXES)}")


def _inertia(mass: float, length_m: float, r_x: float, r_y: float, r_z: float) -> np.ndarray:
    """Principal inertia from radii of gyration given in % of the segment length."""
    return np.diag([mass * (r * length_m / 100.0) ** 2 for r in (r_x, r_y, r_z)])


def _combine(parts: list[tuple[float, np.ndarray, np.ndarray]]) -> tuple[float, np.ndarray, np.ndarray]:
    """Mass, centre of mass and inertia about it of rigidly joined parts (parallel-axis theorem)."""
    mass = sum(m for m, _, _ in parts)
    com = sum(m * c for m, c, _ in parts) / mass
    inertia = np.zeros((3, 3))
    for m, c, i in parts:
        d = c - com
        inertia += i + m * (np.dot(d, d) * np.eye(3) - np.outer(d, d))
    return float(mass), np.asarray(com, float), inertia


def body_layout(height_m: float, mass_kg: float, sex: str = "male") -> BodyLayout:
    """Joint centres, landmarks and mass properties of a standing subject (see module docstring)."""
    validate_subject(height_m, mass_kg, sex)
    table = DE_LEVA_1996[sex]
    stature_mm = DE_LEVA_STATURE_MM[sex]

    def vertical_stack_mm() -> float:
        trunk = table["trunk"][0] * np.cos(np.radians(TRUNK_LEAN_DEG))
        head = table["head"][0] * np.cos(np.radians(HEAD_LEAN_DEG))
        return ANKLE_HEIGHT_FRACTION * stature_mm + table["shank"][0] + table["thigh"][0] + trunk + head

    # One factor for every length: reference mm -> metres, so that the vertex is at height_m.
    s = height_m / vertical_stack_mm()
    lay = BodyLayout(height_m=height_m, mass_kg=mass_kg, sex=sex, length_scale=s)
    L = {k: v[0] * s for k, v in table.items()}
    lay.lengths_m.update(L)
    P = lay.points

    def v(x, y, z=0.0):
        return np.array([x, y, z], float)

    # --- lower limbs (sagittal stack from the floor) -------------------------------------
    h_ankle = ANKLE_HEIGHT_FRACTION * stature_mm * s
    pw, pd = PELVIS_WIDTH_MM * s, PELVIS_DEPTH_MM * s
    # Harrington 2007 (mm, pelvis frame at mid-ASIS): x=-0.24PD-9.9, y=-0.30PW-10.9, z=0.33PW+7.3
    hjc_pelvis = v(-0.24 * pd - 9.9 * s, -0.30 * pw - 10.9 * s, 0.33 * pw + 7.3 * s)
    hip_y = h_ankle + L["shank"] + L["thigh"]
    pelvis_origin = v(0.0, hip_y - hjc_pelvis[1], 0.0)
    P["pelvis_origin"] = pelvis_origin
    P["mid_asis"] = pelvis_origin.copy()
    foot_len = L["foot"]
    for side, sign in (("r", 1.0), ("l", -1.0)):
        hjc = pelvis_origin + hjc_pelvis * v(1, 1, sign)
        P[f"hjc_{side}"] = hjc
        P[f"kjc_{side}"] = hjc - v(0, L["thigh"])
        P[f"ajc_{side}"] = hjc - v(0, L["thigh"] + L["shank"])
        ajc = P[f"ajc_{side}"]
        P[f"heel_sole_{side}"] = v(ajc[0] - HEEL_BEHIND_ANKLE * foot_len, 0.0, ajc[2])
        P[f"toe_tip_sole_{side}"] = P[f"heel_sole_{side}"] + v(foot_len, 0.0)
        P[f"mtp_{side}"] = P[f"heel_sole_{side}"] + v(MTP_FROM_HEEL * foot_len, MTP_HEIGHT_MM * s)
        P[f"asis_{side}"] = pelvis_origin + v(0, 0, sign * pw / 2)
        P[f"psis_{side}"] = pelvis_origin + v(-pd, 0, sign * 45.0 * s)
    mid_hip = (P["hjc_r"] + P["hjc_l"]) / 2
    P["mid_hip"] = mid_hip

    # --- trunk, head, arms ---------------------------------------------------------------
    lean = np.radians(TRUNK_LEAN_DEG)
    trunk_dir = v(-np.sin(lean), np.cos(lean))          # unit, mid-hip -> C7
    P["c7"] = mid_hip + L["trunk"] * trunk_dir
    P["omphalion"] = mid_hip + L["lower_trunk"] * trunk_dir
    P["xyphion"] = P["omphalion"] + L["middle_trunk"] * trunk_dir
    P["lumbar_joint"] = P["omphalion"].copy()
    head_lean = np.radians(HEAD_LEAN_DEG)
    P["vertex"] = P["c7"] + L["head"] * v(np.sin(head_lean), np.cos(head_lean))
    P["neck_joint"] = P["c7"] + v(*C7_TO_NECK_JOINT_MM) * s
    hand_len = HAND_LENGTH_FRACTION * stature_mm * s
    for side, sign in (("r", 1.0), ("l", -1.0)):
        sx, sy, sz = C7_TO_SHOULDER_MM
        P[f"sjc_{side}"] = P["c7"] + v(sx, sy, sign * sz) * s
        P[f"ejc_{side}"] = P[f"sjc_{side}"] - v(0, L["upper_arm"])
        P[f"wjc_{side}"] = P[f"ejc_{side}"] - v(0, L["forearm"])
        P[f"met3_{side}"] = P[f"wjc_{side}"] - v(0, L["hand"])
        P[f"fingertip_{side}"] = P[f"wjc_{side}"] - v(0, hand_len)

    # --- body frame origins (each body's proximal joint) ---------------------------------
    O = lay.origins
    O["pelvis"] = pelvis_origin
    O["torso"] = P["lumbar_joint"]
    O["head"] = P["neck_joint"]
    for side in ("r", "l"):
        O[f"femur_{side}"] = P[f"hjc_{side}"]
        O[f"tibia_{side}"] = P[f"kjc_{side}"]
        O[f"talus_{side}"] = P[f"ajc_{side}"]
        O[f"calcn_{side}"] = P[f"heel_sole_{side}"]
        O[f"toes_{side}"] = P[f"mtp_{side}"]
        O[f"humerus_{side}"] = P[f"sjc_{side}"]
        O[f"ulna_{side}"] = P[f"ejc_{side}"]
        O[f"radius_{side}"] = P[f"ejc_{side}"]
        O[f"hand_{side}"] = P[f"wjc_{side}"]

    # --- mass properties -----------------------------------------------------------------
    # The female column sums to 99.99 %: normalise so the model mass is exactly the subject's.
    total_pct = table["head"][1] + table["upper_trunk"][1] + table["middle_trunk"][1] + table["lower_trunk"][1] \
        + 2 * sum(table[k][1] for k in ("upper_arm", "forearm", "hand", "thigh", "shank", "foot"))

    def frac(name):
        return table[name][1] / total_pct * mass_kg

    def along(name, start, end):
        """(com point, length) of a de Leva segment from its proximal to distal end point."""
        return start + table[name][2] / 100.0 * (end - start), float(np.linalg.norm(end - start))

    def seg(body, mass, com_world, inertia):
        lay.segments[body] = Segment(mass, com_world - O[body], inertia)

    # pelvis = lower trunk (OMPH -> MIDH)
    com, _ = along("lower_trunk", P["omphalion"], mid_hip)
    _, _, rs, rt, rl = table["lower_trunk"][1:]
    seg("pelvis", frac("lower_trunk"), com, _inertia(frac("lower_trunk"), L["lower_trunk"], rs, rl, rt))
    # torso = upper trunk (CERV -> XYPH) + middle trunk (XYPH -> OMPH)
    parts = []
    for name, top, bottom in (("upper_trunk", P["c7"], P["xyphion"]), ("middle_trunk", P["xyphion"], P["omphalion"])):
        c, _ = along(name, top, bottom)
        _, _, rs, rt, rl = table[name][1:]
        parts.append((frac(name), c, _inertia(frac(name), L[name], rs, rl, rt)))
    m, c, i = _combine(parts)
    seg("torso", m, c, i)
    # head + neck (VERT -> CERV)
    c, _ = along("head", P["vertex"], P["c7"])
    _, _, rs, rt, rl = table["head"][1:]
    seg("head", frac("head"), c, _inertia(frac("head"), L["head"], rs, rl, rt))
    for side in ("r", "l"):
        for body, name, a, b in (("femur", "thigh", "hjc", "kjc"), ("tibia", "shank", "kjc", "ajc"),
                                 ("humerus", "upper_arm", "sjc", "ejc"), ("hand", "hand", "wjc", "met3")):
            c, _ = along(name, P[f"{a}_{side}"], P[f"{b}_{side}"])
            _, _, rs, rt, rl = table[name][1:]
            seg(f"{body}_{side}", frac(name), c, _inertia(frac(name), L[name], rs, rl, rt))
        c, _ = along("forearm", P[f"ejc_{side}"], P[f"wjc_{side}"])
        _, _, rs, rt, rl = table["forearm"][1:]
        full = _inertia(frac("forearm"), L["forearm"], rs, rl, rt)
        for body, share in FOREARM_SPLIT.items():
            seg(f"{body}_{side}", share * frac("forearm"), c, share * full)
        # foot: de Leva heel -> toe tip along x; its centre of mass at 40 % of ankle height
        heel, tip = P[f"heel_sole_{side}"], P[f"toe_tip_sole_{side}"]
        foot_com, _ = along("foot", heel, tip)
        foot_com = foot_com + v(0, 0.4 * h_ankle)
        m_foot = frac("foot")
        _, _, rs, rt, rl = table["foot"][1:]
        foot_inertia = _inertia(m_foot, foot_len, rl, rs, rt)  # long axis is x for the foot
        m_talus, m_toes = FOOT_SPLIT["talus"] * m_foot, FOOT_SPLIT["toes"] * m_foot
        m_calcn = FOOT_SPLIT["calcn"] * m_foot
        talus_com = P[f"ajc_{side}"]
        toes_len = (1 - MTP_FROM_HEEL) * foot_len
        toes_com = P[f"mtp_{side}"] + v(0.5 * toes_len, -0.3 * MTP_HEIGHT_MM * s)
        calcn_com = (m_foot * foot_com - m_talus * talus_com - m_toes * toes_com) / m_calcn
        r_talus = 20.0 * s
        seg(f"talus_{side}", m_talus, talus_com, np.eye(3) * 0.4 * m_talus * r_talus ** 2)
        seg(f"calcn_{side}", m_calcn, calcn_com, FOOT_SPLIT["calcn"] * foot_inertia)
        bx, by, bz = toes_len, 20.0 * s, 90.0 * s
        seg(f"toes_{side}", m_toes, toes_com,
            np.diag([m_toes / 12 * (by ** 2 + bz ** 2), m_toes / 12 * (bx ** 2 + bz ** 2), m_toes / 12 * (bx ** 2 + by ** 2)]))
    return lay


def pelvis_height_m(height_m: float, sex: str = "male") -> float:
    """Height of the pelvis frame origin (mid-ASIS) over the floor when standing."""
    return float(body_layout(height_m, 70.0, sex).points["pelvis_origin"][1])
