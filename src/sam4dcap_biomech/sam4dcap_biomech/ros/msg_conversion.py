"""ROS message fields <-> numpy and seconds, in one place: stamps, point arrays, transforms, and
how BodyKeypoints say whether their 3D keypoints are hip-centred. Every node converts with
these (images: sam4dcap_perception.nodes.image_conversion)."""

from __future__ import annotations

import math
from typing import Iterable, Sequence

import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Point, TransformStamped

# --- stamps ---------------------------------------------------------------------------------


def stamp_to_sec(stamp) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


def sec_to_stamp(t: float) -> Time:
    sec = int(t // 1)
    nanosec = int(round((t - sec) * 1e9))
    if nanosec >= 1_000_000_000:
        sec, nanosec = sec + 1, nanosec - 1_000_000_000
    return Time(sec=sec, nanosec=nanosec)


def stamp_to_ns(stamp) -> int:
    """A stamp as integer nanoseconds (exact: the key flow control compares stamps with)."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def ns_to_stamp(t_ns: int) -> Time:
    sec, nanosec = divmod(int(t_ns), 1_000_000_000)
    return Time(sec=sec, nanosec=nanosec)


def stamp_from_cdr(cdr: bytes) -> Time:
    """header.stamp of a CDR message whose first field is std_msgs/Header (all image types)."""
    sec = int.from_bytes(cdr[4:8], "little", signed=True)
    nanosec = int.from_bytes(cdr[8:12], "little")
    return Time(sec=sec, nanosec=nanosec)


def restamp_cdr(cdr: bytes, t_ns: int) -> bytes:
    """The same CDR message (header first) with header.stamp = t_ns."""
    sec, nanosec = divmod(int(t_ns), 1_000_000_000)
    return bytes(cdr[:4]) + sec.to_bytes(4, "little", signed=True) + nanosec.to_bytes(4, "little") + bytes(cdr[12:])


# --- points ---------------------------------------------------------------------------------


def points_to_array(points: Iterable, dims: int = 3) -> np.ndarray:
    """(N, dims) float array of geometry_msgs/Point-like objects (x, y[, z])."""
    if dims == 2:
        return np.array([[p.x, p.y] for p in points], float).reshape(-1, 2)
    return np.array([[p.x, p.y, p.z] for p in points], float).reshape(-1, 3)


def array_to_points(a) -> list[Point]:
    """geometry_msgs/Point list of an (N, 3) array; (N, 2) gets z = 0; None or not 2-D -> []."""
    if a is None:
        return []
    a = np.asarray(a, float)
    if a.ndim != 2:
        return []
    if a.shape[1] == 2:
        a = np.concatenate([a, np.zeros((len(a), 1))], axis=1)
    return [Point(x=x, y=y, z=z) for x, y, z in a[:, :3].tolist()]


def floats_or_nan(a, n: int) -> list[float]:
    """A float list of `a` (flattened), or n NaN when there is none."""
    if a is None:
        return [math.nan] * n
    return [float(v) for v in np.asarray(a, float).ravel()]


# --- transforms -----------------------------------------------------------------------------


def transform_stamped(parent: str, child: str, stamp, translation: Sequence[float] = (0.0, 0.0, 0.0),
                      quaternion_xyzw: Sequence[float] = (0.0, 0.0, 0.0, 1.0)) -> TransformStamped:
    """geometry_msgs/TransformStamped parent -> child (the child's pose in the parent frame)."""
    tf = TransformStamped()
    tf.header.stamp = stamp
    tf.header.frame_id = parent
    tf.child_frame_id = child
    t, q = tf.transform.translation, tf.transform.rotation
    t.x, t.y, t.z = (float(v) for v in translation)
    q.x, q.y, q.z, q.w = (float(v) for v in quaternion_xyzw)
    return tf


# --- body keypoints -------------------------------------------------------------------------

# BodyKeypoints.keypoints_3d are in the camera frame when header.frame_id is the camera's
# frame; BlazePose's metric landmarks are hip-centred with camera axes (the body's camera
# translation unknown), marked by frame_id "<camera>_hip_centred". The one encoding on topics.
HIP_CENTRED_SUFFIX = "_hip_centred"


def keypoints_frame_id(camera_frame: str, *, hip_centred: bool) -> str:
    return camera_frame + HIP_CENTRED_SUFFIX if hip_centred else camera_frame


def keypoints_are_hip_centred(frame_id: str) -> bool:
    return frame_id.endswith(HIP_CENTRED_SUFFIX)
