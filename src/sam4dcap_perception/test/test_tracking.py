"""Auto-prompt and tracking: the box logic on its own, then real frames with two people side by
side (two demo cameras concatenated), a person leaving and re-entering, and an empty scene."""

from dataclasses import dataclass

import cv2
import numpy as np
import pytest

from sam4dcap_perception.blazepose import BlazePoseEstimator
from sam4dcap_perception.observations import Frame
from sam4dcap_perception.person_detector import PersonDetector
from sam4dcap_perception.tracking import PromptTracker, box_iou, prompt_from_box
from sam4dcap_perception.video_source import open_source


@dataclass
class Det:
    box_xyxy: tuple
    score: float


def test_prompt_is_box_plus_centroid():
    p = prompt_from_box((10, 20, 30, 60), 0.8, 1.5, source="auto")
    assert p.box_xyxy == (10, 20, 30, 60) and p.time_s == 1.5 and p.score == 0.8
    np.testing.assert_allclose(p.points, [[20, 40]])
    assert p.labels.tolist() == [1]


def test_box_iou():
    assert box_iou((0, 0, 10, 10), (0, 0, 10, 10)) == pytest.approx(1.0)
    assert box_iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert box_iou((0, 0, 10, 10), (20, 20, 30, 30)) == 0.0


def test_select_best_score_above_threshold_then_relock_near_last_box():
    t = PromptTracker(person_id=7, prompt_min_score=0.5, max_jump=0.5, relock_s=1.0)
    assert t.select([Det((0, 0, 10, 10), 0.49)], 0.0) is None and t.prompt is None
    a, b = Det((0, 0, 100, 200), 0.6), Det((500, 0, 600, 200), 0.9)
    assert t.select([b, a], 0.0) is b and t.prompt.source == "auto" and t.prompt.score == 0.9
    assert t.accept(b.box_xyxy, 0.0)
    # A result that jumps to the other person is rejected (identity switch).
    assert not t.accept(a.box_xyxy, 0.1) and not t.tracking
    # Lost: within relock_s only a detection near the last box may re-prompt ...
    assert t.select([a], 0.3) is None
    near = Det((520, 10, 620, 210), 0.7)
    assert t.select([a, near], 0.3) is near and t.prompt.source == "reprompt"
    assert t.accept(near.box_xyxy, 0.3)
    # ... after relock_s the best-scoring person is taken.
    t.mark_lost()
    assert t.select([a], 0.3 + 1.01) is a and t.person_id == 7 and t.n_prompts == 3


@pytest.fixture(scope="module")
def two_people(pose2sim_demo):
    """0.5 s of cam01 (left) and cam03 (right) side by side: two people in one frame."""
    left = list(open_source(pose2sim_demo / "videos" / "cam01.mp4", end_s=0.5))
    right = list(open_source(pose2sim_demo / "videos" / "cam03.mp4", end_s=0.5))
    frames = [Frame(a.index, a.time_s, np.ascontiguousarray(np.concatenate(
        [a.image, cv2.resize(b.image, (1080, 1920))], axis=1))) for a, b in zip(left, right)]
    return frames, left


def test_detector_sees_both_people(two_people):
    frames, _ = two_people
    det = PersonDetector()
    try:
        found = det.detect(frames[0].image)
    finally:
        det.close()
    assert len(found) == 2
    centres = sorted(d.centroid_xy[0] for d in found)
    assert centres[0] < 1080 < centres[1]


def test_tracking_stays_on_the_prompted_person(two_people):
    frames, left = two_people
    det = PersonDetector()
    best = det.detect(frames[0].image)[0]
    det.close()
    side = "right" if best.centroid_xy[0] > 1080 else "left"
    with BlazePoseEstimator({}) as est:
        obs = [est.process(f) for f in frames]
    assert all(o.tracked for o in obs)
    assert {o.prompt.source for o in obs} == {"auto"} and len({id(o.prompt) for o in obs}) == 1
    for o in obs:
        hips_x = o.keypoints_2d[23:25, 0]
        assert ((hips_x > 1080) if side == "right" else (hips_x < 1080)).all()
        # The mask is of that person only: nothing on the other half.
        other = o.mask[:, :1080] if side == "right" else o.mask[:, 1080:]
        assert not other.any()


def test_other_person_in_view_when_ours_leaves_and_returns(two_people):
    """Ours (the prompted one) leaves for 10 frames while the other stays: no identity switch
    (NaN frames), then a re-prompt on ours when back, same person id."""
    frames, _ = two_people
    det = PersonDetector()
    best = det.detect(frames[0].image)[0]
    det.close()
    ours = slice(1080, 2160) if best.centroid_xy[0] > 1080 else slice(0, 1080)
    seq = []
    for f in frames[:30]:
        img = f.image.copy()
        if 10 <= f.index < 20:
            img[:, ours] = 127                       # our person gone, the other still there
        seq.append(Frame(f.index, f.time_s, img))
    with BlazePoseEstimator({}) as est:
        obs = [est.process(f) for f in seq]
    tracked = [o.tracked for o in obs]
    assert all(tracked[:10]) and not any(tracked[10:20]) and all(tracked[22:30])
    for o in obs[10:20]:
        assert np.isnan(o.keypoints_2d).all() and np.isnan(o.keypoints_3d).all() and not o.mask.any()
    assert obs[29].prompt.source == "reprompt" and obs[29].prompt.time_s >= 20 / 60 - 1e-9
    assert {o.person_id for o in obs} == {1}
    lo, hi = ours.start, ours.stop
    assert all(((o.keypoints_2d[23:25, 0] >= lo) & (o.keypoints_2d[23:25, 0] < hi)).all()
               for o in obs if o.tracked)


def test_person_leaving_and_reentering_single(pose2sim_demo):
    frames = list(open_source(pose2sim_demo / "videos" / "cam02.mp4", end_s=0.5))
    with BlazePoseEstimator({}) as est:
        obs = []
        for f in frames:
            img = f.image if not 8 <= f.index < 16 else np.full_like(f.image, 90)
            obs.append(est.process(Frame(f.index, f.time_s, img)))
    tracked = [o.tracked for o in obs]
    assert all(tracked[:8]) and not any(tracked[8:16]) and sum(tracked[16:]) >= len(tracked[16:]) - 1
    assert obs[10].extra["reason"] == "tracked person not found"
    assert obs[-1].prompt.source == "reprompt" and obs[0].prompt.source == "auto"


def test_prompted_person_kept_when_a_higher_scoring_one_walks_in(two_people):
    """Prompt on the only person in view; then a second person appears whose detection score
    is higher: crop-and-track stays on the prompted one (no re-prompt, no switch)."""
    frames, _ = two_people
    det = PersonDetector()
    found = det.detect(frames[0].image)
    det.close()
    best, other = found[0], found[1]
    assert best.score > other.score
    keep = slice(0, 1080) if other.centroid_xy[0] < 1080 else slice(1080, 2160)   # the weaker one
    seq = []
    for f in frames[:30]:
        img = f.image.copy()
        if f.index < 5:                                # only the weaker person in view at first
            hide = slice(1080, 2160) if keep.start == 0 else slice(0, 1080)
            img[:, hide] = 127
        seq.append(Frame(f.index, f.time_s, img))
    with BlazePoseEstimator({}) as est:
        obs = [est.process(f) for f in seq]
    assert all(o.tracked for o in obs)
    assert all(o.prompt is obs[0].prompt for o in obs) and obs[0].prompt.source == "auto"
    for o in obs:
        hips_x = o.keypoints_2d[23:25, 0]
        assert ((hips_x >= keep.start) & (hips_x < keep.stop)).all()


class _CountingDetector:
    """The estimator's own PersonDetector, with the frames it ran on recorded (not replaced)."""

    def __init__(self, est):
        self.frames, self._detect, self._est = [], est.detector.detect, est
        est.detector.detect = self

    def __call__(self, image):
        self.frames.append(self._est.n_frames - 1)
        return self._detect(image)


def test_detector_runs_only_when_tracking_needs_it(pose2sim_demo):
    """One person, blank frames 20-29 (lost), back from 30. With people_scan_hz=5 the detector
    runs on the first frame, every 0.2 s while the person is followed by its own landmarks, and
    on every frame while the person is lost; the landmarks are the same as with the detector on
    every frame (people_scan_hz=1000), which the ROI tracking never needed."""
    frames = list(open_source(pose2sim_demo / "videos" / "cam02.mp4", end_s=0.75))
    seq = [f if not 20 <= f.index < 30 else Frame(f.index, f.time_s, np.full_like(f.image, 90)) for f in frames]
    runs = {}
    for hz in (5.0, 1000.0):
        with BlazePoseEstimator({"people_scan_hz": hz}) as est:
            counter = _CountingDetector(est)
            runs[hz] = ([est.process(f) for f in seq], counter.frames, dict(est.scan_reasons))
    obs, scanned, reasons = runs[5.0]
    every, scanned_every, _ = runs[1000.0]
    assert scanned_every == list(range(len(seq)))
    tracked = [o.tracked for o in obs]
    assert all(tracked[:20]) and not any(tracked[20:30]) and sum(tracked[30:]) >= len(seq) - 31
    assert tracked == [o.tracked for o in every]
    # Lost frames: the detector on each one (the subject must be found again).
    assert set(range(20, 30)) <= set(scanned)
    # Followed frames: first frame + periodic scans (60 fps, 5 Hz: every 12th frame) + the
    # frames right after the re-prompt, nothing else.
    followed = [i for i in scanned if tracked[i] and i not in range(20, 31)]
    assert 0 in scanned and len(followed) <= 2 + len(seq) // 12 + 2, (scanned, reasons)
    assert reasons.get("periodic scan", 0) >= 2
    for a, b in zip(obs, every):
        if a.tracked:
            np.testing.assert_allclose(a.keypoints_2d, b.keypoints_2d, atol=0.5)
            assert a.extra["track_id"] == b.extra["track_id"]


def test_person_walking_in_is_found_by_the_periodic_scan(two_people):
    """The subject alone for 10 frames, then a second person appears far from it: between
    scans only the subject is located, the newcomer is found by the next periodic scan (within
    1 / people_scan_hz) and listed on the following frames too (predicted box, detected=False
    between scans); the subject is never switched."""
    frames, _ = two_people
    det = PersonDetector()
    found = det.detect(frames[0].image)
    det.close()
    keep = slice(0, 1080) if found[0].centroid_xy[0] < 1080 else slice(1080, 2160)
    hide = slice(1080, 2160) if keep.start == 0 else slice(0, 1080)
    seq = []
    for f in frames:
        img = f.image.copy()
        if f.index < 10:
            img[:, hide] = 127
        seq.append(Frame(f.index, f.time_s, img))
    hz = 6.0
    with BlazePoseEstimator({"people_scan_hz": hz}) as est:
        counter = _CountingDetector(est)
        obs = [est.process(f) for f in seq]
    assert all(o.tracked for o in obs)
    assert len({o.extra["track_id"] for o in obs}) == 1
    assert all(((o.keypoints_2d[23:25, 0] >= keep.start) & (o.keypoints_2d[23:25, 0] < keep.stop)).all() for o in obs)
    first_two = next(i for i, o in enumerate(obs) if len(o.extra["people"]) == 2)
    assert 10 <= first_two <= 10 + round(60 / hz) + 1, first_two
    assert first_two in counter.frames
    later = obs[first_two + 1:]
    assert later and all(len(o.extra["people"]) == 2 for o in later)
    between = [o for o in later if o.frame_index not in counter.frames]
    assert between and all(not seen for o in between for tid, _, _, seen, _ in o.extra["people"]
                           if tid != o.extra["track_id"])
    assert len(counter.frames) < len(seq) / 2
