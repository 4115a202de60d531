"""Body poses of a small model built with the OpenSim API, against closed-form kinematics."""

import math

import numpy as np
import opensim
import pytest
from scipy.spatial.transform import Rotation

from sam4dcap_biomech.body_poses import BodyPoser, rotation_to_quaternion_xyzw
from sam4dcap_biomech.errors import Sam4dcapError

HIP_R = np.array([0.0, -0.1, 0.1])
HIP_L = np.array([0.0, -0.1, -0.1])
KNEE = np.array([0.0, -0.4, 0.0])        # in the thigh frame
SHANK_COM = np.array([0.0, -0.2, 0.0])   # leaf body: cylinder to twice its centre of mass
MASS = {"pelvis": 10.0, "thigh_r": 7.0, "shank_r": 3.0, "thigh_l": 7.0}


def planar_legs_model() -> opensim.Model:
    """ground -planar(rz, tx, ty)- pelvis -pin- thigh_r -pin- shank_r ; pelvis -pin- thigh_l."""
    model = opensim.Model()
    model.setName("planar_legs")
    inertia = opensim.Inertia(0.1, 0.1, 0.1)
    bodies = {}
    for name, com in [("pelvis", (0, 0, 0)), ("thigh_r", (0, -0.2, 0)), ("shank_r", tuple(SHANK_COM)),
                      ("thigh_l", (0, -0.2, 0))]:
        bodies[name] = opensim.Body(name, MASS[name], opensim.Vec3(*com), inertia)
        model.addBody(bodies[name])
    zero = opensim.Vec3(0)
    model.addJoint(opensim.PlanarJoint("ground_pelvis", model.getGround(), zero, zero,
                                       bodies["pelvis"], zero, zero))
    model.addJoint(opensim.PinJoint("hip_r", bodies["pelvis"], opensim.Vec3(*HIP_R), zero,
                                    bodies["thigh_r"], zero, zero))
    model.addJoint(opensim.PinJoint("knee_r", bodies["thigh_r"], opensim.Vec3(*KNEE), zero,
                                    bodies["shank_r"], zero, zero))
    model.addJoint(opensim.PinJoint("hip_l", bodies["pelvis"], opensim.Vec3(*HIP_L), zero,
                                    bodies["thigh_l"], zero, zero))
    model.finalizeConnections()
    return model


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "planar_legs.osim"
    planar_legs_model().printToXML(str(path))
    return path


def rz(angle):
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def coordinate_names(poser):
    names = poser.coordinate_names
    assert len(names) == 6
    # PlanarJoint: rz, tx, ty; then one pin per hip/knee.
    return dict(zip(["rz", "tx", "ty", "hip_r", "knee_r", "hip_l"], names))


def test_poses_match_closed_form_kinematics(model_path):
    poser = BodyPoser(model_path)
    c = coordinate_names(poser)
    tilt, tx, ty, hip, knee, hip_l = 0.2, 0.3, 0.9, 0.6, -1.1, -0.4
    poses = {p.name: p for p in poser.poses({c["rz"]: tilt, c["tx"]: tx, c["ty"]: ty,
                                             c["hip_r"]: hip, c["knee_r"]: knee, c["hip_l"]: hip_l})}
    assert list(poses) == ["pelvis", "thigh_r", "shank_r", "thigh_l"]
    assert {n: p.parent for n, p in poses.items()} == {"pelvis": "ground", "thigh_r": "pelvis",
                                                        "shank_r": "thigh_r", "thigh_l": "pelvis"}
    pelvis_p = np.array([tx, ty, 0.0])
    thigh_p = pelvis_p + rz(tilt) @ HIP_R
    shank_p = thigh_p + rz(tilt + hip) @ KNEE
    expected = {"pelvis": (pelvis_p, rz(tilt)), "thigh_r": (thigh_p, rz(tilt + hip)),
                "shank_r": (shank_p, rz(tilt + hip + knee)),
                "thigh_l": (pelvis_p + rz(tilt) @ HIP_L, rz(tilt + hip_l))}
    for name, (position, rotation) in expected.items():
        pose = poses[name]
        np.testing.assert_allclose(pose.position_m, position, atol=1e-12, err_msg=name)
        np.testing.assert_allclose(pose.rotation, rotation, atol=1e-12, err_msg=name)
        np.testing.assert_allclose(pose.joint_position_m, position, atol=1e-12, err_msg=name)
        q = Rotation.from_matrix(rotation).as_quat()
        assert abs(abs(np.dot(pose.quaternion_xyzw, q)) - 1) < 1e-12, name

    # Shank (leaf): cylinder from the knee through twice the centre of mass, radius from mass.
    shank = poses["shank_r"]
    assert shank.shape.kind == "cylinder"
    length = 2 * np.linalg.norm(SHANK_COM)
    radius = math.sqrt(MASS["shank_r"] / (1000.0 * math.pi * length))
    np.testing.assert_allclose(shank.shape.size_m, [2 * radius, 2 * radius, length], atol=1e-12)
    np.testing.assert_allclose(shank.shape_position_m, shank_p + rz(tilt + hip + knee) @ SHANK_COM, atol=1e-12)
    axis_world = shank.shape_rotation[:, 2]
    np.testing.assert_allclose(abs(axis_world @ (rz(tilt + hip + knee) @ [0, -1, 0])), 1.0, atol=1e-12)
    np.testing.assert_allclose(Rotation.from_quat(shank.shape_quaternion_xyzw).as_matrix(),
                               shank.shape_rotation, atol=1e-12)

    # Thigh (one child): cylinder from hip to knee, centred half-way.
    thigh = poses["thigh_r"]
    assert thigh.shape.kind == "cylinder"
    assert thigh.shape.size_m[2] == pytest.approx(np.linalg.norm(KNEE), abs=1e-12)
    np.testing.assert_allclose(thigh.shape_position_m, (thigh_p + shank_p) / 2, atol=1e-12)

    # Pelvis (two child joints): a box around its joint centres.
    pelvis = poses["pelvis"]
    assert pelvis.shape.kind == "box"
    # Joint centres: own (0, 0, 0) and both hips -> bounds y in [-0.1, 0], z in [-0.1, 0.1].
    np.testing.assert_allclose(pelvis.shape.center_m, [0.0, -0.05, 0.0], atol=1e-12)
    assert pelvis.shape.size_m[2] == pytest.approx(0.2, abs=1e-12)   # hip to hip
    assert np.all(pelvis.shape.size_m >= [0, 0.1, 0.2])


def test_unset_coordinates_keep_values_and_reset(model_path):
    poser = BodyPoser(model_path)
    c = coordinate_names(poser)
    poser.poses({c["hip_r"]: 0.5})
    after_knee = {p.name: p for p in poser.poses({c["knee_r"]: 0.3})}
    np.testing.assert_allclose(after_knee["thigh_r"].rotation, rz(0.5), atol=1e-12)  # hip kept
    poser.reset()
    default = {p.name: p for p in poser.poses()}
    np.testing.assert_allclose(default["thigh_r"].rotation, np.eye(3), atol=1e-12)


def test_accepts_model_object_without_modifying_it():
    model = planar_legs_model()
    poser = BodyPoser(model)
    assert poser.body_names == ("pelvis", "thigh_r", "shank_r", "thigh_l")
    assert model.getName() == "planar_legs"


def test_bad_input_is_named(tmp_path, model_path):
    with pytest.raises(Sam4dcapError, match="model file not found"):
        BodyPoser(tmp_path / "missing.osim")
    bad = tmp_path / "bad.osim"
    bad.write_text("<OpenSimDocument><Model><broken")
    with pytest.raises(Sam4dcapError, match="cannot read OpenSim model"):
        BodyPoser(bad)
    poser = BodyPoser(model_path)
    with pytest.raises(Sam4dcapError, match="not in model.*no_such_coordinate"):
        poser.poses({"no_such_coordinate": 0.1})
    with pytest.raises(Sam4dcapError, match="non-finite"):
        poser.poses({poser.coordinate_names[3]: float("nan")})


@pytest.mark.parametrize("axis_angle", [(np.array([1, 0, 0]), 0.3), (np.array([0, 1, 0]), 3.1),
                                        (np.array([0, 0, 1]), -2.9), (np.array([1, 1, 1]) / 3**0.5, 2.5),
                                        (np.array([1, -2, 0.5]) / 5.25**0.5, math.pi)])
def test_quaternion_of_rotation(axis_angle):
    axis, angle = axis_angle
    rotation = Rotation.from_rotvec(axis * angle).as_matrix()
    q = rotation_to_quaternion_xyzw(rotation)
    assert q[3] >= 0 and np.linalg.norm(q) == pytest.approx(1.0)
    np.testing.assert_allclose(Rotation.from_quat(q).as_matrix(), rotation, atol=1e-12)
