"""Frame sources on real files: H.264 and VP9 demo clips, variable-rate and rotated MP4s built
here (OpenCV writes them; the MP4 boxes are edited by hand), image folders of 8/16-bit colour
and gray images, and broken inputs (empty, garbage, truncated, missing)."""

import logging
import struct

import cv2
import numpy as np
import pytest

from sam4dcap_biomech.errors import Sam4dcapError
from sam4dcap_perception.video_source import as_rgb8, open_source

# --- a minimal MP4 box editor (test fixtures only) -------------------------------------------
_CONTAINERS = {b"moov", b"trak", b"mdia", b"minf", b"stbl", b"edts", b"dinf"}


def _parse(buf, start=0, end=None):
    end = len(buf) if end is None else end
    out, i = [], start
    while i + 8 <= end:
        size, typ = struct.unpack(">I4s", buf[i:i + 8])
        if size < 8:
            break
        out.append((typ, i, size, _parse(buf, i + 8, i + size) if typ in _CONTAINERS else []))
        i += size
    return out


def _find(boxes, path):
    for typ, off, size, kids in boxes:
        if typ == path[0]:
            return (typ, off, size, kids) if len(path) == 1 else _find(kids, path[1:])
    return None


def _sample_times(path):
    """Presentation times [s] straight from the MP4's stts/mdhd boxes (no decoder involved)."""
    b = path.read_bytes()
    bx = _parse(b)
    mdhd = _find(bx, [b"moov", b"trak", b"mdia", b"mdhd"])
    version = b[mdhd[1] + 8]
    scale_at = mdhd[1] + (28 if version == 1 else 20)
    timescale = struct.unpack(">I", b[scale_at:scale_at + 4])[0]
    stts = _find(bx, [b"moov", b"trak", b"mdia", b"minf", b"stbl", b"stts"])
    n = struct.unpack(">I", b[stts[1] + 12:stts[1] + 16])[0]
    deltas = []
    for k in range(n):
        count, delta = struct.unpack(">II", b[stts[1] + 16 + 8 * k:stts[1] + 24 + 8 * k])
        deltas += [delta] * count
    return np.concatenate([[0], np.cumsum(deltas)[:-1]]) / timescale


def _write_video(path, n, w=64, h=48, fps=30.0):
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    assert vw.isOpened()
    for _ in range(n):
        img = np.full((h, w, 3), 40, np.uint8)
        img[:8, :8] = (0, 0, 255)            # red (BGR) block in the top-left corner
        vw.write(img)
    vw.release()


def _patch_rotation(src, dst, matrix):
    b = bytearray(src.read_bytes())
    tkhd = _find(_parse(bytes(b)), [b"moov", b"trak", b"tkhd"])
    b[tkhd[1] + 48:tkhd[1] + 84] = struct.pack(">9i", *matrix)
    dst.write_bytes(bytes(b))


def _patch_stts(src, dst, entries):
    """Replace the sample durations (variable frame rate); fixes box sizes and durations."""
    b = src.read_bytes()
    bx = _parse(b)
    chain = [b"moov", b"trak", b"mdia", b"minf", b"stbl", b"stts"]
    stts = _find(bx, chain)
    assert stts[1] > _find(bx, [b"mdat"])[1], "moov must follow mdat (chunk offsets unchanged)"
    new = struct.pack(">I4sII", 16 + 8 * len(entries), b"stts", 0, len(entries)) + b"".join(
        struct.pack(">II", c, d) for c, d in entries)
    delta = len(new) - stts[2]
    out = bytearray(b[:stts[1]] + new + b[stts[1] + stts[2]:])
    for k in range(1, len(chain)):
        box = _find(bx, chain[:k])
        out[box[1]:box[1] + 4] = struct.pack(">I", struct.unpack(">I", out[box[1]:box[1] + 4])[0] + delta)
    bx2 = _parse(bytes(out))
    mdhd = _find(bx2, [b"moov", b"trak", b"mdia", b"mdhd"])
    mvhd = _find(bx2, [b"moov", b"mvhd"])
    media_ts = struct.unpack(">I", out[mdhd[1] + 20:mdhd[1] + 24])[0]
    movie_ts = struct.unpack(">I", out[mvhd[1] + 20:mvhd[1] + 24])[0]
    total = sum(c * d for c, d in entries)
    movie_dur = round(total * movie_ts / media_ts)
    out[mdhd[1] + 24:mdhd[1] + 28] = struct.pack(">I", total)
    out[mvhd[1] + 24:mvhd[1] + 28] = struct.pack(">I", movie_dur)
    tkhd = _find(bx2, [b"moov", b"trak", b"tkhd"])
    out[tkhd[1] + 28:tkhd[1] + 32] = struct.pack(">I", movie_dur)
    elst = _find(bx2, [b"moov", b"trak", b"edts", b"elst"])
    if elst is not None:
        out[elst[1] + 16:elst[1] + 20] = struct.pack(">I", movie_dur)
    dst.write_bytes(bytes(out))


# --- real clips ------------------------------------------------------------------------------
@pytest.mark.parametrize("cam, codec", [("cam01", "h264"), ("cam02", "VP90")])
def test_demo_clip_decodes_with_container_times(pose2sim_demo, cam, codec):
    path = pose2sim_demo / "videos" / f"{cam}.mp4"
    cap = cv2.VideoCapture(str(path))
    assert int(cap.get(cv2.CAP_PROP_FOURCC)).to_bytes(4, "little").decode() == codec
    cap.release()
    src = open_source(path)
    assert (src.width, src.height, src.n_frames_hint) == (1080, 1920, 100)
    frames = list(src)
    assert len(frames) == 100 and not src.truncated
    assert [f.index for f in frames] == list(range(100))
    for f in frames[:3]:
        assert f.image.shape == (1920, 1080, 3) and f.image.dtype == np.uint8 and f.image.flags.c_contiguous
    np.testing.assert_allclose([f.time_s for f in frames], _sample_times(path), atol=1e-6)
    # RGB order: OpenCV's own BGR decode of frame 0, flipped.
    cap = cv2.VideoCapture(str(path))
    ok, bgr = cap.read()
    cap.release()
    np.testing.assert_array_equal(frames[0].image, bgr[:, :, ::-1])


def test_time_window_and_laziness(demo_video):
    src = open_source(demo_video, start_s=0.5, end_s=1.0)
    it = iter(src)
    first = next(it)
    assert src.frames_read == 1                       # decoded on demand
    rest = list(it)
    times = [first.time_s] + [f.time_s for f in rest]
    assert times[0] == pytest.approx(0.5, abs=1e-6) and times[-1] == pytest.approx(1.0, abs=1e-6)
    assert len(times) == 31 and first.index == 0
    assert not src.truncated                           # stopped by end_s, not by a cut file
    with pytest.raises(Sam4dcapError, match="end_s"):
        open_source(demo_video, start_s=2.0, end_s=1.0)


def test_default_intrinsics(demo_video):
    k = open_source(demo_video).intrinsics_default(60.0)
    assert (k.width, k.height) == (1080, 1920)
    # The field of view spans the long side (portrait phone videos turn the sensor).
    assert k.fx == pytest.approx(960.0 / np.tan(np.radians(30.0))) and k.fy == k.fx
    assert (k.cx, k.cy) == (539.5, 959.5)


# --- built files -----------------------------------------------------------------------------
def test_variable_frame_rate_times_come_from_the_container(tmp_path):
    _write_video(tmp_path / "cfr.mp4", 20)
    _patch_stts(tmp_path / "cfr.mp4", tmp_path / "vfr.mp4", [(10, 512), (10, 1024)])
    expected = _sample_times(tmp_path / "vfr.mp4")
    assert np.ptp(np.diff(expected)) > 0               # really variable
    src = open_source(tmp_path / "vfr.mp4")
    times = [f.time_s for f in src]
    assert len(times) == 20 and not src.truncated
    np.testing.assert_allclose(times, expected, atol=1e-6)


@pytest.mark.parametrize("matrix, rotation, corner", [
    ([0, 65536, 0, -65536, 0, 0, 0, 0, 1 << 30], 90, "top-right"),
    ([-65536, 0, 0, 0, -65536, 0, 0, 0, 1 << 30], 180, "bottom-right"),
    ([0, -65536, 0, 65536, 0, 0, 0, 0, 1 << 30], 270, "bottom-left"),
])
def test_rotation_metadata_is_applied(tmp_path, matrix, rotation, corner):
    _write_video(tmp_path / "plain.mp4", 3, w=64, h=48)
    _patch_rotation(tmp_path / "plain.mp4", tmp_path / "rot.mp4", matrix)
    src = open_source(tmp_path / "rot.mp4")
    assert src.rotation_deg == rotation
    img = next(iter(src)).image
    expect_shape = (48, 64) if rotation == 180 else (64, 48)
    assert img.shape[:2] == expect_shape and (src.height, src.width) == expect_shape
    red = np.argwhere((img[:, :, 0] > 180) & (img[:, :, 1] < 90) & (img[:, :, 2] < 90))
    cy, cx = red.mean(axis=0)
    h, w = img.shape[:2]
    where = ("top" if cy < h / 2 else "bottom") + "-" + ("left" if cx < w / 2 else "right")
    assert where == corner            # rotated clockwise by `rotation`, as players show it


def test_truncated_file_yields_its_frames_and_says_so(pose2sim_demo, tmp_path, caplog):
    data = (pose2sim_demo / "videos" / "cam02.mp4").read_bytes()   # index (moov) before the data
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    src = open_source(cut)
    with caplog.at_level(logging.WARNING):
        frames = list(src)
    assert 10 < len(frames) < 100
    assert src.truncated
    assert any("cut.mp4 is truncated" in r.getMessage() for r in caplog.records)


def test_file_cut_before_its_index_is_a_clear_error(demo_video, tmp_path):
    data = demo_video.read_bytes()                                  # cam01: index at the end
    cut = tmp_path / "cut_index.mp4"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(Sam4dcapError, match=r"cut_index\.mp4"):
        open_source(cut)


def test_bad_inputs_are_clear_errors(tmp_path):
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "garbage.mov").write_bytes(b"not a video" * 500)
    (tmp_path / "no_images").mkdir()
    (tmp_path / "no_images" / "notes.txt").write_text("x")
    cases = [
        (tmp_path / "empty.mp4", "empty.mp4 is empty"),
        (tmp_path / "garbage.mov", "cannot read video file .*garbage.mov"),
        (tmp_path / "missing.mp4", "not found: .*missing.mp4"),
        (tmp_path / "no_images", "no_images has no images"),
        ("", "no video source given"),
        ("camera:97", "camera:97 cannot be opened"),
    ]
    for spec, message in cases:
        with pytest.raises(Sam4dcapError, match=message):
            open_source(spec)


# --- image folders ---------------------------------------------------------------------------
def test_image_folder_formats_order_and_times(tmp_path, caplog):
    d = tmp_path / "seq"
    d.mkdir()
    color = np.zeros((40, 60, 3), np.uint8)
    color[..., 2] = 200                                          # BGR: red
    cv2.imwrite(str(d / "img2.png"), color)
    cv2.imwrite(str(d / "img10.png"), np.full((40, 60), 90, np.uint8))           # gray
    cv2.imwrite(str(d / "img1.png"), np.full((40, 60, 3), 0x1234, np.uint16))    # 16-bit
    (d / "img3.png").write_bytes(b"corrupt")                                     # unreadable
    with pytest.raises(Sam4dcapError, match="image_folder_fps"):
        open_source(d)
    src = open_source(d, image_folder_fps=10.0)
    assert (src.width, src.height, src.n_frames_hint) == (60, 40, 4)
    with caplog.at_level(logging.WARNING):
        frames = list(src)
    assert [f.source.rsplit("/", 1)[1] for f in frames] == ["img1.png", "img2.png", "img10.png"]
    np.testing.assert_allclose([f.time_s for f in frames], [0.0, 0.1, 0.3])   # img3 (t=0.2) skipped
    assert src.skipped_frames == [str(d / "img3.png")]
    assert any("img3.png" in r.getMessage() for r in caplog.records)
    for f in frames:
        assert f.image.shape == (40, 60, 3) and f.image.dtype == np.uint8
    assert (frames[0].image == 0x12).all()                       # 16-bit -> top byte
    np.testing.assert_array_equal(frames[1].image[0, 0], [200, 0, 0])          # RGB order
    assert (frames[2].image == 90).all()                         # gray -> 3 equal channels
    single = open_source(d / "img2.png")                          # one image needs no rate
    assert [f.time_s for f in single] == [0.0]


def test_as_rgb8_conversions():
    assert as_rgb8(np.full((4, 5), 0.5, np.float32)).tolist()[0][0] == [128, 128, 128]
    ga = np.zeros((4, 5, 2), np.uint8)
    ga[..., 0] = 7
    assert (as_rgb8(ga) == 7).all()
    rgba = np.zeros((4, 5, 4), np.uint8)
    rgba[..., 0] = 255
    np.testing.assert_array_equal(as_rgb8(rgba)[0, 0], [255, 0, 0])
    with pytest.raises(Sam4dcapError, match="unsupported pixel type"):
        as_rgb8(np.zeros((4, 5, 3), np.int32))
    with pytest.raises(Sam4dcapError, match="unsupported image shape"):
        as_rgb8(np.zeros((0, 5, 3), np.uint8))


@pytest.mark.parametrize("ext, fourcc, cut_readable", [
    ("avi", "MJPG", True), ("mkv", "MJPG", True), ("webm", "VP90", True), ("mov", "mp4v", False)])
def test_containers_and_their_truncation(tmp_path, ext, fourcc, cut_readable):
    path = tmp_path / f"clip.{ext}"
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 25.0, (64, 48))
    assert vw.isOpened()
    for i in range(30):
        vw.write(np.full((48, 64, 3), 8 * i, np.uint8))
    vw.release()
    src = open_source(path)
    frames = list(src)
    assert len(frames) == 30 and not src.truncated
    np.testing.assert_allclose([f.time_s for f in frames], np.arange(30) / 25.0, atol=1e-6)
    means = np.array([f.image.mean() for f in frames])
    np.testing.assert_allclose(means, 8 * np.arange(30), atol=4.0)    # lossy codecs: grey levels kept
    data = path.read_bytes()
    cut = tmp_path / f"cut.{ext}"
    cut.write_bytes(data[: len(data) * 2 // 3])
    if cut_readable:
        src = open_source(cut)
        frames = list(src)
        assert 0 < len(frames) < 30 and src.truncated
        np.testing.assert_allclose([f.image.mean() for f in frames], 8 * np.arange(len(frames)), atol=4.0)
    else:
        with pytest.raises(Sam4dcapError, match=rf"cut\.{ext}"):
            open_source(cut)
