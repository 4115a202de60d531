"""body_estimator_node with two people (Pose2Sim multi-person demo, cam04), in its own process:
REP-155 style /humans/bodies/tracked and per-body ROIs, and a user Prompt that re-targets the
tracker from the bystander (auto) to the performer. Labels (by looking at the frames): the
performer's hips are at x < 620 px, the bystander's at x > 640 px in these frames."""

import sys
from pathlib import Path

import numpy as np
import pytest

from sam4dcap_biomech.ros.msg_conversion import sec_to_stamp
from sam4dcap_biomech.ros.node_plumbing import RESULTS_QOS
from sam4dcap_perception import graph
from sam4dcap_perception.nodes.image_conversion import numpy_to_image
from sam4dcap_perception.video_source import open_source

# The biomech tests' node harness (start a console-script node, probe it from a test node).
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "sam4dcap_biomech" / "test"))
from ros_harness import Harness, start_node, stop_node  # noqa: E402

N_FRAMES, PROMPT_AFTER = 30, 10


@pytest.fixture(scope="module")
def run(pose2sim_multi, tmp_path_factory):
    from geometry_msgs.msg import Point
    from sensor_msgs.msg import Image

    from sam4dcap_msgs.msg import BodyKeypoints, IdsList, NormalizedRegionOfInterest2D, Prompt

    frames = list(open_source(pose2sim_multi / "videos" / "cam04.mp4"))[:N_FRAMES]
    log = tmp_path_factory.mktemp("people_node") / "body_estimator_node.log"
    proc = start_node("body_estimator_node", log_path=log)
    h = Harness("people_probe")
    try:
        image_pub = h.node.create_publisher(Image, "/camera/image_raw", RESULTS_QOS)
        prompt_pub = h.node.create_publisher(Prompt, graph.PROMPT_TOPIC, RESULTS_QOS)
        keypoints = h.collect(BodyKeypoints, "/sam4dcap/keypoints")
        tracked = h.collect(IdsList, graph.TRACKED_BODIES_TOPIC)
        rois = h.collect(NormalizedRegionOfInterest2D, graph.body_roi_topic(1))
        h.wait_for_subscriber(image_pub, 60.0, procs=[proc])
        h.wait_for_subscriber(prompt_pub, 60.0, procs=[proc])
        for i, f in enumerate(frames):
            if i == PROMPT_AFTER:
                # The user clicks on the performer (left person) in the last image.
                prompt_pub.publish(Prompt(stamp=sec_to_stamp(frames[i - 1].time_s), source="user",
                                          points=[Point(x=430.0, y=950.0)], point_labels=[1]))
                h.spin_until(lambda: False, 1.0, procs=[proc])
            image_pub.publish(numpy_to_image(f.image, "rgb8", stamp=sec_to_stamp(f.time_s), frame_id="camera"))
            assert h.spin_until(lambda: len(keypoints) > i, 60.0, procs=[proc]), f"no keypoints for frame {i}"   # noqa: B023 (called in this iteration)
        h.spin_until(lambda: len(tracked) >= N_FRAMES and len(rois) >= N_FRAMES, 10.0, procs=[proc])
        yield {"keypoints": list(keypoints), "tracked": list(tracked), "rois": list(rois), "log": log}
    finally:
        h.close()
        stop_node(proc)


def _hips_x(msg):
    pts = msg.keypoints_2d
    return 0.5 * (pts[23].x + pts[24].x)


def test_prompt_retargets_from_the_bystander_to_the_performer(run):
    kp = run["keypoints"]
    assert len(kp) == N_FRAMES
    before = [_hips_x(m) for m in kp[:PROMPT_AFTER] if np.isfinite(_hips_x(m))]
    after = [_hips_x(m) for m in kp[PROMPT_AFTER + 1:] if np.isfinite(_hips_x(m))]
    assert len(before) >= PROMPT_AFTER - 1 and all(x > 640 for x in before)      # auto: the bystander
    assert len(after) >= N_FRAMES - PROMPT_AFTER - 3 and all(x < 620 for x in after)  # the performer
    assert {m.person_id for m in kp} == {1}                       # the subject stays body1
    assert "following person" in run["log"].read_text()


def test_every_tracked_person_is_listed_with_a_region(run):
    tracked = run["tracked"]
    assert len(tracked) == N_FRAMES
    assert sum(set(m.ids) >= {"body1", "body2"} for m in tracked) >= 0.8 * N_FRAMES
    assert all(len(set(m.ids)) == len(m.ids) for m in tracked)
    rois = run["rois"]
    assert len(rois) >= 0.9 * N_FRAMES
    for m in rois:
        assert 0.0 <= m.xmin < m.xmax <= 1.0 and 0.0 <= m.ymin < m.ymax <= 1.0 and 0.0 <= m.c <= 1.0
    # body1 is the subject: its region follows the bystander first, the performer after the prompt.
    centre = [0.5 * (m.xmin + m.xmax) * 1088 for m in rois]
    assert np.median(centre[:PROMPT_AFTER - 1]) > 600 and np.median(centre[PROMPT_AFTER + 2:]) < 600
