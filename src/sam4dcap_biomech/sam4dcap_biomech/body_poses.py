"""World poses of a model's bodies for given coordinate values, and one simple shape per body.

Used to draw the "twin" (e.g. RViz markers posed by the IK stream). ROS-free.

    poser = BodyPoser("subject_scaled.osim")
    for body in poser.poses({"hip_flexion_r": 0.3, "knee_angle_r": -0.5}):
        body.position_m, body.quaternion_xyzw            # body frame in ground (y up, metres)
        body.shape.kind, body.shape_position_m, body.shape_quaternion_xyzw, body.shape.size_m

Shapes are derived from the model's kinematic tree and inertial properties, not from its
display meshes (which may be missing on disk):
- a body with one child joint: a cylinder from its own joint centre to the child's joint centre;
- a body with several child joints (pelvis): a box around its joint centres;
- a leaf body (torso, hand, toes): a cylinder from its joint centre through its centre of mass
  (twice as far), or a sphere when the centre of mass sits at the joint.
Cylinder radii come from the body mass at the density of water (a segment's volume ~ m / rho),
clamped to sensible proportions. Shape axes follow ROS's visualization convention: a cylinder's
length is along its local z; `size_m` = full extents (x, y, z) = (diameter, diameter, length).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np

from .errors import Sam4dcapError

log = logging.getLogger(__name__)

# Tissue density ~ water; turns a segment's mass into a volume, hence a radius.
_DENSITY_KG_M3 = 1000.0
_MIN_RADIUS_M = 0.01
# A cylinder never thicker than this fraction of its length (light long segments stay thin,
# heavy short ones don't become discs).
_MAX_RADIUS_TO_LENGTH = 0.35
# Below this distance a child joint / centre of mass coincides with the body's joint.
_COINCIDENT_M = 1e-3


@dataclass(frozen=True)
class BodyShape:
    """A simple solid attached to a body, expressed in the body's frame."""

    kind: str                   # "cylinder" | "box" | "sphere"
    center_m: np.ndarray        # (3,) shape centre in the body frame
    rotation: np.ndarray        # (3, 3) shape axes in the body frame (cylinder length along z)
    size_m: np.ndarray          # (3,) full extents along the shape's x, y, z


@dataclass(frozen=True)
class BodyPose:
    name: str
    parent: str                 # parent body name ("ground" for the root body)
    position_m: np.ndarray      # (3,) body origin in ground
    rotation: np.ndarray        # (3, 3) body axes in ground (columns = body x, y, z)
    quaternion_xyzw: np.ndarray  # (4,) same rotation, ROS order
    joint_position_m: np.ndarray  # (3,) centre of the joint to the parent, in ground
    shape: BodyShape
    shape_position_m: np.ndarray  # (3,) shape centre in ground
    shape_rotation: np.ndarray    # (3, 3) shape axes in ground
    shape_quaternion_xyzw: np.ndarray  # (4,)


def rotation_to_quaternion_xyzw(rotation: np.ndarray) -> np.ndarray:
    """Unit quaternion (x, y, z, w) of a rotation matrix (Shepperd's method, w >= 0)."""
    r = np.asarray(rotation, float)
    trace = r[0, 0] + r[1, 1] + r[2, 2]
    if trace > 0:
        s = math.sqrt(trace + 1.0) * 2
        q = [(r[2, 1] - r[1, 2]) / s, (r[0, 2] - r[2, 0]) / s, (r[1, 0] - r[0, 1]) / s, 0.25 * s]
    elif r[0, 0] > r[1, 1] and r[0, 0] > r[2, 2]:
        s = math.sqrt(1.0 + r[0, 0] - r[1, 1] - r[2, 2]) * 2
        q = [0.25 * s, (r[0, 1] + r[1, 0]) / s, (r[0, 2] + r[2, 0]) / s, (r[2, 1] - r[1, 2]) / s]
    elif r[1, 1] > r[2, 2]:
        s = math.sqrt(1.0 + r[1, 1] - r[0, 0] - r[2, 2]) * 2
        q = [(r[0, 1] + r[1, 0]) / s, 0.25 * s, (r[1, 2] + r[2, 1]) / s, (r[0, 2] - r[2, 0]) / s]
    else:
        s = math.sqrt(1.0 + r[2, 2] - r[0, 0] - r[1, 1]) * 2
        q = [(r[0, 2] + r[2, 0]) / s, (r[1, 2] + r[2, 1]) / s, 0.25 * s, (r[1, 0] - r[0, 1]) / s]
    quat = np.array(q)
    quat /= np.linalg.norm(quat)
    return -quat if quat[3] < 0 else quat


def _axes_with_z_along(direction: np.ndarray) -> np.ndarray:
    """A rotation whose z column is `direction` (normalised); x, y any right-handed pair."""
    z = direction / np.linalg.norm(direction)
    helper = np.array([1.0, 0.0, 0.0]) if abs(z[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    x = np.cross(helper, z)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    return np.column_stack([x, y, z])


def _radius_from_mass(mass_kg: float, length_m: float) -> float:
    """Radius of a water-density cylinder of this mass and length, clamped to proportions."""
    if mass_kg <= 0 or length_m <= 0:
        return _MIN_RADIUS_M
    radius = math.sqrt(mass_kg / (_DENSITY_KG_M3 * math.pi * length_m))
    return float(np.clip(radius, _MIN_RADIUS_M, max(_MIN_RADIUS_M, _MAX_RADIUS_TO_LENGTH * length_m)))


def _cylinder(start: np.ndarray, end: np.ndarray, mass_kg: float) -> BodyShape:
    axis = end - start
    length = float(np.linalg.norm(axis))
    radius = _radius_from_mass(mass_kg, length)
    return BodyShape("cylinder", (start + end) / 2, _axes_with_z_along(axis),
                     np.array([2 * radius, 2 * radius, length]))


def _sphere(center: np.ndarray, mass_kg: float) -> BodyShape:
    volume = max(mass_kg, 1e-3) / _DENSITY_KG_M3
    diameter = max(2 * _MIN_RADIUS_M, 2 * (3 * volume / (4 * math.pi)) ** (1 / 3))
    return BodyShape("sphere", center, np.eye(3), np.full(3, diameter))


def shape_for_body(own_joint_m: np.ndarray, child_joints_m: list[np.ndarray], mass_center_m: np.ndarray,
                   mass_kg: float) -> BodyShape:
    """The simple shape of one body from points in its own frame (see the module doc)."""
    own = np.asarray(own_joint_m, float)
    children = [np.asarray(c, float) for c in child_joints_m
                if np.linalg.norm(np.asarray(c, float) - own) > _COINCIDENT_M]
    com = np.asarray(mass_center_m, float)
    if len(children) == 1:
        return _cylinder(own, children[0], mass_kg)
    if len(children) >= 2:
        points = np.vstack([own] + children)
        lo, hi = points.min(axis=0), points.max(axis=0)
        extent = hi - lo
        # Thin directions (all joints in one plane) get the thickness a same-mass cube would have.
        thickness = max(2 * _MIN_RADIUS_M, (max(mass_kg, 1e-3) / _DENSITY_KG_M3) ** (1 / 3) / 2)
        return BodyShape("box", (lo + hi) / 2, np.eye(3), np.maximum(extent, thickness))
    if np.linalg.norm(com - own) > _COINCIDENT_M:
        return _cylinder(own, own + 2 * (com - own), mass_kg)
    return _sphere(com, mass_kg)


def _vec3(v) -> np.ndarray:
    return np.array([v.get(0), v.get(1), v.get(2)])


def _mat33(rotation) -> np.ndarray:
    return np.array([[rotation.get(i, j) for j in range(3)] for i in range(3)])


class BodyPoser:
    """Poses every body of an OpenSim model for given coordinate values (one model, reused)."""

    def __init__(self, model):
        """`model`: a path to an .osim file or an `opensim.Model` (copied, never modified)."""
        import opensim

        if isinstance(model, (str, Path)):
            path = Path(model)
            if not path.is_file():
                raise Sam4dcapError(f"model file not found: {path}")
            try:
                self._model = opensim.Model(str(path))
            except Exception as exc:  # OpenSim raises its own RuntimeError on bad XML
                raise Sam4dcapError(f"cannot read OpenSim model {path}: {exc}") from None
        else:
            self._model = opensim.Model(model)
        self._state = self._model.initSystem()
        model_ = self._model
        coords = model_.getCoordinateSet()
        self._coordinates = {coords.get(i).getName(): coords.get(i) for i in range(coords.getSize())}
        bodies = model_.getBodySet()
        self._bodies = [bodies.get(i) for i in range(bodies.getSize())]
        self.body_names = tuple(b.getName() for b in self._bodies)
        self.coordinate_names = tuple(self._coordinates)

        # Joint centres per body frame: where each body hangs from its parent (child-frame
        # offset) and where its children hang from it (parent-frame offsets).
        own_joint = {name: np.zeros(3) for name in self.body_names}
        child_joints: dict[str, list[np.ndarray]] = {name: [] for name in self.body_names}
        self.parents: dict[str, str] = {}
        self._child_frames = {}
        joints = model_.getJointSet()
        for i in range(joints.getSize()):
            joint = joints.get(i)
            parent_frame, child_frame = joint.getParentFrame(), joint.getChildFrame()
            parent = parent_frame.findBaseFrame().getName()
            child = child_frame.findBaseFrame().getName()
            if child in own_joint:
                own_joint[child] = _vec3(child_frame.findTransformInBaseFrame().p())
                self.parents[child] = parent
                self._child_frames[child] = child_frame
            if parent in child_joints:
                child_joints[parent].append(_vec3(parent_frame.findTransformInBaseFrame().p()))
        self.shapes = {
            b.getName(): shape_for_body(own_joint[b.getName()], child_joints[b.getName()],
                                        _vec3(b.getMassCenter()), float(b.getMass()))
            for b in self._bodies
        }
        self._own_joint = own_joint
        self._defaults = {name: c.getDefaultValue() for name, c in self._coordinates.items()}

    @property
    def model_name(self) -> str:
        return self._model.getName()

    def set_coordinates(self, coordinates: Mapping[str, float]) -> None:
        """Set coordinate values (rad / m); coordinates not given keep their previous value."""
        unknown = [n for n in coordinates if n not in self._coordinates]
        if unknown:
            raise Sam4dcapError(f"coordinates not in model {self.model_name!r}: {', '.join(unknown[:8])}"
                                " (the stream comes from a different model?)")
        bad = [n for n, v in coordinates.items() if not math.isfinite(float(v))]
        if bad:
            raise Sam4dcapError(f"non-finite coordinate values: {', '.join(bad[:8])}")
        for name, value in coordinates.items():
            # No constraint projection: an IK frame already satisfies the model's constraints,
            # and projecting would move the coordinates we were given.
            self._coordinates[name].setValue(self._state, float(value), False)

    def reset(self) -> None:
        """Back to the model's default coordinate values."""
        self.set_coordinates(self._defaults)

    def poses(self, coordinates: Mapping[str, float] | None = None) -> list[BodyPose]:
        """World poses and shapes of every body (model order) after setting `coordinates`."""
        if coordinates:
            self.set_coordinates(coordinates)
        self._model.realizePosition(self._state)
        out = []
        for body in self._bodies:
            name = body.getName()
            transform = body.getTransformInGround(self._state)
            position = _vec3(transform.p())
            rotation = _mat33(transform.R())
            shape = self.shapes[name]
            shape_rotation = rotation @ shape.rotation
            out.append(BodyPose(
                name=name,
                parent=self.parents.get(name, "ground"),
                position_m=position,
                rotation=rotation,
                quaternion_xyzw=rotation_to_quaternion_xyzw(rotation),
                joint_position_m=position + rotation @ self._own_joint[name],
                shape=shape,
                shape_position_m=position + rotation @ shape.center_m,
                shape_rotation=shape_rotation,
                shape_quaternion_xyzw=rotation_to_quaternion_xyzw(shape_rotation),
            ))
        return out


def body_poses(model, coordinates: Mapping[str, float]) -> list[BodyPose]:
    """One-off convenience: load `model` and pose it (reuse a `BodyPoser` for streams)."""
    return BodyPoser(model).poses(coordinates)
