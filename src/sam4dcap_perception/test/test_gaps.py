"""Gaps never fail a trial. Composites of the real Pose2Sim demo clip made here (the picture blacked
out for a few frames and for half a second; a clip of background only) go through `sam4dcap
process` / `markers`: exit 0, NaN rows in the TRC, .mot and .sto where the person was lost,
short gaps bridged and flagged, one warning line, and one clear "no person" error for a clip
without anybody. Plus the bridging rules on a synthetic subject with known frames."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from _synthetic_body import Scene

from sam4dcap_biomech.storage import read_mot
from sam4dcap_biomech.trc import read_trc
from sam4dcap_perception.cli import main
from sam4dcap_biomech.config import load_config
from sam4dcap_perception.virtual_markers import (BRIDGED_CONFIDENCE_FACTOR, markers_from_observations,
                                                 offline_marker_settings)

SHORT_GAP = range(20, 24)      # 4 frames (0.067 s at 60 fps): bridged
LONG_GAP = range(45, 75)       # 30 frames (0.5 s): lost
FLAGS = ["--height", "1.70", "--mass", "70", "--id", "--quiet"]


def _write_composite(src, dst, *, blank=(), crop=None, size=(540, 960)):
    """The demo clip at half size, frames in `blank` black (the camera covered), or every frame
    cropped to `crop` = (x0, y0, x1, y1) in fractions of the picture (background only)."""
    import cv2

    cap = cv2.VideoCapture(str(src))
    fps = cap.get(cv2.CAP_PROP_FPS)
    out = cv2.VideoWriter(str(dst), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    i = 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        if crop is not None:
            h, w = frame.shape[:2]
            frame = frame[int(crop[1] * h):int(crop[3] * h), int(crop[0] * w):int(crop[2] * w)]
        frame = cv2.resize(frame, size)
        if i in blank:
            frame[:] = 0
        out.write(frame)
        i += 1
    cap.release()
    out.release()
    return dst


@pytest.fixture(scope="module")
def gap_trial(demo_video, tmp_path_factory):
    base = tmp_path_factory.mktemp("gaps")
    clip = _write_composite(demo_video, base / "covered.mp4", blank=set(SHORT_GAP) | set(LONG_GAP))
    out = base / "out"
    run = subprocess.run([sys.executable, "-m", "sam4dcap_perception.cli", "process", str(clip), "--out", str(out),
                          *FLAGS], capture_output=True, text=True, timeout=900, env=os.environ.copy())
    return run, out



def _settings() -> dict:
    """The offline marker settings the product runs with (config markers_node)."""
    return offline_marker_settings(load_config().params("markers_node"))

def test_process_exits_0_with_one_warning(gap_trial):
    run, _ = gap_trial
    assert run.returncode == 0, run.stderr[-3000:]
    warnings = [ln for ln in run.stderr.splitlines() if "warning:" in ln]
    assert len(warnings) == 1, warnings
    assert "person lost in" in warnings[0] and "NaN rows" in warnings[0] and "covered_frames.csv" in warnings[0]
    assert "0.75-" in warnings[0]                      # where: the long gap starts at frame 45


def test_lost_frames_are_nan_in_every_output(gap_trial):
    _, out = gap_trial
    trc = read_trc(out / "covered_markers.trc")
    mot = read_mot(out / "covered_ik.mot")
    errors = read_mot(out / "covered_ik_marker_errors.sto")
    forces = read_mot(out / "covered_id.sto")
    assert trc.n_frames == mot.n_frames == errors.n_frames == forces.n_frames == 100
    np.testing.assert_allclose(mot.time, trc.time, atol=1e-6)          # one time grid
    lost = np.isnan(trc.values).all(axis=(1, 2))
    # The whole covered half second (the tracker may need a frame or two to come back).
    assert lost[list(LONG_GAP)].all() and lost.sum() <= len(LONG_GAP) + 4
    assert not lost[list(SHORT_GAP)].any()                                 # bridged
    for series in (mot, errors, forces):
        assert np.isnan(series.values[lost]).all()
    assert np.isfinite(mot.values[~lost]).all()
    assert np.isfinite(forces.values[~lost]).all(axis=1).mean() > 0.8     # ID needs 4-frame runs


def test_frames_file_summary_and_report_flag_the_gaps(gap_trial):
    _, out = gap_trial
    rows = list(csv.DictReader((out / "covered_frames.csv").open()))
    assert len(rows) == 100 and set(rows[0]) == {"time_s", "status", "confidence", "ik_solved", "ik_marker_rms_m"}
    status = [r["status"] for r in rows]
    assert all(status[i] == "bridged" for i in SHORT_GAP)
    assert all(status[i] == "lost" and rows[i]["ik_solved"] == "0" and rows[i]["confidence"] == "" for i in LONG_GAP)
    bridged_conf = [float(rows[i]["confidence"]) for i in SHORT_GAP]
    seen_conf = [float(r["confidence"]) for r in rows if r["status"] == "tracked"]
    assert max(bridged_conf) <= BRIDGED_CONFIDENCE_FACTOR * max(seen_conf) + 1e-3
    gaps = json.loads((out / "summary.json").read_text())["gaps"]
    assert gaps["bridged_frames"] == len(SHORT_GAP) and gaps["lost_frames"] == status.count("lost")
    assert gaps["unsolved_intervals_s"][0][0] == pytest.approx(45 / 60, abs=1e-3)
    assert gaps["frames_file"] == "covered_frames.csv"
    html = (out / "report.html").read_text()
    assert "Frames without the person" in html and "person lost in" in html


def test_markers_on_the_covered_clip_exits_0_with_a_warning(gap_trial, tmp_path, capsys):
    _, out = gap_trial
    trc = tmp_path / "covered.trc"
    assert main(["markers", str(out.parent / "covered.mp4"), "--height", "1.70", "--out", str(trc)]) == 0
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("warning:")]
    assert len(err) == 1 and "person lost in" in err[0] and "0.75-" in err[0]
    assert np.isnan(read_trc(trc).values[list(LONG_GAP)]).all()


@pytest.fixture(scope="module")
def background_clip(demo_video, tmp_path_factory):
    # The floor mat in the lower right corner of the view: nobody there in any frame.
    return _write_composite(demo_video, tmp_path_factory.mktemp("empty") / "empty.mp4",
                            crop=(0.62, 0.68, 1.0, 1.0))


@pytest.mark.parametrize("command", ["markers", "process"])
def test_a_clip_without_a_person_is_one_clear_error(command, background_clip, tmp_path, capsys):
    out = tmp_path / ("m.trc" if command == "markers" else "out")
    args = [command, str(background_clip), "--height", "1.70", "--out", str(out)]
    assert main(args + (["--mass", "70", "--quiet"] if command == "process" else [])) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no person" in err[0], err
    assert not out.with_suffix(".trc").exists() and not list(tmp_path.rglob("*.trc"))


def test_bridging_rules_on_a_synthetic_subject():
    scene = Scene(n_frames=120)
    short, long_, edge = range(30, 34), range(60, 90), range(0, 5)
    obs = scene.observations(missing=set(short) | set(long_) | set(edge))
    result = markers_from_observations(obs, height_m=scene.height_m, intrinsics=scene.intrinsics,
                                       **{**_settings(), "offline_cutoff_hz": 6.0, "max_bridged_gap_s": 0.1})
    status = result.flags["frame_status"]
    assert all(status[i] == "bridged" for i in short)
    assert all(status[i] == "lost" for i in list(long_) + list(edge))     # too long; nothing before the first
    assert result.quality["lost_frames"] == len(long_) + len(edge) and result.quality["bridged_frames"] == 4
    raw = result.raw.values
    assert np.isnan(raw[list(long_)]).all() and np.isfinite(raw[list(short)]).all()
    # A smooth glide: the bridged frames land where the subject was (within 1 cm).
    truth = scene.expected_world()
    offset = np.nanmedian(raw[40:50] - truth[40:50], axis=(0, 1))
    assert np.abs(raw[list(short)] - truth[list(short)] - offset).max() < 0.01
    assert (result.confidence[list(short)] <= BRIDGED_CONFIDENCE_FACTOR + 1e-9).all()
    assert result.quality["lost_intervals_s"] == [[0.0, pytest.approx(4 / 60)], [1.0, pytest.approx(89 / 60)]]


def test_a_subject_seen_in_few_frames_is_no_person():
    from sam4dcap_biomech.errors import Sam4dcapError

    scene = Scene(n_frames=100)
    obs = scene.observations(missing=set(range(10, 100)))
    with pytest.raises(Sam4dcapError, match=r"no person: one is seen in only 10 of 100 frames"):
        markers_from_observations(obs, height_m=scene.height_m, intrinsics=scene.intrinsics,
                                  **{**_settings(), "offline_cutoff_hz": 6.0, "min_tracked_fraction": 0.2})
