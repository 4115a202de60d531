"""End to end: `sam4dcap process` on the Pose2Sim demo clip (run once per module), every
artefact read back (OpenSim for TRC/MOT/STO/OSIM), stage reuse, batch with a broken trial, a
recorded bag, and `sam4dcap compare` against itself, a shifted copy and the multi-view reference."""

import base64
import json
import re
from dataclasses import replace

import numpy as np
import pytest

from sam4dcap_biomech.markersets import BLAZEPOSE33
from sam4dcap_biomech.storage import read_mot, write_mot
from sam4dcap_biomech.trc import read_trc
from sam4dcap_perception.cli import main

FLAGS = ["--height", "1.70", "--mass", "70", "--id", "--quiet"]
STEM = "cam01"


@pytest.fixture(scope="module")
def processed(demo_video, tmp_path_factory):
    base = tmp_path_factory.mktemp("process")
    out = base / STEM
    assert main(["process", str(demo_video), "--out", str(out), *FLAGS]) == 0
    return out


def test_every_artefact_is_written(processed):
    for name in (f"{STEM}_markers.trc", f"{STEM}_model.osim", f"{STEM}_scaled.osim", f"{STEM}_ik.mot",
                 f"{STEM}_ik_marker_errors.sto", f"{STEM}_id.sto", f"{STEM}_markers.c3d",
                 f"{STEM}_keypoints.npz", f"{STEM}_keypoints.json", "summary.json",
                 "joint_angles.png", "marker_error.png", "report.html"):
        assert (processed / name).is_file() and (processed / name).stat().st_size > 0, name


def test_opensim_reads_the_files_back(processed):
    import opensim

    trc = opensim.TimeSeriesTableVec3(str(processed / f"{STEM}_markers.trc"))
    assert trc.getNumRows() == 100
    assert set(trc.getColumnLabels()) == set(BLAZEPOSE33)
    mot = opensim.TimeSeriesTable(str(processed / f"{STEM}_ik.mot"))
    labels = list(mot.getColumnLabels())
    assert mot.getNumRows() == 100 and {"hip_flexion_r", "knee_angle_l", "ankle_angle_r"} <= set(labels)
    storage = opensim.Storage(str(processed / f"{STEM}_ik.mot"))
    assert storage.getSize() == 100 and storage.isInDegrees()
    ids = opensim.TimeSeriesTable(str(processed / f"{STEM}_id.sto"))
    assert ids.getNumRows() > 90 and any(lbl.endswith("_moment") for lbl in ids.getColumnLabels())
    model = opensim.Model(str(processed / f"{STEM}_scaled.osim"))
    model.initSystem()
    assert model.getMarkerSet().getSize() == 33
    # The coordinates in the .mot are the model's own.
    names = {model.getCoordinateSet().get(i).getName() for i in range(model.getCoordinateSet().getSize())}
    assert set(labels) <= names


def test_c3d_and_keypoints_match_the_markers(processed):
    from sam4dcap_biomech.c3d import read_c3d

    trc = read_trc(processed / f"{STEM}_markers.trc")
    c3d = read_c3d(processed / f"{STEM}_markers.c3d")
    assert c3d.names == trc.names and c3d.n_frames == trc.n_frames
    assert np.nanmax(np.abs(c3d.to_unit("m").values - trc.values)) < 1e-3
    kp = np.load(processed / f"{STEM}_keypoints.npz")
    assert kp["keypoints_2d"].shape == (100, 33, 2) and kp["tracked"].all()
    assert np.allclose(kp["time_s"], trc.time, atol=1e-3)
    # Pixels inside the 1080 x 1920 image for most keypoints.
    px = kp["keypoints_2d"].reshape(-1, 2)
    inside = (px[:, 0] >= 0) & (px[:, 0] < 1080) & (px[:, 1] >= 0) & (px[:, 1] < 1920)
    assert inside.mean() > 0.9
    js = json.loads((processed / f"{STEM}_keypoints.json").read_text())
    assert len(js["frames"]) == 100 and js["names"] == list(BLAZEPOSE33)
    assert js["frames"][10]["keypoints_2d_px"][0] == pytest.approx(kp["keypoints_2d"][10, 0].tolist(), abs=0.01)


def test_summary_numbers_agree_with_the_motion(processed):
    s = json.loads((processed / "summary.json").read_text())
    assert s["subject"] == {"height_m": 1.70, "mass_kg": 70.0}
    coords = read_mot(processed / f"{STEM}_ik.mot").to_unit("deg")
    for name in ("knee_angle_r", "hip_flexion_l", "ankle_angle_r"):
        v = coords.get(name)
        c = s["coordinates"][name]
        assert c["range_of_motion"] == pytest.approx(v.max() - v.min(), abs=1e-6)
        assert c["max"] == pytest.approx(v.max(), abs=1e-6) and c["unit"] == "deg"
        assert c["jitter_per_frame2"] >= 0
    assert s["coordinates"]["pelvis_tx"]["unit"] == "m"
    assert 0 < s["ik_marker_error"]["marker_error_RMS"]["mean_m"] < 0.1
    low = s["low_confidence_frames"]
    assert low["threshold"] == 0.5 and 0 <= low["count"] <= 100
    assert "peak_abs" in s["inverse_dynamics"] and s["inverse_dynamics"]["external_loads"] is False
    # The demo clip has no still moment: the model is scaled from the trial itself.
    assert s["scaling"]["scaling"] == "trial", s["scaling"]
    assert s["scaling"]["frames_used"] >= 10 and "femur_r" in s["scaling"]["scale_factors"]
    assert s["markers_quality"]["lr_swapped_frames"] >= 0


def test_camera_fit_confidence_next_to_the_mot(processed):
    """The default IK stage fits the model through the camera and writes a per-coordinate
    confidence next to the .mot, summarised in the report."""
    conf = read_mot(processed / f"{STEM}_ik_confidence.sto")
    coords = read_mot(processed / f"{STEM}_ik.mot")
    assert conf.names == coords.names and conf.n_frames == coords.n_frames
    assert np.all((conf.values >= 0) & (conf.values <= 1))
    median = dict(zip(conf.names, np.median(conf.values, axis=0)))
    assert median["mtp_angle_r"] == 0.0 and median["knee_angle_r"] > 0.0
    s = json.loads((processed / "summary.json").read_text())
    assert s["ik"]["fit"] == "camera" and s["ik"]["views"] == 1
    assert 0 < s["ik"]["reprojection_median_px"] < 30
    assert "mtp_angle_r" in s["ik_confidence"]["undetermined"]
    assert "Joint-angle confidence" in (processed / "report.html").read_text()


def test_report_is_one_offline_file(processed):
    text = (processed / "report.html").read_text()
    assert not re.search(r"<script|<link|https?://|src=\"(?!data:)", text)
    blobs = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    assert len(blobs) == 2
    assert base64.b64decode(blobs[0]) == (processed / "joint_angles.png").read_bytes()
    assert "knee_angle_r" in text and "Range of motion" in text


def test_rerun_reuses_every_stage(processed, demo_video, capsys):
    mot = processed / f"{STEM}_ik.mot"
    before = mot.stat().st_mtime_ns
    capsys.readouterr()
    assert main(["process", str(demo_video), "--out", str(processed), *FLAGS]) == 0
    printed = capsys.readouterr().out
    assert "reused: markers, model, scale, ik, id, c3d, report" in printed
    assert mot.stat().st_mtime_ns == before


def test_batch_one_broken_trial_does_not_stop_the_other(processed, demo_video, tmp_path, capsys):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00" * 4096)
    base = processed.parent            # the demo's trial folder is base/cam01: reused
    code = main(["process", str(demo_video), str(broken), "--out", str(base), "--jobs", "2", *FLAGS])
    assert code == 1
    printed = capsys.readouterr().out
    assert "1 of 2 trials succeeded" in printed
    summary = json.loads((base / "batch_summary.json").read_text())
    ok, bad = summary["results"]
    assert ok["ok"] and set(ok["stages"].values()) == {"reused"}
    assert not bad["ok"] and "broken.mp4" in bad["error"]


def _write_marker_bag(path, markers):
    from sam4dcap_perception import bag_io

    ts = bag_io.typestore()
    VM = ts.types["sam4dcap_msgs/msg/VirtualMarkers"]
    Header, Time = ts.types["std_msgs/msg/Header"], ts.types["builtin_interfaces/msg/Time"]
    Point = ts.types["geometry_msgs/msg/Point"]
    topic, msgtype = "/humans/bodies/1/markers", "sam4dcap_msgs/msg/VirtualMarkers"
    with bag_io.BagWriter(path) as bag:
        bag.add_topic(topic, msgtype)
        for i, t in enumerate(markers.time):
            ns = int(round((1000.0 + t) * 1e9))
            msg = VM(header=Header(stamp=Time(sec=ns // 10**9, nanosec=ns % 10**9), frame_id="world"),
                     person_id=1, marker_set="blazepose33", names=list(markers.names),
                     positions=[Point(x=float(p[0]), y=float(p[1]), z=float(p[2])) for p in markers.values[i]],
                     confidence=np.full(len(markers.names), 0.9, np.float32))
            bag.write(topic, ns, ts.serialize_cdr(msg, msgtype))


def test_process_a_recorded_bag(processed, demo_video, tmp_path):
    markers = read_trc(processed / f"{STEM}_markers.trc")
    bag = tmp_path / "session_bag"
    _write_marker_bag(bag, markers)
    out = tmp_path / "from_bag"
    assert main(["process", str(bag), "--out", str(out), "--height", "1.70", "--mass", "70", "--quiet"]) == 0
    got = read_trc(out / "session_bag_markers.trc")
    assert got.names == markers.names and got.n_frames == markers.n_frames
    assert np.allclose(got.time - 1000.0, markers.time, atol=1e-4)
    assert np.nanmax(np.abs(got.values - markers.values)) < 1e-4
    # Same markers, same model: the same joint angles as the video run's marker IK (a bag has no
    # camera, so it is never fitted through one: --fit markers; the video's other stages are reused).
    import shutil

    video_markers = tmp_path / "video_markers"
    shutil.copytree(processed, video_markers)
    assert main(["process", str(demo_video), "--out", str(video_markers), *FLAGS, "--fit", "markers"]) == 0
    a = read_mot(out / "session_bag_ik.mot").to_unit("deg").get("knee_angle_r")
    b = read_mot(video_markers / f"{STEM}_ik.mot").to_unit("deg").get("knee_angle_r")
    assert np.max(np.abs(a - b)) < 0.5
    assert (out / "report.html").is_file() and (out / "session_bag_markers.c3d").is_file()


def test_compare_with_itself_and_a_shifted_copy(processed, tmp_path, capsys):
    mot = processed / f"{STEM}_ik.mot"
    assert main(["compare", str(processed), str(mot), "--out", str(tmp_path / "self")]) == 0
    d = json.loads((tmp_path / "self" / "comparison.json").read_text())
    assert abs(d["lag_s"]) < 1e-6
    assert max(c["rmse"] for c in d["channels"]) < 1e-6
    coords = read_mot(mot)
    shifted = write_mot(tmp_path / "shifted.mot", replace(coords, time=coords.time + 0.15))
    capsys.readouterr()
    assert main(["compare", str(mot), str(shifted), "--out", str(tmp_path / "shift")]) == 0
    printed = re.search(r"reference lag ([+-][0-9.]+) s", capsys.readouterr().out)
    assert printed and float(printed.group(1)) == pytest.approx(0.15, abs=0.2 / 60)
    d = json.loads((tmp_path / "shift" / "comparison.json").read_text())
    assert d["lag_s"] == pytest.approx(0.15, abs=0.2 / 60)
    knee = next(c for c in d["channels"] if c["name"] == "knee_angle_r")
    assert knee["rmse"] < 0.5 and knee["correlation"] > 0.999


def test_compare_monocular_with_the_multiview_reference(processed, tmp_path_factory, pose2sim_demo):
    out = tmp_path_factory.getbasetemp() / "demo_compare"     # shared with test_multiview's fixture
    assert main(["compare", str(processed), str(pose2sim_demo), "--out", str(out), "--quiet"]) == 0
    d = json.loads((out / "comparison.json").read_text())
    # The result was made from cam01's video, one of the reference's views: same clock, the
    # lag comes from the views' frame offsets (cam01 is view 0) instead of a search.
    ref = d["multiview_reference"]
    assert ref["result_view"] == "cam01" and d["lag_source"] == "given"
    assert d["lag_s"] == pytest.approx(-ref["frame_offsets"]["cam01"] / 60.0, abs=1e-9)
    assert ref["cameras"] == ["cam01", "cam02", "cam03", "cam04"]
    assert all(v["used_median_px"] < 15 for v in ref["reprojection_px"].values())
    names = {c["name"] for c in d["channels"]}
    assert {"hip_flexion_r", "knee_angle_r", "ankle_angle_r"} <= names
    knee = next(c for c in d["channels"] if c["name"] == "knee_angle_r")
    assert np.isfinite(knee["rmse"]) and knee["n_samples"] > 90
    html = (out / "comparison.html").read_text()
    assert "Multi-view reference" in html and "<script" not in html


@pytest.mark.parametrize("case", ["unknown_type", "missing_height", "height_in_cm", "frame_rates", "no_overlap"])
def test_bad_input_one_line_nonzero(case, processed, demo_video, tmp_path, capsys):
    mot = processed / f"{STEM}_ik.mot"
    if case == "unknown_type":
        bad = tmp_path / "trial.txt"
        bad.write_text("x")
        argv, expect = ["process", str(bad), "--out", str(tmp_path / "o"), *FLAGS], "unknown input type"
    elif case == "missing_height":
        argv, expect = ["process", str(demo_video), "--out", str(tmp_path / "o")], "missing subject height"
    elif case == "height_in_cm":
        argv = ["process", str(demo_video), "--out", str(tmp_path / "o"), "--height", "170"]
        expect = "give metres"
    elif case == "frame_rates":
        coords = read_mot(mot)
        from sam4dcap_biomech.filters import resample

        t100 = np.arange(coords.time[0], coords.time[-1], 0.01)
        other = write_mot(tmp_path / "ref100.mot", resample(coords, t100))
        argv, expect = ["compare", str(mot), str(other), "--no-resample", "--out", str(tmp_path / "c")], \
            "frame rates differ"
    else:
        from sam4dcap_biomech.timeseries import TimeSeries

        coords = read_mot(mot)
        other = write_mot(tmp_path / "arm.mot",
                          TimeSeries.from_dict(coords.time, {"shoulder_elv": coords.values[:, 0]}, unit="rad"))
        argv, expect = ["compare", str(mot), str(other), "--out", str(tmp_path / "c")], "no channel in common"
    capsys.readouterr()
    assert main(argv) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("sam4dcap ")]
    assert len(err) == 1 and "error:" in err[0] and expect in err[0], err


def test_user_model_and_markerset(processed, tmp_path):
    """--model/--markerset: the user's model with the marker set added drives IK."""
    import shutil

    import opensim

    out = tmp_path / "user"
    (out / ".sam4dcap").mkdir(parents=True)
    # The markers stage of the same video is reused (same inputs and parameters).
    for name in (f"{STEM}_markers.trc", f"{STEM}_keypoints.npz", f"{STEM}_keypoints.json",
                 f"{STEM}_markers_quality.json", f"{STEM}_camera.json"):
        shutil.copy(processed / name, out / name)
    shutil.copy(processed / ".sam4dcap" / "markers.json", out / ".sam4dcap" / "markers.json")
    user_model = opensim.Model(str(processed / f"{STEM}_scaled.osim"))
    markerset_xml = tmp_path / "markers.xml"
    user_model.getMarkerSet().printToXML(str(markerset_xml))
    user_model.updMarkerSet().clearAndDestroy()           # the model alone has no markers
    user_model.finalizeConnections()
    model_path = tmp_path / "user.osim"
    user_model.printToXML(str(model_path))
    assert main(["process", str(processed.parent / "none.mp4"), "--out", str(out), *FLAGS]) == 2
    demo = json.loads((processed / "summary.json").read_text())["source"]
    assert main(["process", demo, "--out", str(out), "--height", "1.70", "--quiet",
                 "--model", str(model_path), "--markerset", str(markerset_xml)]) == 0
    stages = json.loads((out / "summary.json").read_text())["stages"]
    assert stages["markers"] == "reused" and stages["model"] == "ran"
    model = opensim.Model(str(out / f"{STEM}_model.osim"))
    assert model.getMarkerSet().getSize() == 33
    a = read_mot(out / f"{STEM}_ik.mot").to_unit("deg").get("knee_angle_r")
    b = read_mot(processed / f"{STEM}_ik.mot").to_unit("deg").get("knee_angle_r")
    assert np.max(np.abs(a - b)) < 1.0          # same geometry and markers: same knee angle
