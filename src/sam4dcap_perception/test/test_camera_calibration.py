"""camera_calibration: intrinsics from ROS camera_info and OpenCV YAML files; bad files refused
naming the parameter; the offline marker pipeline uses video_source_node.camera_info_file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sam4dcap_biomech.config import default_config_path
from sam4dcap_biomech.errors import Sam4dcapError
from sam4dcap_perception.camera_calibration import load_camera_info_file

K = np.array([[1681.5, 0.0, 541.25], [0.0, 1679.0, 958.75], [0.0, 0.0, 1.0]])


def ros_yaml(path: Path, k=K, width=1080, height=1920) -> Path:
    data = ", ".join(repr(float(v)) for v in np.ravel(k))
    path.write_text(f"image_width: {width}\nimage_height: {height}\ncamera_name: cam01\n"
                    f"camera_matrix:\n  rows: 3\n  cols: 3\n  data: [{data}]\n"
                    "distortion_model: plumb_bob\n"
                    "distortion_coefficients:\n  rows: 1\n  cols: 5\n  data: [0, 0, 0, 0, 0]\n")
    return path


def test_ros_camera_info_yaml(tmp_path):
    intr = load_camera_info_file(ros_yaml(tmp_path / "cam.yaml"), 640, 480)
    assert (intr.width, intr.height) == (1080, 1920), "the file's image size wins"
    assert (intr.fx, intr.fy, intr.cx, intr.cy) == (1681.5, 1679.0, 541.25, 958.75)


@pytest.mark.parametrize("key", ["K", "camera_matrix", "cameraMatrix"])
def test_opencv_yaml(tmp_path, key):
    import cv2

    path = tmp_path / "cam.yml"
    fs = cv2.FileStorage(str(path), cv2.FILE_STORAGE_WRITE)
    fs.write(key, K)
    fs.write("dist", np.zeros(5))
    fs.release()
    intr = load_camera_info_file(path, 1080, 1920)
    assert (intr.width, intr.height) == (1080, 1920), "no size in the file: the video's"
    assert (intr.fx, intr.fy, intr.cx, intr.cy) == (1681.5, 1679.0, 541.25, 958.75)


def test_bad_files_are_refused_naming_the_parameter(tmp_path):
    with pytest.raises(Sam4dcapError, match="video_source_node.camera_info_file.*not found"):
        load_camera_info_file(tmp_path / "missing.yaml", 1080, 1920)
    (tmp_path / "other.yaml").write_text("image_width: 10\nsomething: [1, 2]\n")
    with pytest.raises(Sam4dcapError, match="video_source_node.camera_info_file.*no 3x3 camera matrix"):
        load_camera_info_file(tmp_path / "other.yaml", 1080, 1920)
    with pytest.raises(Sam4dcapError, match="positive focal lengths"):
        load_camera_info_file(ros_yaml(tmp_path / "zero.yaml", k=np.zeros((3, 3))), 1080, 1920)


def test_offline_markers_use_the_configured_camera_info_file(tmp_path, demo_video):
    from sam4dcap_perception.marker_pipeline import video_to_markers

    calib = ros_yaml(tmp_path / "cam01.yaml")
    text = default_config_path().read_text()
    old = '    camera_info_file: ""'
    assert old in text
    config = tmp_path / "sam4dcap.yaml"
    config.write_text(text.replace(old, f'    camera_info_file: "{calib}"', 1))
    result = video_to_markers(demo_video, height_m=1.70, end_s=0.3, config=config, keep_observations=False)
    intr = result.intrinsics
    assert (intr.fx, intr.fy, intr.cx, intr.cy) == (1681.5, 1679.0, 541.25, 958.75)
    # Without the file: the field-of-view default (a different focal length).
    default = video_to_markers(demo_video, height_m=1.70, end_s=0.3, keep_observations=False).intrinsics
    assert abs(default.fx - 1681.5) > 1.0
