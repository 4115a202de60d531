"""Frame sources: video files, image folders and camera devices, decoded lazily into RGB uint8.

    src = open_source("walk.mp4", start_s=1.0, end_s=4.0)
    for frame in src:            # Frame(index, time_s, image (H, W, 3) uint8 RGB, source)
        ...
    if src.truncated: ...        # the file ended before its container said it would

Decoding goes through OpenCV's FFmpeg backend (H.264, HEVC, VP8/VP9, MPEG-4, MJPEG in
mp4/mov/avi/mkv/webm). Frame times are the container's presentation timestamps (the frame rate
is never assumed); rotation metadata (display matrix) is applied, so frames come out upright and
`width`/`height` are those of the upright frames. Image folders carry no capture times: their
rate must be given (`image_folder_fps`). Camera frames are stamped with the monotonic clock at
grab time, relative to the first frame.
"""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path
from typing import Iterator

import numpy as np

from sam4dcap_biomech.errors import Sam4dcapError

from .observations import CameraIntrinsics, Frame

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
VIDEO_HINT = "mp4/mov/avi/mkv/webm with H.264, HEVC, VP9, MPEG-4 or MJPEG"


def as_rgb8(image: np.ndarray, *, bgr: bool = False, name: str = "image") -> np.ndarray:
    """Any decoded image (gray, gray+alpha, BGR(A)/RGB(A); uint8, uint16 or float in [0, 1])
    as a C-contiguous (H, W, 3) uint8 RGB array."""
    import cv2

    a = np.asarray(image)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (2, 3, 4)) or a.size == 0:
        raise Sam4dcapError(f"{name}: unsupported image shape {a.shape} (expected HxW, HxWx3 or HxWx4)")
    if a.dtype == np.uint16:
        a = (a >> 8).astype(np.uint8)          # 16-bit: keep the 8 most significant bits
    elif a.dtype.kind == "f":
        a = np.clip(np.nan_to_num(a, nan=0.0) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    elif a.dtype != np.uint8:
        raise Sam4dcapError(f"{name}: unsupported pixel type {a.dtype} (use uint8, uint16 or float)")
    if a.ndim == 2:
        a = cv2.cvtColor(a, cv2.COLOR_GRAY2RGB)
    elif a.shape[2] == 2:                      # gray + alpha
        a = cv2.cvtColor(np.ascontiguousarray(a[:, :, 0]), cv2.COLOR_GRAY2RGB)
    elif a.shape[2] == 4:
        a = cv2.cvtColor(a, cv2.COLOR_BGRA2RGB if bgr else cv2.COLOR_RGBA2RGB)
    elif bgr:
        a = cv2.cvtColor(a, cv2.COLOR_BGR2RGB)
    return np.ascontiguousarray(a)


class VideoSource:
    """Iterable of `Frame`s. Iterating again starts again from `start_s`."""

    kind = "source"
    is_live = False

    def __init__(self, name: str, width: int, height: int, n_frames_hint: int | None,
                 *, start_s: float = 0.0, end_s: float | None = None):
        if start_s < 0:
            raise Sam4dcapError(f"{name}: start_s={start_s} must be >= 0")
        self.name = name
        self.width = int(width)
        self.height = int(height)
        self.n_frames_hint = n_frames_hint
        self.start_s = float(start_s)
        # end_s None or 0 = until the end (0 is the config's "no end").
        self.end_s = float(end_s) if end_s else None
        if self.end_s is not None and self.end_s <= self.start_s:
            raise Sam4dcapError(f"{name}: end_s={end_s} must be after start_s={start_s} (or 0 = until the end)")
        self.truncated = False
        self.frames_read = 0
        self.skipped_frames: list[str] = []

    def intrinsics_default(self, horizontal_fov_deg: float) -> CameraIntrinsics:
        """Pinhole intrinsics from a field of view, for when no calibration is given."""
        return CameraIntrinsics.from_fov(self.width, self.height, horizontal_fov_deg)

    def _in_window(self, t: float) -> int:
        """-1 before the window, 0 inside, 1 past it."""
        if t < self.start_s - 1e-9:
            return -1
        if self.end_s is not None and t > self.end_s + 1e-9:
            return 1
        return 0

    def __iter__(self) -> Iterator[Frame]:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.name!r}, {self.width}x{self.height}, "
                f"n_frames_hint={self.n_frames_hint})")


class VideoFileSource(VideoSource):
    kind = "video"

    def __init__(self, path: Path, *, start_s: float = 0.0, end_s: float | None = None):
        import cv2

        self.path = path
        name = str(path)
        if path.stat().st_size == 0:
            raise Sam4dcapError(f"video file {name} is empty (0 bytes)")
        try:  # FFmpeg reports an unreadable file as undecodable: tell the two apart first
            with path.open("rb") as f:
                f.read(1)
        except OSError as e:
            raise Sam4dcapError(f"cannot read video file {name}: {e.strerror or e}") from None
        cap = self._open_capture()
        try:
            count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
            self.container_fps = float(cap.get(cv2.CAP_PROP_FPS)) or None
            self.rotation_deg = int(cap.get(cv2.CAP_PROP_ORIENTATION_META)) % 360
            ok, first = cap.read()
            if not ok or first is None:
                raise Sam4dcapError(f"video file {name} has no decodable frames (truncated or corrupt?)")
            h, w = first.shape[:2]   # upright size: the rotation is already applied
        finally:
            cap.release()
        # A raw H.264 stream has no container times: FFmpeg stamps it at 25 fps; its SPS says the rate.
        self.raw_stream_fps = None
        if path.suffix.lower() in RAW_H264_EXTENSIONS:
            with path.open("rb") as f:
                self.raw_stream_fps = h264_sps_frame_rate(f.read(1 << 16))
            if self.raw_stream_fps:
                log.info("%s: raw H.264 stream, %.3f fps from its SPS timing", name, self.raw_stream_fps)
                self.container_fps = self.raw_stream_fps
            else:
                log.warning("%s: raw H.264 stream without timing info: stamped at FFmpeg's %.3f fps; remux it into "
                            "an mp4 with its real frame rate if that is wrong", name, self.container_fps or 25.0)
        super().__init__(name, w, h, count if count > 0 else None, start_s=start_s, end_s=end_s)

    def _open_capture(self):
        import cv2

        cap = cv2.VideoCapture(str(self.path), cv2.CAP_FFMPEG)
        if not cap.isOpened():
            raise Sam4dcapError(
                f"cannot read video file {self.path}: not a video FFmpeg can decode, or corrupt "
                f"(supported: {VIDEO_HINT}; a file cut before its index cannot be opened)")
        cap.set(cv2.CAP_PROP_ORIENTATION_AUTO, 1)
        return cap

    def __iter__(self) -> Iterator[Frame]:
        import cv2

        cap = self._open_capture()
        self.truncated = False
        self.frames_read = 0
        decoded = 0
        index = 0
        last_t = -np.inf
        warned_pts = False
        stopped_by_window = False
        try:
            while True:
                if not cap.grab():
                    break
                decoded += 1
                t = cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
                if self.raw_stream_fps:
                    t = (decoded - 1) / self.raw_stream_fps
                if not t > last_t:
                    # Missing/duplicate presentation times: step by the container's own rate.
                    if not warned_pts:
                        log.warning("%s: frame %d has no increasing timestamp (%.6f s); using the "
                                    "container rate %.3f fps from here", self.name, decoded - 1, t,
                                    self.container_fps or 0.0)
                        warned_pts = True
                    if not self.container_fps:
                        raise Sam4dcapError(f"{self.name}: frames carry no timestamps and the "
                                            "container has no frame rate")
                    t = last_t + 1.0 / self.container_fps
                last_t = t
                where = self._in_window(t)
                if where < 0:
                    continue                      # grab() without decoding to RGB: cheap skip
                if where > 0:
                    stopped_by_window = True
                    break
                ok, bgr = cap.retrieve()
                if not ok or bgr is None:
                    break
                self.frames_read += 1
                yield Frame(index=index, time_s=float(t), image=as_rgb8(bgr, bgr=True, name=self.name),
                            source=self.name)
                index += 1
        finally:
            cap.release()
        if not stopped_by_window and self.n_frames_hint and decoded < self.n_frames_hint - 1:
            # Containers' frame counts can be estimates off by one; more than that is a cut file.
            self.truncated = True
            log.warning("%s is truncated: decoded %d of the %d frames its container announces",
                        self.name, decoded, self.n_frames_hint)
        if self.frames_read == 0:
            log.warning("%s: no frames between start_s=%.3f and end_s=%s", self.name, self.start_s,
                        self.end_s)


RAW_H264_EXTENSIONS = (".h264", ".264", ".avc", ".h26l")


class _Bits:
    """Big-endian bit reader with the exp-Golomb codes of H.264 headers."""

    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def u(self, n: int) -> int:
        v = 0
        for _ in range(n):
            if self.pos >= 8 * len(self.data):
                raise EOFError
            v = (v << 1) | ((self.data[self.pos >> 3] >> (7 - (self.pos & 7))) & 1)
            self.pos += 1
        return v

    def ue(self) -> int:
        zeros = 0
        while self.u(1) == 0:
            zeros += 1
            if zeros > 31:
                raise EOFError
        return (1 << zeros) - 1 + self.u(zeros)

    def se(self) -> int:
        k = self.ue()
        return (k + 1) // 2 if k % 2 else -(k // 2)


def h264_sps_frame_rate(data: bytes) -> float | None:
    """Frame rate a raw H.264 (Annex B) stream declares in its first SPS's VUI timing info, if any.

    FFmpeg (so OpenCV) stamps raw streams at 25 fps whatever they declare."""
    start = data.find(b"\x00\x00\x01")
    while start >= 0:
        if start + 3 < len(data) and data[start + 3] & 0x1F == 7:
            end = data.find(b"\x00\x00\x01", start + 3)
            rbsp = data[start + 4:end if end > 0 else len(data)].replace(b"\x00\x00\x03", b"\x00\x00")
            try:
                return _sps_fps(_Bits(rbsp))
            except EOFError:
                return None
        start = data.find(b"\x00\x00\x01", start + 3)
    return None


def _sps_fps(b: _Bits) -> float | None:
    profile = b.u(8)
    b.u(16)                                      # constraint flags, level
    b.ue()                                       # seq_parameter_set_id
    if profile in (100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135):
        chroma = b.ue()
        if chroma == 3:
            b.u(1)
        b.ue(), b.ue(), b.u(1)                   # bit depths, qpprime_y_zero_transform_bypass
        if b.u(1):                               # seq_scaling_matrix_present
            for i in range(12 if chroma == 3 else 8):
                if b.u(1):
                    last = nxt = 8
                    for _ in range(16 if i < 6 else 64):
                        if nxt:
                            nxt = (last + b.se() + 256) % 256
                        last = nxt or last
    b.ue()                                       # log2_max_frame_num_minus4
    poc_type = b.ue()
    if poc_type == 0:
        b.ue()
    elif poc_type == 1:
        b.u(1), b.se(), b.se()
        for _ in range(b.ue()):
            b.se()
    b.ue(), b.u(1), b.ue(), b.ue()               # ref frames, gaps, width, height in macroblocks
    if not b.u(1):                               # frame_mbs_only
        b.u(1)
    b.u(1)                                       # direct_8x8_inference
    if b.u(1):                                   # frame_cropping
        b.ue(), b.ue(), b.ue(), b.ue()
    if not b.u(1):                               # vui_parameters_present
        return None
    if b.u(1) and b.u(8) == 255:                 # aspect_ratio_info (extended SAR)
        b.u(32)
    if b.u(1):                                   # overscan_info
        b.u(1)
    if b.u(1):                                   # video_signal_type
        b.u(4)
        if b.u(1):
            b.u(24)
    if b.u(1):                                   # chroma_loc_info
        b.ue(), b.ue()
    if not b.u(1):                               # timing_info_present
        return None
    units, scale = b.u(32), b.u(32)
    return scale / (2.0 * units) if units and scale else None


def _natural_key(path: Path):
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", path.name)]


class ImageFolderSource(VideoSource):
    kind = "images"

    def __init__(self, folder: Path, *, fps: float | None, start_s: float = 0.0,
                 end_s: float | None = None, files: list[Path] | None = None):
        import cv2

        self.folder = folder
        self.files = files if files is not None else sorted(
            (p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()),
            key=_natural_key)
        if not self.files:
            raise Sam4dcapError(f"image folder {folder} has no images ({', '.join(IMAGE_EXTENSIONS)})")
        if len(self.files) > 1 and not (fps and fps > 0):
            raise Sam4dcapError(
                f"image folder {folder}: images carry no capture times; give the sequence's frame rate "
                "as video_source_node.image_folder_fps in the config (sam4dcap graph: --set "
                "video_source_node.image_folder_fps=30)")
        self.fps = float(fps) if fps else None
        first = None
        for p in self.files:
            first = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
            if first is not None:
                break
        if first is None:
            raise Sam4dcapError(f"{folder}: none of the {len(self.files)} image files can be decoded")
        h, w = first.shape[:2]
        super().__init__(str(folder), w, h, len(self.files), start_s=start_s, end_s=end_s)

    def __iter__(self) -> Iterator[Frame]:
        import cv2

        self.frames_read = 0
        self.skipped_frames = []
        index = 0
        for i, p in enumerate(self.files):
            t = i / self.fps if self.fps else 0.0
            where = self._in_window(t)
            if where < 0:
                continue
            if where > 0:
                break
            raw = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
            if raw is None:
                log.warning("skipping unreadable image %s", p)
                self.skipped_frames.append(str(p))
                continue
            self.frames_read += 1
            yield Frame(index=index, time_s=float(t), image=as_rgb8(raw, bgr=True, name=str(p)),
                        source=str(p))
            index += 1


class CameraSource(VideoSource):
    kind = "camera"
    is_live = True

    def __init__(self, device: int, *, start_s: float = 0.0, end_s: float | None = None):
        import cv2

        self.device = device
        cap = cv2.VideoCapture(device)
        if not cap.isOpened():
            raise Sam4dcapError(f"camera:{device} cannot be opened (is /dev/video{device} present "
                                "and not in use?)")
        self._cap: cv2.VideoCapture | None = cap
        w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        self.wall_time_at_start: float | None = None
        super().__init__(f"camera:{device}", w, h, None, start_s=start_s, end_s=end_s)

    def __iter__(self) -> Iterator[Frame]:
        t0 = None
        index = 0
        self.frames_read = 0
        while self._cap is not None:
            ok = self._cap.grab()
            now = time.monotonic()
            if not ok:
                log.warning("%s stopped delivering frames", self.name)
                break
            if t0 is None:
                t0, self.wall_time_at_start = now, time.time()
            t = now - t0
            where = self._in_window(t)
            if where < 0:
                continue
            if where > 0:
                break
            ok, bgr = self._cap.retrieve()
            if not ok:
                continue
            self.frames_read += 1
            yield Frame(index=index, time_s=t, image=as_rgb8(bgr, bgr=True, name=self.name), source=self.name)
            index += 1

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


def open_source(spec: str | Path, *, start_s: float = 0.0, end_s: float | None = None,
                image_folder_fps: float | None = None) -> VideoSource:
    """A lazily decoded frame source from a video file, an image folder (or one image), or
    "camera:N". Raises `Sam4dcapError` naming the file when it cannot be read."""
    text = str(spec).strip()
    if not text:
        raise Sam4dcapError("no video source given: pass a video file, an image folder or camera:N")
    m = re.fullmatch(r"camera:(\d+)", text)
    if m:
        return CameraSource(int(m.group(1)), start_s=start_s, end_s=end_s)
    path = Path(text).expanduser()
    if not path.exists():
        raise Sam4dcapError(f"video source not found: {path}")
    if path.is_dir():
        return ImageFolderSource(path, fps=image_folder_fps, start_s=start_s, end_s=end_s)
    if path.suffix.lower() in IMAGE_EXTENSIONS:
        return ImageFolderSource(path.parent, fps=image_folder_fps, start_s=start_s, end_s=end_s,
                                 files=[path])
    return VideoFileSource(path, start_s=start_s, end_s=end_s)
