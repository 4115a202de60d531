"""The camera fit's per-coordinate confidence on the project's model (real OpenSim, real fit): a
limb whose depth one camera cannot tell (its 3D prior flipped in depth) is flagged where the fit
is wrong, a well-seen one is not; offline and live."""

from __future__ import annotations

import numpy as np
import pytest

from sam4dcap_biomech import synthetic
from sam4dcap_biomech.camera_fit import CameraView, PinholeCamera, StreamingCameraFit, fit_trial
from sam4dcap_biomech.fit_confidence import GATE_CONFIDENCE, combined_confidence, flipped_targets, limb_segments
from sam4dcap_biomech.markersets import BLAZEPOSE33
from sam4dcap_biomech.streaming_ik import StreamingIK

import test_camera_fit as camera_fit_tests

# The camera helper and the model / settings fixtures of test_camera_fit.
camera_at = camera_fit_tests.camera_at
model_path = camera_fit_tests.model_path
settings = camera_fit_tests.settings

NAMES = list(BLAZEPOSE33)
TARGET = (0.0, 0.9, 0.0)


@pytest.fixture(scope="module")
def squat(model_path):
    import opensim

    coords = synthetic.squat_trajectory(duration_s=1.0, rate_hz=30.0, height_m=1.75, depth_deg=70.0, period_s=2.0)
    return coords, synthetic.markers_from_coordinates(opensim.Model(str(model_path)), coords, marker_names=NAMES)


def flipped_prior(markers, cam: PinholeCamera):
    """The 3D markers with the left shank (ankle, heel, toe) flipped in depth about the knee, as
    `cam` sees it: the same pixels, the wrong 3D leg."""
    idx = {n: i for i, n in enumerate(NAMES)}
    values = markers.values.copy()
    for f in range(markers.n_frames):
        values[f] = flipped_targets(values[f], cam.center, idx["left_knee"], [idx["left_ankle"]],
                                    [idx["left_heel"], idx["left_foot_index"]])
    return markers.with_values(values)


def error_deg(q, coords, names, name):
    return np.rad2deg(np.abs(q[:, list(names).index(name)] - coords.get(name)))


def test_flip_keeps_pixels_and_segment_length(squat):
    """The flipped distal joint projects where it did and stays at the segment's length."""
    _, markers = squat
    cam = camera_at(np.array([4.0, 1.0, 0.0]), TARGET)
    segments = {s[0]: s for s in limb_segments(NAMES)}
    assert {"thigh_l", "shank_r", "foot_l", "forearm_r"} <= set(segments)
    _, prox, flip, carry = segments["thigh_l"]
    x = markers.values[10]
    y = flipped_targets(x, cam.center, prox, flip, carry)
    np.testing.assert_allclose(cam.project(y[flip]), cam.project(x[flip]), atol=1e-6)
    assert np.linalg.norm(y[flip[0]] - x[prox]) == pytest.approx(np.linalg.norm(x[flip[0]] - x[prox]))
    assert np.linalg.norm(y[flip[0]] - x[flip[0]]) > 0.05       # the squat's thigh points out of the image
    np.testing.assert_allclose(y[carry] - x[carry], np.repeat((y[flip[0]] - x[flip[0]])[None], len(carry), 0))


def test_confidence_is_low_where_a_depth_flip_made_the_fit_wrong(model_path, squat, settings):
    """Front view, exact 2D keypoints, the 3D prior's left shank flipped in depth: the fit follows
    the prior into the wrong knee; the new confidence flags those frames, the old did not."""
    coords, markers = squat
    cam = camera_at(np.array([4.0, 1.0, 0.0]), TARGET, name="front")
    view = CameraView(cam, tuple(NAMES), cam.project(markers.values), np.ones(markers.values.shape[:2]))
    ik = StreamingIK(str(model_path), NAMES, min_markers=3)
    res = fit_trial(ik, flipped_prior(markers, cam), [view], settings)
    names = res.coordinates.names
    wrong = error_deg(res.coordinates.values, coords, names, "knee_angle_l") > 10.0
    assert wrong.mean() > 0.5, "the flipped prior no longer misleads the fit: the case is not ambiguous"
    conf = dict(zip(names, res.confidence.T))
    old = dict(zip(names, res.local_confidence.T))
    assert np.mean(conf["knee_angle_l"][wrong] < GATE_CONFIDENCE) > 0.75          # 0.84 measured
    assert np.median(conf["knee_angle_l"][wrong]) < np.median(old["knee_angle_l"][wrong])
    assert np.all((res.confidence >= 0) & (res.confidence <= 1))
    assert conf["mtp_angle_r"].max() == 0.0                 # no keypoint moves the toe joint


def test_confidence_stays_high_where_one_view_determines_the_angles(model_path, squat, settings):
    """Side view: the legs move in the image plane, no flip fits the pixels: knees and hips pass the gate."""
    coords, markers = squat
    cam = camera_at(np.array([0.3, 1.0, 4.0]), TARGET, name="side")
    rng = np.random.default_rng(4)
    rays = markers.values - cam.center
    rays /= np.linalg.norm(rays, axis=-1, keepdims=True)
    noisy = markers.with_values(markers.values + rays * rng.uniform(-0.06, 0.06, size=(1, len(NAMES), 1)))
    view = CameraView(cam, tuple(NAMES), cam.project(markers.values), np.ones(markers.values.shape[:2]))
    ik = StreamingIK(str(model_path), NAMES, min_markers=3)
    res = fit_trial(ik, noisy, [view], settings)
    conf = dict(zip(res.coordinates.names, res.confidence.T))
    for name in ("knee_angle_r", "knee_angle_l", "hip_flexion_r", "hip_flexion_l"):
        assert error_deg(res.coordinates.values, coords, res.coordinates.names, name).mean() < 5.0, name
        assert np.mean(conf[name] >= GATE_CONFIDENCE) > 0.7, (name, np.median(conf[name]))   # 0.90-1.0 measured


def test_live_fit_flags_the_flipped_knee_and_passes_the_side_view(model_path, squat, settings):
    coords, markers = squat
    out = {}
    for label, center, prior in (("front", [4.0, 1.0, 0.0], "flipped"), ("side", [0.3, 1.0, 4.0], "exact")):
        cam = camera_at(np.array(center), TARGET, name=label)
        m = flipped_prior(markers, cam) if prior == "flipped" else markers
        pixels = cam.project(markers.values)
        ik = StreamingIK(str(model_path), NAMES, min_markers=3)
        live = StreamingCameraFit(ik, [cam], settings)
        frames = [live.solve(float(t), m.values[i], [pixels[i]], [np.ones(len(NAMES))])
                  for i, t in enumerate(markers.time)]
        assert all(f is not None for f in frames)
        q = np.array([f.q for f in frames])
        conf = np.array([f.confidence for f in frames])
        k = list(ik.coordinate_names).index("knee_angle_l")
        out[label] = (error_deg(q, coords, ik.coordinate_names, "knee_angle_l"), conf[:, k])
    err, conf = out["front"]
    wrong = err > 10.0
    assert wrong.mean() > 0.5
    assert np.mean(conf[wrong] < GATE_CONFIDENCE) > 0.7
    err, conf = out["side"]
    assert err.mean() < 5.0 and np.mean(conf >= GATE_CONFIDENCE) > 0.8


def test_combined_confidence_maps_expected_error_to_0_1():
    rot = np.array([True, True, False, True])
    c = combined_confidence(np.array([0.0, np.deg2rad(5.0), 0.05, np.inf]), np.zeros(4), rot)
    np.testing.assert_allclose(c, [1.0, 0.5, 0.5, 0.0])
    assert combined_confidence(np.zeros(1), np.array([np.deg2rad(20.0) ** 2]), rot[:1])[0] < 0.1


def test_pinned_msq_is_the_pull_past_a_held_bound_only():
    from sam4dcap_biomech.fit_confidence import pinned_msq

    q = np.array([0.0, 0.0, 1.0, 0.5, 0.2])
    lo = np.array([0.0, 0.0, -np.inf, 0.0, 0.0])
    hi = np.array([1.0, 1.0, 1.0, np.inf, 1.0])
    grad = np.array([2.0, -2.0, -0.5, 3.0, 1.0])       # at lo pulled out, at lo pulled in, at hi pulled out, free, off
    curv = np.array([4.0, 4.0, 0.25, 1.0, 1.0])
    np.testing.assert_allclose(pinned_msq(q, lo, hi, grad, curv, tol=1e-6), [0.25, 0.0, 4.0, 0.0, 0.0])


def test_a_coordinate_held_at_its_range_limit_is_not_trusted(model_path, squat, settings, tmp_path):
    """A model whose knees bend only to 30 deg fitted to a 70 deg squat (exact 2D keypoints, two
    cameras): in the frames where the knee is held at 30 deg the fit's knee is the bound, not
    the squat, and its confidence falls below the gate; in the frames the squat stays under
    25 deg the knee is trusted."""
    import dataclasses

    import opensim

    coords, markers = squat
    stiff = opensim.Model(str(model_path))
    for side in ("r", "l"):
        stiff.getCoordinateSet().get(f"knee_angle_{side}").setRangeMax(np.deg2rad(30.0))
    stiff.finalizeConnections()
    stiff.printToXML(str(tmp_path / "stiff.osim"))
    cams = [camera_at(np.array([0.3, 1.2, 4.0]), TARGET, "side"), camera_at(np.array([4.0, 1.2, 0.3]), TARGET, "front")]
    views = [CameraView(c, tuple(NAMES), c.project(markers.values), np.ones(markers.values.shape[:2])) for c in cams]
    res = fit_trial(StreamingIK(str(tmp_path / "stiff.osim"), NAMES, min_markers=3), markers, views,
                    dataclasses.replace(settings, marker_placement_min_views=0))
    k = list(res.coordinates.names).index("knee_angle_r")
    truth = np.rad2deg(coords.get("knee_angle_r"))
    held = res.at_limit[:, k] & (truth > 45.0)
    free = truth < 25.0
    assert held.sum() >= 5 and free.sum() >= 5
    assert np.all(res.confidence[held, k] < GATE_CONFIDENCE), res.confidence[held, k]
    assert np.all(res.limit_rms[free, k] == 0.0)
    assert np.median(res.confidence[free, k]) > GATE_CONFIDENCE
