"""camera_fit on the project's model: projection derivatives, recovery of known joint angles from
2D keypoints when the 3D markers carry a depth error, 1 vs 2 cameras, confidence, stance."""

from __future__ import annotations

import numpy as np
import pytest

from sam4dcap_biomech import model_builder, synthetic
from sam4dcap_biomech.camera_fit import (CameraView, FitSettings, PinholeCamera, detect_stance, fit_trial,
                                         huber_weights)
from sam4dcap_biomech.config import load_config
from sam4dcap_biomech.errors import Sam4dcapError
from sam4dcap_biomech.markersets import BLAZEPOSE33
from sam4dcap_biomech.streaming_ik import StreamingIK, solve_trial

SAGITTAL = ["hip_flexion_r", "knee_angle_r", "ankle_angle_r", "hip_flexion_l", "knee_angle_l", "ankle_angle_l"]
K = np.array([[1600.0, 0.0, 540.0], [0.0, 1600.0, 960.0], [0.0, 0.0, 1.0]])


def camera_at(center, target, name="cam"):
    z = np.asarray(target, float) - center
    z /= np.linalg.norm(z)
    x = np.cross(z, [0.0, 1.0, 0.0])
    x /= np.linalg.norm(x)
    R = np.stack([x, np.cross(z, x), z])
    return PinholeCamera(name, K, R, -R @ center)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("cfit") / "model.osim"
    model_builder.write_model(path, height_m=1.75, mass_kg=70.0, markers="blazepose33")
    return path


@pytest.fixture(scope="module")
def squat(model_path):
    import opensim

    coords = synthetic.squat_trajectory(duration_s=0.6, rate_hz=30.0, height_m=1.75, depth_deg=70.0, period_s=1.2)
    markers = synthetic.markers_from_coordinates(opensim.Model(str(model_path)), coords,
                                                 marker_names=list(BLAZEPOSE33))
    return coords, markers


@pytest.fixture(scope="module")
def settings():
    return FitSettings.from_params(load_config().params("camera_fit"))


def depth_biased(markers, cam: PinholeCamera, bias_m: np.ndarray):
    """The markers moved along each one's line of sight from `cam` (their projections unchanged)."""
    rays = markers.values - cam.center
    rays /= np.linalg.norm(rays, axis=-1, keepdims=True)
    return markers.with_values(markers.values + rays * bias_m)


def rms_deg(q, truth, names, coordinate_names):
    idx = [coordinate_names.index(n) for n in names]
    return np.rad2deg(np.sqrt(np.mean((q[:, idx] - truth.select(names).values) ** 2, axis=0)))


def test_projection_jacobian_matches_finite_differences():
    cam = camera_at(np.array([3.0, 1.2, 1.0]), [0.0, 0.9, 0.0])
    pts = np.array([[0.1, 1.0, -0.2], [-0.3, 0.2, 0.4]])
    pix, jac, depth = cam.project_with_jacobian(pts)
    np.testing.assert_allclose(pix, cam.project(pts), atol=1e-9)
    assert np.all(depth > 2.0)
    h = 1e-6
    for a in range(3):
        d = np.zeros(3)
        d[a] = h
        fd = (cam.project(pts + d) - cam.project(pts - d)) / (2 * h)
        np.testing.assert_allclose(jac[:, :, a], fd, rtol=1e-5, atol=1e-4)


def test_huber_weights_downweight_large_points_only():
    r = np.array([0.3, 0.4, 3.0, 4.0, 10.0])
    is_point = np.array([True, True, True, True, False])
    w = huber_weights(r, is_point, 2.0)
    np.testing.assert_allclose(w, [1.0, 1.0, 0.4, 0.4, 1.0])


def test_fit_recovers_angles_that_depth_errors_spoil(model_path, squat, settings):
    """One camera from the side: 3D markers with a per-marker depth error up to 12 cm (like
    monocular estimates) spoil marker IK; the fit to the exact 2D keypoints recovers the angles."""
    coords, markers = squat
    cam = camera_at(np.array([0.3, 1.2, 4.0]), [0.0, 0.9, 0.0])
    rng = np.random.default_rng(3)
    bias = rng.uniform(-0.12, 0.12, size=(1, markers.values.shape[1], 1)) * np.ones((markers.n_frames, 1, 1))
    noisy = depth_biased(markers, cam, bias)
    pixels = cam.project(markers.values)
    names = list(BLAZEPOSE33)
    ik = StreamingIK(str(model_path), names, min_markers=3)
    old = np.array([f.q for f in solve_trial(ik, noisy)[0]])
    ik.reset()
    view = CameraView(cam, tuple(names), pixels, np.ones(pixels.shape[:2]))
    res = fit_trial(ik, noisy, [view], settings)
    old_err = rms_deg(old, coords, SAGITTAL, ik.coordinate_names)
    new_err = rms_deg(res.coordinates.values, coords, SAGITTAL, ik.coordinate_names)
    # What stays is mostly the marker set's lumbar prior (toward 0; the squat bends the lumbar
    # spine by up to 7 deg), carried into pelvis tilt and hip flexion.
    assert new_err.mean() < 0.65 * old_err.mean(), (old_err, new_err)
    assert new_err.max() < 8.5, new_err
    assert np.nanmedian(res.reprojection_px) < 3.0
    # Confidence: the unobserved toe joint (no BlazePose marker moves it) is 0; the knee is seen.
    conf = dict(zip(res.coordinates.names, res.confidence.T))
    assert np.all(conf["mtp_angle_r"] == 0.0)
    assert np.median(conf["knee_angle_r"]) > 0.3
    assert res.confidence.shape == res.coordinates.values.shape


def test_two_cameras_fit_better_than_one(model_path, squat, settings):
    """The same fitter with N cameras: a second (frontal) view pins what the side view cannot.
    (The 3D prior here is the side view's, 15 cm off in depth, not a triangulation: markers
    are not placed, which would build that bias into the model.)"""
    import dataclasses

    settings = dataclasses.replace(settings, marker_placement_min_views=0)
    coords, markers = squat
    side = camera_at(np.array([0.3, 1.2, 4.0]), [0.0, 0.9, 0.0], "side")
    front = camera_at(np.array([4.0, 1.2, 0.3]), [0.0, 0.9, 0.0], "front")
    rng = np.random.default_rng(5)
    noisy = depth_biased(markers, side, rng.uniform(-0.15, 0.15, size=(1, markers.values.shape[1], 1)))
    names = tuple(BLAZEPOSE33)
    ik = StreamingIK(str(model_path), list(names), min_markers=3)
    views = [CameraView(c, names, c.project(markers.values) + rng.normal(0, 3.0, markers.values.shape[:2] + (2,)),
                        np.ones(markers.values.shape[:2])) for c in (side, front)]
    lower = SAGITTAL + ["hip_adduction_r", "hip_adduction_l", "pelvis_list"]
    one = rms_deg(fit_trial(ik, noisy, views[:1], settings).coordinates.values, coords, lower, ik.coordinate_names)
    ik.reset()
    two_fit = fit_trial(ik, noisy, views, settings)
    two = rms_deg(two_fit.coordinates.values, coords, lower, ik.coordinate_names)
    assert two.mean() < one.mean(), (one, two)
    assert two.max() < 4.5, two
    assert two_fit.reprojection_px.shape[0] == 2


def test_stance_found_on_planted_feet(squat):
    _, markers = squat
    names = list(BLAZEPOSE33)
    feet = [names.index(n) for n in ("left_heel", "left_foot_index", "right_heel", "right_foot_index")]
    stance, ground = detect_stance(markers.values, markers.time, feet, speed_m_s=0.3, height_m=0.05)
    assert stance.mean() > 0.9           # squats keep the feet flat
    assert np.all(np.abs(ground) < 0.1)


def test_views_with_wrong_frame_count_are_refused(model_path, squat, settings):
    _, markers = squat
    cam = camera_at(np.array([0.3, 1.2, 4.0]), [0.0, 0.9, 0.0])
    names = tuple(BLAZEPOSE33)
    ik = StreamingIK(str(model_path), list(names), min_markers=3)
    view = CameraView(cam, names, cam.project(markers.values)[:5], np.ones((5, len(names))))
    with pytest.raises(Sam4dcapError, match="frames of keypoints"):
        fit_trial(ik, markers, [view], settings)


def test_streaming_fit_follows_the_2d_keypoints_causally(model_path, squat, settings):
    """Live: frame by frame, warm-started, the fit to exact 2D keypoints beats marker IK on
    depth-biased 3D markers, and reports a per-coordinate confidence."""
    from sam4dcap_biomech.camera_fit import StreamingCameraFit

    coords, markers = squat
    cam = camera_at(np.array([0.3, 1.2, 4.0]), [0.0, 0.9, 0.0])
    rng = np.random.default_rng(3)
    noisy = depth_biased(markers, cam, rng.uniform(-0.12, 0.12, size=(1, markers.values.shape[1], 1)))
    names = list(BLAZEPOSE33)
    pixels = cam.project(markers.values)
    ik = StreamingIK(str(model_path), names, min_markers=3)
    old = np.array([f.q for f in solve_trial(ik, noisy)[0]])
    ik.reset()
    live = StreamingCameraFit(ik, [cam], settings)
    frames = [live.solve(float(t), noisy.values[i], [pixels[i]], [np.ones(len(names))])
              for i, t in enumerate(markers.time)]
    assert all(f is not None for f in frames)
    q = np.array([f.q for f in frames])
    old_err = rms_deg(old, coords, SAGITTAL, ik.coordinate_names)
    new_err = rms_deg(q, coords, SAGITTAL, ik.coordinate_names)
    assert new_err.mean() < 0.75 * old_err.mean(), (old_err, new_err)
    assert frames[-1].qdot is not None and frames[0].cold_start
    conf = dict(zip(frames[-1].coordinate_names, frames[-1].confidence))
    assert conf["mtp_angle_r"] == 0.0 and conf["knee_angle_r"] > 0.3


def test_live_camera_fit_pairs_keypoints_by_stamp_and_waits_for_the_camera(model_path, squat, settings):
    """The ik_node's adapter: None (marker IK then) until intrinsics, camera pose and the frame's
    keypoints are known; keypoints in another order than the markers are matched by name."""
    from sam4dcap_biomech.camera_fit import LiveCameraFit

    coords, markers = squat
    cam = camera_at(np.array([0.3, 1.2, 4.0]), [0.0, 0.9, 0.0])
    names = list(BLAZEPOSE33)
    ik = StreamingIK(str(model_path), names, min_markers=3)
    live = LiveCameraFit(settings)
    pixels = cam.project(markers.values)
    order = np.arange(len(names))[::-1]            # keypoints arrive in reverse name order
    for i, t in enumerate(markers.time):
        live.add_keypoints(float(t), [names[k] for k in order], pixels[i, order], np.ones(len(names)))
    assert live.solve(ik, float(markers.time[0]), markers.values[0]) is None       # no camera yet
    live.set_intrinsics(cam.K)
    R_wc = cam.R.T
    live.set_world_from_camera(R_wc, cam.center)
    assert live.solve(ik, 123.0, markers.values[0]) is None                       # no keypoints at t
    frames = [live.solve(ik, float(t), markers.values[i]) for i, t in enumerate(markers.time[1:], start=1)]
    assert all(f is not None for f in frames)
    err = rms_deg(np.array([f.q for f in frames]), coords.frames(slice(1, None)), SAGITTAL, ik.coordinate_names)
    assert err.max() < 5.0, err
    assert frames[-1].marker_rms_m < 0.01        # reprojection errors at the markers' depth, exact keypoints


def test_foot_prior_weight_lets_the_2d_feet_win_over_a_short_3d_foot(model_path, squat, settings):
    """A monocular estimator's 3D foot is short (toe pulled toward the heel); with the foot points'
    3D prior weighted down (foot_prior_weight) the ankle follows the 2D keypoints instead."""
    import dataclasses

    coords, markers = squat
    cam = camera_at(np.array([4.0, 1.2, 0.3]), [0.0, 0.9, 0.0])     # from the front: the foot along the view
    short = markers.values.copy()
    names = list(BLAZEPOSE33)
    for side in ("left", "right"):
        heel, toe = names.index(f"{side}_heel"), names.index(f"{side}_foot_index")
        short[:, toe] = short[:, heel] + 0.5 * (short[:, toe] - short[:, heel])
    pixels = cam.project(markers.values)
    view = CameraView(cam, tuple(names), pixels, np.ones(pixels.shape[:2]))
    ankles = ["ankle_angle_r", "ankle_angle_l"]
    err = {}
    for weight in (1.0, 0.2):
        ik = StreamingIK(str(model_path), names, min_markers=3)
        res = fit_trial(ik, markers.with_values(short), [view], dataclasses.replace(settings, foot_prior_weight=weight))
        err[weight] = rms_deg(res.coordinates.values, coords, ankles, ik.coordinate_names).mean()
    assert err[0.2] < 0.8 * err[1.0], err


def test_two_cameras_place_misplaced_markers_and_one_camera_does_not(model_path, squat, settings, tmp_path):
    """Markers off their landmarks on the model (the knee keypoint 3 cm forward on the thigh, the
    whole face 5 cm forward and 3 cm up, the ankle 2 cm low): with two cameras the fit finds the
    offsets from the 2D keypoints, puts the markers back and fits the joint angles better
    than with the markers left where they were; one camera places nothing (its offsets would
    absorb depth errors)."""
    import dataclasses

    from sam4dcap_biomech.marker_placement import write_placed_model

    coords, markers = squat
    face = [n for n in BLAZEPOSE33 if any(p in n for p in ("eye", "ear", "nose", "mouth"))]
    moved = {"left_knee": np.array([0.03, 0.0, 0.0]), "right_ankle": np.array([0.0, -0.02, 0.0]),
             **{n: np.array([0.05, 0.03, 0.0]) for n in face}}
    wrong = write_placed_model(model_path, moved, tmp_path / "misplaced.osim")
    side = camera_at(np.array([0.3, 1.2, 4.0]), [0.0, 0.9, 0.0], "side")
    front = camera_at(np.array([4.0, 1.2, 0.3]), [0.0, 0.9, 0.0], "front")
    rng = np.random.default_rng(11)
    names = tuple(BLAZEPOSE33)
    views = [CameraView(c, names, c.project(markers.values) + rng.normal(0, 2.0, markers.values.shape[:2] + (2,)),
                        np.ones(markers.values.shape[:2])) for c in (side, front)]
    # Several cameras: the 3D markers are a triangulation (centimetre noise, no depth bias).
    noisy = markers.with_values(markers.values + rng.normal(0, 0.01, markers.values.shape))
    lower = SAGITTAL + ["hip_adduction_r", "hip_adduction_l"]
    placed = fit_trial(StreamingIK(str(wrong), list(names), min_markers=3), noisy, views, settings)
    kept = fit_trial(StreamingIK(str(wrong), list(names), min_markers=3), noisy, views,
                     dataclasses.replace(settings, marker_placement_min_views=0))
    assert placed.info["markers_placed"] > 0 and kept.info["markers_placed"] == 0
    np.testing.assert_allclose(placed.marker_offsets_m["right_ankle"], -moved["right_ankle"], atol=0.01)
    # The face: its common shift found to within 1.5 cm of 5.8 (the pull toward the model's place
    # and the removal of the face's turn about the head share what the keypoints show).
    for name in ("nose", "left_ear"):
        np.testing.assert_allclose(placed.marker_offsets_m[name], -moved[name], atol=0.015, err_msg=name)
    # The knee keypoint forward on the thigh is nearly a hip + knee flexion pair (the chain keeps
    # the ankle): the keypoints leave it shared between pose and placement, found in part.
    assert -0.03 <= placed.marker_offsets_m["left_knee"][0] < -0.4 * 0.03, placed.marker_offsets_m["left_knee"]
    # Markers in their places stay within a centimetre of them; the hand's three points (a few
    # centimetres apart, a few pixels in the image) within two.
    hand = ("pinky", "index", "thumb")
    stayed = {n: np.linalg.norm(d) for n, d in placed.marker_offsets_m.items() if n not in moved}
    assert max(v for n, v in stayed.items() if not n.endswith(hand)) < 0.01, stayed
    assert max(v for n, v in stayed.items() if n.endswith(hand)) < 0.02, stayed
    err_placed = rms_deg(placed.coordinates.values, coords, lower, list(placed.coordinates.names))
    err_kept = rms_deg(kept.coordinates.values, coords, lower, list(kept.coordinates.names))
    assert err_placed.mean() < err_kept.mean(), (err_kept, err_placed)
    assert np.nanmedian(placed.reprojection_px) < np.nanmedian(kept.reprojection_px)
    one = fit_trial(StreamingIK(str(wrong), list(names), min_markers=3), noisy, views[:1], settings)
    assert one.info["markers_placed"] == 0 and one.marker_offsets_m == {}


def test_forearm_rotation_no_keypoint_sees_rests_mid_prone(model_path, squat, settings):
    """Without hand keypoints nothing shows the forearm's rotation: the fit leaves it at the
    resting posture (model_builder.RESTING_POSE: mid-prone), not at full supination, the default
    pose's value at the end of its range, and says it does not know it (confidence ~0)."""
    from sam4dcap_biomech.model_builder import RESTING_POSE

    _, markers = squat
    cam = camera_at(np.array([0.3, 1.2, 4.0]), [0.0, 0.9, 0.0])
    names = tuple(BLAZEPOSE33)
    conf = np.ones(markers.values.shape[:2])
    hands = [i for i, n in enumerate(names) if n.endswith(("pinky", "index", "thumb"))]
    conf[:, hands] = 0.0
    res = fit_trial(StreamingIK(str(model_path), list(names), min_markers=3), markers,
                    [CameraView(cam, names, cam.project(markers.values), conf)], settings)
    for side in ("r", "l"):
        q = res.coordinates.get(f"pro_sup_{side}")
        np.testing.assert_allclose(q, RESTING_POSE[f"pro_sup_{side}"], atol=np.deg2rad(10.0))
        assert np.all(~res.at_limit[:, list(res.coordinates.names).index(f"pro_sup_{side}")])
        assert np.median(res.confidence[:, list(res.coordinates.names).index(f"pro_sup_{side}")]) < 0.5
