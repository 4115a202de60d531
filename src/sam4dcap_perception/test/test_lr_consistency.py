"""Left/right repair on a walking model seen by a pinhole camera: injected label swaps (and
front/back confusions) are found and undone offline and live; clean data is left alone."""

from __future__ import annotations

import numpy as np
import opensim
import pytest

from sam4dcap_biomech.markersets import BLAZEPOSE33
from sam4dcap_biomech.model_builder import write_model
from sam4dcap_biomech.synthetic import gait_trajectory, markers_from_coordinates
from sam4dcap_perception.lr_consistency import (CausalLRTracker, LRSettings, consistent_labels, face_in_front,
                                                lr_pairs, mirror_depth, repair_track, repaired_body,
                                                swap_permutation)

SWAPS = list(range(20, 35)) + list(range(50, 56))


@pytest.fixture(scope="module")
def seen(tmp_path_factory):
    """(pixels (N,33,2), hip-centred camera-axes 3D (N,33,3)) of a model walking past an oblique camera."""
    path = write_model(tmp_path_factory.mktemp("lr") / "m.osim", height_m=1.75, mass_kg=70.0)
    coords = gait_trajectory(duration_s=1.5, rate_hz=60.0, height_m=1.75)
    world = markers_from_coordinates(opensim.Model(str(path)), coords, marker_names=BLAZEPOSE33).values
    eye, target = np.array([4.0, 1.0, 3.0]), np.array([0.5, 1.0, 0.0])
    z = (target - eye) / np.linalg.norm(target - eye)
    x = np.cross(z, [0.0, -1.0, 0.0])
    x /= np.linalg.norm(x)
    R = np.stack([x, np.cross(z, x), z])            # world -> camera (x right, y down, z forward)
    cam = (world - eye) @ R.T
    pixels = 1000.0 * cam[..., :2] / cam[..., 2:3] + np.array([540.0, 960.0])
    hips = 0.5 * (cam[:, BLAZEPOSE33.index("left_hip")] + cam[:, BLAZEPOSE33.index("right_hip")])
    return pixels, cam - hips[:, None, :]


def _with_swaps(pixels, frames):
    perm = swap_permutation(BLAZEPOSE33)
    out = pixels.copy()
    out[frames] = pixels[frames][:, perm]
    return out


def test_pairs_cover_every_sided_landmark():
    pairs = lr_pairs(BLAZEPOSE33)
    assert len(pairs) == 16
    assert all(BLAZEPOSE33[a].replace("left", "right") == BLAZEPOSE33[b] for a, b in pairs)


def test_clean_track_is_left_alone(seen):
    pixels, _ = seen
    vis = np.ones(pixels.shape[:2])
    assert not consistent_labels(pixels, vis, np.ones(len(pixels), bool), BLAZEPOSE33).any()
    live = CausalLRTracker(BLAZEPOSE33)
    assert not any(live.push(i / 60.0, p, v) for i, (p, v) in enumerate(zip(pixels, vis)))


def test_injected_swaps_are_found_offline_and_live(seen):
    pixels, _ = seen
    vis = np.ones(pixels.shape[:2])
    swapped_pixels = _with_swaps(pixels, SWAPS)
    found = consistent_labels(swapped_pixels, vis, np.ones(len(pixels), bool), BLAZEPOSE33)
    assert np.flatnonzero(found).tolist() == SWAPS
    repaired, _, _, _ = repair_track(swapped_pixels, np.zeros(pixels.shape[:2] + (3,)), vis, found, BLAZEPOSE33)
    np.testing.assert_allclose(repaired, pixels)
    live = CausalLRTracker(BLAZEPOSE33)
    decisions = [live.push(i / 60.0, p, v) for i, (p, v) in enumerate(zip(swapped_pixels, vis))]
    assert np.flatnonzero(decisions).tolist() == SWAPS


def test_swaps_from_the_first_frame_keep_the_majority_labelling(seen):
    """A trial that starts swapped: the shorter run is the one relabelled."""
    pixels, _ = seen
    vis = np.ones(pixels.shape[:2])
    found = consistent_labels(_with_swaps(pixels, list(range(0, 12))), vis, np.ones(len(pixels), bool), BLAZEPOSE33)
    assert np.flatnonzero(found).tolist() == list(range(12))


def test_switched_off_does_nothing(seen):
    pixels, _ = seen
    vis = np.ones(pixels.shape[:2])
    off = LRSettings(enabled=False)
    assert not consistent_labels(_with_swaps(pixels, SWAPS), vis, np.ones(len(pixels), bool), BLAZEPOSE33, off).any()


def test_front_back_confusion_gets_its_depth_mirrored_back(seen):
    _, body = seen
    perm = swap_permutation(BLAZEPOSE33)
    frame = body[30]
    assert face_in_front(frame, BLAZEPOSE33) > 0
    # The estimator took the body for one facing the other way: labels exchanged and depth mirrored.
    confused = mirror_depth(frame)[perm]
    fixed, mirrored = repaired_body(confused, perm, BLAZEPOSE33)
    assert mirrored
    np.testing.assert_allclose(fixed, frame, atol=1e-12)
    # A plain label swap (3D right, labels exchanged) is only exchanged back.
    fixed, mirrored = repaired_body(frame[perm], perm, BLAZEPOSE33)
    assert not mirrored
    np.testing.assert_allclose(fixed, frame, atol=1e-12)


def test_streaming_markers_repair_swaps_before_the_world_frame(seen):
    """The live marker estimator relabels the swapped frames (flagged in MarkerFrame.extra), so
    their markers match those of the unswapped stream."""
    from sam4dcap_biomech.config import load_config
    from sam4dcap_perception.observations import BodyObservation, CameraIntrinsics
    from sam4dcap_perception.virtual_markers import StreamingMarkerEstimator

    pixels, body = seen
    intrinsics = CameraIntrinsics(width=1080, height=1920, fx=1000.0, fy=1000.0, cx=540.0, cy=960.0)
    params = load_config().params("markers_node", {"subject_height_m": 1.75, "ground_window_s": 0.5})
    perm = swap_permutation(BLAZEPOSE33)

    def run(swaps):
        est = StreamingMarkerEstimator(params, intrinsics)
        frames = []
        for i in range(len(pixels)):
            pix, pts = (pixels[i][perm], body[i][perm]) if i in swaps else (pixels[i], body[i])
            obs = BodyObservation(frame_index=i, time_s=i / 60.0, person_id=1, tracked=True, names=BLAZEPOSE33,
                                  keypoints_2d=pix, keypoints_3d=pts, visibility=np.ones(33), confidence=np.ones(33))
            out = est.push(obs)
            frames += est.take_backlog() + ([out] if out is not None else [])
        return frames

    clean, repaired = run(set()), run(set(SWAPS))
    assert [i for i, f in enumerate(repaired) if f.extra["lr_swapped"]] == SWAPS
    assert not any(f.extra["lr_swapped"] for f in clean)
    np.testing.assert_allclose(np.stack([f.raw for f in repaired]), np.stack([f.raw for f in clean]), atol=1e-6)
