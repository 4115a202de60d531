"""Synthetic ground-truth trials: trajectories, forward kinematics on the real OpenSim model, noise."""

import numpy as np
import pytest

from sam4dcap_biomech.anthropometry import body_layout
from sam4dcap_biomech.errors import Sam4dcapError
from sam4dcap_biomech.model_builder import COORDINATE_NAMES, COORDINATE_RANGES, build_model
from sam4dcap_biomech.synthetic import (add_marker_noise, drop_jump_trajectory, gait_trajectory, lowest_sole_y,
                                        markers_from_coordinates, sit_to_stand_trajectory, squat_trajectory,
                                        static_trajectory)

RATE = 60.0
DEG = np.pi / 180


@pytest.fixture(scope="module")
def model():
    return build_model(height_m=1.75, mass_kg=70.0, markers="blazepose33")


@pytest.fixture(scope="module")
def opencap_model():
    return build_model(height_m=1.75, mass_kg=70.0, markers="opencap43")


@pytest.fixture(scope="module")
def gait():
    return gait_trajectory(3.0, RATE, height_m=1.75)


@pytest.mark.parametrize("make", [static_trajectory, gait_trajectory, squat_trajectory, drop_jump_trajectory,
                                  sit_to_stand_trajectory])
def test_trajectories_are_complete_and_within_ranges(make):
    q = make(2.0, RATE, height_m=1.75)
    assert q.names == COORDINATE_NAMES
    assert q.unit == "rad" and q.unit_of("pelvis_ty") == "m" and q.unit_of("knee_angle_r") == "rad"
    assert q.n_frames == 121 and q.rate_hz == pytest.approx(RATE)
    assert np.isfinite(q.values).all()
    for i, name in enumerate(q.names):
        lo, hi = COORDINATE_RANGES[name]
        assert lo <= q.values[:, i].min() and q.values[:, i].max() <= hi, name


def test_gait_has_normative_shape(gait):
    knee = gait.get("knee_angle_r") / DEG
    hip = gait.get("hip_flexion_l") / DEG
    assert 55 < knee.max() < 70 and knee.min() < 10          # swing peak ~60 deg
    assert 25 < hip.max() < 40 and -15 < hip.min() < 0
    # Left leg is half a cycle (0.55 s at 1.1 s stride) behind the right.
    shift = int(round(0.55 * RATE))
    np.testing.assert_allclose(gait.get("knee_angle_l")[shift:], gait.get("knee_angle_r")[:-shift], atol=0.02)
    speed = np.diff(gait.get("pelvis_tx")) * RATE
    assert speed == pytest.approx(0.8 * 1.75 / 1.1)


def test_fk_markers_smooth_rigid_and_grounded(model, gait):
    markers = markers_from_coordinates(model, gait)
    assert markers.values.shape == (gait.n_frames, 33, 3) and markers.frame == "world" and markers.unit == "m"
    assert markers.names == tuple(model.getMarkerSet().get(i).getName() for i in range(33))
    v = markers.values
    assert np.isfinite(v).all()
    # Smooth: no marker faster than 8 m/s, accelerations below 150 m/s^2 (feet peak ~ 60-100 in gait).
    vel = np.diff(v, axis=0) * RATE
    acc = np.diff(v, 2, axis=0) * RATE ** 2
    assert np.linalg.norm(vel, axis=2).max() < 8.0
    assert np.linalg.norm(acc, axis=2).max() < 150.0
    # Round trip with the anatomy: knee and ankle markers are the joint centres, so their distance is
    # the shank length at every knee angle; two markers on one body keep their distance.
    lay = body_layout(1.75, 70.0)
    shank = np.linalg.norm(markers.get("right_knee") - markers.get("right_ankle"), axis=1)
    np.testing.assert_allclose(shank, lay.lengths_m["shank"], atol=1e-9)
    foot = np.linalg.norm(markers.get("left_heel") - markers.get("left_foot_index"), axis=1)
    np.testing.assert_allclose(foot, foot[0], atol=1e-9)
    # Feet on the floor: every frame some heel/toe marker is at its standing height (~2-2.5 cm).
    feet = np.stack([markers.get(n)[:, 1] for n in ("left_heel", "right_heel", "left_foot_index", "right_foot_index")])
    lowest = feet.min(axis=0)
    assert np.all(lowest > 0.0) and np.all(lowest < 0.04)


def test_fk_matches_single_pose_and_degrees(model, gait):
    frame = 37
    markers = markers_from_coordinates(model, gait.frames(slice(frame, frame + 1)), marker_names=["left_wrist", "nose"])
    state = model.initSystem()
    for name, value in zip(gait.names, gait.values[frame]):
        model.getCoordinateSet().get(name).setValue(state, value, False)
    model.realizePosition(state)
    expected = model.getMarkerSet().get("left_wrist").getLocationInGround(state).to_numpy()
    np.testing.assert_allclose(markers.values[0, 0], expected, atol=1e-12)
    in_degrees = markers_from_coordinates(model, gait.frames(slice(frame, frame + 1)).to_unit("deg"),
                                          marker_names=["left_wrist", "nose"])
    np.testing.assert_allclose(in_degrees.values, markers.values, atol=1e-12)


def test_feet_touch_the_floor(model, gait):
    # Gait: the lowest sole point is on the floor within the 20 ms smoothing's 6 mm; pelvis
    # vertical acceleration stays physiological (< 15 m/s^2, no heel->toe contact kinks).
    low = lowest_sole_y(model, gait)
    assert np.abs(low).max() < 0.006
    assert np.abs(np.diff(gait.get("pelvis_ty"), 2) * RATE ** 2).max() < 15.0
    squat = squat_trajectory(2.0, RATE, height_m=1.75)
    np.testing.assert_allclose(lowest_sole_y(model, squat), 0.0, atol=1e-9)
    np.testing.assert_allclose(lowest_sole_y(model, static_trajectory(0.5, RATE, height_m=1.75)), 0.0, atol=1e-9)


def test_squat_keeps_feet_planted(opencap_model):
    q = squat_trajectory(2.0, RATE, height_m=1.75, depth_deg=90.0, period_s=2.0)
    assert q.get("knee_angle_l").max() == pytest.approx(90 * DEG, abs=0.01)
    assert 20 * DEG < q.get("ankle_angle_r").max() < 35 * DEG
    m = markers_from_coordinates(opencap_model, q)
    for name in ("r_ankle_study", "L_calc_study", "r_toe_study"):
        drift = np.linalg.norm(m.get(name) - m.get(name)[0], axis=1).max()
        assert drift < 0.015, name
    assert (m.get("RHJC_study")[:, 1].max() - m.get("RHJC_study")[:, 1].min()) > 0.25  # hips go down ~27 cm


def test_sit_to_stand_rises_with_feet_planted(opencap_model):
    q = sit_to_stand_trajectory(2.0, RATE, height_m=1.75, period_s=2.0)
    assert q.get("knee_angle_r")[0] == pytest.approx(90 * DEG, abs=0.01)      # seated
    assert abs(q.get("knee_angle_r")[len(q.time) // 2]) < 0.01                # standing at mid-period
    m = markers_from_coordinates(opencap_model, q)
    for name in ("r_ankle_study", "L_calc_study"):
        assert np.linalg.norm(m.get(name) - m.get(name)[0], axis=1).max() < 0.015, name
    assert (m.get("RHJC_study")[:, 1].max() - m.get("RHJC_study")[:, 1].min()) > 0.3      # the hips rise


def test_drop_jump_leaves_the_floor_twice(model):
    q = drop_jump_trajectory(2.5, RATE, height_m=1.75, box_height_m=0.3, jump_height_m=0.25)
    m = markers_from_coordinates(model, q, marker_names=["left_heel", "right_foot_index"])
    heel = m.get("left_heel")[:, 1]
    assert heel[0] == pytest.approx(0.30 + heel[m.n_frames // 2:].min(), abs=0.01)  # on the box
    airborne = heel > heel.min() + 0.05
    starts = np.flatnonzero(np.diff(airborne.astype(int)) == 1)
    assert len(starts) == 1 and airborne[0]   # on the box, then one jump (box phase counts as "up")
    assert q.get("knee_angle_r").max() == pytest.approx(80 * DEG, abs=0.02)


def test_static_trial_is_the_default_pose(model):
    q = static_trajectory(1.0, 30.0, height_m=1.75)
    state = model.initSystem()
    assert q.get("pelvis_ty")[0] == pytest.approx(model.getCoordinateSet().get("pelvis_ty").getValue(state))
    m = markers_from_coordinates(model, q)
    assert np.ptp(m.values, axis=0).max() == 0.0


def test_marker_noise_statistics(model, gait):
    clean = markers_from_coordinates(model, gait)
    noisy = add_marker_noise(clean, sigma_m=0.005, seed=3)
    err = noisy.values - clean.values
    assert np.sqrt(np.mean(err ** 2)) == pytest.approx(0.005, rel=0.1)
    # Soft-tissue-like: mostly slow drift, so successive samples are strongly correlated.
    e = err.reshape(err.shape[0], -1)
    lag1 = np.mean([np.corrcoef(e[:-1, k], e[1:, k])[0, 1] for k in range(e.shape[1])])
    assert 0.5 < lag1 < 0.95
    again = add_marker_noise(clean, sigma_m=0.005, seed=3)
    np.testing.assert_array_equal(again.values, noisy.values)
    assert not np.array_equal(add_marker_noise(clean, sigma_m=0.005, seed=4).values, noisy.values)
    gappy = add_marker_noise(clean, sigma_m=0.0, dropout_fraction=0.1, seed=1)
    assert gappy.missing().mean() == pytest.approx(0.1, abs=0.005)
    ok = ~gappy.missing()
    np.testing.assert_array_equal(gappy.values[ok], clean.values[ok])


def test_bad_inputs_raise_clear_errors(model, gait):
    with pytest.raises(Sam4dcapError, match="sigma"):
        add_marker_noise(markers_from_coordinates(model, gait.frames(slice(0, 3))), sigma_m=-1.0)
    with pytest.raises(Sam4dcapError, match="points"):
        add_marker_noise(gait, sigma_m=0.01)
    with pytest.raises(Sam4dcapError, match="duration"):
        gait_trajectory(0.0, RATE)
    with pytest.raises(Sam4dcapError, match="not in model"):
        markers_from_coordinates(model, gait.select(["knee_angle_r"]).with_values(
            gait.values[:, :1], names=("knee_flexion_r",)))
    with pytest.raises(Sam4dcapError, match="markers not in model"):
        markers_from_coordinates(model, gait, marker_names=["r_knee_study"])
