"""ros/msg_conversion: stamps (exact ns, carries, CDR headers of real serialized messages), point
arrays both ways, transforms, the hip-centred keypoints frame marker."""

from __future__ import annotations

import numpy as np
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import CameraInfo, Image

from sam4dcap_biomech.ros.msg_conversion import (array_to_points, floats_or_nan, keypoints_are_hip_centred,
                                                 keypoints_frame_id, ns_to_stamp, points_to_array, restamp_cdr,
                                                 sec_to_stamp, stamp_from_cdr, stamp_to_ns, stamp_to_sec,
                                                 transform_stamped)


def test_stamps_round_trip_and_carry():
    s = sec_to_stamp(12.25)
    assert (s.sec, s.nanosec) == (12, 250_000_000) and stamp_to_sec(s) == 12.25
    s = sec_to_stamp(3.9999999999)                 # rounds up to the next second, not 1e9 ns
    assert (s.sec, s.nanosec) == (4, 0)
    t = ns_to_stamp(1_700_000_000_123_456_789)
    assert (t.sec, t.nanosec) == (1_700_000_000, 123_456_789) and stamp_to_ns(t) == 1_700_000_000_123_456_789


def test_cdr_stamps_of_real_messages():
    img = Image(height=2, width=3, encoding="rgb8", step=9, data=bytes(18))
    img.header.stamp = ns_to_stamp(5_000_000_007)
    img.header.frame_id = "camera_optical_frame"
    info = CameraInfo(width=3, height=2)
    info.header.stamp = img.header.stamp
    for msg, kind in ((img, Image), (info, CameraInfo)):
        raw = serialize_message(msg)
        assert stamp_to_ns(stamp_from_cdr(raw)) == 5_000_000_007
        moved = deserialize_message(restamp_cdr(raw, 9_876_543_210), kind)
        assert stamp_to_ns(moved.header.stamp) == 9_876_543_210
        assert moved.header.frame_id == msg.header.frame_id and moved.width == 3   # the rest unchanged


def test_points_both_ways():
    a = np.array([[1.0, 2.0, 3.0], [np.nan, 0.5, -1.0]])
    pts = array_to_points(a)
    np.testing.assert_array_equal(points_to_array(pts), a)
    flat = array_to_points(np.array([[4.0, 5.0]]))           # 2-D pixels: z = 0
    assert (flat[0].x, flat[0].y, flat[0].z) == (4.0, 5.0, 0.0)
    np.testing.assert_array_equal(points_to_array(flat, dims=2), [[4.0, 5.0]])
    assert array_to_points(None) == [] and array_to_points(np.zeros(3)) == []
    assert points_to_array([]).shape == (0, 3)
    assert np.isnan(floats_or_nan(None, 2)).all() and len(floats_or_nan(None, 2)) == 2
    assert floats_or_nan(np.array([[1, 2]]), 9) == [1.0, 2.0]


def test_transform_and_keypoints_frame():
    tf = transform_stamped("world", "opensim_world", ns_to_stamp(1), (1, 2, 3), (0, 0, 0.6, 0.8))
    assert (tf.header.frame_id, tf.child_frame_id) == ("world", "opensim_world")
    assert (tf.transform.translation.z, tf.transform.rotation.w) == (3.0, 0.8)
    hip = keypoints_frame_id("cam", hip_centred=True)
    assert keypoints_are_hip_centred(hip) and not keypoints_are_hip_centred(keypoints_frame_id("cam", hip_centred=False))
