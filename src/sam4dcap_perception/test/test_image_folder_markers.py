"""An image folder is a source like a video: its frame rate comes from the config
(video_source_node.image_folder_fps), since images carry no capture times."""

import cv2
import numpy as np
import pytest

from sam4dcap_biomech.errors import Sam4dcapError
from sam4dcap_perception.marker_pipeline import video_to_markers


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory, demo_video):
    folder = tmp_path_factory.mktemp("frames")
    cap = cv2.VideoCapture(str(demo_video))
    for i in range(30):
        ok, bgr = cap.read()
        assert ok
        cv2.imwrite(str(folder / f"frame_{i:04d}.png"), bgr)
    return folder


def _config_with_fps(tmp_path, fps):
    from sam4dcap_biomech.config import default_config_path

    text = default_config_path().read_text()
    assert "image_folder_fps: 0.0" in text
    path = tmp_path / "config.yaml"
    path.write_text(text.replace("image_folder_fps: 0.0", f"image_folder_fps: {fps}"))
    return path


def test_image_folder_uses_the_configured_rate(image_folder, tmp_path):
    result = video_to_markers(image_folder, height_m=1.7, config=_config_with_fps(tmp_path, 60.0),
                              keep_observations=False)
    assert result.raw.n_frames == 30
    np.testing.assert_allclose(np.diff(result.raw.time), 1 / 60.0, atol=1e-9)


def test_image_folder_without_a_rate_is_refused(image_folder):
    with pytest.raises(Sam4dcapError, match="image_folder_fps"):
        video_to_markers(image_folder, height_m=1.7, keep_observations=False)
