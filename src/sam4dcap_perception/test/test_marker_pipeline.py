"""Video -> world-frame markers on the real Pose2Sim demo clips (BlazePose, CPU).

Each clip is processed once per module. Criteria from the issue: thigh and shank lengths
stable (coefficient of variation <= 10%), feet on the ground (lowest heel/toe within +-2 cm of
0 in stance), the given height kept within 3%, a TRC that OpenSim loads. The demo's
multi-camera calibration gives independent checks: the estimated up axis against the lab's
vertical, and the stature model (segment chain / 0.897) against the triangulated subject.
Bad input: a clip where the person disappears and comes back, and one with nobody at all.
"""

import numpy as np
import pytest

from sam4dcap_biomech.errors import Sam4dcapError
from sam4dcap_perception import world_frame as wf
from sam4dcap_perception import body_geometry as bg
from sam4dcap_perception.marker_pipeline import video_to_markers

HEIGHT_M = 1.75
CAMS = ("cam01", "cam02", "cam03", "cam04")


@pytest.fixture(scope="module")
def results(pose2sim_demo):
    return {cam: video_to_markers(pose2sim_demo / "videos" / f"{cam}.mp4", height_m=HEIGHT_M) for cam in CAMS}


@pytest.fixture(scope="module")
def cameras(pose2sim_demo):
    from sam4dcap_perception.multiview import read_qualisys_calibration

    return {c.name: c for c in read_qualisys_calibration(pose2sim_demo / "calibration" / "Calib.qca.txt")}


def _length(series, a, b):
    return np.linalg.norm(series.get(a) - series.get(b), axis=1)


@pytest.mark.parametrize("cam", CAMS)
def test_all_frames_tracked_and_placed(results, cam):
    r = results[cam]
    assert r.quality["frames"] == 100 and r.flags["tracked"].all()
    assert np.isfinite(r.filtered.values).all()
    assert r.raw.frame == "opensim_world" and r.raw.unit == "m"


@pytest.mark.parametrize("cam", CAMS)
def test_thigh_and_shank_lengths_are_stable(results, cam):
    m = results[cam].filtered
    for side in ("left", "right"):
        for a, b in (("hip", "knee"), ("knee", "ankle")):
            length = _length(m, f"{side}_{a}", f"{side}_{b}")
            cv = np.std(length) / np.mean(length)
            assert cv <= 0.10, f"{cam} {side} {a}-{b}: CV {cv:.3f}"
            # And anthropometrically plausible for the given height (Winter: 0.245 H, 0.246 H).
            assert 0.17 * HEIGHT_M < np.mean(length) < 0.30 * HEIGHT_M


@pytest.mark.parametrize("cam", CAMS)
def test_feet_on_the_ground_in_stance(results, cam):
    q = results[cam].quality
    assert q["stance_frames"] >= 10
    assert abs(q["stance_lowest_foot_median_m"]) <= 0.02
    assert q["stance_within_2cm_fraction"] >= 0.8, q
    # The whole clip, stance or not: nothing sinks far into the floor (measured 2nd percentile:
    # -3.3 cm at worst on these clips; the stance criterion above is the issue's).
    lowest = wf.lowest_foot_height(results[cam].filtered.values, results[cam].filtered.names)
    assert np.percentile(lowest, 2) >= -0.04


@pytest.mark.parametrize("cam", CAMS)
def test_given_height_is_kept(results, cam):
    # Stature of the output markers (segment chain, as the scale was set), after the translation
    # recovery, contact correction and filtering: the given height within 3%.
    stature, n = bg.stature_from_segments(results[cam].filtered.values, results[cam].filtered.names)
    assert n == 100 and stature == pytest.approx(HEIGHT_M, rel=0.03)


@pytest.mark.parametrize("cam", CAMS)
def test_up_axis_against_the_lab_calibration(results, cameras, cam):
    # The Qualisys world is z up; its vertical in this camera's frame is R @ z.
    true_up = cameras[cam].R @ np.array([0.0, 0.0, 1.0])
    est_up = results[cam].world_from_camera.inverse().rotation @ np.array([0.0, 1.0, 0.0])
    angle = np.degrees(np.arccos(np.clip(true_up @ est_up, -1, 1)))
    # Measured 1-12 deg on these clips (the subject stays within ~0.3 m, so the contacts barely
    # constrain the plane and the feet->pelvis prior decides; see world_frame).
    assert angle < 15.0


def test_stature_model_against_the_triangulated_subject(results, cameras):
    from sam4dcap_perception.multiview import triangulate

    cams = [cameras[c] for c in CAMS]
    pix = np.stack([np.stack([o.keypoints_2d for o in results[c].observations]) for c in CAMS])
    vis = np.stack([np.stack([o.visibility for o in results[c].observations]) for c in CAMS])
    pts, err, _ = triangulate(cams, pix, vis)
    names = results["cam01"].raw.names
    chain_stature, _ = bg.stature_from_segments(pts, names)
    # The subject stands upright in the first frames: eye height above the lab floor (z = 0)
    # over the standing eye-height fraction 0.936 (Drillis & Contini) is a second estimate.
    eyes = (pts[:10, names.index("left_eye"), 2] + pts[:10, names.index("right_eye"), 2]) / 2
    eye_stature = np.median(eyes) / 0.936
    assert chain_stature == pytest.approx(eye_stature, rel=0.03)
    # BlazePose's own metric scale is close to the triangulated one (not needed, but sane).
    assert 1.4 < chain_stature < 2.0


def test_trc_loads_in_opensim(results, tmp_path):
    import opensim

    from sam4dcap_biomech.trc import write_trc

    m = results["cam01"].filtered
    path = write_trc(tmp_path / "cam01.trc", m)
    table = opensim.TimeSeriesTableVec3(str(path))
    assert table.getNumRows() == 100 and table.getNumColumns() == 33
    assert list(table.getColumnLabels()) == list(m.names)
    row = table.getRowAtIndex(50)
    k = m.names.index("left_knee")
    got = [row[k].get(i) for i in range(3)]
    np.testing.assert_allclose(got, m.values[50, k], atol=1e-6)
    assert table.getTableMetaDataAsString("Units") == "m"


def _write_clip(src, dst, *, n_frames, blank=()):
    import cv2

    cap = cv2.VideoCapture(str(src))
    fps = cap.get(cv2.CAP_PROP_FPS)
    writer = None
    for i in range(n_frames):
        ok, frame = cap.read()
        assert ok
        if writer is None:
            writer = cv2.VideoWriter(str(dst), cv2.VideoWriter_fourcc(*"mp4v"), fps, (frame.shape[1], frame.shape[0]))
        if i in blank:
            frame[:] = 0
        writer.write(frame)
    writer.release()
    cap.release()
    return dst


def test_person_leaving_and_coming_back(demo_video, tmp_path):
    gone = range(20, 40)
    clip = _write_clip(demo_video, tmp_path / "gap.mp4", n_frames=60, blank=gone)
    r = video_to_markers(clip, height_m=HEIGHT_M, keep_observations=False)
    tracked = r.flags["tracked"]
    assert len(tracked) == 60
    assert not tracked[list(gone)].any()
    assert tracked[:20].all() and tracked[45:].all()      # found again within a few frames
    for series in (r.raw, r.filtered):
        assert np.isnan(series.values[~tracked]).all()
        assert np.isfinite(series.values[tracked]).all()
    assert r.quality["tracked_fraction"] == pytest.approx(tracked.mean())


def test_no_person_in_the_video(demo_video, tmp_path):
    clip = _write_clip(demo_video, tmp_path / "empty.mp4", n_frames=10, blank=range(10))
    with pytest.raises(Sam4dcapError, match="no person"):
        video_to_markers(clip, height_m=HEIGHT_M)


def test_start_end_window(demo_video):
    r = video_to_markers(demo_video, height_m=HEIGHT_M, start_s=0.5, end_s=1.0, keep_observations=False)
    assert r.raw.time[0] >= 0.5 - 1e-9 and r.raw.time[-1] <= 1.0 + 1e-9
    assert 25 <= r.raw.n_frames <= 31
