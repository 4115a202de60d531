"""recorder_node in its own process: clean close on SIGINT/SIGTERM, a readable bag after SIGKILL.

The test process publishes images (reliable, like a file source) and markers; the bag is read
back with rosbags (bag_io) and with the independent mcap + mcap-ros2-support reader.
"""

from __future__ import annotations

import math
import signal
import time

import numpy as np
import pytest
import rclpy
from geometry_msgs.msg import Point
from rclpy.executors import SingleThreadedExecutor
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from sam4dcap_biomech.ros.node_plumbing import DEEP_QOS, image_qos
from sam4dcap_msgs.msg import VirtualMarkers
from sam4dcap_perception import bag_io
from sam4dcap_perception.graph_runner import start_node
from sam4dcap_perception.nodes.image_conversion import numpy_to_image


@pytest.fixture
def ros():
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    node = rclpy.create_node("recorder_test_publisher", context=ctx)
    ex = SingleThreadedExecutor(context=ctx)
    ex.add_node(node)
    yield node, ex
    ex.shutdown()
    node.destroy_node()
    rclpy.shutdown(context=ctx)


def spin_until(ex, cond, timeout_s=30.0):
    deadline = time.monotonic() + timeout_s
    while not cond() and time.monotonic() < deadline:
        ex.spin_once(timeout_sec=0.02)
    return cond()


def publish_frames(ros, n, *, start=0, acks=None, period_s=0.0):
    node, ex = ros
    for i in range(start, start + n):
        img = numpy_to_image(np.full((48, 64, 3), i % 256, np.uint8), "rgb8", frame_id="camera")
        img.header.stamp.sec, img.header.stamp.nanosec = i, 500
        m = VirtualMarkers(names=["a", "b"], marker_set="custom",
                           positions=[Point(x=float(i), y=1.0, z=2.0), Point(x=math.nan, y=math.nan, z=math.nan)],
                           confidence=[1.0, 0.0])
        m.header.stamp = img.header.stamp
        m.header.frame_id = "world"
        node._test_pubs[0].publish(img)
        node._test_pubs[1].publish(m)
        ex.spin_once(timeout_sec=period_s or 0.001)


def setup_publishers(ros, recorder):
    node, ex = ros
    node._test_pubs = (node.create_publisher(Image, "/camera/image_raw", image_qos(offline=True)),
                       node.create_publisher(VirtualMarkers, "/sam4dcap/markers", DEEP_QOS))
    acks = []
    node.create_subscription(Header, "/sam4dcap/progress", acks.append, DEEP_QOS)
    # The recorder subscribes to images once it sees their publisher (matching its QoS).
    ok = spin_until(ex, lambda: all(p.get_subscription_count() >= 1 for p in node._test_pubs)
                    or recorder.proc.poll() is not None)
    assert ok and recorder.proc.poll() is None, recorder.tail(20)
    spin_until(ex, lambda: False, timeout_s=0.5)  # the recorder's side of the match
    return acks


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_closes_a_complete_bag(ros, tmp_path, sig):
    bag = tmp_path / "bag"
    rec = start_node("recorder_node", {"bag_dir": str(bag), "topics": ["/camera/image_raw", "/sam4dcap/markers"]},
                     log_dir=tmp_path)
    acks = setup_publishers(ros, rec)
    publish_frames(ros, 30)
    assert spin_until(ros[1], lambda: len(acks) >= 30), f"recorder acked {len(acks)} of 30 images"
    assert [a.stamp.sec for a in acks] == list(range(30)) and acks[0].frame_id == "recorder_node"
    spin_until(ros[1], lambda: False, timeout_s=0.3)
    rec.proc.send_signal(sig)
    assert rec.proc.wait(timeout=20) == 0, rec.tail(20)
    assert (bag / "metadata.yaml").is_file(), "closed bag has its metadata"
    topics = bag_io.bag_topics(bag)
    assert topics["/camera/image_raw"].count == 30 and topics["/sam4dcap/markers"].count == 30
    msgs = [m for _, _, _, m in bag_io.read_messages(bag, ["/sam4dcap/markers"])]
    assert [m.positions[0].x for m in msgs] == [float(i) for i in range(30)]
    assert math.isnan(msgs[0].positions[1].x)
    imgs = [m for _, _, _, m in bag_io.read_messages(bag, ["/camera/image_raw"])]
    assert imgs[7].encoding == "rgb8" and int(np.asarray(imgs[7].data)[0]) == 7
    meta = (bag / "metadata.yaml").read_text()
    assert "reliability: reliable" in meta  # the file source's QoS, for `ros2 bag play`


def test_killed_recorder_leaves_a_readable_bag_up_to_the_last_flush(ros, tmp_path):
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    bag = tmp_path / "bag"
    rec = start_node("recorder_node", {"bag_dir": str(bag), "flush_period_s": 0.2,
                                       "topics": ["/camera/image_raw", "/sam4dcap/markers"]}, log_dir=tmp_path)
    acks = setup_publishers(ros, rec)
    publish_frames(ros, 20)
    assert spin_until(ros[1], lambda: len(acks) >= 20)
    spin_until(ros[1], lambda: False, timeout_s=1.0)  # > several flush periods
    publish_frames(ros, 3, start=20)  # in flight when the recorder dies: may be lost
    rec.proc.send_signal(signal.SIGKILL)
    rec.proc.wait(timeout=10)
    assert not (bag / "metadata.yaml").exists()
    bag_io.recover_bag(bag)
    topics = bag_io.bag_topics(bag)
    assert 20 <= topics["/sam4dcap/markers"].count <= 23
    assert 20 <= topics["/camera/image_raw"].count <= 23
    xs = [m.positions[0].x for _, _, _, m in bag_io.read_messages(bag, ["/sam4dcap/markers"])]
    assert xs[:20] == [float(i) for i in range(20)]
    (mcap_file,) = bag.glob("*.mcap")
    with mcap_file.open("rb") as f:
        decoded = [(c.topic, d) for _, c, _, d in make_reader(f, decoder_factories=[DecoderFactory()])
                   .iter_decoded_messages()]
    imgs = [d for t, d in decoded if t == "/camera/image_raw"]
    assert len(imgs) == topics["/camera/image_raw"].count
    assert int(imgs[5].data[0]) == 5


def test_recorder_refuses_an_existing_bag_folder(tmp_path):
    bag = tmp_path / "bag"
    bag.mkdir()
    rec = start_node("recorder_node", {"bag_dir": str(bag)}, log_dir=tmp_path)
    assert rec.proc.wait(timeout=60) == 2
    assert f"bag folder {bag} exists already" in rec.log_path.read_text()


def test_bag_frames_and_intrinsics_for_offline_processing(tmp_path):
    """bag_io.bag_frames (for `sam4dcap process BAG`): RGB frames at their capture stamps."""
    from rclpy.serialization import serialize_message

    from sam4dcap_perception.nodes.image_conversion import camera_info_from_intrinsics
    from sam4dcap_perception.observations import CameraIntrinsics

    rgb = np.random.default_rng(0).integers(0, 256, (6, 5, 3), np.uint8)
    k = CameraIntrinsics.from_fov(5, 6, 60.0)
    with bag_io.BagWriter(tmp_path / "bag") as w:
        w.add_topic("/camera/image_raw", "sensor_msgs/msg/Image")
        w.add_topic("/camera/camera_info", "sensor_msgs/msg/CameraInfo")
        for i, enc in enumerate(["rgb8", "bgr8", "rgba8", "mono8"]):
            px = {"rgb8": rgb, "bgr8": rgb[:, :, ::-1], "rgba8": np.dstack([rgb, np.zeros((6, 5), np.uint8)]),
                  "mono8": rgb[:, :, 0]}[enc]
            msg = numpy_to_image(np.ascontiguousarray(px), enc)
            msg.header.stamp.sec, msg.header.stamp.nanosec = 100 + i, 250_000_000
            w.write("/camera/image_raw", i, serialize_message(msg))
            info = camera_info_from_intrinsics(k, stamp=msg.header.stamp)
            w.write("/camera/camera_info", i, serialize_message(info))
    frames = list(bag_io.bag_frames(tmp_path / "bag"))
    assert [f.time_s for f in frames] == [100.25, 101.25, 102.25, 103.25]
    for f in frames[:3]:
        np.testing.assert_array_equal(f.image, rgb)
    np.testing.assert_array_equal(frames[3].image, np.repeat(rgb[:, :, :1], 3, axis=2))
    assert [f.index for f in bag_io.bag_frames(tmp_path / "bag", start_s=1.0, end_s=2.0)] == [0, 1]
    assert bag_io.bag_intrinsics(tmp_path / "bag") == k
