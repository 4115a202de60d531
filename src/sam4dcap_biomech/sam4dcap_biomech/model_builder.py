"""The project's own full-body OpenSim model, generated with the OpenSim API for any height/mass.

Bodies, joints and coordinates follow the names and sign conventions of Rajagopal 2016 /
LaiUhlrich 2022 (OpenCap), so results compare 1:1 with OpenCap, Rajagopal and Gait2392 outputs:

- Frames: ground and every body frame x forward, y up, z right. In the default pose (all
  coordinates 0 except pelvis_ty) every body frame is parallel to ground; the subject stands on
  the floor y=0 facing +x, arms hanging with palms forward (anatomical position).
- ground_pelvis: 6-dof CustomJoint; rotations pelvis_tilt (z), pelvis_list (x), pelvis_rotation
  (y), body-fixed in that order, then translations pelvis_tx/ty/tz along ground x/y/z.
- hip_{r,l}: hip_flexion (+z, + = flexion), hip_adduction (+x right / -x left, + = adduction),
  hip_rotation (+y right / -y left, + = internal rotation).
- knee_{r,l}: knee_angle about -z, + = flexion (hinge; no tibio-femoral translation).
- Every joint (non-pelvis) coordinate is clamped to its physiological range (`COORDINATE_RANGES`):
  IK keeps to it (inverse_kinematics / streaming_ik); the pelvis coordinates are free.
- ankle_{r,l}, subtalar_{r,l}, mtp_{r,l}: the oblique axes of Delp 1990 as in Rajagopal 2016;
  ankle_angle + = dorsiflexion, subtalar_angle + = inversion, mtp_angle + = toe extension.
- back: lumbar_extension (+z, + = extension), lumbar_bending (+x), lumbar_rotation (+y).
- neck: neck_extension (+z, + = extension), neck_bending (+x), neck_rotation (+y) — the
  head is a separate body because BlazePose's face landmarks make its orientation observable.
- acromial_{r,l}: arm_flex (+z, + = flexion), arm_add (+x right / -x left, + = adduction),
  arm_rot (+y right / -y left, + = internal rotation).
- elbow_{r,l}: elbow_flex (+z, + = flexion); radioulnar_{r,l}: pro_sup about the forearm axis
  (+y right / -y left), 0 = full supination (palm forward), + = pronation.
- radiocarpal_{r,l}: wrist_flex (+z, + = flexion), wrist_dev (+x right / -x left, + = ulnar).

Segment dimensions, masses, centres of mass and inertias come from `anthropometry` (de Leva 1996,
Harrington 2007 hip joint centre, Drillis & Contini 1966); marker placement from `model_markers`.
Each body carries a simple ellipsoid/brick geometry (display only, e.g. the RViz twin).
Frames named `vertex` and `heel_sole_{r,l}`, `mtp_sole_{r,l}`, `toe_tip_sole_{r,l}` (`SOLE_FRAMES`)
mark the top of the head and the foot soles; `standing_height_m` and the synthetic trials use them.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .anthropometry import BodyLayout, body_layout, validate_subject
from .errors import MissingDependencyError, Sam4dcapError
from .model_markers import MARKER_SET_ALIASES, marker_positions
from .opensim_logging import stdout_to

log = logging.getLogger(__name__)

_D = np.pi / 180.0
X, Y, Z = (1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)
NX, NY, NZ = (-1.0, 0.0, 0.0), (0.0, -1.0, 0.0), (0.0, 0.0, -1.0)
# Delp 1990 / Rajagopal 2016 joint axes (right side; the left side mirrors z).
ANKLE_AXIS_R = (-0.10501355, -0.17402245, 0.97912632)
SUBTALAR_AXIS_R = (0.78717961, 0.60474746, -0.12094949)
MTP_AXIS_R = (-0.5809544, 0.0, 0.81393611)


def _mirror(axis):
    """Left-side axis of a right-side axis: mirror in the sagittal plane, keep the sign meaning."""
    x, y, z = axis
    return (-x, -y, z)


def _joint_table() -> list[tuple[str, str, str, list[tuple[str, tuple, tuple[int, int]]]]]:
    """(joint, parent body, child body, [(coordinate, axis, (min_deg, max_deg)), ...]).

    Ranges: the normal adult active ranges of motion (AAOS / Greene & Heckman 1994, Soucie et al.
    2011) with a little margin, since IK keeps every joint coordinate inside its range (clamped):
    knee hyperextension up to 5 deg, ankle dorsiflexion 35 deg (deep weight-bearing squat) and
    plantarflexion 50, subtalar inversion 30 / eversion 20, hip rotation +-45, hip extension 30,
    abduction 50, adduction 30.
    """
    joints = [
        ("back", "pelvis", "torso", [("lumbar_extension", Z, (-90, 45)), ("lumbar_bending", X, (-50, 50)),
                                     ("lumbar_rotation", Y, (-50, 50))]),
        ("neck", "torso", "head", [("neck_extension", Z, (-60, 70)), ("neck_bending", X, (-45, 45)),
                                   ("neck_rotation", Y, (-80, 80))]),
    ]
    for s in ("r", "l"):
        right = s == "r"

        def m(axis, right=right):
            return axis if right else _mirror(axis)
        joints += [
            (f"hip_{s}", "pelvis", f"femur_{s}", [(f"hip_flexion_{s}", Z, (-30, 120)),
                                                  (f"hip_adduction_{s}", m(X), (-50, 30)),
                                                  (f"hip_rotation_{s}", m(Y), (-45, 45))]),
            (f"knee_{s}", f"femur_{s}", f"tibia_{s}", [(f"knee_angle_{s}", NZ, (-5, 140))]),
            (f"ankle_{s}", f"tibia_{s}", f"talus_{s}", [(f"ankle_angle_{s}", m(ANKLE_AXIS_R), (-50, 35))]),
            (f"subtalar_{s}", f"talus_{s}", f"calcn_{s}", [(f"subtalar_angle_{s}", m(SUBTALAR_AXIS_R), (-20, 30))]),
            (f"mtp_{s}", f"calcn_{s}", f"toes_{s}", [(f"mtp_angle_{s}", m(MTP_AXIS_R), (-30, 70))]),
            (f"acromial_{s}", "torso", f"humerus_{s}", [(f"arm_flex_{s}", Z, (-60, 180)),
                                                        (f"arm_add_{s}", m(X), (-180, 45)),
                                                        (f"arm_rot_{s}", m(Y), (-90, 90))]),
            (f"elbow_{s}", f"humerus_{s}", f"ulna_{s}", [(f"elbow_flex_{s}", Z, (-10, 150))]),
            (f"radioulnar_{s}", f"ulna_{s}", f"radius_{s}", [(f"pro_sup_{s}", m(Y), (-10, 170))]),
            (f"radiocarpal_{s}", f"radius_{s}", f"hand_{s}", [(f"wrist_flex_{s}", Z, (-70, 70)),
                                                              (f"wrist_dev_{s}", m(X), (-25, 35))]),
        ]
    return joints


PELVIS_COORDINATES = ("pelvis_tilt", "pelvis_list", "pelvis_rotation", "pelvis_tx", "pelvis_ty", "pelvis_tz")
PELVIS_RANGES = {"pelvis_tilt": (-90 * _D, 90 * _D), "pelvis_list": (-90 * _D, 90 * _D),
                 "pelvis_rotation": (-180 * _D, 180 * _D), "pelvis_tx": (-50.0, 50.0),
                 "pelvis_ty": (-1.0, 3.0), "pelvis_tz": (-50.0, 50.0)}
JOINTS = _joint_table()
# Every coordinate of the generated model, in model order (pelvis first, then joint order).
COORDINATE_NAMES: tuple[str, ...] = PELVIS_COORDINATES + tuple(c for _, _, _, cs in JOINTS for c, _, _ in cs)
TRANSLATIONAL_COORDINATES = ("pelvis_tx", "pelvis_ty", "pelvis_tz")
COORDINATE_RANGES: dict[str, tuple[float, float]] = dict(PELVIS_RANGES)
COORDINATE_RANGES.update({c: (lo * _D, hi * _D) for _, _, _, cs in JOINTS for c, _, (lo, hi) in cs})
# Frames on the foot soles (heel, under the MTP joint, toe tip): the lowest one touches the floor.
# The relaxed resting posture where it differs from the default (anatomical) pose: the forearm
# rests mid-prone (thumb forward), while pro_sup 0 is full supination (palm forward), at the
# end of its range. Fitters pull barely seen coordinates toward it (camera_fit's neutral prior).
RESTING_POSE = {"pro_sup_r": 90.0 * _D, "pro_sup_l": 90.0 * _D}

SOLE_FRAMES = tuple(f"{p}_sole_{s}" for s in ("r", "l") for p in ("heel", "mtp", "toe_tip"))
BODY_NAMES: tuple[str, ...] = ("pelvis",) + tuple(child for _, _, child, _ in JOINTS)

SOURCES = ("Anthropometry: de Leva P. (1996) J Biomech 29(9):1223-1230 (segment lengths, masses, "
           "centres of mass, radii of gyration); Harrington M.E. et al. (2007) J Biomech 40(3):595-602 "
           "(hip joint centre); Drillis R., Contini R. (1966) NYU report 1166-03 (ankle height, hand "
           "length). Joint names, axes and signs: Rajagopal A. et al. (2016) IEEE TBME 63(10):2068-2079; "
           "Lai A., Uhlrich S. et al. (2022) OpenCap LaiUhlrich2022; Delp S.L. et al. (1990) IEEE TBME "
           "37(8):757-767 (ankle, subtalar and MTP axes).")


def _opensim():
    try:
        import opensim
    except ImportError as exc:  # pragma: no cover - opensim is a base dependency
        raise MissingDependencyError("the opensim package is needed to build models: pip install opensim") from exc
    return opensim


def load_model(model):
    """An OpenSim model of its own: a copy of an opensim.Model, or read from a .osim path (one
    clear error when the file is missing or unreadable)."""
    import opensim

    if isinstance(model, opensim.Model):
        return opensim.Model(model)  # own copy: initSystem() mutates the model
    path = Path(model)
    if not path.is_file():
        raise Sam4dcapError(f"model file not found: {path}")
    try:
        with stdout_to(None):   # "Loaded model ..." and missing-geometry chatter
            return opensim.Model(str(path))
    except Exception as exc:  # noqa: BLE001 - OpenSim raises RuntimeError with its own text
        raise Sam4dcapError(f"cannot read OpenSim model {path}: {str(exc).splitlines()[0]}") from None


def _orthonormal_completion(axes: list[tuple]) -> list[np.ndarray]:
    """Three independent rotation axes: the given ones, then unit vectors orthogonal to them."""
    out = [np.asarray(a, float) / np.linalg.norm(a) for a in axes]
    for candidate in (np.array(X), np.array(Y), np.array(Z)):
        if len(out) == 3:
            break
        v = candidate.copy()
        for u in out:
            v -= np.dot(v, u) * u
        if np.linalg.norm(v) > 0.3:
            out.append(v / np.linalg.norm(v))
    return out


def _spatial_transform(osim, rotations: list[tuple[str, tuple]], translations: Sequence[tuple[str, tuple]] = ()):
    st = osim.SpatialTransform()
    axes = _orthonormal_completion([axis for _, axis in rotations])
    for i in range(3):
        ta = st.updTransformAxis(i)
        ta.setAxis(osim.Vec3(*axes[i]))
        if i < len(rotations):
            names = osim.ArrayStr()
            names.append(rotations[i][0])
            ta.setCoordinateNames(names)
            ta.set_function(osim.LinearFunction(1.0, 0.0))
        else:
            ta.set_function(osim.Constant(0.0))
    for i in range(3):
        ta = st.updTransformAxis(3 + i)
        ta.setAxis(osim.Vec3(*(X, Y, Z)[i]))
        if i < len(translations):
            names = osim.ArrayStr()
            names.append(translations[i][0])
            ta.setCoordinateNames(names)
            ta.set_function(osim.LinearFunction(1.0, 0.0))
        else:
            ta.set_function(osim.Constant(0.0))
    return st


def _add_display_geometry(osim, body, name: str, lay: BodyLayout) -> None:
    """One ellipsoid (brick for feet/hands) per body, centred between its joints."""
    P, L, s = lay.points, lay.lengths_m, lay.length_scale
    side = name[-1]
    o = lay.origins[name]

    def ell(center_world, radii):
        return ("ellipsoid", np.asarray(center_world) - o, radii)

    if name == "pelvis":
        g = ell((P["mid_asis"] + P["mid_hip"]) / 2 + np.array([-40.0, 0, 0]) * s, (90 * s, 70 * s, 150 * s))
    elif name == "torso":
        g = ell((P["omphalion"] + P["c7"]) / 2, (110 * s, np.linalg.norm(P["c7"] - P["omphalion"]) / 2 + 40 * s, 170 * s))
    elif name == "head":
        g = ell(P["vertex"] + np.array([45, -116, 0]) * s, (100 * s, 116 * s, 78 * s))
    elif name.startswith("femur"):
        g = ell((P[f"hjc_{side}"] + P[f"kjc_{side}"]) / 2, (70 * s, L["thigh"] / 2, 70 * s))
    elif name.startswith("tibia"):
        g = ell((P[f"kjc_{side}"] + P[f"ajc_{side}"]) / 2, (50 * s, L["shank"] / 2, 50 * s))
    elif name.startswith("talus"):
        g = ell(P[f"ajc_{side}"], (25 * s, 25 * s, 25 * s))
    elif name.startswith("calcn"):
        heel, mtp = P[f"heel_sole_{side}"], P[f"mtp_{side}"]
        g = ("brick", np.array([(heel[0] + mtp[0]) / 2, 30 * s, heel[2]]) - o,
             ((mtp[0] - heel[0]) / 2, 30 * s, 45 * s))
    elif name.startswith("toes"):
        toes_len = P[f"toe_tip_sole_{side}"][0] - P[f"mtp_{side}"][0]
        g = ("brick", np.array([toes_len / 2, -5 * s, 0]), (toes_len / 2, 12 * s, 45 * s))
    elif name.startswith("humerus"):
        g = ell((P[f"sjc_{side}"] + P[f"ejc_{side}"]) / 2, (45 * s, L["upper_arm"] / 2, 45 * s))
    elif name.startswith("ulna"):
        g = ell((P[f"ejc_{side}"] + P[f"wjc_{side}"]) / 2 + np.array([0, 0, -12 if side == "r" else 12]) * s,
                (25 * s, L["forearm"] / 2, 20 * s))
    elif name.startswith("radius"):
        g = ell((P[f"ejc_{side}"] + P[f"wjc_{side}"]) / 2 + np.array([0, 0, 12 if side == "r" else -12]) * s,
                (25 * s, L["forearm"] / 2, 20 * s))
    elif name.startswith("hand"):
        half = (P[f"wjc_{side}"][1] - P[f"fingertip_{side}"][1]) / 2
        g = ("brick", np.array([0, -half, 0]), (15 * s, half, 45 * s))
    else:  # pragma: no cover - every body is listed above
        return
    kind, center, radii = g
    frame = osim.PhysicalOffsetFrame(f"{name}_geometry_frame", body, osim.Transform(osim.Vec3(*center)))
    geom = osim.Ellipsoid(*radii) if kind == "ellipsoid" else osim.Brick(osim.Vec3(*radii))
    geom.setName(f"{name}_{kind}")
    frame.attachGeometry(geom)
    body.addComponent(frame)


def _add_point_frame(osim, body, name: str, local_xyz) -> None:
    frame = osim.PhysicalOffsetFrame(name, body, osim.Transform(osim.Vec3(*map(float, local_xyz))))
    body.addComponent(frame)


def _normalize_marker_arg(markers) -> str | Path:
    if isinstance(markers, Path):
        return markers
    key = str(markers).strip()
    if key.lower() in MARKER_SET_ALIASES:
        return MARKER_SET_ALIASES[key.lower()]
    if key.lower() == "none":
        return "none"
    if key.lower().endswith(".xml") or Path(key).is_file():
        return Path(key)
    raise Sam4dcapError(f"unknown marker set {markers!r}: use blazepose33, opencap43, none "
                        "or the path of a marker-set .xml")


def builder_version() -> str:
    """Short hash of the code that generates models (this module, anthropometry, marker
    placement): caches of generated models are keyed by it, so a changed builder never serves
    a stale model."""
    here = Path(__file__).resolve().parent
    digest = hashlib.sha1()
    for name in ("model_builder.py", "anthropometry.py", "model_markers.py", "markersets.py"):
        digest.update((here / name).read_bytes())
    return digest.hexdigest()[:10]


def build_model(*, height_m: float, mass_kg: float, markers: str = "blazepose33", name: str | None = None,
                sex: str = "male"):
    """The generated full-body model for a subject (see module docstring). Returns an
    `opensim.Model` on which `initSystem()` has been called once (connections finalized)."""
    osim = _opensim()
    height_m, mass_kg = float(height_m), float(mass_kg)
    validate_subject(height_m, mass_kg, sex)
    marker_arg = _normalize_marker_arg(markers)
    if isinstance(marker_arg, Path) and not marker_arg.is_file():
        raise Sam4dcapError(f"marker-set file {marker_arg} does not exist: give an existing OpenSim MarkerSet .xml")
    lay = body_layout(height_m, mass_kg, sex)

    model = osim.Model()
    model.setName(name or f"sam4dcap_fullbody_{height_m:.2f}m_{mass_kg:.0f}kg")
    model.setGravity(osim.Vec3(0, -9.80665, 0))
    model.set_credits(f"Generated by sam4dcap (model_builder) for height {height_m:.3f} m, mass {mass_kg:.2f} kg, "
                      f"{sex} de Leva table. {SOURCES}")
    model.set_publications(SOURCES)
    model.set_length_units("meters")
    model.set_force_units("N")

    bodies = {}
    for body_name in BODY_NAMES:
        seg = lay.segments[body_name]
        i = seg.inertia_kgm2
        body = osim.Body(body_name, float(seg.mass_kg), osim.Vec3(*map(float, seg.com_m)),
                         osim.Inertia(float(i[0, 0]), float(i[1, 1]), float(i[2, 2]),
                                      float(i[0, 1]), float(i[0, 2]), float(i[1, 2])))
        _add_display_geometry(osim, body, body_name, lay)
        model.addBody(body)
        bodies[body_name] = body

    # Pelvis: 6-dof to ground; the pelvis frame origin (mid-ASIS) stands at its standing height.
    st = _spatial_transform(osim, [("pelvis_tilt", Z), ("pelvis_list", X), ("pelvis_rotation", Y)],
                            [("pelvis_tx", X), ("pelvis_ty", Y), ("pelvis_tz", Z)])
    zero = osim.Vec3(0, 0, 0)
    pelvis_joint = osim.CustomJoint("ground_pelvis", model.getGround(), zero, zero, bodies["pelvis"], zero, zero, st)
    model.addJoint(pelvis_joint)
    joints: list[tuple[Any, list[tuple[str, tuple[float, float]]]]] = [
        (pelvis_joint, [(c, PELVIS_RANGES[c]) for c in PELVIS_COORDINATES])]
    for joint_name, parent, child, coords in JOINTS:
        location = lay.origins[child] - lay.origins[parent]
        st = _spatial_transform(osim, [(c, axis) for c, axis, _ in coords])
        joint = osim.CustomJoint(joint_name, bodies[parent], osim.Vec3(*map(float, location)), zero,
                                 bodies[child], zero, zero, st)
        model.addJoint(joint)
        joints.append((joint, [(c, (lo * _D, hi * _D)) for c, _, (lo, hi) in coords]))
    defaults = {"pelvis_ty": float(lay.origins["pelvis"][1])}
    for joint, ranges in joints:
        for k in range(joint.numCoordinates()):
            coord = joint.upd_coordinates(k)
            lo, hi = dict(ranges)[coord.getName()]
            coord.setRangeMin(lo)
            coord.setRangeMax(hi)
            coord.setDefaultValue(defaults.get(coord.getName(), 0.0))
            # Joint coordinates keep to their physiological range in IK (see inverse_kinematics
            # and streaming_ik); the pelvis' six free-body coordinates are not limited.
            coord.setDefaultClamped(coord.getName() not in PELVIS_COORDINATES)

    # Reference points for the standing height (vertex) and the floor contact (soles).
    _add_point_frame(osim, bodies["head"], "vertex", lay.local("head", lay.points["vertex"]))
    for s in ("r", "l"):
        _add_point_frame(osim, bodies[f"calcn_{s}"], f"heel_sole_{s}", lay.local(f"calcn_{s}", lay.points[f"heel_sole_{s}"]))
        mtp_sole = lay.points[f"mtp_{s}"] * np.array([1.0, 0.0, 1.0])
        _add_point_frame(osim, bodies[f"calcn_{s}"], f"mtp_sole_{s}", lay.local(f"calcn_{s}", mtp_sole))
        _add_point_frame(osim, bodies[f"toes_{s}"], f"toe_tip_sole_{s}", lay.local(f"toes_{s}", lay.points[f"toe_tip_sole_{s}"]))

    if isinstance(marker_arg, Path):
        model.finalizeConnections()
        add_marker_set(model, marker_arg)
    elif marker_arg != "none":
        for marker_name, (body_name, local) in marker_positions(lay, marker_arg).items():
            model.addMarker(osim.Marker(marker_name, bodies[body_name], osim.Vec3(*map(float, local))))
    model.finalizeConnections()
    model.initSystem()
    log.debug("built %s: %d bodies, %d coordinates, %d markers", model.getName(), model.getNumBodies(),
              model.getNumCoordinates(), model.getMarkerSet().getSize())
    return model


def write_model(path, *, height_m: float, mass_kg: float, markers: str = "blazepose33",
                name: str | None = None, sex: str = "male") -> Path:
    """Build the model and print it to `path` (.osim). Returns the path."""
    path = Path(path)
    if path.suffix.lower() != ".osim":
        raise Sam4dcapError(f"model output {path} must end in .osim")
    model = build_model(height_m=height_m, mass_kg=mass_kg, markers=markers, name=name, sex=sex)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not model.printToXML(str(path)):
        raise Sam4dcapError(f"could not write the model to {path}: check the folder is writable")
    return path


def _find_frames(model, names: set[str]) -> dict[str, Any]:
    found = {}
    for frame in model.getFrameList():
        if frame.getName() in names:
            found[frame.getName()] = frame
    return found


def standing_height_m(model) -> float:
    """Height of the head vertex over the lowest foot point in the model's default pose.

    Uses the frames `vertex`, `heel_sole_*`, `toe_tip_sole_*` of generated models; for other
    models falls back to the vertical extent of the markers (a lower bound of the height).
    """
    state = model.initSystem()
    model.realizePosition(state)
    wanted = {"vertex", *SOLE_FRAMES}
    frames = _find_frames(model, wanted)
    if "vertex" in frames and len(frames) > 1:
        top = frames["vertex"].getPositionInGround(state).get(1)
        bottom = min(f.getPositionInGround(state).get(1) for n, f in frames.items() if n != "vertex")
        return float(top - bottom)
    markers = model.getMarkerSet()
    if markers.getSize() < 2:
        raise Sam4dcapError(f"model {model.getName()} has no vertex/sole frames and too few markers to measure its height")
    ys = [markers.get(i).getLocationInGround(state).get(1) for i in range(markers.getSize())]
    log.warning("model %s has no vertex/sole frames: height from the marker extent", model.getName())
    return float(max(ys) - min(ys))


def _marker_body_name(marker) -> str:
    path = marker.getSocket("parent_frame").getConnecteePath()
    return path.rstrip("/").split("/")[-1]


def add_marker_set(model, xml_path) -> None:
    """Add (or replace) the markers of an OpenSim MarkerSet .xml on `model`; each marker's body
    must exist in the model."""
    osim = _opensim()
    xml_path = Path(xml_path)
    if not xml_path.is_file():
        raise Sam4dcapError(f"marker-set file {xml_path} does not exist: give an existing OpenSim MarkerSet .xml")
    try:
        marker_set = osim.MarkerSet(str(xml_path))
    except RuntimeError as exc:
        raise Sam4dcapError(f"cannot read marker set {xml_path}: {str(exc).splitlines()[0]}") from None
    if marker_set.getSize() == 0:
        raise Sam4dcapError(f"marker set {xml_path} holds no markers: check it is an OpenSim <MarkerSet> file")
    bodies = {model.getBodySet().get(i).getName() for i in range(model.getBodySet().getSize())}
    missing: dict[str, list[str]] = {}
    for i in range(marker_set.getSize()):
        body = _marker_body_name(marker_set.get(i))
        if not body:
            raise Sam4dcapError(f"marker {marker_set.get(i).getName()} in {xml_path} names no body: add "
                                "<socket_parent_frame>/bodyset/BODY</socket_parent_frame> (or <body>BODY</body>)")
        if body not in bodies and body != "ground":
            missing.setdefault(body, []).append(marker_set.get(i).getName())
    if missing:
        detail = "; ".join(f"{b}: {', '.join(ms[:4])}" for b, ms in missing.items())
        raise Sam4dcapError(f"marker set {xml_path} attaches markers to bodies the model lacks ({detail}): "
                            "use a marker set made for this model")
    existing = model.updMarkerSet()
    for i in range(marker_set.getSize()):
        src = marker_set.get(i)
        body = _marker_body_name(src)
        if existing.contains(src.getName()):
            existing.remove(existing.get(src.getName()))
        parent = model.getGround() if body == "ground" else model.getBodySet().get(body)
        marker = osim.Marker(src.getName(), parent, src.get_location())
        marker.set_fixed(src.get_fixed())
        model.addMarker(marker)
    model.finalizeConnections()


def load_user_model(osim_path, *, markerset_xml=None, strip_for_ik: bool = False):
    """Load any .osim model, optionally add a marker-set XML, and optionally strip what IK does
    not need (as OpenCap does): patella bodies and their joints, constraints, forces."""
    osim = _opensim()
    osim_path = Path(osim_path)
    if not osim_path.is_file():
        raise Sam4dcapError(f"model file {osim_path} does not exist: give an existing .osim")
    try:
        model = osim.Model(str(osim_path))
    except RuntimeError as exc:
        raise Sam4dcapError(f"cannot load model {osim_path}: {str(exc).splitlines()[0]}") from None
    if strip_for_ik:
        _strip_for_ik(model)
    if markerset_xml is not None:
        model.finalizeConnections()
        add_marker_set(model, markerset_xml)
    model.finalizeConnections()
    model.initSystem()
    return model


def _strip_for_ik(model) -> None:
    """Remove forces, constraints and patella bodies (with their joints and markers)."""
    model.updForceSet().clearAndDestroy()
    model.updConstraintSet().clearAndDestroy()
    body_set = model.updBodySet()
    patellae = [body_set.get(i).getName() for i in range(body_set.getSize())
                if "patella" in body_set.get(i).getName().lower()]
    if not patellae:
        return
    model.finalizeConnections()
    marker_set = model.updMarkerSet()
    for i in reversed(range(marker_set.getSize())):
        if _marker_body_name(marker_set.get(i)) in patellae:
            marker_set.remove(marker_set.get(i))
    joint_set = model.updJointSet()
    for i in reversed(range(joint_set.getSize())):
        joint = joint_set.get(i)
        child = joint.getChildFrame().findBaseFrame().getName()
        if child in patellae:
            joint_set.remove(joint)
    for name in patellae:
        body_set.remove(body_set.get(name))
    log.info("stripped for IK: %s, constraints and forces", ", ".join(patellae))
