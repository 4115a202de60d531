"""frame_flow.FrameFlow: the source's offline flow-control protocol without ROS (acks as
watermarks, held frames, silent and restarted stages, the wait), driven by real threads."""

from __future__ import annotations

import threading
import time

import pytest

from sam4dcap_biomech.errors import Sam4dcapError
from sam4dcap_biomech.ros.topics import HELD_SUFFIX
from sam4dcap_perception.frame_flow import FrameFlow

NODES = ("body_estimator_node", "markers_node", "ik_node", "recorder_node")
MS = 1_000_000


def flow_with(n_frames: int, nodes=NODES) -> FrameFlow:
    flow = FrameFlow(nodes, offline=True)
    for i in range(n_frames):
        flow.published(i * 10 * MS)
    return flow


def test_acks_are_watermarks_per_node():
    flow = flow_with(5)
    assert [flow.pending(n) for n in NODES] == [5, 5, 5, 5]
    flow.on_progress("ik_node", 20 * MS)            # frames 0, 1, 2 done
    flow.on_progress("ik_node", 10 * MS)            # an older ack changes nothing
    assert flow.pending("ik_node") == 2
    flow.on_progress("body_estimator_node", 40 * MS)
    assert flow.pending("body_estimator_node") == 0
    assert flow.waiting(1) == ["markers_node", "ik_node", "recorder_node"]
    flow.on_progress("some_other_node", 40 * MS)    # not waited for: ignored
    assert "some_other_node" not in flow.acked_ns


def test_frames_held_by_markers_node_are_not_in_flight_to_ik_but_are_to_the_recorder():
    flow = flow_with(6)
    flow.on_progress("markers_node" + HELD_SUFFIX, 30 * MS)   # it holds frames 0..3 back
    assert flow.pending("ik_node") == 2                          # only 4, 5 can reach it
    assert flow.pending("recorder_node") == 6                    # it reads the images itself
    assert flow.pending("body_estimator_node") == 6              # upstream of the holder
    assert flow.pending("ik_node", count_held=True) == 6         # the final wait needs every ack


def test_restart_writes_off_the_backlog_downstream_too():
    flow = flow_with(4)
    flow.on_progress("body_estimator_node", 10 * MS)
    assert flow.write_off("markers_node") == 4
    # ik_node (and the recorder, which records the markers) never get those frames either;
    # the body estimator upstream still acks its own.
    assert flow.pending("markers_node") == 0 and flow.pending("ik_node") == 0
    assert flow.pending("recorder_node") == 0
    assert flow.pending("body_estimator_node") == 2


def test_wait_returns_when_another_thread_acks():
    flow = flow_with(3, nodes=("ik_node",))

    def ack_later():
        time.sleep(0.3)
        flow.on_progress("ik_node", 20 * MS)

    threading.Thread(target=ack_later).start()
    t0 = time.monotonic()
    checked = []
    flow.wait_for_acks(0, 10.0, check_restarts=checked.append)
    assert 0.25 < time.monotonic() - t0 < 5.0
    assert flow.pending("ik_node", count_held=True) == 0
    assert checked and checked[0] == ["ik_node"]                  # asked which stages restarted


def test_silent_node_is_dropped_after_the_timeout_and_reported():
    flow = flow_with(2, nodes=("ik_node", "markers_node"))
    flow.on_progress("markers_node", 10 * MS)
    dropped = []
    t0 = time.monotonic()
    flow.wait_for_acks(0, 0.3, on_dropped=lambda name, timeout_s, pending: dropped.append((name, pending)))
    assert 0.25 < time.monotonic() - t0 < 5.0
    assert dropped == [("ik_node", 2)]
    assert "ik_node" not in flow.acked_ns and "markers_node" in flow.acked_ns


def test_stop_ends_the_wait_with_an_error():
    flow = flow_with(2, nodes=("ik_node",))
    stop = threading.Event()
    threading.Timer(0.2, stop.set).start()
    with pytest.raises(Sam4dcapError, match="shut down"):
        flow.wait_for_acks(0, 60.0, stopped=stop.is_set)


def test_realtime_source_waits_for_nobody():
    flow = FrameFlow(NODES, offline=False)
    flow.published(0)
    assert flow.acked_ns == {} and flow.waiting(0) == []
    flow.wait_for_acks(0, 0.1)   # returns at once
