"""marker_stream.MarkerStream: the markers stage without ROS -- the ground-plane window held back
offline and released in order, NaN while it fills live, the end of stream of a clip shorter
than the window, one output per input (synthetic walk with known world markers)."""

from __future__ import annotations

import numpy as np
import pytest
from _synthetic_body import Scene

from sam4dcap_biomech.config import load_config
from sam4dcap_perception.marker_stream import MarkerStream

WINDOW_S = 1.0


@pytest.fixture(scope="module")
def scene():
    return Scene(estimator_scale=1.1, n_frames=120)


def make_stream(scene, *, offline, window_s=WINDOW_S, intrinsics=True):
    params = load_config().params("markers_node", {"subject_height_m": scene.height_m, "ground_window_s": window_s,
                                                   "min_travel_m": 0.2})
    reports = []
    stream = MarkerStream(params, report=lambda level, text, key=None: reports.append((level, text)))
    stream.offline = offline
    if intrinsics:
        stream.set_intrinsics(scene.intrinsics)
    return stream, reports


def ns(obs) -> int:
    return int(round(obs.time_s * 1e9))


def feed(stream, observations):
    """Push each observation as the node does; returns (step, finished outputs) per input."""
    out = []
    for i, o in enumerate(observations):
        step = stream.push(("stamp", i), ns(o), o, 1, now_s=float(i))
        out.append((step, stream.consumed(ns(o))))
    return out


def test_offline_window_is_held_then_released_in_order(scene):
    stream, _ = make_stream(scene, offline=True)
    obs = scene.observations()
    steps = feed(stream, obs)
    window = int(np.ceil(WINDOW_S * 60))                 # frames 0..60 span the window
    assert all(s.hold and not s.outputs for s, _ in steps[:window])
    released = steps[window][0]
    assert not released.hold
    # The held frames and this one, once, in capture order, with their own stamps.
    assert [o.stamp for o in released.outputs] == [("stamp", i) for i in range(window + 1)]
    expected = scene.expected_world()
    for i, o in enumerate(released.outputs):
        assert o.frame.tracked and o.person_id == 1
        np.testing.assert_allclose(o.frame.raw, expected[i], atol=0.005)
    # Then exactly one output per input.
    for i in range(window + 1, len(obs)):
        step, finished = steps[i]
        assert [o.stamp for o in step.outputs] == [("stamp", i)] and not finished
        np.testing.assert_allclose(step.outputs[0].frame.raw, expected[i], atol=0.005)
    assert stream.world is not None and not stream.holding


def test_live_window_goes_out_as_nan_when_it_arrives(scene):
    stream, _ = make_stream(scene, offline=False)
    steps = feed(stream, scene.observations())
    window = int(np.ceil(WINDOW_S * 60))
    assert all(len(s.outputs) == 1 and not s.hold for s, _ in steps)
    for i, (step, _) in enumerate(steps):
        frame = step.outputs[0].frame
        assert step.outputs[0].stamp == ("stamp", i)
        if i < window:
            assert not frame.tracked and np.isnan(frame.positions).all() and (frame.confidence == 0).all()
        else:
            assert frame.tracked and np.isfinite(frame.positions).all()


def test_clip_shorter_than_the_window_is_finished_at_end_of_stream(scene):
    stream, reports = make_stream(scene, offline=True, window_s=2.5)    # the clip is 2 s
    obs = scene.observations()
    steps = feed(stream, obs[:-1])
    assert all(s.hold and not f for s, f in steps)
    # The end of stream arrives before the last frame's keypoints: nothing yet...
    assert stream.end_of_stream(ns(obs[-1])) == []
    # ...the last frame then finishes the stream: every frame, in order, in a world frame.
    step = stream.push(("stamp", len(obs) - 1), ns(obs[-1]), obs[-1], 1, now_s=0.0)
    assert step.hold
    finished = stream.consumed(ns(obs[-1]))
    assert [o.stamp for o in finished] == [("stamp", i) for i in range(len(obs))]
    assert all(o.frame.tracked for o in finished[1:]), "markers from the clip's own world frame"
    np.testing.assert_allclose(finished[-1].frame.raw, scene.expected_world()[-1], atol=0.02)
    assert stream.world is not None and not stream.holding
    assert any("clip shorter than ground_window_s" in text for _, text in reports)


def test_end_of_stream_timeout_releases_what_is_held(scene):
    stream, _ = make_stream(scene, offline=True, window_s=2.5)
    obs = scene.observations()
    feed(stream, obs[:50])
    assert stream.end_of_stream(ns(obs[-1])) == []                 # the last frame never comes
    assert stream.check_eos_timeout(49.0 + stream.EOS_FLUSH_TIMEOUT_S - 1) == []
    released = stream.check_eos_timeout(49.0 + stream.EOS_FLUSH_TIMEOUT_S + 1)
    assert [o.stamp for o in released] == [("stamp", i) for i in range(50)]


def test_keypoints_before_camera_info_give_nan_markers_not_a_crash(scene):
    stream, reports = make_stream(scene, offline=False, intrinsics=False)
    step = stream.push(("stamp", 0), 0, scene.observations()[0], 1, now_s=0.0)
    assert len(step.outputs) == 1 and np.isnan(step.outputs[0].frame.positions).all()
    assert reports and "before any camera_info" in reports[0][1]
