"""IK on trials with gaps and free-joint angles: frames without enough markers are NaN rows on the
trial's one time grid (batch InverseKinematicsTool per solvable run, streaming, `sam4dcap ik`),
the rest is solved as if there were no gap; free-joint angles are canonical (wrapped, one Euler
form) and describe the same pose; clamped coordinates stay in their ranges."""

from __future__ import annotations

import logging

import numpy as np
import opensim
import pytest

from sam4dcap_biomech import synthetic
from sam4dcap_biomech.ik_problem import FREE_JOINT_ROTATIONS, canonical_coordinates
from sam4dcap_biomech.inverse_kinematics import run_ik, run_streaming_ik
from sam4dcap_biomech.markersets import BLAZEPOSE33
from sam4dcap_biomech.model_builder import write_model
from sam4dcap_biomech.storage import read_mot
from sam4dcap_biomech.streaming_ik import StreamingIK
from sam4dcap_biomech.timeseries import TimeSeries
from sam4dcap_biomech.trc import write_trc
from sam4dcap_perception.cli import main

RATE_HZ = 60.0
LOST = slice(25, 40)       # the person gone: every marker NaN
SHORT = slice(50, 53)      # 3 frames with 5 markers (< min_markers 8)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    path = write_model(tmp_path_factory.mktemp("gaps") / "subject.osim", height_m=1.75, mass_kg=70.0)
    opensim.Logger.setLevelString("warn")
    return path


@pytest.fixture(scope="module")
def gait_with_gaps(model_path):
    coords = synthetic.gait_trajectory(1.2, RATE_HZ, height_m=1.75)
    markers = synthetic.markers_from_coordinates(opensim.Model(str(model_path)), coords, marker_names=BLAZEPOSE33)
    values = markers.values.copy()
    values[LOST] = np.nan
    values[SHORT, 5:] = np.nan
    return coords, markers.with_values(values)


def _unsolved(n):
    out = np.zeros(n, bool)
    out[LOST] = out[SHORT] = True
    return out


@pytest.mark.parametrize("solver", [run_ik, run_streaming_ik])
def test_gaps_are_nan_rows_and_the_rest_is_solved(solver, model_path, gait_with_gaps, tmp_path, caplog):
    coords, markers = gait_with_gaps
    with caplog.at_level(logging.WARNING):
        result = solver(model_path, markers, out_mot=tmp_path / "ik.mot", regularize=False)
    unsolved = _unsolved(markers.n_frames)
    q = result.coordinates
    np.testing.assert_array_equal(q.time, markers.time)               # one time grid
    assert np.isnan(q.values[unsolved]).all() and np.isfinite(q.values[~unsolved]).all()
    assert np.isnan(result.marker_rms_m[unsolved]).all() and (result.marker_rms_m[~unsolved] < 1e-3).all()
    np.testing.assert_array_equal(result.extra["solved_frames"], ~unsolved)
    for name in ("hip_flexion_r", "knee_angle_l", "ankle_angle_r", "pelvis_tilt"):
        err = np.abs(q.get(name)[~unsolved] - coords.get(name)[~unsolved])
        assert err.max() < np.radians(0.3), name     # as without gaps (solver accuracy 1e-6)
    # The files carry the same NaN rows, read back by OpenSim's TimeSeriesTable.
    table = opensim.TimeSeriesTable(str(tmp_path / "ik.mot"))
    matrix = table.getMatrix()
    values = matrix.to_numpy()
    assert table.getNumRows() == markers.n_frames and np.isnan(values[unsolved]).all()
    errors = read_mot(tmp_path / "ik_marker_errors.sto")
    assert np.isnan(errors.get("marker_error_RMS")[unsolved]).all()
    if solver is run_ik:
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "weighted markers" in r.message]
        assert len(warnings) == 1 and "18 of 73 frames" in warnings[0].message
        assert "0.417-0.650 s" in warnings[0].message and "0.833-0.867 s" in warnings[0].message


def test_sam4dcap_ik_on_a_trc_with_gaps_exits_0(model_path, gait_with_gaps, tmp_path):
    _, markers = gait_with_gaps
    trc = write_trc(tmp_path / "gaps.trc", markers, units="m")
    assert main(["ik", "--model", str(model_path), "--trc", str(trc), "--out", str(tmp_path / "gaps_ik.mot")]) == 0
    mot = read_mot(tmp_path / "gaps_ik.mot")
    unsolved = _unsolved(markers.n_frames)
    assert mot.n_frames == markers.n_frames and np.isnan(mot.values[unsolved]).all()
    assert np.isfinite(mot.values[~unsolved]).all()


def test_no_frame_with_enough_markers_is_one_error(model_path, gait_with_gaps):
    from sam4dcap_biomech.errors import Sam4dcapError

    _, markers = gait_with_gaps
    with pytest.raises(Sam4dcapError, match="no person in the markers"):
        run_ik(model_path, markers.with_values(np.full_like(markers.values, np.nan)))


def _pelvis_transform(model, state, names, q):
    cs = model.getCoordinateSet()
    for n, v in zip(names, q):
        cs.get(n).setValue(state, float(v), False)
    model.realizePosition(state)
    transform = model.getBodySet().get("pelvis").getTransformInGround(state)
    rotation = transform.R()
    return np.array([[rotation.get(i, j) for j in range(3)] for i in range(3)])


def test_canonical_free_joint_angles_are_the_same_pose(model_path):
    model = opensim.Model(str(model_path))
    state = model.initSystem()
    rng = np.random.default_rng(0)
    names = list(FREE_JOINT_ROTATIONS)
    free = np.ones(3, bool)
    for _ in range(20):
        q = rng.uniform(-3 * np.pi, 3 * np.pi, 3)
        c = canonical_coordinates(names, q, unbounded_rotations=free)
        assert np.all(c >= -np.pi) and np.all(c < np.pi) and abs(c[1]) <= np.pi / 2 + 1e-12
        np.testing.assert_allclose(_pelvis_transform(model, state, names, c),
                                   _pelvis_transform(model, state, names, q), atol=1e-12)
    # The flipped form of an upright pelvis (tilt 164 deg) comes back as tilt -16 deg.
    flipped = np.radians([164.0, 175.0, 170.0])
    np.testing.assert_allclose(np.degrees(canonical_coordinates(names, flipped, unbounded_rotations=free)),
                               [-16.0, 5.0, -10.0], atol=1e-9)


def test_streaming_ik_keeps_free_joint_angles_canonical_while_the_subject_spins(model_path):
    """Three whole turns about the vertical: pelvis_rotation wraps instead of piling up to 19 rad,
    tilt/list stay small (no flipped form), clamped coordinates stay in their ranges."""
    model = opensim.Model(str(model_path))
    static = synthetic.static_trajectory(1.5, RATE_HZ, height_m=1.75)
    markers = synthetic.markers_from_coordinates(model, static, marker_names=BLAZEPOSE33)
    n = markers.n_frames
    angle = np.linspace(0.0, 6 * np.pi, n)          # 3 turns in 1.5 s
    c, s = np.cos(angle), np.sin(angle)
    rot = np.zeros((n, 3, 3))
    rot[:, 0, 0], rot[:, 0, 2], rot[:, 1, 1], rot[:, 2, 0], rot[:, 2, 2] = c, s, 1.0, -s, c
    spun = TimeSeries(markers.time, markers.names, np.einsum("nij,nkj->nki", rot, markers.values), unit="m")
    ik = StreamingIK(str(model_path), BLAZEPOSE33)
    names = list(ik.coordinate_names)
    lo, hi = ik.coordinate_bounds
    rotation = []
    for k in range(n):
        frame = ik.solve(float(spun.time[k]), spun.values[k])
        assert frame.marker_rms_m < 0.005
        q = dict(zip(names, frame.q))
        assert -np.pi <= q["pelvis_rotation"] < np.pi
        assert abs(q["pelvis_tilt"]) < np.radians(20) and abs(q["pelvis_list"]) < np.radians(20)
        assert np.all(frame.q >= lo - 1e-9) and np.all(frame.q <= hi + 1e-9)
        rotation.append(q["pelvis_rotation"])
    # It did turn: the unwrapped angle covers the three turns.
    assert np.ptp(np.unwrap(rotation)) > 5.5 * np.pi
