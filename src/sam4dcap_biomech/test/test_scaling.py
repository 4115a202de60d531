"""Static-window detection and ScaleTool scaling of the project's model to a synthetic subject."""

from __future__ import annotations

import numpy as np
import pytest

from sam4dcap_biomech import model_builder, synthetic
from sam4dcap_biomech.errors import Sam4dcapError
from sam4dcap_biomech.scaling import MEASUREMENTS, read_scale_factors, scale_model
from sam4dcap_biomech.static_window import find_static_window
from sam4dcap_biomech.timeseries import TimeSeries
from sam4dcap_biomech.trc import write_trc

GENERIC_H, SUBJECT_H, SUBJECT_KG = 1.70, 1.82, 80.0


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    import opensim

    tmp = tmp_path_factory.mktemp("scaling")
    generic = tmp / "generic.osim"
    model_builder.write_model(generic, height_m=GENERIC_H, mass_kg=70.0, markers="blazepose33")
    subject = model_builder.build_model(height_m=SUBJECT_H, mass_kg=SUBJECT_KG, markers="blazepose33")
    return tmp, generic, opensim.Model(subject)


def _moving_then_still(subject_model, *, still_from_s, still_to_s, noise_m=0.0):
    """Walk, pause (stand frozen mid-stride) from still_from_s to still_to_s, walk on: the gait's
    clock stops during the pause, so positions stay continuous."""
    duration_s, rate_hz = 2.0, 60.0
    pause = still_to_s - still_from_s
    gait = synthetic.gait_trajectory(duration_s=duration_s, rate_hz=rate_hz, height_m=SUBJECT_H)
    t = gait.time
    clock = np.where(t < still_from_s, t, np.where(t <= still_to_s, still_from_s, t - pause))
    values = np.stack([np.interp(clock, t, gait.values[:, k]) for k in range(len(gait.names))], axis=1)
    coords = gait.with_values(values)
    markers = synthetic.markers_from_coordinates(subject_model, coords)
    return synthetic.add_marker_noise(markers, sigma_m=noise_m, seed=3) if noise_m else markers


@pytest.mark.parametrize("noise_m", [0.0, 0.005])
def test_static_window_found_inside_motion(models, noise_m):
    _, _, subject = models
    markers = _moving_then_still(subject, still_from_s=0.8, still_to_s=1.4, noise_m=noise_m)
    start, end = find_static_window(markers, min_duration_s=0.3, max_speed_m_s=0.08)
    assert end - start >= 0.3 - 1e-9
    # The window lies within the still part, up to the 2 Hz smoothing's spread of the motion edges.
    assert 0.8 - 0.05 <= start and end <= 1.4 + 0.05, (start, end)


def test_no_static_window_is_a_clear_error(models):
    _, _, subject = models
    coords = synthetic.gait_trajectory(duration_s=1.5, rate_hz=60.0, height_m=SUBJECT_H)
    walking = synthetic.markers_from_coordinates(subject, coords)
    with pytest.raises(Sam4dcapError, match=r"no static window.*m/s"):
        find_static_window(walking, min_duration_s=0.3, max_speed_m_s=0.05)
    short = walking.frames(slice(0, 10))
    with pytest.raises(Sam4dcapError, match="shorter than"):
        find_static_window(short, min_duration_s=0.3)


def test_static_window_defaults_from_config(models):
    from sam4dcap_biomech.config import load_config

    _, _, subject = models
    markers = _moving_then_still(subject, still_from_s=0.5, still_to_s=1.5)
    params = load_config().params("ik_node")
    start, end = find_static_window(markers)
    assert end - start >= params["static_min_duration_s"] - 1e-9


def test_scale_model_to_subject(models):
    """A 1.70 m generic model scaled to a 1.82 m subject: every measured body x 1.82/1.70."""
    import opensim

    tmp, generic, subject = models
    markers = _moving_then_still(subject, still_from_s=0.6, still_to_s=1.6)
    out = tmp / "scaled.osim"
    result = scale_model(generic, markers, height_m=SUBJECT_H, mass_kg=SUBJECT_KG, out_path=out)
    assert out.is_file() and result.scaled_model == out
    assert 0.55 <= result.window[0] and result.window[1] <= 1.65
    expected = SUBJECT_H / GENERIC_H
    measured = {b for _, bodies in MEASUREMENTS["blazepose33"].values() for b in bodies}
    assert measured <= set(result.scale_factors)
    for body in measured:
        np.testing.assert_allclose(result.scale_factors[body], expected, rtol=0.01, err_msg=body)
    assert read_scale_factors(result.extra["scale_file"]) == result.scale_factors
    scaled = opensim.Model(str(out))
    state = scaled.initSystem()
    assert scaled.getTotalMass(state) == pytest.approx(SUBJECT_KG, rel=1e-6)
    # Noise-free markers of a uniformly taller subject: the scaled model fits them to < 5 mm.
    assert result.marker_rms_m < 0.005
    # preserve_mass_distribution: segment mass shares unchanged.
    generic_model = opensim.Model(str(generic))
    generic_model.initSystem()
    gm = generic_model.getBodySet().get("femur_r").getMass() / generic_model.getTotalMass(generic_model.initSystem())
    sm = scaled.getBodySet().get("femur_r").getMass() / SUBJECT_KG
    assert sm == pytest.approx(gm, rel=1e-6)


def test_scale_from_trc_file_with_explicit_window(models, tmp_path):
    _, generic, subject = models
    markers = _moving_then_still(subject, still_from_s=0.6, still_to_s=1.6)
    trc = write_trc(tmp_path / "static.trc", markers, units="mm")
    result = scale_model(generic, trc, height_m=SUBJECT_H, mass_kg=SUBJECT_KG, out_path=tmp_path / "s.osim",
                         window=(0.7, 1.5))
    assert result.window == (0.7, 1.5)
    np.testing.assert_allclose(result.scale_factors["femur_r"], SUBJECT_H / GENERIC_H, rtol=0.01)


def test_scaling_bad_input(models, tmp_path):
    _, generic, subject = models
    markers = _moving_then_still(subject, still_from_s=0.6, still_to_s=1.6)
    with pytest.raises(Sam4dcapError, match="height"):
        scale_model(generic, markers, height_m=182.0, mass_kg=80.0, out_path=tmp_path / "x.osim")
    without_knees = markers.select([n for n in markers.names if "knee" not in n])
    with pytest.raises(Sam4dcapError, match="left_knee|right_knee"):
        scale_model(generic, without_knees, height_m=SUBJECT_H, mass_kg=80.0, out_path=tmp_path / "x.osim")
    renamed = TimeSeries(markers.time, tuple(f"P{i}" for i in range(len(markers.names))), markers.values)
    with pytest.raises(Sam4dcapError, match="misnamed"):
        scale_model(generic, renamed, height_m=SUBJECT_H, mass_kg=80.0, out_path=tmp_path / "x.osim")
    with pytest.raises(Sam4dcapError, match="outside the trial"):
        scale_model(generic, markers, height_m=SUBJECT_H, mass_kg=80.0, out_path=tmp_path / "x.osim",
                    window=(5.0, 6.0))
    with pytest.raises(Sam4dcapError, match="millimetres"):
        scale_model(generic, markers.with_values(markers.values * 1000), height_m=SUBJECT_H, mass_kg=80.0,
                    out_path=tmp_path / "x.osim")
