"""multiview: Qualisys calibration conventions, triangulation, and the demo's multi-view reference."""

import json

import numpy as np
import pytest

from sam4dcap_biomech.errors import Sam4dcapError
from sam4dcap_biomech.markersets import BLAZEPOSE33
from sam4dcap_biomech.timeseries import TimeSeries
from sam4dcap_perception import multiview as mv
from sam4dcap_perception.multiview_reference import multiview_reference


@pytest.fixture(scope="module")
def cameras(pose2sim_demo):
    return mv.read_qualisys_calibration(pose2sim_demo / "calibration" / "Calib.qca.txt")


def test_qualisys_calibration_conventions(cameras, pose2sim_demo):
    import xml.etree.ElementTree as ET

    assert [c.name for c in cameras] == ["cam01", "cam02", "cam03", "cam04"]
    root = ET.parse(pose2sim_demo / "calibration" / "Calib.qca.txt").getroot()
    for cam, tag in zip(cameras, root.findall("cameras/camera")):
        assert (cam.width, cam.height) == (1088, 1920)
        assert np.allclose(cam.R @ cam.R.T, np.eye(3), atol=1e-9) and np.linalg.det(cam.R) == pytest.approx(1.0)
        # The camera centre is the transform's position (mm -> m).
        t = tag.find("transform").attrib
        assert np.allclose(cam.center, [float(t[k]) / 1000 for k in "xyz"], atol=1e-9)
        assert cam.center[2] > 1.0                        # z up: cameras on tripods above the floor
        # Pixel units: 1/64 sensor pixels, principal point near the image centre.
        assert cam.K[0, 0] == pytest.approx(float(tag.find("intrinsic").get("focalLengthU")) / 64)
        assert abs(cam.K[0, 2] - cam.width / 2) < 0.05 * cam.width
        assert abs(cam.K[1, 2] - cam.height / 2) < 0.05 * cam.height
        # The treadmill at the world origin is in front of every camera and inside its image,
        # and the vertical axis points up in the image (smaller row).
        assert (cam.R @ np.zeros(3) + cam.t)[2] > 0
        origin, up = cam.project(np.array([[0.0, 0, 0], [0.0, 0, 1.0]]))
        assert 0 <= origin[0] < cam.width and 0 <= origin[1] < cam.height
        assert up[1] < origin[1]


def test_triangulation_recovers_projected_points_and_drops_a_wrong_view(cameras):
    rng = np.random.default_rng(0)
    pts = rng.uniform([-0.5, -0.5, 0.0], [0.5, 0.5, 1.8], size=(40, 3))    # a person-sized volume
    pix = np.stack([c.project(pts) for c in cameras])                      # (4, 40, 2) distorted
    X, err, used = mv.triangulate(cameras, pix)
    assert np.abs(X - pts).max() < 1e-6
    assert np.nanmax(err) < 1e-4 and used.all()
    # One view off by 200 px for half the points (a keypoint on the wrong limb): left out.
    bad = pix.copy()
    bad[2, :20] += 200.0
    X, err, used = mv.triangulate(cameras, bad, max_error_px=5.0)
    assert np.abs(X - pts).max() < 1e-6
    assert not used[2, :20].any() and used[:, 20:].all()
    assert err[2, :20].min() > 150
    # Low visibility and missing pixels are not used; a point seen by one view only is NaN.
    w = np.ones((4, 40))
    w[0, :5] = 0.1
    bad = pix.copy()
    bad[1, :5] = np.nan
    bad[[2, 3], 30] = np.nan
    bad[1, 30] = np.nan
    X, err, used = mv.triangulate(cameras, bad, w, min_weight=0.3)
    assert np.abs(X[:5] - pts[:5]).max() < 1e-6 and not used[:2, :5].any()
    assert np.isnan(X[30]).all() and np.isnan(err[1:, 30]).all()


def test_zup_to_yup_is_a_rotation():
    assert np.linalg.det(mv.ZUP_TO_YUP) == pytest.approx(1.0)
    assert np.allclose(mv.zup_to_yup([0.0, 0.0, 1.0]), [0.0, 1.0, 0.0])     # up stays up
    assert np.allclose(mv.zup_to_yup([[1.0, 2.0, 3.0]]), [[2.0, 3.0, 1.0]])


def test_heading_alignment_turns_the_subject_to_face_plus_x():
    t = np.arange(10) / 60.0
    names = ("right_hip", "left_hip", "nose")
    # Facing -z (OpenSim: x forward, y up, z right; turned 90 deg about y): right is +x.
    pts = np.array([[0.1, 0.9, 0.0], [-0.1, 0.9, 0.0], [0.0, 1.6, -0.1]]) + np.array([2.0, 0.0, 3.0])
    m = TimeSeries(t, names, np.repeat(pts[None], 10, axis=0), unit="m")
    T = mv.heading_alignment(m)
    a = mv.apply_transform(m, T)
    assert np.allclose(a.get("right_hip")[0], [0.0, 0.9, 0.1], atol=1e-9)    # right side = +z
    assert a.get("nose")[0, 0] > 0.09                                       # nose ahead on +x
    assert np.allclose(0.5 * (a.get("right_hip") + a.get("left_hip"))[0][[0, 2]], 0.0, atol=1e-9)


def test_reject_jumps_flags_a_spike():
    n = 30
    p = np.zeros((n, 1, 3))
    p[:, 0, 0] = np.linspace(0, 0.3, n)      # smooth motion, 1 cm per frame
    p[12, 0] += [0.0, 0.4, 0.0]              # one frame 40 cm off
    rejected = mv.reject_jumps(p, np.full((n, 1), 3))
    assert rejected[:, 0].tolist() == [i == 12 for i in range(n)]


def _view(name, rate_hz, w=1088, h=1920, names=BLAZEPOSE33, n=10):
    k = len(names)
    return mv.ViewKeypoints(name, f"{name}.mp4", np.arange(n) / rate_hz, tuple(names), np.zeros((n, k, 2)),
                            np.ones((n, k)), rate_hz, w, h)


def test_frame_offsets_are_found_on_shifted_synthetic_views(cameras):
    """Views of a moving point cloud, one view starting 4 frames late: the offset is found."""
    rng = np.random.default_rng(1)
    n, k = 60, 13
    t = np.arange(n + 10) / 60.0
    base = rng.uniform([-0.3, -0.3, 0.2], [0.3, 0.3, 1.6], size=(k, 3))
    traj = base[None] + 0.3 * np.stack([np.sin(2 * np.pi * 1.3 * t + j) for j in range(k)], axis=1)[..., None] \
        * np.array([1.0, 0.6, 0.2])
    names = mv._SYNC_KEYPOINTS[:k]
    views = []
    for c, lag in zip(cameras, (0, 0, 4, 0)):
        pix = c.project(traj[lag:lag + n])
        views.append(mv.ViewKeypoints(c.name, "", t[:n], names, pix, np.ones((n, k)), 60.0, c.width, c.height))
    offsets, info = mv.estimate_frame_offsets(cameras, views, max_offset_s=0.1)
    assert offsets == [0, 0, -4, 0]
    assert info["error_px"] < 1e-3 < info["error_at_zero_px"]
    markers, err, used = mv.triangulate_views(cameras, views, frame_offsets=offsets)
    assert markers.n_frames == n - 4 and np.nanmax(err) < 1e-3


def test_bad_views_one_clear_error_each(cameras):
    two = cameras[:2]
    with pytest.raises(Sam4dcapError, match="different frame rates.*cam01 60.00 fps, cam02 30.00 fps"):
        mv.check_views(two, [_view("cam01", 60.0), _view("cam02", 30.0)])
    with pytest.raises(Sam4dcapError, match="rotated against its calibration"):
        mv.check_views(two, [_view("cam01", 60.0), _view("cam02", 60.0, w=1920, h=1088)])
    with pytest.raises(Sam4dcapError, match="calibrated at 1088x1920"):
        mv.check_views(two, [_view("cam01", 60.0), _view("cam02", 60.0, w=540, h=960)])
    with pytest.raises(Sam4dcapError, match="different keypoint sets"):
        mv.check_views(two, [_view("cam01", 60.0), _view("cam02", 60.0, names=BLAZEPOSE33[:20])])
    mv.check_views(two, [_view("cam01", 60.0, w=1080), _view("cam02", 60.0)])     # 1080 of 1088: accepted


def test_bad_calibration_files(tmp_path):
    p = tmp_path / "x.qca.txt"
    p.write_text("not xml")
    with pytest.raises(Sam4dcapError, match="not a Qualisys"):
        mv.read_qualisys_calibration(p)
    p.write_text("<calibration><cameras><camera serial='a'><transform/></camera></cameras></calibration>")
    with pytest.raises(Sam4dcapError, match="lacks"):
        mv.read_qualisys_calibration(p)
    with pytest.raises(Sam4dcapError, match="not found"):
        mv.read_qualisys_calibration(tmp_path / "missing.qca.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(Sam4dcapError, match="no Qualisys calibration"):
        mv.find_multiview_trial(tmp_path / "empty")
    with pytest.raises(Sam4dcapError, match="at least 2 calibrated views"):
        mv.find_multiview_trial(tmp_path)


@pytest.fixture(scope="module")
def demo_reference(pose2sim_demo, tmp_path_factory):
    """The demo's multi-view reference, built once; test_cli_process's compare uses the same
    folder (`--out demo_compare` puts it in demo_compare/multiview_reference), so the stages
    built by whichever runs first are reused by the other."""
    calib, videos = mv.find_multiview_trial(pose2sim_demo)
    out = tmp_path_factory.getbasetemp() / "demo_compare" / "multiview_reference"
    return multiview_reference(videos, calib, out_dir=out, height_m=1.70, mass_kg=70.0)


def test_demo_reference_reprojects_into_each_view(demo_reference):
    ref = demo_reference
    assert ref.cameras == ["cam01", "cam02", "cam03", "cam04"]
    for view, r in ref.reprojection.items():
        # BlazePose keypoints of one body part do not land on one 3D point in every view; the
        # triangulated points reproject within ~10 px (images 1920 px high) in the views kept,
        # and most observations of every view are kept.
        assert r["used_median_px"] < 15.0, (view, r)
        assert r["all_median_px"] < 20.0, (view, r)
        assert r["observations_used"] > 0.6 * r["observations"], (view, r)
    info = json.loads((ref.out_dir / "multiview_reprojection.json").read_text())
    assert info["missing_share"] < 0.1
    # Synchronising the views lowers the two-view reprojection error (one view starts late).
    sync = info["synchronisation"]
    assert sync["error_px"] <= sync["error_at_zero_px"]
    assert all(abs(o) <= sync["max_offset_frames"] for o in ref.frame_offsets.values())
    assert ref.frame_offsets["cam01"] == 0


def test_demo_reference_is_a_person_standing_in_a_y_up_world(demo_reference):
    from sam4dcap_biomech.trc import read_trc

    for path in (demo_reference.markers_trc, demo_reference.out_dir / "multiview_markers_calibration_world.trc"):
        m = read_trc(path)
        # 100 frames per view, less the views' synchronisation offset.
        offsets = json.loads((demo_reference.out_dir / "multiview_reprojection.json").read_text())["frame_offsets"]
        assert m.n_frames == 100 - (max(offsets.values()) - min(offsets.values()))
        assert set(BLAZEPOSE33) <= set(m.names)
        feet = np.nanmedian(m.values[:, [m.index(n) for n in ("left_heel", "right_heel")], 1])
        nose = np.nanmedian(m.get("nose")[:, 1])
        # The treadmill belt is the calibration's floor; the subject bends but the head stays high.
        assert -0.1 < feet < 0.3 and 1.2 < nose < 1.9
        thigh = np.nanmedian(np.linalg.norm(m.get("right_hip") - m.get("right_knee"), axis=1))
        assert 0.3 < thigh < 0.5


def test_demo_reference_runs_the_same_model_and_ik(demo_reference):
    from sam4dcap_biomech.storage import read_mot

    coords = read_mot(demo_reference.coordinates_mot)
    assert coords.n_frames >= 90
    assert {"hip_flexion_r", "knee_angle_l", "ankle_angle_r"} <= set(coords.names)
    assert demo_reference.scaled_model.is_file()


def test_demo_reference_fits_the_model_through_the_four_cameras(demo_reference):
    """The reference's joint angles come from the same camera fit as the monocular path, with the
    4 calibrated cameras: the model reprojects near the keypoints and the knee is well determined."""
    from sam4dcap_biomech.storage import read_mot

    out = demo_reference.out_dir
    err = read_mot(out / "multiview_ik_marker_errors.sto")
    # Median over frames of each frame's median reprojection error over the 4 views: ~12 px
    # measured with the markers placed (17 px where the generic model puts them).
    assert 3.0 < np.nanmedian(err.get("reprojection_error_median_px")) < 25.0
    conf = read_mot(out / "multiview_ik_confidence.sto")
    assert np.median(conf.get("knee_angle_r")) > 0.3 and np.median(conf.get("knee_angle_l")) > 0.3
    assert np.all(conf.get("mtp_angle_r") == 0.0)


def test_demo_reference_places_the_face_markers_where_the_keypoints_are(demo_reference):
    """Four cameras see where each keypoint sits on the body: the fitted model's markers move
    (the face as a whole, as the generic model's face sits behind and below BlazePose's), the
    scaled model keeps its own, and the fitted model goes with the coordinates."""
    import opensim

    assert demo_reference.fitted_model is not None and demo_reference.fitted_model.is_file()
    # Each Model kept in a variable: a marker set outliving its model segfaults.
    scaled_model = opensim.Model(str(demo_reference.scaled_model))
    fitted_model = opensim.Model(str(demo_reference.fitted_model))
    scaled, fitted = scaled_model.getMarkerSet(), fitted_model.getMarkerSet()

    def moved(name):
        a = scaled.get(name).get_location().to_numpy()
        b = fitted.get(name).get_location().to_numpy()
        return float(np.linalg.norm(b - a))
    assert moved("nose") > 0.02 and moved("left_ear") > 0.02
    assert all(moved(n) <= 0.08 + 1e-9 for n in ("nose", "left_ear", "left_knee", "right_heel"))
