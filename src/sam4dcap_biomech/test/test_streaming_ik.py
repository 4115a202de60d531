"""StreamingIK on the project's model: recovery of known joint trajectories from forward-kinematics
markers, agreement with OpenSim's InverseKinematicsTool on the same problem, and bad input."""

from __future__ import annotations

import numpy as np
import pytest

from sam4dcap_biomech import model_builder, synthetic
from sam4dcap_biomech.errors import Sam4dcapError
from sam4dcap_biomech.inverse_kinematics import run_ik, run_streaming_ik
from sam4dcap_biomech.streaming_ik import CoordinateTask, StreamingIK, solve_trial

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
