"""ik_stream.IKStream: the live IK stage without ROS -- the model cache, marker reordering, the
gates (another body, malformed, too few markers, untrusted fit), cold restarts after a loss or a
time jump, run-time parameters (synthetic gait on the project's model: true pose known)."""

from __future__ import annotations

import numpy as np
import opensim
import pytest

from sam4dcap_biomech.config import load_config
from sam4dcap_biomech.errors import Sam4dcapError
from sam4dcap_biomech.ik_stream import IGNORED, LOST, UNTRUSTED, VALID, IKStream, generated_model_path
from sam4dcap_biomech.markersets import BLAZEPOSE33
from sam4dcap_biomech.model_builder import write_model
from sam4dcap_biomech.synthetic import gait_trajectory, markers_from_coordinates

RATE_HZ = 30.0


@pytest.fixture(scope="module")
def trial(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ik_stream")
    model = write_model(tmp / "subject.osim", height_m=1.75, mass_kg=70.0)
    opensim.Logger.setLevelString("warn")
    coords = gait_trajectory(0.6, RATE_HZ, height_m=1.75)
    markers = markers_from_coordinates(opensim.Model(str(model)), coords, marker_names=BLAZEPOSE33)
    return model, markers


def make_stream(model, tmp_path, **overrides):
    params = load_config().params("ik_node", dict({"model_path": str(model), "auto_calibrate": False,
                                                   "regularize_unobserved": False,
                                                   "output_dir": str(tmp_path / "calibration")}, **overrides))
    reports = []
    stream = IKStream(params, accepted_frames=("opensim_world", "world"),
                      report=lambda level, text, key=None: reports.append((level, text)))
    return stream, params, reports


def step(stream, t, positions, names=BLAZEPOSE33, person_id=1, frame_id="opensim_world", confidence=()):
    return stream.step(t, person_id=person_id, frame_id=frame_id, names=names, points=positions,
                       confidence=confidence)


def test_valid_frames_fit_the_true_markers(trial, tmp_path):
    model, markers = trial
    stream, _, _ = make_stream(model, tmp_path)
    results = [step(stream, float(t), markers.values[i]) for i, t in enumerate(markers.time)]
    assert all(r.state == VALID for r in results)
    assert max(r.marker_rms_m for r in results) < 0.005
    assert results[0].frame.qdot is None and results[5].frame.qdot is not None   # warm start after the first
    stream.close()


def test_markers_are_matched_by_name_not_by_order(trial, tmp_path):
    model, markers = trial
    stream, _, _ = make_stream(model, tmp_path)
    order = np.random.default_rng(0).permutation(len(BLAZEPOSE33))
    shuffled = step(stream, 0.0, markers.values[0][order], names=[BLAZEPOSE33[i] for i in order])
    stream2, _, _ = make_stream(model, tmp_path)
    straight = step(stream2, 0.0, markers.values[0])
    assert shuffled.state == VALID
    np.testing.assert_allclose(shuffled.frame.q, straight.frame.q, atol=1e-6)
    stream.close()
    stream2.close()


def test_gates_other_body_malformed_lost_untrusted(trial, tmp_path):
    model, markers = trial
    stream, params, reports = make_stream(model, tmp_path)
    assert step(stream, 0.0, markers.values[0], person_id=2).state == IGNORED
    assert step(stream, 0.01, markers.values[0], person_id=2).state == IGNORED
    assert sum("body 2" in text for _, text in reports) == 1                       # warned once
    assert step(stream, 0.02, markers.values[0][:-1]).state == IGNORED            # 33 names, 32 positions
    lost = step(stream, 0.03, np.full_like(markers.values[0], np.nan))
    assert lost.state == LOST and lost.n_valid == 0 and "min_markers" in lost.reason
    # Re-acquisition after the loss: a fresh solve (no velocity carried over the gap).
    back = step(stream, 0.1, markers.values[3])
    assert back.state == VALID and back.frame.qdot is None
    # A fit worse than max_marker_rms_m: untrusted, and the next solve starts cold.
    params["max_marker_rms_m"] = 1e-6                          # as `ros2 param set` updates it
    noisy = markers.values[4] + np.random.default_rng(1).normal(0, 0.02, markers.values[4].shape)
    bad = step(stream, 0.2, noisy)
    assert bad.state == UNTRUSTED and bad.marker_rms_m > 1e-6 and "not trusted" in bad.reason
    params["max_marker_rms_m"] = 0.1
    after = step(stream, 0.3, markers.values[5])
    assert after.state == VALID and after.frame.qdot is None
    # Markers in a frame IK does not know: solved, with a warning.
    step(stream, 0.4, markers.values[6], frame_id="camera_optical_frame")
    assert any("camera_optical_frame" in text for _, text in reports)
    stream.close()


def test_min_markers_applies_while_running(trial, tmp_path):
    model, markers = trial
    stream, params, _ = make_stream(model, tmp_path)
    partial = markers.values[0].copy()
    partial[:20] = np.nan                                       # 13 markers left
    assert step(stream, 0.0, partial).state == VALID
    params["min_markers"] = 14
    stream.apply_parameter("min_markers", 14)
    assert stream.ik.min_markers == 14
    assert step(stream, 0.1, partial).state == LOST
    stream.apply_parameter("calibration_buffer_s", 3.0)
    assert stream.calibrator.settings.buffer_s == 3.0
    stream.close()


def test_time_jump_restarts_the_solve(trial, tmp_path):
    model, markers = trial
    stream, _, _ = make_stream(model, tmp_path)
    for i in range(4):
        step(stream, float(markers.time[i]), markers.values[i])
    again = step(stream, float(markers.time[0]), markers.values[0])   # the source looped
    assert again.state == VALID and again.frame.qdot is None
    stream.close()


def test_missing_model_file_is_a_clear_error(tmp_path):
    params = load_config().params("ik_node", {"model_path": str(tmp_path / "nope.osim"), "auto_calibrate": False})
    with pytest.raises(Sam4dcapError, match="model_path.*file not found"):
        IKStream(params)


def test_generated_model_is_built_once_into_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SAM4DCAP_CACHE", str(tmp_path / "cache"))
    path = generated_model_path(height_m=1.7, mass_kg=65.0, marker_set="blazepose33")
    assert path.is_file() and path.is_relative_to(tmp_path / "cache")
    stamp = path.stat().st_mtime_ns
    assert generated_model_path(height_m=1.7, mass_kg=65.0, marker_set="blazepose33") == path
    assert path.stat().st_mtime_ns == stamp                                 # reused, not rewritten
    other = generated_model_path(height_m=1.8, mass_kg=65.0, marker_set="blazepose33")
    assert other != path and other.is_file()
    assert not list(path.parent.glob(".*"))                                 # no half-written leftovers
