"""Trial calibration (segment proportions from any motion, applied with the ScaleTool) and the
live calibration state machine, on synthetic subjects of known proportions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import opensim
import pytest

from sam4dcap_biomech import model_builder, synthetic
from sam4dcap_biomech.errors import Sam4dcapError
from sam4dcap_biomech.live_calibration import LiveCalibrationSettings, LiveCalibrator
from sam4dcap_biomech.markersets import BLAZEPOSE33
from sam4dcap_biomech.scaling import scale_model_manual
from sam4dcap_biomech.streaming_ik import StreamingIK
from sam4dcap_biomech.trial_calibration import (TrialCalibrationSettings, scale_model_from_trial,
                                                usable_frames)

GENERIC_H = 1.70
# The subject: the generic model with longer thighs, shorter shanks, a longer trunk and arms.
TRUE_FACTORS = {"femur_r": 1.08, "femur_l": 1.08, "tibia_r": 0.94, "tibia_l": 0.94, "torso": 1.05,
                "humerus_r": 1.04, "humerus_l": 1.04}


@pytest.fixture(scope="module")
def subject(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("trial_calibration")
    generic = model_builder.write_model(tmp / "generic.osim", height_m=GENERIC_H, mass_kg=70.0)
    truth = scale_model_manual(generic, TRUE_FACTORS, mass_kg=75.0, out_path=tmp / "subject.osim")
    model = opensim.Model(str(truth.scaled_model))
    height = model_builder.standing_height_m(model)
    gait = synthetic.gait_trajectory(duration_s=2.0, rate_hz=60.0, height_m=height)
    markers = synthetic.markers_from_coordinates(model, gait, marker_names=BLAZEPOSE33)
    return tmp, generic, height, markers


def test_recovers_known_segment_scales_from_walking(subject):
    tmp, generic, height, markers = subject
    noisy = synthetic.add_marker_noise(markers, sigma_m=0.005, seed=1)
    result = scale_model_from_trial(generic, noisy, height_m=height, mass_kg=75.0, out_path=tmp / "cal.osim")
    calib = result.extra["trial_calibration"]
    assert calib.frames_used == markers.n_frames
    for body in ("femur_r", "femur_l", "tibia_r", "tibia_l", "humerus_r", "humerus_l"):
        assert calib.body_factors[body] == pytest.approx(TRUE_FACTORS[body], abs=0.02), body
    assert calib.body_factors["pelvis"] == pytest.approx(1.0, abs=0.03)
    # The scaled model stands at the given height (within a millimetre).
    scaled = opensim.Model(str(result.scaled_model))
    assert model_builder.standing_height_m(scaled) == pytest.approx(height, abs=1e-3)
    # and fits the walking markers far better than the height-sized model does.
    rms = {}
    for name, path in (("generic", generic), ("calibrated", result.scaled_model)):
        ik = StreamingIK(str(path), BLAZEPOSE33, regularize=False)
        rms[name] = np.median([ik.solve(t, v).marker_rms_m for t, v in zip(markers.time[::6], markers.values[::6])])
    assert rms["calibrated"] < 0.5 * rms["generic"], rms


def test_only_confident_whole_body_frames_count(subject):
    tmp, generic, height, markers = subject
    conf = np.ones(markers.values.shape[:2])
    conf[::2, :] = 0.1                         # every other frame: the body is barely seen
    frames, _ = usable_frames(markers, BLAZEPOSE33, conf, TrialCalibrationSettings())
    assert frames.sum() == markers.n_frames // 2
    # Garbage lengths in the unconfident frames do not move the result.
    bad = markers.values.copy()
    bad[::2] *= 1.5
    result = scale_model_from_trial(generic, markers.with_values(bad), height_m=height, mass_kg=75.0,
                                    out_path=tmp / "conf.osim", confidence=conf)
    assert result.extra["trial_calibration"].body_factors["femur_r"] == pytest.approx(1.08, abs=0.01)


def test_too_little_body_is_a_clear_error(subject):
    tmp, generic, height, markers = subject
    conf = np.zeros(markers.values.shape[:2])
    with pytest.raises(Sam4dcapError, match="frames show the body"):
        scale_model_from_trial(generic, markers, height_m=height, mass_kg=75.0, out_path=tmp / "none.osim",
                               confidence=conf)


def test_segment_ratios_are_bounded(subject):
    """A segment the video stretches beyond any body (feet 60 % too long) is held at the bound."""
    tmp, generic, height, markers = subject
    stretched = markers.values.copy()
    for side in ("left", "right"):
        heel, toe = markers.index(f"{side}_heel"), markers.index(f"{side}_foot_index")
        stretched[:, toe] = stretched[:, heel] + 1.6 * (stretched[:, toe] - stretched[:, heel])
    settings = TrialCalibrationSettings(max_deviation=0.2)
    result = scale_model_from_trial(generic, markers.with_values(stretched), height_m=height, mass_kg=75.0,
                                    out_path=tmp / "bounded.osim", settings=settings)
    calib = result.extra["trial_calibration"]
    assert "foot" in calib.bounded
    expected = height / GENERIC_H
    assert calib.segments["foot"].ratio == pytest.approx(expected * 1.2, rel=0.02)


def _settings(tmp: Path, generic: Path, **kw) -> LiveCalibrationSettings:
    return LiveCalibrationSettings(base_model=generic, marker_names=BLAZEPOSE33, marker_set="blazepose33",
                                   height_m=kw.pop("height_m"), mass_kg=75.0, output_dir=tmp / "live", **kw)


def test_live_calibrator_calibrates_once_automatically_then_on_request(subject):
    tmp, generic, height, markers = subject
    made = []

    def make_solver(path):
        made.append(path)
        return ("solver for", path)

    cal = LiveCalibrator(_settings(tmp, generic, height_m=height, auto_min_s=1.0), make_solver)
    assert cal.state == "collecting"
    started = [cal.push(t, v) for t, v in zip(markers.time, markers.values)]
    assert sum(started) == 1
    # It started once the confident frames spanned 1 s.
    first = started.index(True)
    assert markers.time[first] - markers.time[0] == pytest.approx(1.0, abs=1.5 / 60)
    cal._running.result(timeout=120)
    outcome = cal.take_result()
    assert outcome is not None and cal.take_result() is None
    assert outcome.method == "trial" and outcome.model_path.is_absolute() and outcome.model_path.is_file()
    assert outcome.solver == ("solver for", outcome.model_path)
    assert cal.state == "calibrated"
    # Latched: more frames never start another automatic calibration.
    assert not any(cal.push(t + 10.0, v) for t, v in zip(markers.time, markers.values))
    # A request recalibrates (walking only: no still window, so from the whole buffer).
    again = cal.request(height, 75.0).result(timeout=120)
    assert again.method == "trial" and again.details["no_static_window"]
    assert cal.take_result() is again
    with pytest.raises(Sam4dcapError, match="height_m"):
        cal.request(0.2, 75.0)
    cal.close()


def test_live_calibrator_uses_a_still_window_when_there_is_one(subject):
    tmp, generic, height, _ = subject
    model = opensim.Model(str(tmp / "subject.osim"))
    static = synthetic.markers_from_coordinates(
        model, synthetic.static_trajectory(1.0, 60.0, height_m=height), marker_names=BLAZEPOSE33)
    cal = LiveCalibrator(_settings(tmp, generic, height_m=height, auto=False), lambda p: None)
    assert cal.state == "idle"
    with pytest.raises(Sam4dcapError, match="marker frames received"):
        cal.request(height, 75.0)
    for t, v in zip(static.time, static.values):
        assert not cal.push(t, v)
    outcome = cal.request(height, 75.0).result(timeout=120)
    assert outcome.method == "static window" and outcome.marker_rms_m < 0.02
    cal.close()
