"""The generated full-body model, built with the real OpenSim API: names, ranges, height, masses,
marker placement, sign conventions, user models and marker-set XML files."""

import numpy as np
import opensim
import pytest

from sam4dcap_biomech.anthropometry import DE_LEVA_1996, body_layout
from sam4dcap_biomech.errors import Sam4dcapError
from sam4dcap_biomech.markersets import BLAZEPOSE33, OPENCAP43
from sam4dcap_biomech.model_builder import (COORDINATE_NAMES, add_marker_set, build_model, load_user_model,
                                            standing_height_m, write_model)

REQUIRED = (
    ["pelvis_tilt", "pelvis_list", "pelvis_rotation", "pelvis_tx", "pelvis_ty", "pelvis_tz",
     "lumbar_extension", "lumbar_bending", "lumbar_rotation"]
    + [f"{c}_{s}" for s in "rl" for c in ("hip_flexion", "hip_adduction", "hip_rotation", "knee_angle",
                                          "ankle_angle", "subtalar_angle", "mtp_angle", "arm_flex", "arm_add",
                                          "arm_rot", "elbow_flex", "pro_sup")]
)


@pytest.fixture(scope="module")
def blaze():
    return build_model(height_m=1.75, mass_kg=70.0, markers="blazepose33")


@pytest.fixture(scope="module")
def opencap():
    return build_model(height_m=1.75, mass_kg=70.0, markers="opencap43")


def marker_positions(model, values=None):
    """Marker name -> ground position (3,), after setting coordinate values (dict) if given."""
    state = model.initSystem()
    for name, value in (values or {}).items():
        model.getCoordinateSet().get(name).setValue(state, value, False)
    model.realizePosition(state)
    ms = model.getMarkerSet()
    return {ms.get(i).getName(): ms.get(i).getLocationInGround(state).to_numpy().copy() for i in range(ms.getSize())}


def test_coordinates_named_like_rajagopal_with_physiological_ranges(blaze):
    cs = blaze.getCoordinateSet()
    names = [cs.get(i).getName() for i in range(cs.getSize())]
    assert set(REQUIRED) <= set(names)
    assert tuple(names) == COORDINATE_NAMES
    deg = np.pi / 180
    # Ranges cover normal movement but stay physiological.
    expect_inside = {"knee_angle_r": (0, 120 * deg), "hip_flexion_l": (-20 * deg, 110 * deg),
                     "ankle_angle_r": (-40 * deg, 25 * deg), "elbow_flex_l": (0, 140 * deg),
                     "pro_sup_r": (0, 160 * deg), "arm_flex_r": (-45 * deg, 170 * deg)}
    for name, (lo, hi) in expect_inside.items():
        c = cs.get(name)
        assert c.getRangeMin() <= lo and c.getRangeMax() >= hi, name
        assert c.getRangeMin() > -181 * deg and c.getRangeMax() < 181 * deg, name
    assert -5.01 * deg <= cs.get("knee_angle_r").getRangeMin() <= 0    # at most 5 deg hyperextension
    assert cs.get("ankle_angle_r").getRangeMax() <= 40 * deg and cs.get("ankle_angle_r").getRangeMin() >= -55 * deg
    # IK keeps joint coordinates inside their ranges (clamped); the pelvis' free-body dofs are free.
    for name in names:
        assert cs.get(name).getDefaultClamped() == (not name.startswith("pelvis_")), name
    assert cs.get("pelvis_tx").getMotionType() == opensim.Coordinate.Translational
    assert cs.get("hip_flexion_r").getMotionType() == opensim.Coordinate.Rotational


@pytest.mark.parametrize("height", [1.50, 1.75, 1.95])
def test_standing_height_within_one_percent(height):
    model = build_model(height_m=height, mass_kg=65.0, markers="blazepose33")
    assert abs(standing_height_m(model) - height) <= 0.01 * height
    # The soles touch the floor (y=0) in the default pose and the vertex is at the height.
    state = model.initSystem()
    model.realizePosition(state)
    frames = {f.getName(): f.getPositionInGround(state).to_numpy() for f in model.getFrameList()
              if f.getName() in ("vertex", "heel_sole_r", "toe_tip_sole_l")}
    assert abs(frames["heel_sole_r"][1]) < 1e-3 and abs(frames["toe_tip_sole_l"][1]) < 1e-3
    assert frames["vertex"][1] == pytest.approx(height, rel=0.01)
    # Markers follow the body: nose at ~0.91 H (adult head proportions), knee at ~0.285 H (Drillis-Contini).
    p = marker_positions(model)
    assert 0.88 * height < p["nose"][1] < 0.95 * height
    assert 0.26 * height < p["left_knee"][1] < 0.31 * height
    # Arms hanging: elbow and wrist heights of Drillis & Contini (0.630 H, 0.485 H) within 2 % H.
    assert p["right_elbow"][1] == pytest.approx(0.630 * height, abs=0.02 * height)
    assert p["left_wrist"][1] == pytest.approx(0.485 * height, abs=0.02 * height)
    assert p["left_shoulder"][1] == pytest.approx(0.818 * height, abs=0.02 * height)


@pytest.mark.parametrize("mass,sex", [(70.0, "male"), (52.5, "female"), (110.0, "male")])
def test_total_and_segment_masses_follow_de_leva(mass, sex):
    model = build_model(height_m=1.70, mass_kg=mass, markers="none", sex=sex)
    state = model.initSystem()
    assert model.getTotalMass(state) == pytest.approx(mass, rel=1e-9)
    bodies = {model.getBodySet().get(i).getName(): model.getBodySet().get(i).getMass()
              for i in range(model.getBodySet().getSize())}
    # de Leva's female column sums to 99.99 %: the model normalises, hence rel=2e-4 below.
    pct = {k: v[1] / 100 for k, v in DE_LEVA_1996[sex].items()}
    groups = {"femur_r": "thigh", "tibia_l": "shank", "humerus_r": "upper_arm", "head": "head",
              "pelvis": "lower_trunk"}
    for body, seg in groups.items():
        assert bodies[body] / mass == pytest.approx(pct[seg], rel=2e-4), body
    assert bodies["torso"] / mass == pytest.approx(pct["upper_trunk"] + pct["middle_trunk"], rel=2e-4)
    assert (bodies["ulna_l"] + bodies["radius_l"]) / mass == pytest.approx(pct["forearm"], rel=2e-4)
    assert (bodies["talus_r"] + bodies["calcn_r"] + bodies["toes_r"]) / mass == pytest.approx(pct["foot"], rel=2e-4)
    assert bodies["hand_r"] / mass == pytest.approx(pct["hand"], rel=2e-4)


def test_centres_of_mass_and_inertias(blaze):
    body_set = blaze.getBodySet()
    knee = blaze.getJointSet().get("knee_r")
    thigh_len = -knee.getParentFrame().findTransformInBaseFrame().p().get(1)
    femur = body_set.get("femur_r")
    # de Leva: thigh centre of mass 40.95 % of hip->knee from the hip.
    assert -femur.getMassCenter().get(1) == pytest.approx(0.4095 * thigh_len, rel=1e-6)
    for i in range(body_set.getSize()):
        b = body_set.get(i)
        m = b.getInertia().getMoments().to_numpy()
        assert np.all(m > 0), b.getName()
        assert m[0] + m[1] >= m[2] - 1e-12 and m[1] + m[2] >= m[0] - 1e-12 and m[0] + m[2] >= m[1] - 1e-12
    # thigh radius of gyration about the medio-lateral axis: 32.9 % of the length
    assert np.sqrt(femur.getInertia().getMoments().get(2) / femur.getMass()) == pytest.approx(0.329 * thigh_len, rel=1e-6)


def test_every_body_has_display_geometry(blaze, tmp_path):
    path = tmp_path / "m.osim"
    blaze.printToXML(str(path))
    text = path.read_text()
    n_bodies = blaze.getBodySet().getSize()
    assert text.count("<Ellipsoid") + text.count("<Brick") == n_bodies
    assert "de Leva" in text and "Harrington" in text  # sources noted in the model file


def test_blazepose_markers_sit_at_plausible_places(blaze):
    p = marker_positions(blaze)
    assert set(p) == set(BLAZEPOSE33)
    for name, pos in p.items():  # left is -z, right +z (z points right)
        if name.startswith("left_") or name == "mouth_left":
            assert pos[2] < -0.005, name
        elif name.startswith("right_") or name == "mouth_right":
            assert pos[2] > 0.005, name
    for s in ("left", "right"):
        assert p[f"{s}_heel"][1] < p[f"{s}_ankle"][1]
        assert p[f"{s}_heel"][0] < p[f"{s}_ankle"][0] < p[f"{s}_foot_index"][0]
        assert p[f"{s}_ankle"][1] < p[f"{s}_knee"][1] < p[f"{s}_hip"][1] < p[f"{s}_shoulder"][1] < p[f"{s}_ear"][1]
        assert p[f"{s}_wrist"][1] < p[f"{s}_elbow"][1] < p[f"{s}_shoulder"][1]
        assert p[f"{s}_eye"][0] > p[f"{s}_ear"][0]  # eyes in front of the ears
    assert p["nose"][0] > p["left_eye"][0] and abs(p["nose"][2]) < 1e-9
    shoulder_width = p["right_shoulder"][2] - p["left_shoulder"][2]
    hip_width = p["right_hip"][2] - p["left_hip"][2]
    assert 0.18 * 1.75 < shoulder_width < 0.26 * 1.75
    assert 0.17 < hip_width < 0.26 and hip_width < shoulder_width
    # The hip landmark lies lateral of the hip joint centre (visible-surface annotation).
    hjc_z = blaze.getJointSet().get("hip_r").getParentFrame().findTransformInBaseFrame().p().get(2)
    assert p["right_hip"][2] > hjc_z


def test_opencap_markers_sit_at_plausible_places(opencap):
    p = marker_positions(opencap)
    assert set(p) == set(OPENCAP43)
    for s, sign in (("r", 1), ("L", -1)):
        assert p[f"{s}.ASIS_study"][0] > p[f"{s}.PSIS_study"][0] + 0.1
        assert sign * p[f"{s}_knee_study"][2] > sign * p[f"{s}_mknee_study"][2]  # lateral outside medial
        assert sign * p[f"{s}_ankle_study"][2] > sign * p[f"{s}_mankle_study"][2]
        assert sign * p[f"{s}_lelbow_study"][2] > sign * p[f"{s}_melbow_study"][2]
        assert p[f"{s}_calc_study"][0] < p[f"{s}_5meta_study"][0] < p[f"{s}_toe_study"][0] + 0.05
        assert sign * p[f"{s}_shoulder_study"][2] > 0.12
        assert p[f"{s}_mknee_study"][1] > p[f"{s}_sh1_study"][1] > p[f"{s}_sh3_study"][1] > p[f"{s}_ankle_study"][1]
        assert p[f"{s}_thigh2_study"][1] > p[f"{s}_thigh1_study"][1] > p[f"{s}_thigh3_study"][1] > p[f"{s}_knee_study"][1]
    assert p["RHJC_study"][2] > 0 > p["LHJC_study"][2]
    assert p["RHJC_study"][1] < p["r.ASIS_study"][1]
    assert abs(p["RHJC_study"][2]) < abs(p["r.ASIS_study"][2])
    assert p["C7_study"][1] > p["r_shoulder_study"][1] - 0.05


def test_sign_conventions_match_rajagopal(opencap):
    d = np.deg2rad(30)
    p0 = marker_positions(opencap)

    def moved(values, marker):
        return marker_positions(opencap, values)[marker] - p0[marker]

    assert moved({"hip_flexion_r": d}, "r_knee_study")[0] > 0.1          # flexion brings the knee forward
    assert moved({"knee_angle_l": d}, "L_ankle_study")[0] < -0.1         # knee flexion: ankle goes back
    assert moved({"ankle_angle_r": d}, "r_toe_study")[1] > 0.03          # dorsiflexion lifts the toes
    assert moved({"hip_adduction_r": d}, "r_knee_study")[2] < -0.1       # adduction: knee medial (-z)
    assert moved({"hip_adduction_l": d}, "L_knee_study")[2] > 0.1        # left medial is +z
    assert moved({"lumbar_extension": d}, "C7_study")[0] < -0.1          # extension tilts the torso back
    assert moved({"arm_flex_l": d}, "L_lelbow_study")[0] > 0.1
    assert moved({"arm_add_r": -d}, "r_lelbow_study")[2] > 0.1           # abduction (negative) is lateral
    assert moved({"elbow_flex_r": d}, "r_lwrist_study")[0] > 0.1
    assert moved({"pro_sup_r": np.deg2rad(90)}, "r_lwrist_study")[2] < -0.01  # pronation: radius turns medially
    assert moved({"subtalar_angle_r": d}, "r_5meta_study")[1] < -0.005  # inversion lowers the lateral forefoot
    np.testing.assert_allclose(moved({"pelvis_tx": 0.5}, "L_toe_study"), [0.5, 0, 0], atol=1e-9)
    np.testing.assert_allclose(moved({"pelvis_tz": -0.2}, "C7_study"), [0, 0, -0.2], atol=1e-9)


def test_marker_set_xml_and_user_model(tmp_path, opencap):
    xml = tmp_path / "opencap_markers.xml"
    opencap.getMarkerSet().printToXML(str(xml))
    bare = write_model(tmp_path / "bare.osim", height_m=1.80, mass_kg=80.0, markers="none")
    model = load_user_model(bare, markerset_xml=xml)
    assert model.getMarkerSet().getSize() == len(OPENCAP43)
    assert standing_height_m(model) == pytest.approx(1.80, rel=0.01)
    # The same XML given to build_model.
    model2 = build_model(height_m=1.6, mass_kg=60.0, markers=str(xml))
    assert model2.getMarkerSet().getSize() == len(OPENCAP43)
    # Re-adding replaces markers of the same name instead of duplicating them.
    add_marker_set(model2, xml)
    assert model2.getMarkerSet().getSize() == len(OPENCAP43)


MARKERSET_XML = """<?xml version="1.0" encoding="UTF-8" ?>
<OpenSimDocument Version="40600">
  <MarkerSet name="test"><objects>
    <Marker name="{name}"><socket_parent_frame>/bodyset/{body}</socket_parent_frame><location>0.01 -0.2 0.05</location></Marker>
  </objects><groups /></MarkerSet>
</OpenSimDocument>
"""
# OpenSim 3 format (as gait2354_Scale_MarkerSet.xml): <body> instead of a socket.
MARKERSET_XML_V3 = """<?xml version="1.0" encoding="UTF-8"?>
<OpenSimDocument Version="20302">
  <MarkerSet name="old"><objects>
    <Marker name="{name}"><body> {body} </body><location> 0.01 -0.2 0.05 </location><fixed> false </fixed></Marker>
  </objects><groups/></MarkerSet>
</OpenSimDocument>
"""


@pytest.mark.parametrize("template", [MARKERSET_XML, MARKERSET_XML_V3])
def test_user_marker_xml_formats(tmp_path, template):
    xml = tmp_path / "thigh.xml"
    xml.write_text(template.format(name="RTHI", body="femur_r"))
    model = build_model(height_m=1.75, mass_kg=70.0, markers=str(xml))
    assert model.getMarkerSet().getSize() == 1
    marker = model.getMarkerSet().get("RTHI")
    assert marker.getParentFrame().getName() == "femur_r"
    np.testing.assert_allclose(marker.get_location().to_numpy(), [0.01, -0.2, 0.05])


def test_marker_set_for_another_model_is_rejected(tmp_path, blaze):
    xml = tmp_path / "other.xml"
    xml.write_text(MARKERSET_XML.format(name="femur_marker", body="femur_right"))
    with pytest.raises(Sam4dcapError, match="femur_right"):
        build_model(height_m=1.75, mass_kg=70.0, markers=str(xml))
    xml.write_text('<?xml version="1.0" encoding="UTF-8" ?>\n<OpenSimDocument Version="40600">'
                   '<MarkerSet name="empty"><objects /><groups /></MarkerSet></OpenSimDocument>\n')
    with pytest.raises(Sam4dcapError, match="no markers"):
        add_marker_set(blaze, xml)
    xml.write_text("this is not xml <")
    with pytest.raises(Sam4dcapError, match="no markers|cannot read marker set"):
        add_marker_set(blaze, xml)
    with pytest.raises(Sam4dcapError, match="does not exist"):
        load_user_model(tmp_path / "missing.osim")
    with pytest.raises(Sam4dcapError, match="unknown marker set"):
        build_model(height_m=1.75, mass_kg=70.0, markers="coco17")
    with pytest.raises(Sam4dcapError, match="height"):
        build_model(height_m=-1.0, mass_kg=70.0)
    with pytest.raises(Sam4dcapError, match="mass"):
        build_model(height_m=1.7, mass_kg=0.0)


def test_strip_for_ik_removes_patella_constraints_forces(tmp_path):
    model = build_model(height_m=1.75, mass_kg=70.0, markers="opencap43")
    femur = model.getBodySet().get("femur_r")
    patella = opensim.Body("patella_r", 0.1, opensim.Vec3(0), opensim.Inertia(1e-4, 1e-4, 1e-4))
    model.addBody(patella)
    joint = opensim.PinJoint("patellofemoral_r", femur, opensim.Vec3(0.05, -0.4, 0), opensim.Vec3(0),
                             patella, opensim.Vec3(0), opensim.Vec3(0))
    joint.updCoordinate().setName("knee_angle_r_beta")
    model.addJoint(joint)
    model.addMarker(opensim.Marker("patella_marker", patella, opensim.Vec3(0.02, 0, 0)))
    coupler = opensim.CoordinateCouplerConstraint()
    coupler.setName("patella_coupler")
    coupler.setIndependentCoordinateNames(opensim.ArrayStr("knee_angle_r", 1))
    coupler.setDependentCoordinateName("knee_angle_r_beta")
    coupler.setFunction(opensim.LinearFunction(1.0, 0.0))
    model.addConstraint(coupler)
    actuator = opensim.CoordinateActuator("hip_flexion_r")
    actuator.setName("hip_act")
    model.addForce(actuator)
    model.finalizeConnections()
    model.initSystem()
    path = tmp_path / "with_patella.osim"
    model.printToXML(str(path))

    kept = load_user_model(path)
    assert kept.getBodySet().contains("patella_r") and kept.getConstraintSet().getSize() == 1
    stripped = load_user_model(path, strip_for_ik=True)
    assert not stripped.getBodySet().contains("patella_r")
    assert stripped.getConstraintSet().getSize() == 0 and stripped.getForceSet().getSize() == 0
    assert not stripped.getCoordinateSet().contains("knee_angle_r_beta")
    assert not stripped.getMarkerSet().contains("patella_marker")
    assert stripped.getMarkerSet().getSize() == len(OPENCAP43)
    assert stripped.getCoordinateSet().getSize() == len(COORDINATE_NAMES)


def test_layout_hip_joint_centre_follows_harrington():
    lay = body_layout(1.741, 73.0)
    s = lay.length_scale
    pw, pd = 235.0 * s, 160.0 * s
    hjc = lay.local("pelvis", lay.points["hjc_r"])
    np.testing.assert_allclose(hjc, [-0.24 * pd - 9.9 * s, -0.30 * pw - 10.9 * s, 0.33 * pw + 7.3 * s], atol=1e-12)


def test_builder_version_names_the_generator_code(tmp_path, monkeypatch):
    """Generated-model caches are keyed by builder_version(): same code, same key; the ik_node's
    cached model file carries it, so a changed builder never serves a stale model."""
    from sam4dcap_biomech.model_builder import builder_version
    from sam4dcap_biomech.ik_stream import generated_model_path

    v = builder_version()
    assert len(v) == 10 and v == builder_version()
    monkeypatch.setenv("SAM4DCAP_CACHE", str(tmp_path))
    path = generated_model_path(height_m=1.6, mass_kg=60.0, marker_set="blazepose33")
    assert path.is_file() and path.stem.endswith(v)
