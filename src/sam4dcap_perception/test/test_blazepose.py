"""Embedded BlazePose estimator on the real Pose2Sim demo clips (all four cameras), plus odd
frames: blank, tiny, huge, grayscale, 16-bit, size changes; and model selection."""

import cv2
import numpy as np
import pytest

from sam4dcap_biomech.errors import MissingDependencyError, Sam4dcapError
from sam4dcap_biomech.markersets import BLAZEPOSE33
from sam4dcap_perception.blazepose import BlazePoseEstimator, roi_from_detection
from sam4dcap_perception.body_estimator import create_estimator
from sam4dcap_perception.observations import Frame
from sam4dcap_perception.person_detector import PersonDetector
from sam4dcap_perception.video_source import open_source

L = {n: i for i, n in enumerate(BLAZEPOSE33)}
PAIRS = [("left_shoulder", "right_shoulder"), ("left_elbow", "right_elbow"), ("left_hip", "right_hip"),
         ("left_knee", "right_knee"), ("left_ankle", "right_ankle")]


@pytest.fixture(scope="session")
def demo_observations(pose2sim_demo):
    """Every frame of cam01..cam04 through one estimator each (cached for the session)."""
    out = {}
    for cam in ("cam01", "cam02", "cam03", "cam04"):
        src = open_source(pose2sim_demo / "videos" / f"{cam}.mp4")
        est = create_estimator({})
        try:
            out[cam] = ([est.process(f) for f in src], src)
        finally:
            est.close()
    return out


@pytest.fixture(scope="module")
def first_frames(demo_video):
    return list(open_source(demo_video, end_s=0.25))


@pytest.mark.parametrize("cam", ["cam01", "cam02", "cam03", "cam04"])
def test_person_found_in_95_percent_of_frames(demo_observations, cam):
    obs, src = demo_observations[cam]
    assert len(obs) == 100
    assert sum(o.tracked for o in obs) >= 95


@pytest.mark.parametrize("cam", ["cam01", "cam03"])
def test_observation_contents_are_consistent(demo_observations, cam):
    obs, src = demo_observations[cam]
    on_total = n_total = 0
    for o in obs:
        if not o.tracked:
            continue
        assert o.names == BLAZEPOSE33 and o.skeleton == "blazepose33" and o.backend == "blazepose"
        assert o.keypoints_2d.shape == (33, 2) and o.keypoints_3d.shape == (33, 3)
        assert np.isfinite(o.keypoints_2d).all() and np.isfinite(o.keypoints_3d).all()
        assert ((0 <= o.confidence) & (o.confidence <= 1)).all() and ((0 <= o.visibility) & (o.visibility <= 1)).all()
        assert o.mask.shape == (src.height, src.width) and o.mask.dtype == np.uint8
        assert set(np.unique(o.mask)) <= {0, 255}
        # The mask covers the body: the confident shoulder/hip/knee landmarks fall on mask
        # pixels (within 5 px: joint centres of thin limbs sit near the silhouette edge).
        sel = [L[n] for n in ("left_shoulder", "right_shoulder", "left_hip", "right_hip",
                              "left_knee", "right_knee") if o.visibility[L[n]] > 0.9]
        xy = np.round(o.keypoints_2d[sel]).astype(int)
        inside = (xy[:, 0] >= 0) & (xy[:, 0] < src.width) & (xy[:, 1] >= 0) & (xy[:, 1] < src.height)
        near = cv2.dilate(o.mask, np.ones((11, 11), np.uint8))
        on_mask = near[xy[inside, 1], xy[inside, 0]] == 255
        on_total += on_mask.sum()
        n_total += on_mask.size
        # Mask area is a person-sized part of the frame, not the frame.
        assert 0.01 < (o.mask > 0).mean() < 0.5
        x0, y0, x1, y1 = o.box_xyxy
        assert x0 < o.keypoints_2d[L["left_hip"], 0] + 1 and o.keypoints_2d[L["left_hip"], 0] < x1 + 1
        assert o.prompt is obs[0].prompt and o.prompt.source == "auto" and o.person_id == 1
    assert n_total > 300 and on_total / n_total >= 0.97, on_total / n_total


def test_prompt_is_best_box_and_its_centroid(demo_observations):
    obs, src = demo_observations["cam01"]
    p = obs[0].prompt
    assert p.time_s == 0.0 and p.score >= 0.5
    x0, y0, x1, y1 = p.box_xyxy
    np.testing.assert_allclose(p.points, [[(x0 + x1) / 2, (y0 + y1) / 2]])
    assert p.labels.tolist() == [1]
    hips = obs[0].keypoints_2d[[L["left_hip"], L["right_hip"]]]
    assert ((hips[:, 0] > x0) & (hips[:, 0] < x1) & (hips[:, 1] > y0) & (hips[:, 1] < y1)).all()


def test_world_landmarks_are_metric_hip_centred_camera_axes(demo_observations):
    def seg(k3, a, b):
        return np.linalg.norm(k3[L[a]] - k3[L[b]])

    for cam in ("cam01", "cam02", "cam03", "cam04"):
        obs, _ = demo_observations[cam]
        tracked = [o for o in obs if o.tracked]
        # Metres, adult body (medians: single frames of a side view compress depth).
        shoulders = np.median([seg(o.keypoints_3d, "left_shoulder", "right_shoulder") for o in tracked])
        leg = np.median([seg(o.keypoints_3d, "left_hip", "left_knee") + seg(o.keypoints_3d, "left_knee", "left_ankle")
                         for o in tracked])
        assert 0.2 < shoulders < 0.5 and 0.65 < leg < 1.1, (cam, shoulders, leg)
        for o in obs[::10]:
            if not o.tracked:
                continue
            k3, k2 = o.keypoints_3d, o.keypoints_2d
            mid_hip = 0.5 * (k3[L["left_hip"]] + k3[L["right_hip"]])
            assert np.linalg.norm(mid_hip) < 0.03                         # origin between the hips
            # y down like the image: ankles below shoulders in both.
            assert k3[L["left_ankle"], 1] > k3[L["left_shoulder"], 1] + 0.5
            assert k2[L["left_ankle"], 1] > k2[L["left_shoulder"], 1]
            # x right like the image, for a clearly separated left/right pair.
            dx2 = k2[L["left_shoulder"], 0] - k2[L["right_shoulder"], 0]
            if abs(dx2) > 40:
                assert np.sign(k3[L["left_shoulder"], 0] - k3[L["right_shoulder"], 0]) == np.sign(dx2)


def test_z_points_away_from_the_camera(demo_observations):
    """Side view (cam03): the hidden (far) limb of each pair has the larger z."""
    obs, _ = demo_observations["cam03"]
    agree = total = 0
    for o in obs:
        if not o.tracked:
            continue
        for a, b in PAIRS:
            dv = o.visibility[L[a]] - o.visibility[L[b]]
            if abs(dv) > 0.3:
                total += 1
                agree += np.sign(o.keypoints_3d[L[a], 2] - o.keypoints_3d[L[b], 2]) == -np.sign(dv)
    assert total >= 50 and agree / total >= 0.9


def test_roi_from_detection_matches_mediapipe_subgraph(first_frames):
    """Our detection->ROI is MediaPipe's PoseDetectionToRoi, run here as its own graph."""
    from google.protobuf import text_format
    from mediapipe.framework import calculator_pb2
    from mediapipe.python.solution_base import SolutionBase

    graph = SolutionBase(graph_config=text_format.Parse("""
        input_stream: "IMAGE:image"
        output_stream: "DETECTIONS:detections"
        output_stream: "ROI:roi"
        node { calculator: "PoseDetectionCpu" input_stream: "IMAGE:image" output_stream: "DETECTIONS:detections" }
        node { calculator: "SplitDetectionVectorCalculator" input_stream: "detections" output_stream: "detection"
          options { [mediapipe.SplitVectorCalculatorOptions.ext] { ranges { begin: 0 end: 1 } element_only: true } } }
        node { calculator: "ImagePropertiesCalculator" input_stream: "IMAGE_CPU:image" output_stream: "SIZE:size" }
        node { calculator: "PoseDetectionToRoi" input_stream: "DETECTION:detection" input_stream: "IMAGE_SIZE:size"
          output_stream: "ROI:roi" }
        """, calculator_pb2.CalculatorGraphConfig()), outputs=["detections", "roi"])
    det = PersonDetector()
    try:
        for f in first_frames[::5]:
            ref = graph.process({"image": f.image}).roi
            mine = roi_from_detection(det.detect(f.image)[0], f.image.shape[1], f.image.shape[0])
            for field in ("x_center", "y_center", "width", "height", "rotation"):
                assert getattr(mine, field) == pytest.approx(getattr(ref, field), abs=1e-5), field
    finally:
        det.close()
        graph.close()


def test_no_person_gives_nan_not_zeros():
    with BlazePoseEstimator({}) as est:
        o = est.process(Frame(0, 0.0, np.full((480, 640, 3), 127, np.uint8)))
    assert not o.tracked and o.prompt is None and o.box_xyxy is None
    for a in (o.keypoints_2d, o.keypoints_3d, o.confidence, o.visibility):
        assert np.isnan(a).all()
    assert o.keypoints_2d.shape == (33, 2) and o.keypoints_3d.shape == (33, 3)
    assert o.mask.shape == (480, 640) and not o.mask.any()
    assert o.extra["reason"] == "no person"


def test_odd_frames_tiny_huge_gray_16bit_and_size_changes(first_frames):
    f0 = first_frames[0].image
    with BlazePoseEstimator({}) as est:
        ref = est.process(Frame(0, 0.0, f0))
        assert ref.tracked
        tiny = est.process(Frame(1, 1 / 60, np.zeros((8, 8, 3), np.uint8)))
        assert not tiny.tracked and "smaller than" in tiny.extra["reason"] and np.isnan(tiny.keypoints_2d).all()
        gray = cv2.cvtColor(first_frames[2].image, cv2.COLOR_RGB2GRAY)
        o = est.process(Frame(2, 2 / 60, gray))
        assert o.tracked and o.mask.shape == gray.shape
        o = est.process(Frame(3, 3 / 60, first_frames[3].image.astype(np.uint16) * 257))
        assert o.tracked
        half = np.ascontiguousarray(cv2.resize(first_frames[4].image, (540, 960)))  # size change mid-stream
        o = est.process(Frame(4, 4 / 60, half))
        assert o.tracked and o.mask.shape == (960, 540)
    # Huge (over MAX_SIDE_PX): downscaled for the model, outputs in full-resolution pixels.
    big = np.ascontiguousarray(cv2.resize(f0, (2430, 4320), interpolation=cv2.INTER_LINEAR))
    with BlazePoseEstimator({}) as est:
        o = est.process(Frame(0, 0.0, big))
    assert o.tracked and o.mask.shape == (4320, 2430)
    scale = 2430 / 1080
    good = ref.visibility > 0.9
    err = np.linalg.norm((o.keypoints_2d[good] + 0.5) / scale - (ref.keypoints_2d[good] + 0.5), axis=1)
    assert np.median(err) < 6.0, np.median(err)


def test_only_the_bundled_model_is_selectable():
    for model in ("lite", "heavy"):
        with pytest.raises(MissingDependencyError, match="download"):
            create_estimator({"blazepose_model": model})
    with pytest.raises(Sam4dcapError, match="choose one of"):
        create_estimator({"blazepose_model": "huge"})
    with pytest.raises(Sam4dcapError, match="unknown parameter"):
        create_estimator({"model_complexity": 2})


def test_repeated_backwards_or_missing_times_do_not_break_tracking(first_frames):
    """MediaPipe needs increasing packet times; replays and unknown times must not kill it."""
    times = [0.0, 0.0, -1.0, float("nan"), 0.05, 0.04]
    with BlazePoseEstimator({}) as est:
        obs = [est.process(Frame(i, t, first_frames[i].image)) for i, t in enumerate(times)]
    assert all(o.tracked for o in obs)
    assert [o.time_s for o in obs][:3] == [0.0, 0.0, -1.0]      # reported as given
