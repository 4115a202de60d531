"""Body keypoints -> named virtual markers in the world frame (offline and streaming).

Markers are the estimator's keypoints under their own names: with BlazePose, the 33 landmark
names (`markersets.BLAZEPOSE33`), which the model's BlazePose marker set carries; a mesh backend
whose observations carry the 43 OpenCap names gets those. The world frame comes from
`world_frame` (translation from 2D-3D correspondences, scale from the subject's height, ground
and up from foot contacts); see that module for the geometry. Hip-centred estimator bodies are
first turned to match their 2D keypoints under perspective (`orientation_correction`, a rotation
per frame about the hip centre, low-passed at `ORIENTATION_CUTOFF_HZ`: zero-phase offline,
causal live), which fixes the tilt toward/away from the camera that the up axis depends on.

Offline: `markers_from_observations(...) -> MarkerResult` uses the whole trial for the world
frame and filters with the zero-phase Butterworth. Streaming: `StreamingMarkerEstimator`
buffers the first `ground_window_s` to fix the world frame, then turns each observation into a
`MarkerFrame` at once, filtered by the causal low-pass (`CausalLowpass.low_lag`: <= 1 frame of lag).

Missing data: a frame without the person (or whose translation cannot be recovered) gives NaN
markers and `tracked=False`/`flags["tracked"]` False; nothing is ever filled with zeros. The raw
(unfiltered) series is always kept next to the filtered one. Offline, interior gaps of at most
`max_bridged_gap_s` are bridged (cubic interpolation of the markers, confidence times
`BRIDGED_CONFIDENCE_FACTOR`, `flags["frame_status"]` "bridged"); longer gaps stay NaN ("lost").
Frames whose mean keypoint visibility is below `min_person_visibility` have no usable person
(BlazePose's tracker keeps "seeing" a body of visibility ~0.55 in an empty scene). A trial
whose person is placed in fewer than `min_tracked_fraction` of its frames is refused
("no person ...") instead of giving a trial of a few phantom frames.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import Iterable, Sequence

import numpy as np

from sam4dcap_biomech.errors import Sam4dcapError
from sam4dcap_biomech.filters import CausalLowpass, butterworth_zero_phase, fill_gaps, true_runs
from sam4dcap_biomech.markersets import BLAZEPOSE33, MARKER_SETS
from sam4dcap_biomech.timeseries import TimeSeries

from . import lr_consistency as lrc
from . import world_frame as wf
from . import body_geometry as bg
from .observations import BodyObservation, CameraIntrinsics

log = logging.getLogger(__name__)

# Keypoints below this visibility do not take part in the translation fit (their 2D position
# is a guess); they still become markers, with their visibility as confidence.
_MIN_FIT_VISIBILITY = 0.2
# The orientation correction varies slowly (it follows the viewing direction, not the motion):
# low-passed so that its per-frame fitting noise (~1 deg) does not shake the markers.
ORIENTATION_CUTOFF_HZ = 1.5
# Streaming: most frames kept while looking for the world frame (a minute at 60 fps).
_MAX_WINDOW_FRAMES = 3600
# Live contact correction: a lowest foot further than this from every support level is airborne.
AIRBORNE_M = 0.1
# Bridged (interpolated) frames carry the interpolated keypoint confidence times this: they are
# a guess between two seen poses, never as trustworthy as a seen one.
BRIDGED_CONFIDENCE_FACTOR = 0.5
# Per-frame status of offline markers (`MarkerResult.flags["frame_status"]`).
FRAME_TRACKED, FRAME_BRIDGED, FRAME_LOST = "tracked", "bridged", "lost"


def marker_set_of(names: Sequence[str]) -> str:
    for key, set_names in MARKER_SETS.items():
        if tuple(names) == tuple(set_names):
            return key
    return "custom"


# --------------------------------------------------------------------------------------------
# Observations -> arrays
# --------------------------------------------------------------------------------------------
@dataclass
class KeypointTrack:
    """Observations of one person as arrays; untracked frames are NaN rows."""
    time: np.ndarray            # (N,) s
    names: tuple[str, ...]
    pixels: np.ndarray          # (N, K, 2)
    body_points: np.ndarray     # (N, K, 3) camera axes; hip-centred unless `in_camera_frame`
    visibility: np.ndarray      # (N, K) 0..1, 0 where missing
    tracked: np.ndarray         # (N,) bool
    in_camera_frame: np.ndarray  # (N,) bool: body_points are camera-frame positions (see _in_camera_frame)

    @property
    def n_frames(self) -> int:
        return len(self.time)

    @classmethod
    def from_observations(cls, observations: Iterable[BodyObservation]) -> "KeypointTrack":
        obs = list(observations)
        if not obs:
            raise Sam4dcapError("no frames: the video/time window is empty")
        names = next((tuple(o.names) for o in obs if o.tracked and o.names), ())
        if not names:
            raise Sam4dcapError("no person found in any frame")
        n, k = len(obs), len(names)
        pixels = np.full((n, k, 2), np.nan)
        body = np.full((n, k, 3), np.nan)
        vis = np.zeros((n, k))
        tracked = np.zeros(n, bool)
        in_cam = np.zeros(n, bool)
        time = np.array([o.time_s for o in obs], float)
        for i, o in enumerate(obs):
            if not o.tracked or o.keypoints_3d is None:
                continue
            if tuple(o.names) != names:
                raise Sam4dcapError(f"frame {o.frame_index}: keypoint names changed mid-trial "
                                    f"({o.skeleton}); one estimator per trial")
            body[i] = np.asarray(o.keypoints_3d, float)
            if o.keypoints_2d is not None:
                pixels[i] = np.asarray(o.keypoints_2d, float)
            v = o.visibility if o.visibility is not None else o.confidence
            vis[i] = np.nan_to_num(np.asarray(v, float), nan=0.0) if v is not None else 1.0
            in_cam[i] = _in_camera_frame(o)
            tracked[i] = np.isfinite(body[i]).any()
        return cls(time, names, pixels, body, vis, tracked, in_cam)


def _in_camera_frame(obs: BodyObservation) -> bool:
    """BodyObservation.keypoints_3d_in_camera_frame (BlazePose's are hip-centred: translation fit)."""
    return obs.keypoints_3d_in_camera_frame


def camera_points_of(body_points: np.ndarray, pixels: np.ndarray, visibility: np.ndarray,
                     intrinsics: CameraIntrinsics, *, in_camera_frame: bool = False,
                     rotation: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """One frame's keypoints in the camera frame (estimator's scale) and the fit's RMS pixel error.

    `rotation` (3, 3), when given and finite, turns the hip-centred body about its origin before
    the translation fit (the orientation correction of `orientation_correction`)."""
    if in_camera_frame:
        return np.asarray(body_points, float), float("nan")
    body = np.asarray(body_points, float)
    if rotation is not None and np.isfinite(rotation).all():
        body = body @ np.asarray(rotation, float).T
    w = np.where(np.asarray(visibility, float) >= _MIN_FIT_VISIBILITY, visibility, 0.0)
    t, rms = wf.recover_translation(body, pixels, intrinsics, weights=w)
    return body + t, rms


def orientation_correction(body_points: np.ndarray, pixels: np.ndarray, visibility: np.ndarray,
                           intrinsics: CameraIntrinsics) -> np.ndarray:
    """Rotation vector (3,) [rad, camera axes] that turns one frame's hip-centred body so that it
    matches the 2D keypoints under perspective (`world_frame.recover_pose`); NaN if the fit fails.

    Monocular estimators tilt the body toward or away from the camera wrongly (BlazePose keeps
    bodies seen from above too upright: 5-18 deg on the Pose2Sim demo views); the world frame's
    up axis inherits that tilt unless it is corrected."""
    w = np.where(np.asarray(visibility, float) >= _MIN_FIT_VISIBILITY, visibility, 0.0)
    R, _, _ = wf.recover_pose(body_points, pixels, intrinsics, weights=w)
    if not np.isfinite(R).all():
        return np.full(3, np.nan)
    from scipy.spatial.transform import Rotation

    return Rotation.from_matrix(R).as_rotvec()


def _rotation_matrix(rotvec: np.ndarray | None) -> np.ndarray | None:
    if rotvec is None or not np.isfinite(rotvec).all():
        return None
    from scipy.spatial.transform import Rotation

    return Rotation.from_rotvec(rotvec).as_matrix()


def smooth_orientation_corrections(time: np.ndarray, rotvecs: np.ndarray) -> np.ndarray:
    """Zero-phase low-pass (`ORIENTATION_CUTOFF_HZ`) of per-frame corrections (N, 3); frames
    whose fit failed get the interpolated value; all NaN -> all NaN."""
    rv = np.asarray(rotvecs, float)
    ok = np.isfinite(rv).all(1)
    if not ok.any():
        return rv.copy()
    idx = np.arange(len(rv))
    filled = np.stack([np.interp(idx, idx[ok], rv[ok, j]) for j in range(3)], axis=1)
    if len(rv) < 2:
        return filled
    series = TimeSeries(np.asarray(time, float), ("rx", "ry", "rz"), filled, unit="rad")
    return butterworth_zero_phase(series, cutoff_hz=min(ORIENTATION_CUTOFF_HZ, 0.45 * series.rate_hz)).values


# --------------------------------------------------------------------------------------------
# Offline
# --------------------------------------------------------------------------------------------
@dataclass
class MarkerResult:
    """World-frame markers of one trial.

    raw: unfiltered markers (N, K, 3), frame "world", metres, NaN when missing.
    filtered: zero-phase low-passed `raw` (same gaps).
    camera: the same markers in the camera frame (metric, subject scale), unfiltered.
    confidence: (N, K) keypoint visibility, 0 where missing.
    flags: "tracked" (N,) person seen and placed; "reprojection_error_px" (N,) of the translation
        fit; "ground_contact_shift_m" (N, 3) the contact correction applied (world_frame step 6).
    world: the world frame (scale, world<-camera transform = the camera pose in the world).
    quality: summary numbers (tracked fraction, scale, up-axis and ground statistics, ...).
    """
    raw: TimeSeries
    filtered: TimeSeries
    camera: TimeSeries
    confidence: np.ndarray
    flags: dict
    world: wf.WorldFrame
    quality: dict
    intrinsics: CameraIntrinsics | None = None
    observations: list | None = None   # the BodyObservations, when kept for export

    @property
    def world_from_camera(self) -> wf.RigidTransform:
        return self.world.world_from_camera

    @property
    def tracked_fraction(self) -> float:
        return float(np.mean(self.flags["tracked"])) if len(self.flags["tracked"]) else 0.0


def _stance_ground_stats(markers: np.ndarray, names: Sequence[str], time: np.ndarray, *,
                         max_speed_m_s: float = 0.3) -> dict:
    """Height of the lowest heel/toe in stance frames (a foot point slower than `max_speed_m_s`)."""
    feet = bg.landmarks(markers, names, bg.FOOT_POINTS)          # (N, 4, 3)
    h = feet[..., 1]
    speed = np.full(h.shape, np.nan)
    if len(time) >= 3:
        vel = np.gradient(feet, time, axis=0)
        speed = np.linalg.norm(vel[..., [0, 2]], axis=-1)
    with np.errstate(invalid="ignore"):
        slow = speed < max_speed_m_s
    lowest = np.where(np.isfinite(h), h, np.inf).min(1)
    stance = slow.any(1) & np.isfinite(lowest)
    if not stance.any():
        nan = float("nan")
        return {"stance_frames": 0, "stance_lowest_foot_median_m": nan, "stance_lowest_foot_p5_m": nan,
                "stance_lowest_foot_p95_m": nan, "stance_within_2cm_fraction": nan}
    low = lowest[stance]
    return {
        "stance_frames": int(stance.sum()),
        "stance_lowest_foot_median_m": float(np.median(low)),
        "stance_lowest_foot_p5_m": float(np.percentile(low, 5)),
        "stance_lowest_foot_p95_m": float(np.percentile(low, 95)),
        "stance_within_2cm_fraction": float(np.mean(np.abs(low) <= 0.02)),
    }


def _repair_left_right(track: KeypointTrack, lr: lrc.LRSettings | None
                       ) -> tuple[KeypointTrack, np.ndarray, np.ndarray]:
    """The track with the estimator's left/right swaps undone (offline, whole trial), the (N,)
    mask of relabelled frames and of those whose 3D was also mirrored in depth."""
    n = track.n_frames
    if lr is None or not lr.enabled:
        return track, np.zeros(n, bool), np.zeros(n, bool)
    swapped = lrc.consistent_labels(track.pixels, track.visibility, track.tracked, track.names, lr)
    if not swapped.any():
        return track, swapped, np.zeros(n, bool)
    pixels, body, vis, mirrored = lrc.repair_track(track.pixels, track.body_points, track.visibility, swapped,
                                                   track.names)
    # Camera-frame bodies (mesh backends) are absolute positions: exchange only, never mirror.
    absolute = mirrored & track.in_camera_frame
    body[absolute] = track.body_points[absolute][:, lrc.swap_permutation(track.names)]
    mirrored &= ~track.in_camera_frame
    log.info("left/right: %d of %d frames relabelled (%d also mirrored in depth)", swapped.sum(), n, mirrored.sum())
    return replace(track, pixels=pixels, body_points=body, visibility=vis), swapped, mirrored


def offline_marker_settings(params) -> dict:
    """The keyword settings of `markers_from_observations` from a markers_node config section
    (the one place that maps the config's names onto the function's)."""
    return dict(offline_cutoff_hz=float(params["offline_filter_cutoff_hz"]),
                world_frame_id=str(params["world_frame"]), min_travel_m=float(params["min_travel_m"]),
                ground_prior_spread_m=float(params["ground_prior_spread_m"]),
                ground_contact_cutoff_hz=float(params["ground_contact_cutoff_hz"]),
                max_bridged_gap_s=float(params["max_bridged_gap_s"]),
                min_tracked_fraction=float(params["min_tracked_fraction"]),
                min_person_visibility=float(params["min_person_visibility"]),
                lr=lrc.LRSettings.from_params(params))


def markers_from_observations(observations: Iterable[BodyObservation], *, height_m: float,
                              intrinsics: CameraIntrinsics, offline_cutoff_hz: float,
                              extrinsics: wf.RigidTransform | None = None, world_frame_id: str = "world",
                              min_travel_m: float, ground_prior_spread_m: float,
                              ground_contact_cutoff_hz: float, source: str = "",
                              keep_observations: bool = False, max_bridged_gap_s: float,
                              min_tracked_fraction: float, min_person_visibility: float,
                              lr: lrc.LRSettings | None = None) -> MarkerResult:
    """World-frame virtual markers of a whole trial (offline: the world frame uses every frame).

    Gaps (frames without a placed person) of at most `max_bridged_gap_s` between two placed
    frames are bridged; longer ones stay NaN. A frame whose mean keypoint visibility is below
    `min_person_visibility` has no usable person (a phantom body). Fewer placed frames than
    `min_tracked_fraction` of the trial (or fewer than 3) is an error naming it: "no person".
    `lr`: left/right repair of the keypoints first (`lr_consistency`; None = none)."""
    obs = list(observations)
    track = KeypointTrack.from_observations(obs)
    if not track.tracked.any():
        raise Sam4dcapError("no person found in any frame")
    n, k = track.n_frames, len(track.names)
    track.tracked &= track.visibility.mean(axis=1) >= min_person_visibility
    if track.tracked.sum() < 3 or track.tracked.mean() < min_tracked_fraction:
        raise Sam4dcapError(f"no person: one is seen in only {int(track.tracked.sum())} of {n} frames "
                            f"({100 * track.tracked.mean():.0f} %, markers_node.min_tracked_fraction = "
                            f"{100 * min_tracked_fraction:.0f} %){f' of {source}' if source else ''}")
    track, lr_swapped, lr_mirrored = _repair_left_right(track, lr)
    # Orientation corrections of the estimator's hip-centred bodies (not for bodies already given in
    # the camera frame, nor with external extrinsics, where the estimator's frame is kept as is).
    corrections = np.full((n, 3), np.nan)
    refine = track.tracked & ~track.in_camera_frame
    if extrinsics is None and refine.any():
        for i in np.flatnonzero(refine):
            corrections[i] = orientation_correction(track.body_points[i], track.pixels[i], track.visibility[i],
                                                    intrinsics)
        n_refined = int(np.isfinite(corrections).all(1).sum())
        smooth = smooth_orientation_corrections(track.time[refine], corrections[refine])
        corrections[refine] = smooth
    else:
        n_refined = 0
    cam_raw = np.full((n, k, 3), np.nan)
    rms = np.full(n, np.nan)
    for i in np.flatnonzero(track.tracked):
        cam_raw[i], rms[i] = camera_points_of(track.body_points[i], track.pixels[i], track.visibility[i],
                                              intrinsics, in_camera_frame=bool(track.in_camera_frame[i]),
                                              rotation=_rotation_matrix(corrections[i]))
    placed = track.tracked & np.isfinite(cam_raw).any(axis=(1, 2))
    cam_raw[~placed] = np.nan
    if not placed.any():
        raise Sam4dcapError("the person's position could not be recovered in any frame (no 2D keypoints?)")
    if placed.sum() < 3 or placed.mean() < min_tracked_fraction:
        raise Sam4dcapError(f"no person: the position of the person is recovered in only {int(placed.sum())} of "
                            f"{n} frames ({100 * placed.mean():.0f} %){f' of {source}' if source else ''}")
    if extrinsics is None:
        world = wf.estimate_world_frame(cam_raw, track.names, height_m=height_m, min_travel_m=min_travel_m,
                                        prior_spread_m=ground_prior_spread_m, frame_id=world_frame_id,
                                        time_s=track.time)
    else:
        stature_raw, _ = bg.stature_from_segments(cam_raw, track.names)
        if not np.isfinite(stature_raw):
            raise Sam4dcapError("cannot measure the body's segments in any frame: cannot scale to the height")
        world = wf.WorldFrame(scale=float(height_m / stature_raw), world_from_camera=extrinsics,
                              frame_id=world_frame_id, stats={"extrinsics": "file"})
    world_pts = world.apply(cam_raw)
    time = track.time
    shift = np.zeros((n, 3))
    has_feet = bg.has_landmarks(track.names, bg.FOOT_POINTS + ("left_hip", "right_hip"))
    if extrinsics is None and has_feet and ground_contact_cutoff_hz > 0 and n > 1:
        # Stance feet onto their support level (floor, platform); flight phases keep their height.
        height_error = wf.contact_height_error(world_pts, track.names, time, world.stats.get("ground_levels_m", (0.0,)))
        error_series = TimeSeries(time, ("contact_height_error",), height_error[:, None], unit="m")
        rate = error_series.rate_hz
        error = butterworth_zero_phase(error_series, cutoff_hz=min(ground_contact_cutoff_hz, 0.45 * rate)).values[:, 0]
        shift = wf.ground_contact_shift(world_pts, track.names, world.world_from_camera.translation, error)
        world_pts = world_pts + shift[:, None, :]
    meta = {"marker_set": marker_set_of(track.names), "source": source, "height_m": float(height_m),
            "scale": world.scale}
    raw = TimeSeries(time, track.names, world_pts, unit="m", frame=world.frame_id, meta=meta)
    raw, bridged = bridge_gaps(raw, placed, max_gap_s=max_bridged_gap_s)
    world_pts = raw.values
    cam_metric = world.world_from_camera.inverse().apply(world_pts)
    camera = TimeSeries(time, track.names, cam_metric, unit="m", frame="camera", meta=meta)
    filtered = raw
    if n > 1 and offline_cutoff_hz > 0:
        cutoff = min(offline_cutoff_hz, 0.45 * raw.rate_hz)
        filtered = butterworth_zero_phase(raw, cutoff_hz=cutoff)
    confidence = np.where(placed[:, None], track.visibility, 0.0)
    confidence[bridged] = BRIDGED_CONFIDENCE_FACTOR * _interpolate_rows(time, confidence, placed)[bridged]
    status = frame_status(placed, bridged)
    flags = {"tracked": placed, "bridged": bridged, "frame_status": status, "reprojection_error_px": rms,
             "ground_contact_shift_m": shift, "orientation_correction_rad": corrections,
             "lr_swapped": lr_swapped, "lr_depth_mirrored": lr_mirrored}
    lost = status == FRAME_LOST
    quality = {
        "frames": int(n),
        "tracked_frames": int(placed.sum()),
        "tracked_fraction": float(placed.mean()),
        "bridged_frames": int(bridged.sum()),
        "lost_frames": int(lost.sum()),
        "lost_intervals_s": [[float(time[a]), float(time[b - 1])] for a, b in true_runs(lost)],
        "max_bridged_gap_s": float(max_bridged_gap_s),
        "reprojection_error_px_median": float(np.nanmedian(rms)) if np.isfinite(rms).any() else float("nan"),
        "ground_contact_shift_m_max": float(np.abs(np.linalg.norm(shift, axis=1)).max()) if n else 0.0,
        "orientation_refined_frames": n_refined,
        "lr_swapped_frames": int(lr_swapped.sum()),
        "lr_depth_mirrored_frames": int(lr_mirrored.sum()),
        "orientation_correction_deg_median": (float(np.degrees(np.nanmedian(np.linalg.norm(corrections, axis=1))))
                                              if np.isfinite(corrections).any() else 0.0),
        **world.stats,
    }
    if has_feet:
        quality.update(_stance_ground_stats(filtered.values, track.names, time))
    return MarkerResult(raw=raw, filtered=filtered, camera=camera, confidence=confidence, flags=flags,
                        world=world, quality=quality, intrinsics=intrinsics,
                        observations=obs if keep_observations else None)


def frame_status(tracked: np.ndarray, bridged: np.ndarray) -> np.ndarray:
    """(N,) "tracked" / "bridged" / "lost" per frame."""
    return np.where(tracked, FRAME_TRACKED, np.where(bridged, FRAME_BRIDGED, FRAME_LOST))


def _interpolate_rows(time: np.ndarray, values: np.ndarray, known: np.ndarray) -> np.ndarray:
    """values (N, K) linearly interpolated in time over the rows not `known`."""
    out = values.astype(float).copy()
    if known.sum() >= 2:
        for j in range(values.shape[1]):
            out[~known, j] = np.interp(time[~known], time[known], values[known, j])
    return out


def bridge_gaps(markers: TimeSeries, placed: np.ndarray, *, max_gap_s: float) -> tuple[TimeSeries, np.ndarray]:
    """Interpolate (cubic) the markers over interior runs of unplaced frames no longer than
    `max_gap_s` (the run's duration from the last frame before to the first frame after it,
    minus one frame); returns the markers and (N,) True on bridged frames. Longer gaps, and gaps
    at the start or end, stay NaN."""
    n = markers.n_frames
    bridged = np.zeros(n, bool)
    if max_gap_s <= 0 or n < 3 or placed.all():
        return markers, bridged
    frame_s = float(np.median(np.diff(markers.time)))
    for start, stop in true_runs(~placed):
        if start > 0 and stop < n and markers.time[stop] - markers.time[start - 1] - frame_s <= max_gap_s + 1e-9:
            bridged[start:stop] = True
    if not bridged.any():
        return markers, bridged
    longest = max(b - a for a, b in true_runs(bridged))
    values = markers.values.copy()
    values[~placed & ~bridged] = np.nan
    # Only the frames chosen above: fill_gaps would also bridge long gaps' partial neighbours.
    filled, _ = fill_gaps(markers.with_values(values), max_gap_frames=longest, method="cubic")
    out = markers.values.copy()
    out[bridged] = filled.values[bridged]
    bridged &= np.isfinite(out).all(axis=2).any(axis=1)
    return markers.with_values(out), bridged


# --------------------------------------------------------------------------------------------
# Streaming
# --------------------------------------------------------------------------------------------
@dataclass
class MarkerFrame:
    """Markers of one instant from the live stream."""
    time_s: float
    names: tuple[str, ...]
    positions: np.ndarray      # (K, 3) world, causally filtered; NaN when missing
    raw: np.ndarray            # (K, 3) world, unfiltered
    confidence: np.ndarray     # (K,) 0..1, 0 when missing
    tracked: bool
    frame_id: str = "world"
    marker_set: str = "blazepose33"
    extra: dict = field(default_factory=dict)


class StreamingMarkerEstimator:
    """Live markers: buffer `ground_window_s` of observations to fix the world frame, then one
    `MarkerFrame` per observation (`push` returns None while the world frame is being found;
    the window's frames come later from `take_backlog()`).

    `params` are the markers_node parameters (config section `markers_node`).
    """

    def __init__(self, params: dict, intrinsics: CameraIntrinsics, *, extrinsics: wf.RigidTransform | None = None):
        self.params = dict(params)
        self.intrinsics = intrinsics
        self.extrinsics = extrinsics
        self.height_m = float(self.params["subject_height_m"])
        self.window_s = float(self.params["ground_window_s"])
        self.frame_id = str(self.params["world_frame"])
        self.world: wf.WorldFrame | None = None
        # Buffered frames while the world frame is found: (time, `_prepare(obs)`).
        self._buffer: list[tuple] = []
        self._window_points: list = []
        self._names: tuple[str, ...] | None = None
        self._filter: CausalLowpass | None = None
        self._contact_filter: CausalLowpass | None = None
        self._orientation_filter: CausalLowpass | None = None
        self._orientation: np.ndarray | None = None     # last smoothed orientation correction (rotation vector)
        self._backlog: list[MarkerFrame] = []
        self._last_time: float | None = None
        self.last_tracked = False    # the newest emitted frame placed the person (health reporting)
        self._contact_error: np.ndarray | None = None   # last contact-height correction (held while airborne)
        # Left/right repair, causal (`lr_consistency.CausalLRTracker`), made for the first names seen.
        self._lr_settings = lrc.LRSettings.from_params(self.params) if "lr_repair" in self.params else None
        self._lr: lrc.CausalLRTracker | None = None
        self.lr_swapped_frames = 0

    @property
    def ready(self) -> bool:
        return self.world is not None

    def _prepare(self, obs: BodyObservation) -> tuple | None:
        """(body, pixels, visibility, in_camera_frame, orientation correction, left/right swapped)
        of a tracked observation, None when the person is not there."""
        if not obs.tracked or obs.keypoints_3d is None:
            return None
        if self._names is None:
            self._names = tuple(obs.names)
        elif tuple(obs.names) != self._names:
            raise Sam4dcapError(f"keypoint names changed mid-stream ({obs.skeleton})")
        body = np.asarray(obs.keypoints_3d, float)
        in_cam = _in_camera_frame(obs)
        if obs.keypoints_2d is not None:
            pix = np.asarray(obs.keypoints_2d, float)
        else:
            pix = np.full((len(body), 2), np.nan)
        v = obs.visibility if obs.visibility is not None else obs.confidence
        vis = np.nan_to_num(np.asarray(v, float), nan=0.0) if v is not None else np.ones(len(body))
        if vis.mean() < float(self.params["min_person_visibility"]):
            return None    # a phantom body (e.g. the tracker on an empty scene): no usable person
        swapped = False
        if self._lr_settings is not None and self._lr_settings.enabled:
            if self._lr is None:
                self._lr = lrc.CausalLRTracker(self._names, self._lr_settings)
            swapped = self._lr.push(obs.time_s, pix, vis)
            if swapped:
                perm = self._lr.perm
                pix, vis = pix[perm], vis[perm]
                body = body[perm] if in_cam else lrc.repaired_body(body, perm, self._names)[0]
                self.lr_swapped_frames += 1
        correction = np.full(3, np.nan)
        if self.extrinsics is None and not in_cam:
            correction = orientation_correction(body, pix, vis, self.intrinsics)
        return body, pix, vis, in_cam, correction, swapped

    def _camera_points(self, prepared: tuple | None) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Camera-frame points with the causally smoothed orientation correction, and visibility."""
        if prepared is None:
            return None, None
        body, pix, vis, in_cam, correction, _ = prepared
        if self._orientation_filter is not None and np.isfinite(correction).all():
            self._orientation = self._orientation_filter.step(correction)
        pts, _ = camera_points_of(body, pix, vis, self.intrinsics, in_camera_frame=in_cam,
                                  rotation=None if in_cam else _rotation_matrix(self._orientation))
        if not np.isfinite(pts).any():
            return None, None
        return pts, vis

    def _try_fix_world(self) -> None:
        times = np.array([b[0] for b in self._buffer])
        if not any(b[1] is not None for b in self._buffer) or times[-1] - times[0] < self.window_s:
            return
        rate = 1.0 / np.median(np.diff(times)) if len(times) > 1 else 30.0
        # Replay the window through a fresh orientation filter: the same points the live path gives.
        self._orientation_filter = CausalLowpass(3, rate_hz=rate, cutoff_hz=min(ORIENTATION_CUTOFF_HZ, 0.45 * rate),
                                                 order=2)
        self._orientation = None
        points = [self._camera_points(b[1]) for b in self._buffer]
        valid = [p[0] for p in points if p[0] is not None]
        if not valid:
            return
        assert self._names is not None   # set by _prepare on the first tracked frame
        pts = np.stack(valid)
        if self.extrinsics is None:
            try:
                valid_times = np.array([b[0] for b, p in zip(self._buffer, points) if p[0] is not None])
                self.world = wf.estimate_world_frame(pts, self._names, height_m=self.height_m,
                                                     min_travel_m=float(self.params["min_travel_m"]),
                                                     prior_spread_m=float(self.params["ground_prior_spread_m"]),
                                                     frame_id=self.frame_id, time_s=valid_times)
            except Sam4dcapError as exc:
                log.warning("world frame not found yet (%s); collecting more frames", exc)
                return
        else:
            stature_raw, _ = bg.stature_from_segments(pts, self._names)
            if not np.isfinite(stature_raw):
                return
            self.world = wf.WorldFrame(self.height_m / stature_raw, self.extrinsics, frame_id=self.frame_id,
                                       stats={"extrinsics": "file"})
        self._window_points = points
        cutoff = min(float(self.params["online_filter_cutoff_hz"]), 0.45 * rate)
        self._filter = CausalLowpass.low_lag(len(self._names), rate_hz=rate, cutoff_hz=cutoff, max_lag_frames=1.0)
        contact_hz = float(self.params["ground_contact_cutoff_hz"])
        has_feet = bg.has_landmarks(self._names, bg.FOOT_POINTS + ("left_hip", "right_hip"))
        if self.extrinsics is None and contact_hz > 0 and has_feet:
            self._contact_filter = CausalLowpass(1, rate_hz=rate, cutoff_hz=min(contact_hz, 0.45 * rate), order=2)
        log.info("world frame fixed after %.2f s (%d tracked frames): scale %.3f, camera %.2f m above the ground",
                 times[-1] - times[0], len(valid), self.world.scale, self.world.world_from_camera.translation[1])

    def push(self, obs: BodyObservation) -> MarkerFrame | None:
        """Markers for this observation, or None while the world frame is still being found.

        On the frame that completes the ground window the world frame is fixed and this frame's
        markers come back; the window's earlier frames are then available from `take_backlog()`
        (filtered in order, so the live filter has their history).
        """
        if self._last_time is not None and obs.time_s <= self._last_time:
            log.warning("observation at %.3f s is not after %.3f s; dropped", obs.time_s, self._last_time)
            return None
        self._last_time = obs.time_s
        prepared = self._prepare(obs)
        if self.world is not None:
            return self._emit(obs.time_s, *self._camera_points(prepared), lr_swapped=_swapped(prepared))
        self._buffer.append((obs.time_s, prepared))
        if len(self._buffer) > _MAX_WINDOW_FRAMES:
            self._buffer.pop(0)   # a stream without a usable person: keep the newest frames only
        self._try_fix_world()
        if self.world is None:
            return None
        frames = [self._emit(b[0], *p, lr_swapped=_swapped(b[1])) for b, p in zip(self._buffer, self._window_points)]
        self._buffer.clear()
        self._window_points = []
        self._backlog.extend(frames[:-1])
        return frames[-1]

    def take_backlog(self) -> list[MarkerFrame]:
        """Markers of the ground-window frames before the one that fixed the world frame (once)."""
        out, self._backlog = self._backlog, []
        return out

    def _emit(self, time_s: float, pts: np.ndarray | None, vis: np.ndarray | None, *,
              lr_swapped: bool = False) -> MarkerFrame:
        assert self.world is not None and self._names is not None and self._filter is not None   # world fixed
        k = len(self._names)
        if pts is None:
            raw = np.full((k, 3), np.nan)
            conf = np.zeros(k)
        else:
            assert vis is not None   # _camera_points gives points and visibility together
            raw = self.world.apply(pts)
            conf = vis
            if self._contact_filter is not None:
                lowest = wf.lowest_foot_height(raw[None], self._names)
                offset = wf.height_above_support(lowest, self.world.stats.get("ground_levels_m", (0.0,)))
                if np.isfinite(offset).all() and offset[0] > AIRBORNE_M and self._contact_error is not None:
                    error = self._contact_error    # feet well off every level (a jump): keep the last correction
                else:
                    error = self._contact_filter.step(offset)
                    self._contact_error = error
                raw = raw + wf.ground_contact_shift(raw[None], self._names, self.world.world_from_camera.translation,
                                                    error)[0]
        filtered = self._filter.step(raw)
        self.last_tracked = pts is not None
        return MarkerFrame(time_s=time_s, names=self._names, positions=filtered, raw=raw, confidence=conf,
                           tracked=pts is not None, frame_id=self.frame_id, marker_set=marker_set_of(self._names),
                           extra={"lr_swapped": lr_swapped})


def _swapped(prepared: tuple | None) -> bool:
    return bool(prepared[5]) if prepared is not None else False


def default_marker_names(backend: str) -> tuple[str, ...]:
    """Marker names a backend produces (the model's marker set)."""
    return BLAZEPOSE33 if backend == "blazepose" else MARKER_SETS["opencap43"]
