"""Multi-view reference: calibrated cameras, triangulation, and a reference trial in one world.

The paper compares monocular results with a multi-view reconstruction of the same trial. This
module reads a Qualisys calibration (`Calib.qca.txt`), triangulates 2D keypoints seen by several
synchronised calibrated views (DLT weighted by keypoint visibility, dropping the worst view of a
point while its reprojection error is too large), reports the reprojection error per view, and
expresses the points in the OpenSim world (y up). `multiview_reference.multiview_reference` then
runs the same model, scaling and IK as the monocular path, so both results can be compared with
`compare`.

Qualisys conventions (as the Pose2Sim converter reads them, verified on the Pose2Sim demo: the
world origin and z axis project onto the treadmill in all four views):
- `transform` gives the camera position in the world [mm] and a rotation matrix M whose
  world->camera form, for a camera looking along its +z (OpenCV), is Rx(pi) @ M.
- `intrinsic` focal lengths and principal point are in 1/64 sensor pixels; the principal point
  is relative to the sensor, the video window (`fov_video`) starts at (left, top).
- Distortion coefficients are divided by 64 too (Pose2Sim's reading); on the demo they change
  reprojections by less than 0.1 px either way.
- The Qualisys world is z up; OpenSim's is y up: (x, y, z)_opensim = (y, z, x)_qualisys, a
  proper rotation (Pose2Sim writes its TRC the same way).
"""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    from sam4dcap_biomech.timeseries import TimeSeries

import numpy as np

from sam4dcap_biomech.errors import Sam4dcapError

log = logging.getLogger(__name__)

# Qualisys stores pixel quantities in 1/64 sensor pixels.
_QUALISYS_SUBPIXELS = 64.0
# Rotation by pi about x: Qualisys camera axes -> OpenCV camera axes (y down, z forward).
_RX_PI = np.diag([1.0, -1.0, -1.0])
# Qualisys z-up world -> OpenSim y-up world: new (x, y, z) = old (y, z, x). det = +1.
ZUP_TO_YUP = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])


@dataclass(frozen=True)
class CalibratedCamera:
    """A pinhole camera with OpenCV distortion; `R`, `t` map world points to camera: Rx + t."""
    name: str
    width: int
    height: int
    K: np.ndarray          # (3, 3) pixels
    dist: np.ndarray       # (k1, k2, p1, p2)
    R: np.ndarray          # (3, 3) world -> camera
    t: np.ndarray          # (3,) metres

    @property
    def projection(self) -> np.ndarray:
        """(3, 4) K [R | t] for undistorted pixels."""
        return self.K @ np.hstack([self.R, self.t.reshape(3, 1)])

    @property
    def center(self) -> np.ndarray:
        """Camera centre in the world [m]."""
        return -self.R.T @ self.t

    def project(self, points: np.ndarray) -> np.ndarray:
        """World points (..., 3) -> distorted pixels (..., 2); NaN in, NaN out."""
        import cv2

        pts = np.asarray(points, float)
        flat = pts.reshape(-1, 3)
        out = np.full((flat.shape[0], 2), np.nan)
        ok = np.isfinite(flat).all(axis=1)
        if ok.any():
            rvec, _ = cv2.Rodrigues(self.R)
            pix, _ = cv2.projectPoints(flat[ok].reshape(-1, 1, 3), rvec, self.t.astype(float),
                                       self.K, self.dist)
            out[ok] = pix.reshape(-1, 2)
        return out.reshape(pts.shape[:-1] + (2,))

    def undistort(self, pixels: np.ndarray) -> np.ndarray:
        """Distorted pixels (..., 2) -> ideal pinhole pixels (..., 2) of the same K."""
        import cv2

        pix = np.asarray(pixels, float)
        flat = pix.reshape(-1, 2)
        out = np.full_like(flat, np.nan)
        ok = np.isfinite(flat).all(axis=1)
        if ok.any():
            und = cv2.undistortPoints(flat[ok].reshape(-1, 1, 2), self.K, self.dist, P=self.K)
            out[ok] = und.reshape(-1, 2)
        return out.reshape(pix.shape)

    def with_world_rotation(self, rotation: np.ndarray) -> "CalibratedCamera":
        """The same camera for a world frame rotated by `rotation` (new = rotation @ old)."""
        rotation = np.asarray(rotation, float)
        return CalibratedCamera(self.name, self.width, self.height, self.K, self.dist,
                                self.R @ rotation.T, self.t)


def _attr(tag: ET.Element, name: str, path: Path) -> float:
    value = tag.get(name)
    if value is None:
        raise Sam4dcapError(f"{path}: <{tag.tag}> has no attribute {name!r}: not a Qualisys .qca.txt calibration")
    try:
        return float(value)
    except ValueError:
        raise Sam4dcapError(f"{path}: <{tag.tag} {name}={value!r}> is not a number") from None


def read_qualisys_calibration(path: str | Path, *, binning_factor: int = 1) -> list[CalibratedCamera]:
    """Parse a Qualisys `.qca.txt` calibration into cameras (world z up, metres), sorted by name."""
    path = Path(path)
    if not path.is_file():
        raise Sam4dcapError(f"calibration file not found: {path}")
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise Sam4dcapError(f"{path}: not a Qualisys .qca.txt calibration (XML error: {exc})") from None
    cameras: list[CalibratedCamera] = []
    for cam in root.findall("cameras/camera"):
        if cam.get("active", "1") == "0":
            continue
        name = cam.get("serial") or f"cam{len(cameras) + 1:02d}"
        transform, intrinsic, fov = cam.find("transform"), cam.find("intrinsic"), cam.find("fov_video")
        if transform is None or intrinsic is None or fov is None:
            raise Sam4dcapError(f"{path}: camera {name} lacks <transform>, <intrinsic> or <fov_video>")
        left, top = _attr(fov, "left", path), _attr(fov, "top", path)
        width = int(round((_attr(fov, "right", path) - left + 1) / binning_factor))
        height = int(round((_attr(fov, "bottom", path) - top + 1) / binning_factor))
        scale = _QUALISYS_SUBPIXELS * binning_factor
        fx, fy = _attr(intrinsic, "focalLengthU", path) / scale, _attr(intrinsic, "focalLengthV", path) / scale
        cx = (_attr(intrinsic, "centerPointU", path) / _QUALISYS_SUBPIXELS - left) / binning_factor
        cy = (_attr(intrinsic, "centerPointV", path) / _QUALISYS_SUBPIXELS - top) / binning_factor
        K = np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
        dist = np.array([_attr(intrinsic, k, path) for k in
                         ("radialDistortion1", "radialDistortion2", "tangentalDistortion1", "tangentalDistortion2")]) / scale
        M = np.array([[_attr(transform, f"r{i}{j}", path) for j in (1, 2, 3)] for i in (1, 2, 3)])
        position_m = np.array([_attr(transform, k, path) for k in ("x", "y", "z")]) / 1000.0
        R = _RX_PI @ M
        if abs(np.linalg.det(R) - 1.0) > 1e-3:
            raise Sam4dcapError(f"{path}: camera {name} rotation is not a rotation matrix (det {np.linalg.det(R):.4f})")
        cameras.append(CalibratedCamera(name, width, height, K, dist, R, -R @ position_m))
    if len(cameras) < 2:
        raise Sam4dcapError(f"{path}: {len(cameras)} active camera(s); a multi-view reference needs at least 2")
    return sorted(cameras, key=lambda c: _natural_key(c.name))


def _natural_key(text: str):
    import re

    return [int(p) if p.isdigit() else p.lower() for p in re.split(r"(\d+)", text)]


def _dlt(projections: np.ndarray, pixels: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted DLT for many points at once.

    projections (V, 3, 4); pixels (V, P, 2) undistorted; weights (V, P), 0 = view unused.
    Returns (P, 3); NaN where fewer than two views have weight.
    """
    V, P = weights.shape
    u = np.nan_to_num(pixels[..., 0])
    v = np.nan_to_num(pixels[..., 1])
    rows_u = u[..., None] * projections[:, None, 2, :] - projections[:, None, 0, :]   # (V, P, 4)
    rows_v = v[..., None] * projections[:, None, 2, :] - projections[:, None, 1, :]
    # Normalise each row so a view's weight, not its pixel scale or depth, sets its influence.
    rows = np.stack([rows_u, rows_v], axis=1)                                            # (V, 2, P, 4)
    rows = rows / np.maximum(np.linalg.norm(rows, axis=-1, keepdims=True), 1e-12)
    rows = rows * weights[:, None, :, None]
    A = rows.transpose(2, 0, 1, 3).reshape(P, 2 * V, 4)
    _, _, vt = np.linalg.svd(A)
    X = vt[:, -1, :]
    out = np.full((P, 3), np.nan)
    enough = (weights > 0).sum(axis=0) >= 2
    good = enough & (np.abs(X[:, 3]) > 1e-12)
    out[good] = X[good, :3] / X[good, 3:4]
    return out


def triangulate(cameras: Sequence[CalibratedCamera], pixels: np.ndarray, weights: np.ndarray | None = None, *,
                min_views: int = 2, max_error_px: float = 15.0, min_weight: float = 0.3,
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Triangulate points seen by calibrated views.

    pixels (V, ..., 2) distorted image coordinates (NaN = not seen); weights (V, ...) in 0..1
    (keypoint visibility; views below `min_weight` are not used). For each point the largest
    set of views (at least `min_views`) whose reprojections all fall within `max_error_px` is
    kept, the lowest mean error among equals: a keypoint put on the wrong limb in one view is
    left out instead of pulling the point. A point no view set explains is NaN. Returns points
    (..., 3) in the calibration's world, reprojection errors (V, ...) in pixels for every view
    that saw the point (NaN otherwise), and the used-view mask (V, ...).
    """
    import itertools

    V = len(cameras)
    pixels = np.asarray(pixels, float)
    if pixels.shape[0] != V or pixels.shape[-1] != 2:
        raise Sam4dcapError(f"triangulate: pixels must be ({V}, ..., 2) for {V} cameras; got {pixels.shape}")
    if V > 10:
        raise Sam4dcapError(f"triangulate: {V} views; at most 10 are supported (view subsets are searched)")
    shape = pixels.shape[1:-1]
    flat = pixels.reshape(V, -1, 2)
    P = flat.shape[1]
    w = np.ones((V, P)) if weights is None else np.asarray(weights, float).reshape(V, -1)
    seen = np.isfinite(flat).all(axis=-1)
    w = np.where(seen & (w >= min_weight), np.clip(w, 0.0, 1.0), 0.0)
    undist = np.stack([cam.undistort(flat[i]) for i, cam in enumerate(cameras)])
    projections = np.stack([cam.projection for cam in cameras])

    def errors_of(points, observed):
        reproj = np.stack([cam.project(points) for cam in cameras])
        return np.linalg.norm(reproj - observed, axis=-1)

    best_points = np.full((P, 3), np.nan)
    best_size = np.zeros(P, int)
    best_mean = np.full(P, np.inf)
    best_used = np.zeros((V, P), bool)
    for size in range(V, max(min_views, 2) - 1, -1):
        for subset in itertools.combinations(range(V), size):
            mask = np.zeros(V, bool)
            mask[list(subset)] = True
            # Only points every view of the subset saw, and not already explained by more views.
            cand = (w[mask] > 0).all(axis=0) & (best_size <= size)
            if not cand.any():
                continue
            idx = np.nonzero(cand)[0]
            ws = np.where(mask[:, None], w[:, idx], 0.0)
            pts = _dlt(projections, undist[:, idx], ws)
            err = errors_of(pts, flat[:, idx])[mask]
            with np.errstate(invalid="ignore"):
                ok = np.isfinite(pts).all(axis=1) & (err.max(axis=0) <= max_error_px)
            mean = np.where(ok, err.mean(axis=0), np.inf)
            better = ok & ((best_size[idx] < size) | (mean < best_mean[idx]))
            sel = idx[better]
            best_points[sel] = pts[better]
            best_size[sel] = size
            best_mean[sel] = mean[better]
            best_used[:, sel] = mask[:, None]
    err = np.where(seen, errors_of(best_points, flat), np.nan)
    return best_points.reshape(shape + (3,)), err.reshape((V,) + shape), best_used.reshape((V,) + shape)


def zup_to_yup(points: np.ndarray) -> np.ndarray:
    """Points (..., 3) from a z-up world (Qualisys) to OpenSim's y-up world."""
    return np.asarray(points, float) @ ZUP_TO_YUP.T


# --- a multi-view reference trial ----------------------------------------------------------------
VIDEO_SUFFIXES = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v")
# Views whose frame rates differ by more than this cannot be paired frame by frame.
_RATE_TOLERANCE = 0.01
# Video sizes within this share of the calibration's are taken as the calibrated image (a few
# pixels cropped by an encoder); beyond it the calibration does not describe the video.
_SIZE_TOLERANCE = 0.02


@dataclass
class ViewKeypoints:
    """2D keypoints of the tracked person in one calibrated view."""
    name: str
    video: str
    time_s: np.ndarray          # (N,)
    names: tuple[str, ...]
    pixels: np.ndarray          # (N, K, 2), NaN when not seen
    visibility: np.ndarray      # (N, K) 0..1
    rate_hz: float
    width: int
    height: int

    def save(self, path: Path) -> None:
        np.savez_compressed(path, name=self.name, video=self.video, time_s=self.time_s, names=np.array(self.names),
                            pixels=self.pixels, visibility=self.visibility, rate_hz=self.rate_hz,
                            width=self.width, height=self.height)

    @classmethod
    def load(cls, path: Path) -> "ViewKeypoints":
        d = np.load(path)
        return cls(str(d["name"]), str(d["video"]), d["time_s"], tuple(str(n) for n in d["names"]), d["pixels"],
                   d["visibility"], float(d["rate_hz"]), int(d["width"]), int(d["height"]))


def find_multiview_trial(folder: str | Path) -> tuple[Path, list[Path]]:
    """(calibration .qca.txt, videos) of a trial folder in the Pose2Sim layout
    (`calibration/*.qca.txt`, `videos/*`), or with both directly inside."""
    folder = Path(folder)
    calibs = sorted(folder.glob("calibration/*.qca.txt")) or sorted(folder.glob("*.qca.txt"))
    if not calibs:
        raise Sam4dcapError(f"{folder}: no Qualisys calibration (calibration/*.qca.txt) for a multi-view reference")
    if len(calibs) > 1:
        raise Sam4dcapError(f"{folder}: several calibrations ({', '.join(c.name for c in calibs)}); keep one")
    vdir = folder / "videos" if (folder / "videos").is_dir() else folder
    videos = sorted((p for p in vdir.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES), key=lambda p: _natural_key(p.name))
    if len(videos) < 2:
        raise Sam4dcapError(f"{vdir}: {len(videos)} video(s); a multi-view reference needs at least 2 calibrated views")
    return calibs[0], videos


def match_views(cameras: Sequence[CalibratedCamera], videos: Sequence[Path]) -> list[tuple[CalibratedCamera, Path]]:
    """Pair each video with its camera by name (the camera's serial in the file name), else in
    natural order when the counts agree."""
    pairs = []
    for v in videos:
        stem = v.stem.lower()
        hits = [c for c in cameras if c.name.lower() == stem] or [c for c in cameras if c.name.lower() in stem]
        if len(hits) == 1:
            pairs.append((hits[0], v))
    if len(pairs) == len(videos) and len({c.name for c, _ in pairs}) == len(pairs):
        return pairs
    if len(videos) != len(cameras):
        raise Sam4dcapError(f"{len(videos)} videos but {len(cameras)} calibrated cameras "
                            f"({', '.join(c.name for c in cameras)}), and the names do not pair them: "
                            "name each video after its camera (e.g. cam01.mp4)")
    log.warning("videos paired with cameras in order (names do not match): %s",
                ", ".join(f"{v.name}->{c.name}" for c, v in zip(cameras, videos)))
    return list(zip(cameras, videos))


def detect_view_keypoints(video: str | Path, *, name: str, backend: str = "blazepose", start_s: float = 0.0,
                          end_s: float | None = None, progress: bool = False) -> ViewKeypoints:
    """Run the body estimator over one view; keypoints of the tracked person per frame."""
    from .body_estimator import create_estimator
    from .video_source import open_source

    source = open_source(video, start_s=start_s, end_s=end_s)
    estimator = create_estimator({"backend": backend})
    times: list[float] = []
    pix: list[np.ndarray | None] = []
    vis: list[np.ndarray | None] = []
    names: tuple[str, ...] = ()
    try:
        frames = iter(source)
        if progress:
            from tqdm import tqdm

            frames = tqdm(frames, total=source.n_frames_hint, unit="frame", desc=name, leave=False)
        for frame in frames:
            obs = estimator.process(frame)
            times.append(frame.time_s)
            if obs.tracked and obs.keypoints_2d is not None:
                names = names or tuple(obs.names)
                pix.append(np.asarray(obs.keypoints_2d, float))
                v = obs.visibility if obs.visibility is not None else obs.confidence
                vis.append(np.ones(len(obs.names)) if v is None else np.asarray(v, float))
            else:
                pix.append(None)
                vis.append(None)
    finally:
        estimator.close()
        source.close()
    if not names:
        raise Sam4dcapError(f"{video}: no person found in any frame of this view")
    k = len(names)
    pixels = np.stack([p if p is not None else np.full((k, 2), np.nan) for p in pix])
    visibility = np.stack([v if v is not None else np.zeros(k) for v in vis])
    t = np.asarray(times, float)
    rate = float(1.0 / np.median(np.diff(t))) if t.size > 1 else float(getattr(source, "container_fps", 0.0) or 0.0)
    return ViewKeypoints(name, str(video), t, names, pixels, visibility, rate, source.width, source.height)


def check_views(cameras: Sequence[CalibratedCamera], views: Sequence[ViewKeypoints]) -> None:
    """Same frame rate everywhere; each video the size its camera was calibrated at."""
    rates = [v.rate_hz for v in views]
    if max(rates) - min(rates) > _RATE_TOLERANCE * max(rates):
        listing = ", ".join(f"{v.name} {v.rate_hz:.2f} fps" for v in views)
        raise Sam4dcapError(f"views have different frame rates ({listing}): synchronised views of one "
                            "rate are needed; convert the videos to a common rate")
    for cam, view in zip(cameras, views):
        if (view.width, view.height) == (cam.height, cam.width) and cam.width != cam.height:
            raise Sam4dcapError(f"{view.name}: video is {view.width}x{view.height} but camera {cam.name} was "
                                f"calibrated at {cam.width}x{cam.height}: the video is rotated against its calibration")
        if abs(view.width - cam.width) > _SIZE_TOLERANCE * cam.width or \
                abs(view.height - cam.height) > _SIZE_TOLERANCE * cam.height:
            raise Sam4dcapError(f"{view.name}: video is {view.width}x{view.height} but camera {cam.name} was "
                                f"calibrated at {cam.width}x{cam.height}: use the videos of that calibration")
        if (view.width, view.height) != (cam.width, cam.height):
            log.info("%s: video %dx%d, calibration %dx%d (within %.0f%%): pixels used as calibrated",
                     view.name, view.width, view.height, cam.width, cam.height, 100 * _SIZE_TOLERANCE)
    names = {v.names for v in views}
    if len(names) > 1:
        raise Sam4dcapError("views hold different keypoint sets: use one body estimator for every view")


def reject_jumps(points: np.ndarray, support: np.ndarray, *, max_deviation_m: float = 0.1,
                 half_window: int = 7) -> np.ndarray:
    """NaN where a point leaves its own neighbourhood in time.

    points (N, K, 3); support (N, K) number of views behind each point. The reference of frame
    i is the median of the point over frames i-half_window..i+half_window, taken from the
    points seen by 3 or more views when there are any (two views that agree on a wrong
    keypoint, e.g. both swapping left and right, still reproject well). Returns the mask of
    rejected samples (N, K).
    """
    n, k = points.shape[:2]
    finite = np.isfinite(points).all(axis=2)
    rejected = np.zeros((n, k), bool)
    for j in range(k):
        strong = finite[:, j] & (support[:, j] >= 3)
        for i in np.nonzero(finite[:, j])[0]:
            lo, hi = max(0, i - half_window), min(n, i + half_window + 1)
            pick = strong[lo:hi] if strong[lo:hi].sum() >= 3 else finite[lo:hi, j]
            if pick.sum() < 3:
                continue
            ref = np.median(points[lo:hi, j][pick], axis=0)
            rejected[i, j] = np.linalg.norm(points[i, j] - ref) > max_deviation_m
    return rejected


# Keypoints that locate the body best in every view (used to find the views' frame offsets).
_SYNC_KEYPOINTS = ("nose", "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist",
                   "right_wrist", "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle")


def _pair_error(cameras, views, a: int, b: int, shift: int, keypoints: list[int], min_visibility: float) -> float:
    """Median two-view reprojection error with view b's frame j+shift paired to view a's frame j."""
    na, nb = views[a].pixels.shape[0], views[b].pixels.shape[0]
    ja = np.arange(max(0, -shift), min(na, nb - shift))
    if ja.size < 3:
        return float("nan")
    jb = ja + shift
    pix = np.stack([views[a].pixels[ja][:, keypoints], views[b].pixels[jb][:, keypoints]])
    vis = np.stack([views[a].visibility[ja][:, keypoints], views[b].visibility[jb][:, keypoints]])
    _, err, _ = triangulate([cameras[a], cameras[b]], pix, vis, max_error_px=np.inf, min_weight=min_visibility)
    e = err[:, np.isfinite(err).all(axis=0)]
    return float(np.median(e)) if e.size else float("nan")


def estimate_frame_offsets(cameras: Sequence[CalibratedCamera], views: Sequence[ViewKeypoints], *,
                           max_offset_s: float = 0.25, min_visibility: float = 0.5) -> tuple[list[int], dict]:
    """Frame offsets that synchronise the views: view v's frame i + offsets[v] shows the instant
    of view 0's frame i.

    Recordings started by hand are rarely frame-synchronous (on the Pose2Sim demo one view is
    several frames late). For every pair of views and every relative shift within
    +-max_offset_s the median two-view reprojection error of the main body keypoints is
    measured; the offsets minimise the sum of these errors over all pairs (exhaustive search).
    Returns (offsets, {"pair_errors_px": ..., "error_at_zero_px": ..., "error_px": ...}).
    """
    V = len(views)
    rate = views[0].rate_hz
    m = int(round(max_offset_s * rate))
    names = views[0].names
    keypoints = [names.index(n) for n in _SYNC_KEYPOINTS if n in names] or list(range(len(names)))
    if m == 0 or V < 2:
        return [0] * V, {}
    shifts = np.arange(-2 * m, 2 * m + 1)
    table = {}
    for a in range(V):
        for b in range(a + 1, V):
            table[a, b] = np.array([_pair_error(cameras, views, a, b, int(d), keypoints, min_visibility)
                                    for d in shifts])
    import itertools

    best: tuple[int, ...] | None = None
    best_cost = np.inf
    for rest in itertools.product(range(-m, m + 1), repeat=V - 1):
        o = (0,) + rest
        cost = 0.0
        for (a, b), f in table.items():
            c = f[o[b] - o[a] + 2 * m]
            cost += c if np.isfinite(c) else 1e6
        if cost < best_cost - 1e-9 or (best is not None and abs(cost - best_cost) <= 1e-9
                                         and sum(map(abs, o)) < sum(map(abs, best))):
            best, best_cost = o, cost
    assert best is not None   # the first candidate's cost is finite (capped at 1e6 a pair)
    zero_cost = sum(f[2 * m] for f in table.values())
    info = {"max_offset_frames": m, "error_at_zero_px": float(zero_cost / len(table)),
            "error_px": float(best_cost / len(table)),
            "pair_errors_px": {f"{views[a].name}-{views[b].name}": float(f[best[b] - best[a] + 2 * m])
                               for (a, b), f in table.items()}}
    if any(best):
        log.info("views synchronised by frame offsets %s (mean pair error %.1f px, %.1f px without)",
                 dict(zip((v.name for v in views), best)), info["error_px"], info["error_at_zero_px"])
    return list(best), info


def triangulate_views(cameras: Sequence[CalibratedCamera], views: Sequence[ViewKeypoints], *,
                      max_error_px: float = 25.0, min_views: int = 2, min_visibility: float = 0.3,
                      max_deviation_m: float = 0.1, frame_offsets: Sequence[int] | None = None,
                      ) -> tuple["TimeSeries", np.ndarray, np.ndarray]:
    """Markers (N, K, 3) in the OpenSim world (y up, metres) from views paired by frame index
    (view v's frame i + frame_offsets[v] with view 0's frame i; none = all 0), with
    reprojection errors (V, N, K) px and the used-view mask (V, N, K). Times are view 0's.
    Samples that jump away from their neighbours in time (`reject_jumps`) are NaN."""
    from sam4dcap_biomech.timeseries import TimeSeries

    check_views(cameras, views)
    offsets = list(frame_offsets) if frame_offsets is not None else [0] * len(views)
    if len(offsets) != len(views) or offsets[0] != 0:
        raise Sam4dcapError(f"frame_offsets must give one offset per view, 0 for the first: {offsets}")
    i0 = max(-o for o in offsets)
    i1 = min(v.pixels.shape[0] - o for v, o in zip(views, offsets))
    if i1 - i0 < 3:
        raise Sam4dcapError(f"the views overlap in {max(0, i1 - i0)} frame(s) with offsets {offsets}")
    if len({v.pixels.shape[0] for v in views}) > 1 or any(offsets):
        log.info("views have %s frames, offsets %s: %d common frames used",
                 [v.pixels.shape[0] for v in views], offsets, i1 - i0)
    idx = [np.arange(i0, i1) + o for o in offsets]
    pixels = np.stack([v.pixels[j] for v, j in zip(views, idx)])
    weights = np.stack([v.visibility[j] for v, j in zip(views, idx)])
    points, errors, used = triangulate(cameras, pixels, weights, min_views=min_views,
                                       max_error_px=max_error_px, min_weight=min_visibility)
    rejected = reject_jumps(points, used.sum(axis=0), max_deviation_m=max_deviation_m)
    points[rejected] = np.nan
    used = used & ~rejected[None]
    log.info("triangulated %d frames x %d keypoints: %.1f%% missing (%.1f%% rejected as jumps)",
             points.shape[0], points.shape[1], 100 * np.isnan(points).any(axis=2).mean(), 100 * rejected.mean())
    markers = TimeSeries(views[0].time_s[i0:i1], views[0].names, zup_to_yup(points), unit="m", frame="world",
                         meta={"source": "multiview: " + ", ".join(v.name for v in views)})
    return markers, errors, used


def heading_alignment(markers: "TimeSeries", *, window_s: float = 0.5) -> np.ndarray:
    """(4, 4) transform of a y-up world that turns it about the vertical so the subject faces +x
    (OpenSim's forward) over the first `window_s`, with the pelvis centre above the origin at the
    first frame: the pose OpenSim's IK starts from (the default pose faces +x), and the frame
    the monocular path builds. Heading from the hips: forward = up x (right_hip - left_hip)."""
    T = np.eye(4)
    try:
        r = markers.get("right_hip") - markers.get("left_hip")
        pelvis = 0.5 * (markers.get("right_hip") + markers.get("left_hip"))
    except Sam4dcapError:
        log.warning("no hip markers: the multi-view world is not turned to face +x")
        return T
    early = (markers.time <= markers.time[0] + window_s) & np.isfinite(r).all(axis=1)
    if not early.any():
        early = np.isfinite(r).all(axis=1)
    if not early.any():
        return T
    forward = np.cross(np.array([0.0, 1.0, 0.0]), r[early])
    heading = np.arctan2(-forward[:, 2], forward[:, 0])
    yaw = float(np.arctan2(np.median(np.sin(heading)), np.median(np.cos(heading))))
    # Rotation about +y by +yaw takes direction (cos h, 0, -sin h) to (cos(h+yaw), 0, -sin(h+yaw)):
    # turning by -heading faces +x.
    c, s_ = np.cos(-yaw), np.sin(-yaw)
    R = np.array([[c, 0.0, s_], [0.0, 1.0, 0.0], [-s_, 0.0, c]])
    first = pelvis[np.isfinite(pelvis).all(axis=1)]
    origin = R @ first[0] if len(first) else np.zeros(3)
    T[:3, :3] = R
    T[:3, 3] = [-origin[0], 0.0, -origin[2]]
    return T


def apply_transform(markers: "TimeSeries", T: np.ndarray) -> "TimeSeries":
    return markers.with_values(markers.values @ T[:3, :3].T + T[:3, 3])


def reprojection_summary(views: Sequence[ViewKeypoints], errors: np.ndarray, used: np.ndarray) -> dict:
    out = {}
    for i, v in enumerate(views):
        e_all = errors[i][np.isfinite(errors[i])]
        e_used = errors[i][used[i] & np.isfinite(errors[i])]
        out[v.name] = {
            "used_median_px": float(np.median(e_used)) if e_used.size else None,
            "used_mean_px": float(np.mean(e_used)) if e_used.size else None,
            "used_p90_px": float(np.percentile(e_used, 90)) if e_used.size else None,
            "all_median_px": float(np.median(e_all)) if e_all.size else None,
            "observations_used": int(e_used.size), "observations": int(e_all.size),
        }
    return out
