"""World-frame geometry on synthetic data with known answers: translation from 2D-3D
correspondences, robust plane fit (with and without the up prior), scale from the height,
the whole world frame of a synthetic walking subject, extrinsics files."""

import json

import numpy as np
import pytest
from _synthetic_body import NAMES, Scene, drop_jump_world, standing_body

from sam4dcap_biomech.config import load_config
from sam4dcap_biomech.errors import Sam4dcapError
from sam4dcap_perception import world_frame as wf
from sam4dcap_perception import body_geometry as bg
from sam4dcap_perception.observations import CameraIntrinsics


def _world_settings() -> dict:
    """The world-frame settings the product runs with (config markers_node)."""
    p = load_config().params("markers_node")
    return dict(min_travel_m=p["min_travel_m"], prior_spread_m=p["ground_prior_spread_m"])

K = CameraIntrinsics.from_fov(1080, 1920, 60.0)


def _deg(a, b):
    return np.degrees(np.arccos(np.clip(np.dot(a, b) / np.linalg.norm(a) / np.linalg.norm(b), -1, 1)))


def _body_and_pixels(t_true, *, noise_px=0.0, seed=0):
    from scipy.spatial.transform import Rotation

    rng = np.random.default_rng(seed)
    body = standing_body(1.75)
    body = body - body[[NAMES.index("left_hip"), NAMES.index("right_hip")]].mean(0)
    # y-up body -> camera axes (y down), turned 35 deg so depth varies across the body.
    body_cam = Rotation.from_euler("y", 35, degrees=True).apply(body * np.array([1.0, -1.0, 1.0]))
    pix = wf.project(body_cam + t_true, K) + rng.normal(0, noise_px, (len(body), 2))
    return body_cam, pix


def test_translation_exact_on_noise_free_projections():
    t_true = np.array([0.4, -0.25, 3.7])
    body, pix = _body_and_pixels(t_true)
    t, rms = wf.recover_translation(body, pix, K)
    np.testing.assert_allclose(t, t_true, atol=1e-6)
    assert rms < 1e-4


def test_translation_with_pixel_noise_and_an_outlier():
    t_true = np.array([-0.3, 0.1, 4.5])
    body, pix = _body_and_pixels(t_true, noise_px=1.0, seed=1)
    pix[3] += 150.0    # one keypoint on the wrong spot: Huber weights keep it from dominating
    t, rms = wf.recover_translation(body, pix, K)
    # Depth from the body's size in pixels: 1 px noise on ~800 px body -> mm; the outlier adds cm.
    assert np.linalg.norm(t - t_true) < 0.05
    w = np.ones(len(body))
    w[3] = 0.0        # ... and ignored entirely when its weight (visibility) is 0
    t0, _ = wf.recover_translation(body, pix, K, weights=w)
    assert np.linalg.norm(t0 - t_true) < 0.02


def test_translation_needs_three_points():
    body, pix = _body_and_pixels(np.array([0, 0, 3.0]))
    body[2:] = np.nan
    t, rms = wf.recover_translation(body, pix, K)
    assert np.isnan(t).all() and np.isnan(rms)


def test_scale_invariance_of_projection_is_what_height_fixes():
    # The same pixels from a body 10% smaller and 10% closer: translation scales with the body.
    t_true = np.array([0.2, 0.3, 4.0])
    body, pix = _body_and_pixels(t_true)
    t_small, _ = wf.recover_translation(0.9 * body, pix, K)
    np.testing.assert_allclose(t_small, 0.9 * t_true, atol=1e-6)


def _plane_points(normal, offset, n, *, spread, seed, noise=0.004, outlier_fraction=0.0):
    rng = np.random.default_rng(seed)
    normal = normal / np.linalg.norm(normal)
    a = np.cross(normal, [1.0, 0, 0])
    a /= np.linalg.norm(a)
    b = np.cross(normal, a)
    uv = rng.normal(0, 1, (n, 2)) * spread
    pts = offset * normal + uv[:, :1] * a + uv[:, 1:] * b + rng.normal(0, noise, (n, 1)) * normal
    n_out = int(outlier_fraction * n)
    pts[:n_out] += rng.uniform(0.05, 0.3, (n_out, 1)) * normal   # lifted feet: above the ground only
    return pts, a, b


def test_plane_fit_robust_to_lifted_points():
    normal = np.array([0.2, -0.95, -0.25])
    normal /= np.linalg.norm(normal)
    pts, _, _ = _plane_points(normal, 1.3, 400, spread=(0.8, 0.5), seed=2, outlier_fraction=0.3)
    plane = bg.fit_plane(pts, inlier_m=0.02)
    n = plane.normal if plane.normal @ normal > 0 else -plane.normal
    assert _deg(n, normal) < 1.0
    assert abs(plane.offset * np.sign(plane.normal @ normal) - 1.3) < 0.005
    assert plane.inliers[int(0.3 * 400):].mean() > 0.95 and plane.inliers[:int(0.3 * 400)].mean() < 0.2


def test_plane_prior_only_fills_the_undetermined_direction():
    # Contacts along a line (side steps): the tilt along the line is measured, the roll about it is not.
    normal = np.array([0.0, 1.0, 0.0])
    pts, a, b = _plane_points(normal, 0.0, 300, spread=(1.0, 0.01), seed=3)
    line = a   # the direction the points spread along
    from scipy.spatial.transform import Rotation

    roll_prior = Rotation.from_rotvec(np.radians(8) * line).apply(normal)     # about the line
    tilt_prior = Rotation.from_rotvec(np.radians(8) * b).apply(normal)        # along the line
    fit_roll = bg.fit_plane(pts, prior_normal=roll_prior, prior_spread_m=0.3)
    fit_tilt = bg.fit_plane(pts, prior_normal=tilt_prior, prior_spread_m=0.3)
    assert _deg(fit_roll.normal, roll_prior) < 1.0      # data say nothing: prior kept
    assert _deg(fit_tilt.normal, normal) < 1.0          # data say a lot: prior overruled


def test_stature_from_segments_is_posture_invariant():
    H = 1.82
    body = standing_body(H)
    stature, n = bg.stature_from_segments(body[None], NAMES)
    assert n == 1 and stature == pytest.approx(H, rel=1e-9)
    # Bend the right knee 60 deg and lean the trunk 30 deg: same segments, same stature.
    from scipy.spatial.transform import Rotation

    bent = body.copy()
    knee = bent[NAMES.index("right_knee")]
    rot = Rotation.from_euler("z", 60, degrees=True)
    for name in ("right_ankle", "right_heel", "right_foot_index"):
        bent[NAMES.index(name)] = knee + rot.apply(bent[NAMES.index(name)] - knee)
    hip_c = bent[[NAMES.index("left_hip"), NAMES.index("right_hip")]].mean(0)
    lean = Rotation.from_euler("z", -30, degrees=True)
    upper = [i for i, n in enumerate(NAMES) if not any(s in n for s in ("hip", "knee", "ankle", "heel", "foot"))]
    bent[upper] = hip_c + lean.apply(bent[upper] - hip_c)
    assert bg.stature_from_segments(bent[None], NAMES)[0] == pytest.approx(H, rel=1e-9)
    # Median over frames: a few frames with a mislocated knee do not move it.
    frames = np.repeat(body[None], 9, axis=0)
    frames[:3, NAMES.index("left_knee")] += [0.3, 0, 0]
    frames[:3, NAMES.index("right_knee")] += [0.3, 0, 0]
    assert bg.stature_from_segments(frames, NAMES)[0] == pytest.approx(H, rel=1e-9)


def test_world_frame_of_a_synthetic_walk():
    scene = Scene(estimator_scale=0.9)
    t, rms = wf.recover_translations(scene.estimator_3d, scene.pixels, scene.intrinsics)
    assert np.nanmax(rms) < 1e-3
    raw = scene.estimator_3d + t[:, None, :]
    world = wf.estimate_world_frame(raw, NAMES, height_m=scene.height_m, **_world_settings())
    assert world.scale == pytest.approx(1 / 0.9, rel=1e-6)
    assert world.stats["forward_method"] == "travel"
    pts = world.apply(raw)
    np.testing.assert_allclose(pts, scene.expected_world(), atol=0.002)
    # The camera pose in the world (what the markers node publishes as TF).
    expected_cam = scene.camera_position - scene.pelvis[0] * [1, 0, 1]     # relative to the world origin
    x = scene.direction
    R = np.stack([x, [0, 1, 0], np.cross(x, [0, 1, 0])])
    np.testing.assert_allclose(world.world_from_camera.translation, R @ expected_cam, atol=0.002)
    assert world.stats["camera_height_m"] == pytest.approx(scene.camera_position[1], abs=0.002)
    np.testing.assert_allclose(world.world_from_camera.rotation, R @ scene.R_cw.T, atol=1e-3)


def test_forward_points_to_the_camera_when_standing_still():
    scene = Scene(travel_m=0.05)
    t, _ = wf.recover_translations(scene.estimator_3d, scene.pixels, scene.intrinsics)
    world = wf.estimate_world_frame(scene.estimator_3d + t[:, None], NAMES, height_m=1.8, **_world_settings())
    assert world.stats["forward_method"] == "camera"
    cam = world.world_from_camera.translation
    pelvis0 = world.apply(scene.estimator_3d[0] + t[0])[[NAMES.index("left_hip"), NAMES.index("right_hip")]].mean(0)
    to_cam = (cam - pelvis0) * [1, 0, 1]
    assert _deg(to_cam, [1, 0, 0]) < 3.0


def test_ground_contact_shift_splits_between_depth_and_height_errors():
    scene = Scene()
    hips = [NAMES.index("left_hip"), NAMES.index("right_hip")]
    for camera, mostly_along_ray in (((1.0, 4.0, 0.5), True), ((5.0, 1.0, 1.0), False)):
        world = scene.expected_world()[:5].copy()
        camera = np.array(camera)
        world[:, :, 1] += 0.05                      # feet 5 cm above the ground
        shift = wf.ground_contact_shift(world, NAMES, camera, wf.lowest_foot_height(world, NAMES))
        fixed = world + shift[:, None]
        np.testing.assert_allclose(wf.lowest_foot_height(fixed, NAMES), 0.0, atol=1e-9)
        # The closed form: a along the ray, b vertical, weighted by the two noise variances.
        pel = world[:, hips].mean(1)
        d = np.linalg.norm(pel - camera, axis=1)
        ray = (pel - camera) / d[:, None]
        sd2 = (wf._DEPTH_NOISE_FRACTION * d) ** 2
        so2 = wf._OTHER_HEIGHT_NOISE_M ** 2
        a = -0.05 * ray[:, 1] * sd2 / (ray[:, 1] ** 2 * sd2 + so2)
        b = -0.05 * so2 / (ray[:, 1] ** 2 * sd2 + so2)
        np.testing.assert_allclose(shift, a[:, None] * ray + b[:, None] * [0, 1, 0], atol=1e-12)
        # Camera high above (steep ray): mostly a depth correction; at hip height: mostly vertical.
        along = np.abs(np.sum(shift * ray, axis=1)) / np.linalg.norm(shift, axis=1)
        assert (along > 0.9).all() if mostly_along_ray else (along < 0.3).all()


def test_rigid_transform_algebra_and_quaternion():
    from scipy.spatial.transform import Rotation

    r = Rotation.from_euler("xyz", [10, -20, 30], degrees=True)
    T = wf.RigidTransform(r.as_matrix(), [1.0, 2.0, 3.0])
    p = np.array([[0.3, -0.2, 5.0], [np.nan, 0, 0]])
    back = T.inverse().apply(T.apply(p))
    np.testing.assert_allclose(back[0], p[0], atol=1e-12)
    assert np.isnan(back[1]).all()
    np.testing.assert_allclose(T.compose(T.inverse()).matrix, np.eye(4), atol=1e-12)
    np.testing.assert_allclose(np.abs(T.quaternion_xyzw), np.abs(r.as_quat()), atol=1e-12)
    with pytest.raises(Sam4dcapError, match="rotation"):
        wf.RigidTransform(np.diag([1.0, 1.0, -1.0]), np.zeros(3))


def test_extrinsics_files(tmp_path):
    from scipy.spatial.transform import Rotation

    r = Rotation.from_euler("y", 40, degrees=True).as_matrix()
    f = tmp_path / "ext.json"
    f.write_text(json.dumps({"rotation": r.tolist(), "translation": [1, 2, 3]}))
    T = wf.load_extrinsics(f)
    np.testing.assert_allclose(T.rotation, r)
    # OpenCV rvec/tvec are world->camera: the loaded transform is its inverse.
    g = tmp_path / "ext.yaml"
    rvec = Rotation.from_matrix(r).as_rotvec()
    g.write_text(f"rvec: {rvec.tolist()}\ntvec: [0.5, 0.0, 2.0]\n")
    T2 = wf.load_extrinsics(g)
    np.testing.assert_allclose(T2.inverse().rotation, r, atol=1e-12)
    np.testing.assert_allclose(T2.inverse().translation, [0.5, 0, 2.0], atol=1e-12)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"R": 1}))
    with pytest.raises(Sam4dcapError, match="rotation\\+translation"):
        wf.load_extrinsics(bad)
    with pytest.raises(Sam4dcapError, match="not found"):
        wf.load_extrinsics(tmp_path / "missing.json")


def test_world_frame_errors():
    scene = Scene()
    with pytest.raises(Sam4dcapError, match="height"):
        wf.estimate_world_frame(scene.camera, NAMES, height_m=0.0, **_world_settings())
    blank = np.full_like(scene.camera, np.nan)
    with pytest.raises(Sam4dcapError, match="cannot scale"):
        wf.estimate_world_frame(blank, NAMES, height_m=1.7, **_world_settings())


# --------------------------------------------------------------------------------------------
# Orientation from perspective, centre of mass, balance up axis
# --------------------------------------------------------------------------------------------
def _tilted_view(tilt_deg, t_true, *, noise_px=0.0, seed=0):
    """The body of `_body_and_pixels` truly tilted `tilt_deg` about the camera x axis (toward the
    camera) while the estimator reports it untilted: (estimator body, pixels, true rotation)."""
    from scipy.spatial.transform import Rotation

    body_cam, _ = _body_and_pixels(t_true)
    R_true = Rotation.from_euler("x", tilt_deg, degrees=True).as_matrix()
    rng = np.random.default_rng(seed)
    pix = wf.project(body_cam @ R_true.T + t_true, K) + rng.normal(0, noise_px, (len(body_cam), 2))
    return body_cam, pix, R_true


def test_recover_pose_corrects_a_wrong_tilt_from_perspective():
    t_true = np.array([0.1, 0.3, 3.2])
    body, pix, R_true = _tilted_view(12.0, t_true)
    # Translation alone cannot explain the pixels: nearer parts look larger under perspective.
    _, rms_translation_only = wf.recover_translation(body, pix, K)
    assert rms_translation_only > 5.0
    R, t, rms = wf.recover_pose(body, pix, K)
    np.testing.assert_allclose(R, R_true, atol=1e-6)
    np.testing.assert_allclose(t, t_true, atol=1e-6)
    assert rms < 1e-4
    # With 1 px noise (a body ~1000 px tall at 3.2 m) the tilt is still found to a degree or so.
    body, pix, R_true = _tilted_view(12.0, t_true, noise_px=1.0, seed=4)
    R, t, _ = wf.recover_pose(body, pix, K)
    err_deg = np.degrees(np.arccos(np.clip((np.trace(R @ R_true.T) - 1) / 2, -1, 1)))
    assert err_deg < 1.5


def test_recover_pose_refuses_too_few_points_and_flips():
    body, pix, _ = _tilted_view(0.0, np.array([0.0, 0.0, 3.0]))
    w = np.zeros(len(body))
    w[:5] = 1.0
    R, t, rms = wf.recover_pose(body, pix, K, weights=w)
    assert np.isnan(R).all() and np.isnan(t).all() and np.isnan(rms)
    # A body seen from behind (turned 180 deg) is not "corrected" by a 180 deg rotation: NaN.
    from scipy.spatial.transform import Rotation

    turned = Rotation.from_euler("y", 180, degrees=True).apply(body)
    R, _, _ = wf.recover_pose(turned, pix, K)
    assert np.isnan(R).all()


def test_center_of_mass_of_the_standing_body():
    H = 1.8
    body = standing_body(H)
    com = bg.center_of_mass(body, NAMES)
    # Symmetric body: on the mid-sagittal plane; height within the adult range (Winter: ~0.55 H).
    assert com[2] == pytest.approx(0.0, abs=1e-12)
    assert 0.53 * H < com[1] < 0.58 * H
    # A mass-weighted mean of landmarks: rigid motions move it with the body, and a body whose
    # landmarks all sit at one point has its centre of mass there.
    from scipy.spatial.transform import Rotation

    r = Rotation.from_euler("xyz", [10, 40, -5], degrees=True)
    np.testing.assert_allclose(bg.center_of_mass(r.apply(body) + [1, 2, 3], NAMES), r.apply(com) + [1, 2, 3],
                               atol=1e-12)
    np.testing.assert_allclose(bg.center_of_mass(np.tile([0.3, 0.2, 0.1], (len(NAMES), 1)), NAMES),
                               [0.3, 0.2, 0.1], atol=1e-12)
    with pytest.raises(Sam4dcapError, match="centre of mass"):
        bg.center_of_mass(body[:5], NAMES[:5])


def _balanced_reaching_frames(n=40):
    """A subject on the left foot whose right leg swings out sideways (20 to 45 deg: the foot is
    clearly off the ground) and back, leaning over the left foot just enough to keep the centre
    of mass above its centre (static balance). World y up; returns the frames (n, 33, 3)."""
    from scipy.spatial.transform import Rotation

    body = standing_body(1.75)
    right = [NAMES.index(k) for k in ("right_knee", "right_ankle", "right_heel", "right_foot_index")]
    hip = body[NAMES.index("right_hip")]
    foot = body[[NAMES.index("left_heel"), NAMES.index("left_foot_index")]].mean(0)
    frames = []
    for angle in 20 + 25 * np.sin(np.linspace(0, np.pi, n)):
        b = body.copy()
        b[right] = hip + Rotation.from_euler("x", -angle, degrees=True).apply(b[right] - hip)   # abduction
        # Lean about the supporting foot's centre (which stays put): centre of mass straight above it.
        lean, _ = Rotation.align_vectors([[0.0, 1.0, 0.0]], [bg.center_of_mass(b, NAMES) - foot])
        b = foot + lean.apply(b - foot)
        frames.append(b)
    return np.array(frames)


def test_balance_up_finds_vertical_when_a_leg_reaches_out():
    from scipy.spatial.transform import Rotation

    world = _balanced_reaching_frames()
    # Seen by a camera tilted arbitrarily: the answer is the world's y axis in camera axes.
    R = Rotation.from_euler("xyz", [-110, 20, 15], degrees=True).as_matrix()
    cam = world @ R.T
    true_up = R @ np.array([0.0, 1.0, 0.0])
    feet_pelvis = bg.body_up_direction(cam, NAMES)
    assert _deg(feet_pelvis, true_up) > 3.0       # the feet's centre follows the swinging leg
    up = bg.balance_up_direction(cam, NAMES, up_guess=feet_pelvis)
    assert _deg(up, true_up) < 0.01
    # It is the prior of the whole world frame.
    world_frame = wf.estimate_world_frame(cam, NAMES, height_m=1.75, **_world_settings())
    assert world_frame.stats["up_prior_cue"] == "support->centre of mass"
    assert _deg(world_frame.stats["up_prior_camera"], true_up) < 0.01


def test_support_centre_and_robust_mean_direction():
    body = standing_body(1.7)[None]
    up = np.array([0.0, 1.0, 0.0])
    feet = [NAMES.index(k) for k in ("left_heel", "left_foot_index", "right_heel", "right_foot_index")]
    np.testing.assert_allclose(bg.support_centre(body, NAMES, up, contact_band_m=0.03)[0], body[0, feet].mean(0),
                               atol=1e-12)
    lifted = body.copy()
    lifted[0, feet[2:]] += [0.0, 0.2, 0.0]           # right foot in the air: the left one alone
    np.testing.assert_allclose(bg.support_centre(lifted, NAMES, up, contact_band_m=0.03)[0],
                               body[0, feet[:2]].mean(0), atol=1e-12)
    # Mean direction: 2 deg scatter around a known axis plus 20% of frames 40 deg off.
    from scipy.spatial.transform import Rotation

    rng = np.random.default_rng(5)
    axis = np.array([0.2, -0.9, 0.3]) / np.linalg.norm([0.2, -0.9, 0.3])
    tilts = Rotation.from_rotvec(rng.normal(0, np.radians(2), (100, 3))).apply(axis)
    tilts[:20] = Rotation.from_rotvec(np.radians(40) * np.array([1.0, 0, 0])).apply(axis)
    assert _deg(bg.robust_mean_direction(tilts * rng.uniform(0.5, 2, (100, 1))), axis) < 0.8
    with pytest.raises(Sam4dcapError, match="no direction"):
        bg.robust_mean_direction(np.full((3, 3), np.nan))


# --- real-world clips: raised ground, flight, a camera that isn't level ----------------------------
def _drop_scene(*, roll_deg=10.0, box_m=0.45, camera=(3.2, 2.4, 2.0)):
    world, airborne = drop_jump_world(1.75, box_height_m=box_m)
    scene = Scene(height_m=1.75, world=world, camera_position=camera, camera_roll_rad=np.radians(roll_deg))
    return scene, airborne


def test_contact_levels_split_floor_and_platform_and_drop_stray_frames():
    rng = np.random.default_rng(0)
    h = np.concatenate([rng.normal(0.0, 0.02, 200), rng.normal(0.45, 0.02, 150), [1.3, 1.35]])
    levels = bg.contact_levels(h)
    assert set(levels[:200]) == {0} and set(levels[200:350]) == {1}
    assert set(levels[350:]) == {-1}         # two stray heights are no level


def test_stance_mask_excludes_flight_phases():
    scene, airborne = _drop_scene()
    stance = bg.stance_mask(scene.world, NAMES, scene.time)
    # Flight frames away from take-off/landing (the low-pass smears ~2 frames) are never stance.
    core = airborne & np.roll(airborne, 4) & np.roll(airborne, -4)
    assert core.sum() > 10 and not stance[core].any()
    assert stance[~airborne].any(1).mean() > 0.8


@pytest.mark.parametrize("roll_deg", [0.0, 12.0])
def test_up_axis_of_a_drop_from_a_box_with_a_tilted_camera(roll_deg):
    scene, airborne = _drop_scene(roll_deg=roll_deg)
    t, _ = wf.recover_translations(scene.estimator_3d, scene.pixels, scene.intrinsics)
    raw = scene.estimator_3d + t[:, None]
    true_up = scene.R_cw @ np.array([0.0, 1.0, 0.0])     # world up in camera axes
    world = wf.estimate_world_frame(raw, NAMES, height_m=1.75, time_s=scene.time, **_world_settings())
    assert _deg(world.stats["up_camera"], true_up) < 1.0
    np.testing.assert_allclose(world.stats["ground_levels_m"], [0.0, 0.45], atol=0.02)
    pts = world.apply(raw)
    np.testing.assert_allclose(pts, scene.expected_world(), atol=0.02)   # the drop and the box are kept


def test_a_few_bad_frames_do_not_move_the_up_axis():
    scene, _ = _drop_scene()
    t, _ = wf.recover_translations(scene.estimator_3d, scene.pixels, scene.intrinsics)
    raw = scene.estimator_3d + t[:, None]
    good = wf.estimate_world_frame(raw, NAMES, height_m=1.75, time_s=scene.time, **_world_settings())
    bad = raw.copy()
    rng = np.random.default_rng(1)
    from scipy.spatial.transform import Rotation

    tilt = Rotation.from_rotvec([0.0, 0.0, 0.6]).as_matrix()
    for i in rng.choice(len(raw), 6, replace=False):        # 6 frames of a badly tilted body
        bad[i] = raw[i].mean(0) + (raw[i] - raw[i].mean(0)) @ tilt.T
    moved = wf.estimate_world_frame(bad, NAMES, height_m=1.75, time_s=scene.time, **_world_settings())
    assert _deg(good.stats["up_camera"], moved.stats["up_camera"]) < 1.0


def test_offline_markers_keep_the_drop_and_the_box_with_contact_correction():
    """The whole offline path (orientation correction, translation, world frame, contact
    correction, filter) on the drop scene: feet on the box, in the air, then on the floor."""
    from sam4dcap_perception.virtual_markers import markers_from_observations, offline_marker_settings

    scene, airborne = _drop_scene(roll_deg=8.0)
    result = markers_from_observations(scene.observations(), height_m=1.75, intrinsics=scene.intrinsics,
                                       **{**offline_marker_settings(load_config().params("markers_node")),
                                          "offline_cutoff_hz": 6.0, "ground_contact_cutoff_hz": 3.0})
    lowest = wf.lowest_foot_height(result.filtered.values, NAMES)
    truth = wf.lowest_foot_height(scene.expected_world(), NAMES)
    on_box = ~airborne & (np.arange(len(airborne)) < np.flatnonzero(airborne)[0])
    on_floor = ~airborne & ~on_box
    assert np.median(np.abs(lowest[on_box] - truth[on_box])) < 0.02      # standing on the box: 0.45 m
    assert np.median(np.abs(lowest[on_floor])) < 0.02                      # after landing: the floor
    mid_air = np.flatnonzero(airborne)[len(np.flatnonzero(airborne)) // 2]
    assert lowest[mid_air] == pytest.approx(truth[mid_air], abs=0.05)     # the flight is not pinned down
    assert result.quality["ground_levels_m"] == pytest.approx([0.0, 0.45], abs=0.02)
