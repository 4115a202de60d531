"""StreamingIK on the project's model: recovery of known joint trajectories from forward-kinematics
markers, agreement with OpenSim's InverseKinematicsTool on the same problem, and bad input."""

from __future__ import annotations

import numpy as np
import pytest

from sam4dcap_biomech import model_builder, synthetic
from sam4dcap_biomech.errors import Sam4dcapError
from sam4dcap_biomech.ik_problem import CoordinateTask, unobserved_coordinates
from sam4dcap_biomech.inverse_kinematics import run_ik, run_streaming_ik
from sam4dcap_biomech.streaming_ik import StreamingIK, solve_trial

LOWER = ["pelvis_tilt", "pelvis_list", "pelvis_rotation", "hip_flexion_r", "hip_adduction_r",
         "hip_rotation_r", "knee_angle_r", "ankle_angle_r", "hip_flexion_l", "hip_adduction_l",
         "hip_rotation_l", "knee_angle_l", "ankle_angle_l"]


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("sik") / "model.osim"
    model_builder.write_model(path, height_m=1.75, mass_kg=70.0, markers="opencap43")
    return path


@pytest.fixture(scope="module")
def gait(model_path):
    import opensim

    coords = synthetic.gait_trajectory(duration_s=1.0, rate_hz=60.0, height_m=1.75)
    markers = synthetic.markers_from_coordinates(opensim.Model(str(model_path)), coords)
    return coords, markers


def _rms_deg(frames_q, coords, names, coordinate_names):
    idx = [coordinate_names.index(n) for n in names]
    est = np.asarray(frames_q)[:, idx]
    return np.rad2deg(np.sqrt(np.mean((est - coords.select(names).values) ** 2, axis=0)))


def test_recovers_known_gait_noise_free(model_path, gait):
    coords, markers = gait
    ik = StreamingIK(model_path, markers.names)
    frames, seconds = solve_trial(ik, markers)
    assert all(f is not None for f in frames)
    rms = _rms_deg([f.q for f in frames], coords, LOWER, ik.coordinate_names)
    assert rms.max() <= 0.5, dict(zip(LOWER, rms.round(3)))
    # Noise-free markers from the same model: the fit is exact to well under a millimetre.
    assert max(f.marker_rms_m for f in frames) < 1e-3
    assert frames[0].cold_start and not frames[-1].cold_start
    assert frames[0].qdot is None and frames[-1].qdot is not None
    # qdot is the backward difference of q.
    dt = frames[-1].time_s - frames[-2].time_s
    np.testing.assert_allclose(frames[-1].qdot, (frames[-1].q - frames[-2].q) / dt, rtol=1e-9, atol=1e-12)
    f = frames[-1]
    assert f.confidence.shape == f.q.shape and np.all((0 <= f.confidence) & (f.confidence <= 1))
    assert f.markers_used == len(markers.names) and f.max_error_marker in markers.names


def test_matches_inverse_kinematics_tool(model_path, gait):
    """Same objective as the tool: with both converged tightly they agree far within 0.1 deg."""
    _, markers = gait
    tool = run_ik(model_path, markers, accuracy=1e-8).coordinates
    stream = run_streaming_ik(model_path, markers, accuracy=1e-8).coordinates.select(tool.names)
    rot = [i for i, n in enumerate(tool.names) if tool.unit_of(n) == "rad"]
    diff_deg = np.rad2deg(np.abs(tool.values[:, rot] - stream.values[:, rot]))
    assert diff_deg.max() <= 0.1, tool.names[rot[int(diff_deg.max(axis=0).argmax())]]


def test_missing_markers_and_min_markers(model_path, gait):
    _, markers = gait
    ik = StreamingIK(model_path, markers.names, min_markers=10)
    pos = markers.values[5].copy()
    pos[:5] = np.nan                                  # a few dropouts: still solved from the rest
    frame = ik.solve(float(markers.time[5]), pos)
    assert frame is not None and frame.markers_used == len(markers.names) - 5
    assert not set(markers.names[:5]) & set(frame.marker_errors_m)
    too_few = np.full_like(pos, np.nan)
    too_few[:9] = markers.values[6][:9]
    assert ik.solve(float(markers.time[6]), too_few) is None


def test_coordinate_task_pulls_coordinate(model_path, gait):
    """A heavy coordinate task (OpenSim IKCoordinateTask semantics) pins its coordinate."""
    _, markers = gait
    ik = StreamingIK(model_path, markers.names,
                     coordinate_tasks={"lumbar_rotation": CoordinateTask(weight=1e6, value=0.3)})
    frame = ik.solve(float(markers.time[0]), markers.values[0])
    assert frame.q[ik.coordinate_names.index("lumbar_rotation")] == pytest.approx(0.3, abs=1e-3)


def test_bounded_solution_is_the_optimum_at_the_bound(model_path, gait):
    """A task pulling the (clamped) knee far into hyperextension: the knee stops exactly at its
    range limit and every other coordinate takes the optimum for the knee held there (the bounded
    problem's solution, as if the knee were pinned at the limit), from a cold and a warm start."""
    _, markers = gait
    lo = model_builder.COORDINATE_RANGES["knee_angle_r"][0]
    pulled = StreamingIK(model_path, markers.names, regularize=False,
                         coordinate_tasks={"knee_angle_r": CoordinateTask(weight=10.0, value=-0.6)})
    pinned = StreamingIK(model_path, markers.names, regularize=False,
                         coordinate_tasks={"knee_angle_r": CoordinateTask(weight=1e7, value=lo)})
    assert pulled.coordinate_bounds[0][pulled.coordinate_names.index("knee_angle_r")] == lo
    knee = pulled.coordinate_names.index("knee_angle_r")
    rot = [i for i, n in enumerate(pulled.coordinate_names) if not n.startswith("pelvis_t") and i != knee]
    for k in range(3):
        got = pulled.solve(float(markers.time[k]), markers.values[k])
        want = pinned.solve(float(markers.time[k]), markers.values[k])
        assert got.q[knee] == lo
        assert np.rad2deg(np.abs(got.q[rot] - want.q[rot])).max() < 0.01


@pytest.fixture(scope="module")
def blazepose_gait(tmp_path_factory):
    import opensim

    path = tmp_path_factory.mktemp("sik_bp") / "model.osim"
    model_builder.write_model(path, height_m=1.75, mass_kg=70.0, markers="blazepose33")
    coords = synthetic.gait_trajectory(duration_s=1.0, rate_hz=30.0, height_m=1.75)
    return path, coords, synthetic.markers_from_coordinates(opensim.Model(str(path)), coords)


def test_unobserved_coordinates_held_and_reported(blazepose_gait):
    """BlazePose's foot keypoints all ride on the calcaneus: nothing observes mtp. It is held at
    its default (0) and reported unknown (q_std inf, confidence 0), while the gait's mtp truth
    swings 0..25 deg; observed coordinates keep finite uncertainty."""
    path, coords, markers = blazepose_gait
    assert unobserved_coordinates(path, markers.names) == ("mtp_angle_r", "mtp_angle_l")
    assert np.rad2deg(coords.get("mtp_angle_r")).max() > 20.0
    for regularize in (True, False):
        ik = StreamingIK(path, markers.names, regularize=regularize)
        frames, _ = solve_trial(ik, markers)
        mtp = [ik.coordinate_names.index(n) for n in ("mtp_angle_r", "mtp_angle_l")]
        seen = [i for i in range(len(ik.coordinate_names)) if i not in mtp]
        for f in frames:
            assert np.all(np.isinf(f.q_std[mtp])) and np.all(f.confidence[mtp] == 0.0)
            assert np.all(np.isfinite(f.q_std[seen])) and np.all(f.confidence[seen] > 0.0)
            assert np.all(f.q[mtp] == 0.0)
        assert ("mtp_angle_r" in ik.coordinate_tasks) is regularize
        assert ("lumbar_extension" in ik.coordinate_tasks) is regularize


def test_markers_dropping_out_hold_their_coordinates(blazepose_gait):
    """Hand keypoints lost for a few frames: the wrist is not extrapolated, it keeps its last
    value and reports confidence 0 until the keypoints come back."""
    path, _, markers = blazepose_gait
    ik = StreamingIK(path, markers.names)
    hand = [markers.index(f"right_{p}") for p in ("index", "pinky", "thumb")]
    wrist = [ik.coordinate_names.index(n) for n in ("wrist_flex_r", "wrist_dev_r")]
    frames = [ik.solve(float(markers.time[k]), markers.values[k]) for k in range(5)]
    for k in range(5, 10):
        pos = markers.values[k].copy()
        pos[hand] = np.nan
        frames.append(ik.solve(float(markers.time[k]), pos))
        assert np.all(frames[-1].confidence[wrist] == 0.0) and np.all(np.isinf(frames[-1].q_std[wrist]))
        np.testing.assert_array_equal(frames[-1].q[wrist], frames[4].q[wrist])
    frames.append(ik.solve(float(markers.time[10]), markers.values[10]))
    assert np.all(frames[-1].confidence[wrist] > 0.0)


def test_whole_turn_jump_is_taken_back(model_path, gait):
    """A warm start that sits a whole turn of an unbounded rotation away (the same pose, as a
    Gauss-Newton step along a flat valley can produce) does not carry the turn into q and qdot."""
    _, markers = gait
    reference = StreamingIK(model_path, markers.names)
    ik = StreamingIK(model_path, markers.names)
    for k in range(2):
        expected = reference.solve(float(markers.time[k]), markers.values[k])
        if k == 0:
            ik.solve(float(markers.time[k]), markers.values[k])
            i = ik.coordinate_names.index("arm_rot_r")
            ik._prev_q_full[ik._q_index[i]] += 2.0 * np.pi     # inject the jump into the warm start
    got = ik.solve(float(markers.time[1]), markers.values[1])
    assert got.q[i] == pytest.approx(expected.q[i], abs=1e-6)
    assert abs(got.qdot[i]) < 10.0                               # rad/s: no 360 deg/frame velocity


def test_bad_input(model_path, gait):
    _, markers = gait
    with pytest.raises(Sam4dcapError, match="misnamed"):
        StreamingIK(model_path, [f"X{i}" for i in range(20)])
    with pytest.raises(Sam4dcapError, match="unknown coordinate"):
        StreamingIK(model_path, markers.names, coordinate_tasks={"no_such_coord": CoordinateTask(1.0)})
    with pytest.raises(Sam4dcapError, match="model file not found"):
        StreamingIK(model_path.parent / "missing.osim", markers.names)
    ik = StreamingIK(model_path, markers.names)
    with pytest.raises(Sam4dcapError, match="millimetres|metres"):
        ik.solve(0.0, markers.values[0] * 1000.0)
    with pytest.raises(Sam4dcapError, match="shape"):
        ik.solve(0.0, markers.values[0][:-1])
    # Names the model does not carry are ignored, like the InverseKinematicsTool does.
    ik2 = StreamingIK(model_path, list(markers.names) + ["extra_marker"])
    assert ik2.ignored_markers == ("extra_marker",)
    frame = ik2.solve(0.0, np.vstack([markers.values[0], [[9.0, 9.0, 9.0]]]))
    assert "extra_marker" not in frame.marker_errors_m


def test_cannot_assemble_names_worst_markers(model_path, gait):
    """Markers that no pose can reach: the cold assembly reports the worst markers by name."""
    _, markers = gait
    ik = StreamingIK(model_path, markers.names)
    pos = markers.values[0].copy()
    pos[markers.index("r_toe_study")] += [0.0, 3.0, 0.0]   # a toe 3 m above the body
    frame = ik.solve(float(markers.time[0]), pos)
    # OpenSim's assembler either fails (error names markers) or returns a bad fit naming the toe.
    assert frame.max_error_marker == "r_toe_study" and frame.marker_max_m > 1.0


def test_large_residual_flat_valley_converges_warm(blazepose_gait):
    """Keypoints a few cm off any model pose (2 cm smooth noise: ~35 mm RMS fit, like real
    BlazePose markers) make weakly observed coordinates (forearm rotation, wrist, subtalar) a flat
    valley where plain Gauss-Newton only creeps (it ran out of 25 iterations on half the frames
    and reassembled cold). With the secant-corrected Hessian every frame converges warm to the
    optimum a 2000-iteration 1e-11 solve from its result finds."""
    path, _, clean = blazepose_gait
    markers = synthetic.add_marker_noise(clean, sigma_m=0.02, seed=1)
    ik = StreamingIK(path, markers.names, accuracy=1e-6)
    polish = StreamingIK(path, markers.names, accuracy=1e-11, max_iterations=2000)
    rot = [i for i, n in enumerate(ik.coordinate_names) if not n.endswith(("_tx", "_ty", "_tz"))]
    frames, _ = solve_trial(ik, markers)
    assert np.mean([f.marker_rms_m for f in frames]) > 0.025
    for k, f in enumerate(frames[1:], start=1):
        assert not f.cold_start and f.iterations < ik.max_iterations, (k, f.iterations)
        best = polish.solve_from(f.time_s, markers.values[k], [f.q])
        assert np.rad2deg(np.abs(f.q - best.q)[rot]).max() < 0.01, k


def test_secant_update_meets_the_secant_equation():
    """NL2SOL update from S = 0: the new S maps the step onto (J_new - J)^T r_new exactly and
    stays symmetric (analytic property of the update)."""
    rng = np.random.default_rng(3)
    jac, jac_new = rng.normal(size=(12, 4)), rng.normal(size=(12, 4))
    r = rng.normal(size=12)
    s = rng.normal(size=4) * 0.01
    r_new = r + jac @ s
    if (jac_new.T @ r_new - jac.T @ r) @ s <= 0:
        s = -s
        r_new = r + jac @ s
    secant = np.zeros((4, 4))
    StreamingIK._update_secant(secant, s, jac, jac_new, r, r_new)
    np.testing.assert_allclose(secant @ s, (jac_new - jac).T @ r_new, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(secant, secant.T, atol=1e-12)


def test_time_budget_stops_early_flags_it_and_the_next_frames_continue(model_path, gait):
    """Live (realtime) solves stop at their time budget: the frame says it did not converge and
    its confidence counts the remaining step; the following frames warm-start from it, so a
    held pose converges over a few frames instead of being re-solved from scratch."""
    coords, markers = gait
    exact = StreamingIK(model_path, markers.names)
    budget = StreamingIK(model_path, markers.names, time_budget_s=1e-9)   # one step per frame
    first, jump = markers.values[0], markers.values[30]   # then a 0.5 s jump in the gait: far to go
    for ik in (exact, budget):
        ik.solve(0.0, first)
    ref = exact.solve(0.5, jump)
    frames = [budget.solve(0.5 + 0.01 * k, jump) for k in range(40)]
    assert ref.converged and not frames[0].converged and frames[0].iterations == 1
    assert not any(f.cold_start for f in frames)
    dist = [float(np.rad2deg(np.abs(f.q - ref.q)).max()) for f in frames]
    assert dist[0] > 1.0, dist[0]          # one step from a 0.5 s jump is not there yet
    assert dist[-1] < 0.05 * dist[0], dist  # the held pose converges across frames
    moving = np.rad2deg(np.abs(frames[0].q - ref.q)) > 2.0
    assert moving.any()
    # Coordinates still far from the answer are not reported as well determined.
    assert np.all(frames[0].confidence[moving] < ref.confidence[moving]), \
        (frames[0].confidence[moving], ref.confidence[moving])
