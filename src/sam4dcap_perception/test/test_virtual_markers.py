"""Virtual markers from synthetic observations with a known answer: offline result, missing
frames (NaN + flagged, never zeros), no person, and the streaming estimator (ROS node path)."""

import numpy as np
import pytest
from _synthetic_body import NAMES, Scene

from sam4dcap_biomech.config import load_config
from sam4dcap_biomech.errors import Sam4dcapError
from sam4dcap_perception import world_frame as wf
from sam4dcap_perception.virtual_markers import (StreamingMarkerEstimator, markers_from_observations,
                                                 offline_marker_settings)


def _world_settings() -> dict:
    """The offline world-frame settings the product runs with (config markers_node)."""
    settings = offline_marker_settings(load_config().params("markers_node"))
    settings.pop("world_frame_id")   # these tests check the function's own default frame name
    return settings


@pytest.fixture(scope="module")
def scene():
    return Scene(estimator_scale=1.1, n_frames=180)


def test_offline_markers_match_the_ground_truth(scene):
    res = markers_from_observations(scene.observations(), height_m=scene.height_m, intrinsics=scene.intrinsics,
                                    **_world_settings())
    expected = scene.expected_world()
    assert res.raw.names == NAMES and res.raw.frame == "world" and res.raw.unit == "m"
    assert res.raw.meta["marker_set"] == "blazepose33"
    np.testing.assert_allclose(res.raw.values, expected, atol=0.003)
    # Zero-phase filter: smooth motion (constant speed) passes unchanged, except heel lifts (5 Hz+).
    feet = [NAMES.index(n) for n in ("left_heel", "right_heel")]
    others = [i for i in range(len(NAMES)) if i not in feet]
    np.testing.assert_allclose(res.filtered.values[:, others], expected[:, others], atol=0.003)
    assert res.flags["tracked"].all()
    np.testing.assert_allclose(wf.lowest_foot_height(res.filtered.values, NAMES), 0.0, atol=0.003)
    assert res.world.scale == pytest.approx(1 / 1.1, rel=1e-6)
    # Camera-frame series is the metric camera frame (subject scale).
    np.testing.assert_allclose(res.camera.values, scene.camera, atol=0.003)


def test_missing_frames_are_nan_and_flagged_never_zero(scene):
    gone = list(range(60, 90))          # the person leaves and comes back
    res = markers_from_observations(scene.observations(missing=gone), height_m=scene.height_m,
                                    intrinsics=scene.intrinsics, **_world_settings())
    tracked = res.flags["tracked"]
    assert not tracked[gone].any() and tracked[[i for i in range(scene.time.size) if i not in gone]].all()
    for series in (res.raw, res.filtered, res.camera):
        assert np.isnan(series.values[gone]).all()
        assert np.isfinite(series.values[tracked]).all()
        assert not (series.values[gone] == 0).any()
    assert (res.confidence[gone] == 0).all()
    assert res.quality["tracked_fraction"] == pytest.approx(1 - len(gone) / scene.time.size)
    np.testing.assert_allclose(res.raw.values[tracked], scene.expected_world()[tracked], atol=0.003)


def test_no_person_at_all_is_a_clear_error(scene):
    obs = scene.observations(missing=range(scene.time.size))
    with pytest.raises(Sam4dcapError, match="no person"):
        markers_from_observations(obs, height_m=1.8, intrinsics=scene.intrinsics, **_world_settings())
    with pytest.raises(Sam4dcapError, match="no frames"):
        markers_from_observations([], height_m=1.8, intrinsics=scene.intrinsics, **_world_settings())


def test_streaming_estimator_matches_truth_after_the_ground_window(scene):
    params = load_config().params("markers_node", {"subject_height_m": scene.height_m, "ground_window_s": 1.0,
                                                        "min_travel_m": 0.2})
    est = StreamingMarkerEstimator(params, scene.intrinsics)
    obs = scene.observations(missing=[150, 151, 152])
    outputs = [est.push(o) for o in obs]
    window_frames = int(np.ceil(1.0 * 60)) + 1      # frames 0..60 span the 1 s window
    assert all(o is None for o in outputs[:window_frames - 1])
    assert all(o is not None for o in outputs[window_frames - 1:])
    # The window's earlier frames come afterwards, once, in order.
    backlog = est.take_backlog()
    assert [b.time_s for b in backlog] == [o.time_s for o in obs[:window_frames - 1]]
    assert est.take_backlog() == []
    for i, b in enumerate(backlog):
        np.testing.assert_allclose(b.raw, scene.expected_world()[i], atol=0.005)
    assert est.ready and est.world.frame_id == "opensim_world"
    # The lag budget of the live filter: at most one frame.
    assert est._filter.lag_frames <= 1.0 + 1e-9
    expected = scene.expected_world()
    # World frame from the first second only: a shorter walk, the same answer (x = travel).
    for i in range(window_frames, len(obs)):
        out = outputs[i]
        if i in (150, 151, 152):
            assert not out.tracked and np.isnan(out.positions).all() and np.isnan(out.raw).all()
            assert (out.confidence == 0).all()
            continue
        assert out.tracked and out.names == NAMES and out.frame_id == "opensim_world"
        np.testing.assert_allclose(out.raw, expected[i], atol=0.005)
    # Causal filter on a constant-velocity walk: within a frame's travel of the truth.
    step = np.linalg.norm(np.diff(scene.pelvis, axis=0), axis=1).max()
    hip = NAMES.index("left_hip")
    errs = [np.linalg.norm(outputs[i].positions[hip] - expected[i, hip]) for i in range(window_frames + 10, 150)]
    assert max(errs) <= step + 0.002


def test_streaming_drops_out_of_order_frames(scene):
    params = load_config().params("markers_node", {"subject_height_m": scene.height_m, "ground_window_s": 0.2})
    est = StreamingMarkerEstimator(params, scene.intrinsics)
    obs = scene.observations()
    for o in obs[:30]:
        est.push(o)
    assert est.push(obs[10]) is None          # older than the last one: dropped, no crash
    assert est.push(obs[30]) is not None


def test_streaming_without_a_person_keeps_waiting(scene):
    params = load_config().params("markers_node", {"subject_height_m": scene.height_m, "ground_window_s": 0.2})
    est = StreamingMarkerEstimator(params, scene.intrinsics)
    assert all(est.push(o) is None for o in scene.observations(missing=range(scene.time.size)))
    assert not est.ready and est.take_backlog() == []


def _opencap_observations(scene, *, mesh_scale):
    """OpenCap-43-named observations of the synthetic subject as a mesh backend would send them:
    keypoints_3d in the camera frame (not hip-centred), at the mesh's own scale."""
    from sam4dcap_biomech.markersets import OPENCAP43
    from sam4dcap_perception.observations import BodyObservation

    bp = {n: scene.camera[:, i] for i, n in enumerate(NAMES)}
    lateral = np.array([0.05, 0.0, 0.0])     # camera-x offset: lateral/medial pairs average to the joint
    pts = {}
    for side, s in (("left", "L"), ("right", "r")):
        pts[f"{s}_knee_study"], pts[f"{s}_mknee_study"] = bp[f"{side}_knee"] + lateral, bp[f"{side}_knee"] - lateral
        pts[f"{s}_ankle_study"], pts[f"{s}_mankle_study"] = bp[f"{side}_ankle"] + lateral, bp[f"{side}_ankle"] - lateral
        pts[f"{s}_calc_study"], pts[f"{s}_toe_study"] = bp[f"{side}_heel"], bp[f"{side}_foot_index"]
        pts[f"{s}_shoulder_study"] = bp[f"{side}_shoulder"]
    pts["LHJC_study"], pts["RHJC_study"] = bp["left_hip"], bp["right_hip"]
    rest = (bp["left_hip"] + bp["right_hip"]) / 2
    cam = np.stack([pts.get(n, rest) for n in OPENCAP43], axis=1) * mesh_scale
    K = scene.intrinsics
    pix = np.stack([K.fx * cam[..., 0] / cam[..., 2] + K.cx, K.fy * cam[..., 1] / cam[..., 2] + K.cy], -1)
    ones = np.ones(len(OPENCAP43))
    return [BodyObservation(frame_index=i, time_s=float(t), person_id=1, tracked=True, skeleton="opencap43",
                            names=OPENCAP43, keypoints_2d=pix[i], keypoints_3d=cam[i], visibility=ones,
                            confidence=ones, backend="sam3d", extra={"keypoints_3d_frame": "camera"},
                            camera_translation=np.array([0.1, 0.2, 3.0]))   # already applied, as the backend does
            for i, t in enumerate(scene.time)]


def test_mesh_backend_opencap43_markers(scene):
    res = markers_from_observations(_opencap_observations(scene, mesh_scale=1.05), height_m=scene.height_m,
                                    intrinsics=scene.intrinsics, **_world_settings())
    assert res.raw.meta["marker_set"] == "opencap43" and len(res.raw.names) == 43
    assert res.world.scale == pytest.approx(1 / 1.05, rel=1e-6)
    expected = scene.expected_world()
    for ocap, bp in (("LHJC_study", "left_hip"), ("r_calc_study", "right_heel"), ("L_toe_study", "left_foot_index"),
                     ("r_shoulder_study", "right_shoulder")):
        np.testing.assert_allclose(res.raw.get(ocap), expected[:, NAMES.index(bp)], atol=0.003)
    knee = (res.raw.get("L_knee_study") + res.raw.get("L_mknee_study")) / 2
    np.testing.assert_allclose(knee, expected[:, NAMES.index("left_knee")], atol=0.003)


def test_external_extrinsics_put_markers_in_that_world(scene):
    # The scene's own world (e.g. a mocap lab) given as world<-camera extrinsics: markers come out
    # in it, scaled to the height, with no ground/forward estimation.
    ext = wf.RigidTransform(scene.R_cw.T, scene.camera_position)
    res = markers_from_observations(scene.observations(), height_m=scene.height_m, intrinsics=scene.intrinsics,
                                    **_world_settings(), extrinsics=ext)
    np.testing.assert_allclose(res.raw.values, scene.world, atol=0.003)
    assert res.world.stats == {"extrinsics": "file"}
    assert not res.flags["ground_contact_shift_m"].any()


def _tilted_estimator_observations(scene, tilt_deg):
    """The scene's observations with an estimator that tilts every body `tilt_deg` away from the
    camera (about the camera x axis, through the hip centre), as BlazePose does with a camera
    above the subject; the 2D keypoints stay the true projections."""
    from dataclasses import replace

    from scipy.spatial.transform import Rotation

    R = Rotation.from_euler("x", -tilt_deg, degrees=True).as_matrix()
    return [replace(o, keypoints_3d=o.keypoints_3d @ R.T) for o in scene.observations()]


def test_orientation_correction_undoes_a_tilted_estimator(scene):
    obs = _tilted_estimator_observations(scene, 8.0)
    expected = scene.expected_world()
    res = markers_from_observations(obs, height_m=scene.height_m, intrinsics=scene.intrinsics, **_world_settings())
    assert res.quality["orientation_refined_frames"] == scene.time.size
    assert res.quality["orientation_correction_deg_median"] == pytest.approx(8.0, abs=0.05)
    np.testing.assert_allclose(res.raw.values, expected, atol=0.005)
    true_up_cam = scene.R_cw @ np.array([0.0, 1.0, 0.0])
    up_cam = res.world_from_camera.inverse().rotation @ np.array([0.0, 1.0, 0.0])
    assert np.degrees(np.arccos(np.clip(up_cam @ true_up_cam, -1, 1))) < 0.2
    # Streaming: the same correction, causally smoothed, from the first window on.
    params = load_config().params("markers_node", {"subject_height_m": scene.height_m, "ground_window_s": 1.0,
                                                        "min_travel_m": 0.2})
    est = StreamingMarkerEstimator(params, scene.intrinsics)
    outputs = [est.push(o) for o in obs]
    backlog = est.take_backlog()
    frames = backlog + [o for o in outputs if o is not None]
    assert len(frames) == scene.time.size
    np.testing.assert_allclose(np.stack([f.raw for f in frames]), expected, atol=0.005)
