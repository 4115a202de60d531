"""Skipped live frames are counted from the publisher's sequence numbers (newest frame wins)."""

import time

import rclpy
from rclpy.executors import SingleThreadedExecutor
from std_msgs.msg import Header

from sam4dcap_biomech.ros.node_plumbing import LIVE_IMAGE_QOS
from sam4dcap_perception.frame_skips import SkipCounter


def test_skip_counter_counts_gaps_per_publisher():
    c = SkipCounter()
    assert [c.observe(s, "a") for s in (5, 6, 9, 10)] == [0, 0, 2, 0]
    assert c.observe(1, "b") == 0 and c.observe(4, "b") == 2     # another publisher: its own count
    assert c.observe(2, "a") == 0                                 # a restarted publisher starts over
    assert c.observe(None) == 0
    assert c.received == 8 and c.skipped == 4
    assert abs(c.skipped_share - 4 / 12) < 1e-12


def test_a_busy_subscriber_gets_the_newest_message_and_counts_the_rest():
    """Real rclpy: a keep-last-1 best-effort reader (the live image QoS) that does not take
    messages while 9 are published receives only the newest; the 8 in between are counted from
    MessageInfo's publication sequence numbers, as the body estimator node does."""
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    try:
        node = rclpy.create_node("test_frame_skips", context=ctx)
        counter, got = SkipCounter(), []

        def on_msg(msg, info):
            counter.observe(info.get("publication_sequence_number"), info.get("publisher_gid"))
            got.append(msg.frame_id)

        node.create_subscription(Header, "frames", on_msg, LIVE_IMAGE_QOS)
        pub = node.create_publisher(Header, "frames", LIVE_IMAGE_QOS)
        executor = SingleThreadedExecutor(context=ctx)
        executor.add_node(node)

        def spin_until(cond, timeout_s=10.0):
            deadline = time.monotonic() + timeout_s
            while not cond() and time.monotonic() < deadline:
                executor.spin_once(timeout_sec=0.02)
            return cond()

        assert spin_until(lambda: pub.get_subscription_count() > 0)
        pub.publish(Header(frame_id="0"))
        assert spin_until(lambda: got == ["0"])
        for i in range(1, 10):
            pub.publish(Header(frame_id=str(i)))
        time.sleep(0.2)
        assert spin_until(lambda: len(got) == 2)
        spin_until(lambda: False, 0.3)
        assert got == ["0", "9"]
        assert counter.received == 2 and counter.skipped == 8
    finally:
        rclpy.shutdown(context=ctx)
