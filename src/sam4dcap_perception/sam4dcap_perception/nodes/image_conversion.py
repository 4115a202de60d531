"""sensor_msgs/Image <-> numpy without cv_bridge, and CameraInfo from CameraIntrinsics.

PyPI's cv-bridge is the ROS 1 package (numpy<2): this is the small, exact subset we need.
Speed matters for full-HD frames: `msg.data` is filled from an `array('B')` built with one
memcpy (assigning an ndarray element-wise costs ~0.5 s per 1080p frame, bytes ~5 ms), and
`image_to_numpy` is a zero-copy view of the message buffer unless `copy=True`.

Encodings follow sensor_msgs/image_encodings.hpp: named colour/mono/bayer encodings and the
generic `<bits><U|S|F>C<channels>` ones. Row padding (`step > width*channels*itemsize`) and
`is_bigendian` are honoured on input; output is always unpadded in the host's byte order.
"""

from __future__ import annotations

import array
import re
import sys

import numpy as np
from sensor_msgs.msg import CameraInfo, Image

from sam4dcap_biomech.errors import Sam4dcapError

# encoding -> (numpy dtype, channels)
_NAMED = {
    "rgb8": (np.uint8, 3), "bgr8": (np.uint8, 3), "rgba8": (np.uint8, 4), "bgra8": (np.uint8, 4),
    "rgb16": (np.uint16, 3), "bgr16": (np.uint16, 3), "rgba16": (np.uint16, 4), "bgra16": (np.uint16, 4),
    "mono8": (np.uint8, 1), "mono16": (np.uint16, 1),
    "bayer_rggb8": (np.uint8, 1), "bayer_bggr8": (np.uint8, 1), "bayer_gbrg8": (np.uint8, 1),
    "bayer_grbg8": (np.uint8, 1), "bayer_rggb16": (np.uint16, 1), "bayer_bggr16": (np.uint16, 1),
    "bayer_gbrg16": (np.uint16, 1), "bayer_grbg16": (np.uint16, 1),
}
_GENERIC = re.compile(r"^(8|16|32|64)([USF])C([1-9]\d*)$")
_GENERIC_DTYPES = {("8", "U"): np.uint8, ("8", "S"): np.int8, ("16", "U"): np.uint16, ("16", "S"): np.int16,
                   ("32", "S"): np.int32, ("32", "F"): np.float32, ("64", "F"): np.float64}
ENCODINGS = tuple(_NAMED) + ("8UC1", "8UC3", "8UC4", "8SC1", "16UC1", "16UC3", "16SC1", "32SC1",
                             "32FC1", "32FC3", "64FC1")
_HOST_BIG_ENDIAN = sys.byteorder == "big"


def encoding_layout(encoding: str) -> tuple[np.dtype, int]:
    """(dtype, channels) of an image encoding; Sam4dcapError for unsupported ones (e.g. yuv422)."""
    if encoding in _NAMED:
        dtype, channels = _NAMED[encoding]
        return np.dtype(dtype), channels
    m = _GENERIC.match(encoding)
    if m and (m.group(1), m.group(2)) in _GENERIC_DTYPES:
        return np.dtype(_GENERIC_DTYPES[m.group(1), m.group(2)]), int(m.group(3))
    raise Sam4dcapError(f"unsupported image encoding {encoding!r} (supported: {', '.join(ENCODINGS)}, "
                        "and <8|16|32|64><U|S|F>C<n>)")


def _default_encoding(image: np.ndarray) -> str:
    channels = 1 if image.ndim == 2 else image.shape[2]
    names = {(np.dtype(np.uint8), 1): "mono8", (np.dtype(np.uint8), 3): "rgb8", (np.dtype(np.uint8), 4): "rgba8",
             (np.dtype(np.uint16), 1): "mono16", (np.dtype(np.float32), 1): "32FC1"}
    name = names.get((image.dtype, channels))
    if name is None:
        for (bits, kind), dt in _GENERIC_DTYPES.items():
            if np.dtype(dt) == image.dtype:
                return f"{bits}{kind}C{channels}"
        raise Sam4dcapError(f"no image encoding for dtype {image.dtype}")
    return name


def numpy_to_image(image: np.ndarray, encoding: str | None = None, *, stamp=None, frame_id: str = "",
                   msg: Image | None = None) -> Image:
    """A sensor_msgs/Image holding `image` ((H, W) or (H, W, C)), unpadded, host byte order.

    `encoding` defaults from dtype/channels (uint8x3 -> rgb8, uint8 -> mono8, uint16 -> mono16,
    float32 -> 32FC1). Channel order is NOT converted: pass data already in `encoding`'s order.
    """
    image = np.asarray(image)
    if image.ndim not in (2, 3):
        raise Sam4dcapError(f"image must be (H, W) or (H, W, C), got shape {image.shape}")
    encoding = encoding or _default_encoding(image)
    dtype, channels = encoding_layout(encoding)
    have_channels = 1 if image.ndim == 2 else image.shape[2]
    if have_channels != channels:
        raise Sam4dcapError(f"encoding {encoding} needs {channels} channel(s), image has {have_channels}")
    if image.dtype != dtype:
        raise Sam4dcapError(f"encoding {encoding} needs dtype {dtype}, image has {image.dtype}")
    msg = msg if msg is not None else Image()
    if stamp is not None:
        msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.height, msg.width = int(image.shape[0]), int(image.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = int(_HOST_BIG_ENDIAN and dtype.itemsize > 1)
    msg.step = msg.width * channels * dtype.itemsize
    buf = array.array("B")
    buf.frombytes(np.ascontiguousarray(image).data.cast("B"))  # one memcpy
    msg.data = buf
    return msg


def image_to_numpy(msg: Image, *, copy: bool = False) -> np.ndarray:
    """The pixels of `msg` as (H, W) for one channel or (H, W, C), in the encoding's order.

    A read-only view of the message buffer unless `copy=True` (or byte swapping was needed).
    """
    dtype, channels = encoding_layout(msg.encoding)
    h, w = int(msg.height), int(msg.width)
    row_bytes = w * channels * dtype.itemsize
    step = int(msg.step)
    if step < row_bytes:
        raise Sam4dcapError(f"image step {step} < width*channels*itemsize = {row_bytes} ({msg.encoding})")
    raw = np.frombuffer(memoryview(msg.data), dtype=np.uint8) if len(msg.data) else np.zeros(0, np.uint8)
    need = step * (h - 1) + row_bytes if h else 0
    if raw.size < need:
        raise Sam4dcapError(f"image data has {raw.size} bytes, {h}x{w} {msg.encoding} with step {step} needs {need}")
    wire_dtype = dtype.newbyteorder(">" if msg.is_bigendian else "<") if dtype.itemsize > 1 else dtype
    if step % dtype.itemsize == 0:
        pixels = np.ndarray((h, w, channels), dtype=wire_dtype, buffer=raw.data if raw.size else None,
                            strides=(step, channels * dtype.itemsize, dtype.itemsize)) if h else \
            np.zeros((0, w, channels), wire_dtype)
    else:  # odd padding: unaligned rows, copy row bytes out first
        rows = np.lib.stride_tricks.as_strided(raw, (h, row_bytes), (step, 1))
        pixels = np.ascontiguousarray(rows).view(wire_dtype).reshape(h, w, channels)
    if wire_dtype != dtype:  # foreign byte order: convert to native
        pixels = pixels.astype(dtype)
    elif copy:
        pixels = pixels.copy()
    return pixels[:, :, 0] if channels == 1 else pixels


def to_rgb8(msg: Image) -> np.ndarray:
    """(H, W, 3) uint8 RGB from rgb8/bgr8/rgba8/bgra8/mono8 images (what the estimators take)."""
    pixels = image_to_numpy(msg)
    enc = msg.encoding
    if enc == "rgb8":
        return pixels
    if enc == "bgr8":
        return np.ascontiguousarray(pixels[:, :, ::-1])
    if enc == "rgba8":
        return np.ascontiguousarray(pixels[:, :, :3])
    if enc == "bgra8":
        return np.ascontiguousarray(pixels[:, :, 2::-1])
    if enc in ("mono8", "8UC1"):
        return np.repeat(pixels[:, :, None], 3, axis=2)
    raise Sam4dcapError(f"cannot convert a {enc} image to rgb8 (expected rgb8, bgr8, rgba8, bgra8 or mono8)")


def camera_info_from_intrinsics(intrinsics, *, stamp=None, frame_id: str = "") -> CameraInfo:
    """CameraInfo of an undistorted pinhole (`observations.CameraIntrinsics`): K, P, R = I, D = 0."""
    info = CameraInfo()
    if stamp is not None:
        info.header.stamp = stamp
    info.header.frame_id = frame_id
    info.width, info.height = int(intrinsics.width), int(intrinsics.height)
    fx, fy, cx, cy = (float(v) for v in (intrinsics.fx, intrinsics.fy, intrinsics.cx, intrinsics.cy))
    info.distortion_model = "plumb_bob"
    info.d = [0.0] * 5
    info.k = [fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0]
    info.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    info.p = [fx, 0.0, cx, 0.0, 0.0, fy, cy, 0.0, 0.0, 0.0, 1.0, 0.0]
    return info


def intrinsics_from_camera_info(info: CameraInfo):
    """Inverse of camera_info_from_intrinsics (distortion ignored: our sources are rectified)."""
    from sam4dcap_perception.observations import CameraIntrinsics

    k = list(info.k)
    return CameraIntrinsics(int(info.width), int(info.height), k[0], k[4], k[2], k[5])
