"""fit_views: the camera fit's cameras from the markers stage and from a Qualisys calibration."""

import numpy as np

from sam4dcap_perception import fit_views
from sam4dcap_perception import multiview as mv
from sam4dcap_perception.multiview import ViewKeypoints
from sam4dcap_perception.observations import CameraIntrinsics
from sam4dcap_perception.world_frame import RigidTransform, project


def test_monocular_camera_file_projects_world_points_like_the_world_frame(tmp_path):
    intr = CameraIntrinsics.from_fov(1080, 1920, 60.0)
    angle = np.deg2rad(20.0)
    rot = np.array([[np.cos(angle), 0, np.sin(angle)], [0, 1, 0], [-np.sin(angle), 0, np.cos(angle)]])
    world_from_camera = RigidTransform(rot @ np.diag([1.0, -1.0, -1.0]), np.array([0.5, 1.3, 4.0]))
    cam_points = np.array([[0.1, 0.2, 3.5], [-0.4, 0.6, 4.2]])
    world = world_from_camera.apply(cam_points)
    path = fit_views.write_camera_file(tmp_path / "t_camera.json", intr, world_from_camera)
    cam = fit_views.read_camera_file(path)
    np.testing.assert_allclose(cam.project(world), project(cam_points, intr), atol=1e-6)


def test_calibrated_views_keep_pixels_in_the_trial_world(pose2sim_demo):
    cameras = mv.read_qualisys_calibration(pose2sim_demo / "calibration" / "Calib.qca.txt")
    rng = np.random.default_rng(0)
    pts_q = rng.uniform([-0.5, -0.5, 0.2], [0.5, 0.5, 1.8], size=(6, 3))    # Qualisys world, z up
    n = 4
    views = []
    for cam in cameras:
        pix = np.repeat(cam.project(pts_q)[None], n, axis=0)
        views.append(ViewKeypoints(name=cam.name, video="", time_s=np.arange(n) / 60.0,
                                   names=tuple(f"p{i}" for i in range(6)), pixels=pix, visibility=np.ones((n, 6)),
                                   rate_hz=60.0, width=cam.width, height=cam.height))
    heading = np.eye(4)
    c, s = np.cos(0.7), np.sin(0.7)
    heading[:3, :3] = [[c, 0, s], [0, 1, 0], [-s, 0, c]]
    heading[:3, 3] = [0.3, 0.0, -0.2]
    out = fit_views.calibrated_views(cameras, views, [0, 0, 1, 0], heading)
    pts_trial = mv.zup_to_yup(pts_q) @ heading[:3, :3].T + heading[:3, 3]
    assert all(v.pixels.shape == (n - 1, 6, 2) for v in out)      # the views' common frames
    for cam, view in zip(cameras, out):
        # Undistorted pixels of the calibration = the moved pinhole's projection of the trial points.
        np.testing.assert_allclose(view.camera.project(pts_trial), cam.undistort(cam.project(pts_q)), atol=1e-3)


def test_monocular_views_use_the_markers_stage_left_right_labels(tmp_path):
    """Frames the markers stage relabelled (lr_swapped in the keypoints file) reach the camera fit
    relabelled too: the fit sees the same body as the 3D markers it starts from."""
    from sam4dcap_perception.offline_process import write_keypoints
    from sam4dcap_perception.observations import BodyObservation

    names = ("nose", "left_hip", "right_hip", "left_knee", "right_knee")
    rng = np.random.default_rng(1)
    obs = [BodyObservation(frame_index=i, time_s=i / 30, person_id=1, tracked=True, skeleton="blazepose33",
                           names=names, keypoints_2d=rng.uniform(0, 1000, (5, 2)),
                           keypoints_3d=rng.normal(size=(5, 3)), confidence=np.full(5, 0.9),
                           visibility=np.array([0.9, 0.8, 0.3, 0.7, 0.2])) for i in range(3)]
    swapped = np.array([False, True, False])
    intr = CameraIntrinsics.from_fov(1080, 1920, 60.0)
    cam_file = fit_views.write_camera_file(tmp_path / "t_camera.json", intr, RigidTransform.identity())
    write_keypoints(tmp_path / "t_keypoints.npz", tmp_path / "t_keypoints.json", obs, source="t.mp4",
                    lr_swapped=swapped)
    view = fit_views.monocular_views(tmp_path / "t_keypoints.npz", cam_file)[0]
    perm = [0, 2, 1, 4, 3]
    for i in range(3):
        want = perm if swapped[i] else list(range(5))
        np.testing.assert_allclose(view.pixels[i], obs[i].keypoints_2d[want])
        np.testing.assert_allclose(view.confidence[i], obs[i].visibility[want])
    # A keypoints file without the mask (written before it existed) is read as the estimator gave it.
    write_keypoints(tmp_path / "u_keypoints.npz", tmp_path / "u_keypoints.json", obs, source="t.mp4")
    plain = fit_views.monocular_views(tmp_path / "u_keypoints.npz", cam_file)[0]
    np.testing.assert_allclose(plain.pixels[1], obs[1].keypoints_2d)
