"""BodyKeypoints on the topic say one thing about their 3D keypoints: camera-frame positions
(header.frame_id = the camera's) or hip-centred with camera axes ("<camera>_hip_centred"). What
body_estimator_node sends is what markers_node reads back, for both kinds of estimator, the same
positions the offline pipeline uses (a mesh backend's camera translation is applied once)."""

from __future__ import annotations

import numpy as np
from std_msgs.msg import Header

from sam4dcap_biomech.ros.msg_conversion import sec_to_stamp
from sam4dcap_perception.nodes.body_estimator_node import observation_to_msgs
from sam4dcap_perception.nodes.markers_node import keypoints_to_observation
from sam4dcap_perception.observations import BodyObservation

NAMES = ("a", "b", "c")


def round_trip(obs: BodyObservation) -> tuple[object, BodyObservation]:
    header = Header(stamp=sec_to_stamp(2.5), frame_id="camera_optical_frame")
    _, kp, _ = observation_to_msgs(obs, header, (4, 6))
    return kp, keypoints_to_observation(kp, 7)


def test_mesh_backend_keypoints_travel_in_the_camera_frame_unchanged():
    k3 = np.array([[0.1, 0.2, 3.0], [0.0, -0.5, 3.2], [np.nan, np.nan, np.nan]])
    obs = BodyObservation(frame_index=0, time_s=2.5, person_id=1, tracked=True, skeleton="opencap43", names=NAMES,
                          keypoints_2d=np.zeros((3, 2)), keypoints_3d=k3, camera_translation=np.array([0.1, 0.2, 3.0]),
                          extra={"keypoints_3d_frame": "camera"})
    kp, back = round_trip(obs)
    assert kp.header.frame_id == "camera_optical_frame"
    np.testing.assert_array_equal(back.keypoints_3d, k3)          # not translated a second time
    assert back.keypoints_3d_in_camera_frame and back.time_s == 2.5 and back.frame_index == 7


def test_blazepose_keypoints_travel_hip_centred():
    k3 = np.array([[0.1, 0.2, 0.0], [-0.1, 0.2, 0.05], [0.0, -0.9, 0.1]])
    obs = BodyObservation(frame_index=0, time_s=2.5, person_id=1, tracked=True, names=NAMES,
                          keypoints_2d=np.ones((3, 2)), keypoints_3d=k3)
    kp, back = round_trip(obs)
    assert kp.header.frame_id == "camera_optical_frame_hip_centred"
    np.testing.assert_array_equal(back.keypoints_3d, k3)
    assert not back.keypoints_3d_in_camera_frame
    np.testing.assert_array_equal(back.keypoints_2d, np.ones((3, 2)))


def test_lost_person_is_nan_not_zeros():
    obs = BodyObservation(frame_index=0, time_s=2.5, person_id=1, tracked=False, names=NAMES)
    kp, back = round_trip(obs)
    assert np.isnan(back.keypoints_3d).all() and np.isnan(back.keypoints_2d[:, 0]).all() and not back.tracked
    assert np.isnan(back.confidence).all()
