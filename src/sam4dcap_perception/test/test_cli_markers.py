"""`sam4dcap markers` end to end on the real demo clip (a 0.5 s window), and its bad input."""

import json
import subprocess
import sys

import numpy as np
import pytest

from sam4dcap_biomech.trc import read_trc


def _error_lines(stderr):
    # Native libraries (FFmpeg, MediaPipe) may print their own notes on stderr; ours is one line.
    lines = [line for line in stderr.strip().splitlines() if line.startswith("sam4dcap markers: error:")]
    assert "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1] == lines[-1]
    return lines


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "sam4dcap_perception.cli", "markers", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, timeout=300)


def test_markers_writes_a_trc(demo_video, tmp_path):
    out = tmp_path / "m.trc"
    quality = tmp_path / "q.json"
    p = _cli(demo_video, "--height", 1.75, "--out", out, "--start", 0.5, "--end", 1.0, "--fov", 40,
             "--quality", quality)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.strip().splitlines()
    assert len(lines) == 1 and "100% tracked" in lines[0] and str(out) in lines[0]
    m = read_trc(out)
    assert m.names[:3] == ("nose", "left_eye_inner", "left_eye") and len(m.names) == 33
    assert 0.5 - 1e-6 <= m.time[0] and m.time[-1] <= 1.0 + 1e-6
    assert np.isfinite(m.values).all()
    q = json.loads(quality.read_text())
    assert q["horizontal_fov_deg"] == 40.0 and q["tracked_fraction"] == 1.0
    assert np.array(q["world_from_camera"]).shape == (4, 4)


@pytest.mark.parametrize("args, message", [
    (["--height", "1.75", "--out", "x.trc"], "video source not found"),
    (["--height", "7", "--out", "x.trc"], "not a human standing height"),
    (["--height", "1.75", "--out", "x.csv"], "must be a .trc"),
])
def test_bad_arguments_exit_2_with_one_line(tmp_path, args, message):
    video = tmp_path / "missing.mp4" if "not found" in message else tmp_path / "v.mp4"
    if "not found" not in message:
        video.write_bytes(b"")
    p = _cli(video, *args, cwd=tmp_path)
    assert p.returncode == 2
    assert len(_error_lines(p.stderr)) == 1 and message in p.stderr


def test_unreadable_video_exits_2(tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"this is not a video" * 100)
    p = _cli(bad, "--height", 1.75, "--out", tmp_path / "x.trc")
    assert p.returncode == 2 and len(_error_lines(p.stderr)) == 1, p.stderr
    assert "broken.mp4" in p.stderr
    assert not (tmp_path / "x.trc").exists()


def test_no_person_exits_2(demo_video, tmp_path):
    import cv2

    cap = cv2.VideoCapture(str(demo_video))
    ok, frame = cap.read()
    cap.release()
    clip = tmp_path / "nobody.mp4"
    w = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"mp4v"), 30, (frame.shape[1], frame.shape[0]))
    for _ in range(8):
        w.write(np.zeros_like(frame))
    w.release()
    p = _cli(clip, "--height", 1.75, "--out", tmp_path / "x.trc")
    assert p.returncode == 2 and "no person" in p.stderr, p.stderr
    assert len(_error_lines(p.stderr)) == 1
    assert not (tmp_path / "x.trc").exists()
