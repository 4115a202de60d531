"""image_conversion: every encoding survives real CDR serialization; padding and byte order."""

from __future__ import annotations

import array

import numpy as np
import pytest
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import CameraInfo, Image

from sam4dcap_biomech.errors import Sam4dcapError
from sam4dcap_perception.nodes.image_conversion import (ENCODINGS, camera_info_from_intrinsics, encoding_layout,
                                                        image_to_numpy, intrinsics_from_camera_info,
                                                        numpy_to_image, to_rgb8)
from sam4dcap_perception.observations import CameraIntrinsics


def random_pixels(encoding: str, h: int = 7, w: int = 5, seed: int = 0) -> np.ndarray:
    dtype, channels = encoding_layout(encoding)
    rng = np.random.default_rng(seed)
    shape = (h, w) if channels == 1 else (h, w, channels)
    if dtype.kind == "f":
        px = rng.normal(0, 100, shape).astype(dtype)
        px.flat[0] = np.nan
        px.flat[1] = np.inf
        return px
    info = np.iinfo(dtype)
    px = rng.integers(info.min, info.max, shape, dtype=dtype, endpoint=True)
    px.flat[0], px.flat[1] = info.min, info.max
    return px


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_every_encoding_round_trips_through_serialization(encoding):
    px = random_pixels(encoding)
    msg = numpy_to_image(px, encoding, frame_id="cam")
    wire = serialize_message(msg)
    back = deserialize_message(wire, Image)
    assert (back.encoding, back.height, back.width, back.header.frame_id) == (encoding, 7, 5, "cam")
    assert back.step == 5 * px.itemsize * (1 if px.ndim == 2 else px.shape[2])
    out = image_to_numpy(back)
    assert out.dtype == px.dtype and out.shape == px.shape
    np.testing.assert_array_equal(out, px)  # NaN == NaN for assert_array_equal


def test_padded_rows_are_skipped():
    px = random_pixels("rgb8", h=4, w=3)
    row = px.reshape(4, 9)
    padded = np.zeros((4, 16), np.uint8)
    padded[:, :9] = row
    padded[:, 9:] = 0xEE  # padding bytes must never leak into pixels
    msg = Image(height=4, width=3, encoding="rgb8", step=16, data=array.array("B", padded.tobytes()))
    back = deserialize_message(serialize_message(msg), Image)
    np.testing.assert_array_equal(image_to_numpy(back), px)


def test_padded_rows_with_unaligned_step_for_16bit():
    px = random_pixels("mono16", h=3, w=4)
    padded = np.full((3, 11), 0xAB, np.uint8)  # step 11: rows start at odd byte offsets
    padded[:, :8] = px.astype("<u2").view(np.uint8).reshape(3, 8)
    msg = Image(height=3, width=4, encoding="mono16", step=11, is_bigendian=0,
                data=array.array("B", padded.tobytes()))
    np.testing.assert_array_equal(image_to_numpy(msg), px)


@pytest.mark.parametrize("encoding", ["mono16", "16UC1", "32FC1", "16SC1", "64FC1"])
def test_big_endian_input_is_converted(encoding):
    px = random_pixels(encoding, seed=3)
    big = px.astype(px.dtype.newbyteorder(">"))
    msg = Image(height=px.shape[0], width=px.shape[1], encoding=encoding, is_bigendian=1,
                step=px.shape[1] * px.itemsize, data=array.array("B", big.tobytes()))
    out = image_to_numpy(deserialize_message(serialize_message(msg), Image))
    assert out.dtype == px.dtype and out.dtype.isnative
    np.testing.assert_array_equal(out, px)


def test_known_pixel_values_16uc1_depth_millimetres():
    depth_mm = np.array([[0, 1, 65535], [1000, 2500, 300]], np.uint16)
    msg = deserialize_message(serialize_message(numpy_to_image(depth_mm, "16UC1")), Image)
    assert bytes(msg.data[:2]) == b"\x00\x00" and bytes(msg.data[4:6]) == b"\xff\xff"
    assert image_to_numpy(msg)[1, 1] == 2500


def test_full_hd_frame_converts_without_loss():
    px = np.random.default_rng(1).integers(0, 256, (1080, 1920, 3), np.uint8)
    msg = numpy_to_image(px, "rgb8")
    assert isinstance(msg.data, array.array) and len(msg.data) == px.size
    np.testing.assert_array_equal(image_to_numpy(deserialize_message(serialize_message(msg), Image)), px)


def test_view_is_zero_copy_and_copy_is_independent():
    px = random_pixels("mono8")
    msg = numpy_to_image(px)
    view = image_to_numpy(msg)
    copy = image_to_numpy(msg, copy=True)
    msg.data[0] = (int(msg.data[0]) + 1) % 256
    assert view[0, 0] == msg.data[0] and copy[0, 0] == px[0, 0]


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8", "mono8"])
def test_to_rgb8_channel_order(encoding):
    rgb = random_pixels("rgb8", seed=7)
    if encoding == "mono8":
        rgb = np.repeat(rgb[:, :, :1], 3, axis=2)
        src = rgb[:, :, 0]
    else:
        order = {"rgb8": [0, 1, 2], "bgr8": [2, 1, 0], "rgba8": [0, 1, 2], "bgra8": [2, 1, 0]}[encoding]
        src = rgb[:, :, order]
        if encoding.endswith("a8"):
            src = np.dstack([src, np.full(rgb.shape[:2], 9, np.uint8)])
    out = to_rgb8(deserialize_message(serialize_message(numpy_to_image(src, encoding)), Image))
    np.testing.assert_array_equal(out, rgb)


def test_bad_input_raises_clear_errors():
    with pytest.raises(Sam4dcapError, match="unsupported image encoding 'yuv422'"):
        encoding_layout("yuv422")
    with pytest.raises(Sam4dcapError, match="needs 3 channel"):
        numpy_to_image(np.zeros((2, 2), np.uint8), "rgb8")
    with pytest.raises(Sam4dcapError, match="needs dtype uint16"):
        numpy_to_image(np.zeros((2, 2), np.uint8), "mono16")
    short = Image(height=2, width=2, encoding="rgb8", step=6, data=array.array("B", bytes(10)))
    with pytest.raises(Sam4dcapError, match="needs 12"):
        image_to_numpy(short)
    with pytest.raises(Sam4dcapError, match="step 5 <"):
        image_to_numpy(Image(height=2, width=2, encoding="rgb8", step=5, data=array.array("B", bytes(12))))
    with pytest.raises(Sam4dcapError, match="cannot convert a 32FC1"):
        to_rgb8(numpy_to_image(np.zeros((2, 2), np.float32)))


def test_camera_info_from_intrinsics_round_trips():
    k = CameraIntrinsics.from_fov(1080, 1920, 60.0)
    info = deserialize_message(serialize_message(camera_info_from_intrinsics(k, frame_id="camera")), CameraInfo)
    assert info.header.frame_id == "camera" and (info.width, info.height) == (1080, 1920)
    fx = 960.0 / np.tan(np.radians(30.0))  # FOV spans the long side (1920 px)
    np.testing.assert_allclose(np.reshape(info.k, (3, 3)), [[fx, 0, 539.5], [0, fx, 959.5], [0, 0, 1]])
    np.testing.assert_allclose(np.reshape(info.p, (3, 4))[:, :3], np.reshape(info.k, (3, 3)))
    np.testing.assert_array_equal(info.d, np.zeros(5))
    assert intrinsics_from_camera_info(info) == k
