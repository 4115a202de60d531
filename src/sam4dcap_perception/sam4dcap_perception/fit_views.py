"""The camera fit's inputs from the pipeline's files, and its outputs written next to the .mot.

One camera (`sam4dcap process`): the markers stage's intrinsics and world<-camera transform
(`<stem>_camera.json`) and its 2D keypoints (`<stem>_keypoints.npz`). N calibrated cameras
(`sam4dcap compare`'s multi-view reference): the Qualisys calibration moved into the trial's
world, each view's undistorted keypoints on the triangulation's common frames. Both are fitted by
`sam4dcap_biomech.camera_fit.fit_trial` (same terms, same settings).
"""

from __future__ import annotations

import dataclasses

import json
import logging
from pathlib import Path
from typing import Sequence

import numpy as np

from sam4dcap_biomech.camera_fit import CameraView, FitResult, FitSettings, PinholeCamera, fit_trial
from sam4dcap_biomech.errors import Sam4dcapError
from sam4dcap_biomech.timeseries import TimeSeries

from .observations import CameraIntrinsics
from .world_frame import RigidTransform

log = logging.getLogger(__name__)


def camera_from_world_frame(name: str, intrinsics: CameraIntrinsics, world_from_camera: RigidTransform) -> PinholeCamera:
    """The pinhole camera of a monocular world frame (metric camera frame = world_from_camera^-1)."""
    inv = world_from_camera.inverse()
    return PinholeCamera(name, intrinsics.matrix, inv.rotation, inv.translation)


def write_camera_file(path: Path, intrinsics: CameraIntrinsics | None, world_from_camera: RigidTransform) -> Path:
    data = {"description": "camera of the world frame: pixels = K (R x + t) / z for world points x (metres); "
                           "world_from_camera = the camera's pose in the world (4x4)",
            "intrinsics": None if intrinsics is None else {
                "width": intrinsics.width, "height": intrinsics.height, "fx": intrinsics.fx, "fy": intrinsics.fy,
                "cx": intrinsics.cx, "cy": intrinsics.cy},
            "world_from_camera": world_from_camera.matrix.tolist()}
    Path(path).write_text(json.dumps(data, indent=1) + "\n")
    return Path(path)


def read_camera_file(path: Path) -> PinholeCamera:
    try:
        data = json.loads(Path(path).read_text())
        k = data["intrinsics"]
        m = np.array(data["world_from_camera"], float)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise Sam4dcapError(f"{path}: not a camera file of the markers stage ({exc})") from None
    if k is None:
        raise Sam4dcapError(f"{path}: the markers stage recorded no intrinsics")
    intr = CameraIntrinsics(int(k["width"]), int(k["height"]), float(k["fx"]), float(k["fy"]), float(k["cx"]),
                            float(k["cy"]))
    return camera_from_world_frame(Path(path).stem, intr, RigidTransform(m[:3, :3], m[:3, 3]))


def monocular_views(keypoints_npz: Path, camera_file: Path, *, left_right_repair: bool = True) -> list[CameraView]:
    """The one view of a monocular trial: 2D keypoints (visibility as confidence) and its camera,
    with the left/right labels the markers stage used (its `lr_swapped` frames relabelled): the
    fit sees the same body as the 3D markers it starts from; `left_right_repair=False`: the
    estimator's own labels (benchmarks)."""
    with np.load(keypoints_npz, allow_pickle=False) as z:
        names = tuple(str(n) for n in z["names"])
        pixels = np.array(z["keypoints_2d"], float)
        vis = np.array(z["visibility"], float)
        tracked = np.array(z["tracked"], bool)
        swapped = np.array(z["lr_swapped"], bool) if "lr_swapped" in z.files else np.zeros(len(tracked), bool)
    vis[~tracked] = 0.0
    if left_right_repair and swapped.any() and swapped.shape == tracked.shape:
        from .lr_consistency import swap_permutation

        perm = swap_permutation(names)
        pixels[swapped] = pixels[swapped][:, perm]
        vis[swapped] = vis[swapped][:, perm]
    return [CameraView(read_camera_file(camera_file), names, pixels, vis)]


def calibrated_views(cameras, views, frame_offsets: Sequence[int], world_from_calibration: np.ndarray) -> list[CameraView]:
    """Calibrated views (multiview.CalibratedCamera + ViewKeypoints) on the triangulation's common
    frames, cameras moved from the calibration's z-up world into the trial's world
    (world_from_calibration: 4x4 of the y-up calibration world -> trial world)."""
    from .multiview import ZUP_TO_YUP

    offsets = list(frame_offsets)
    i0 = max(-o for o in offsets)
    i1 = min(v.pixels.shape[0] - o for v, o in zip(views, offsets))
    T = np.asarray(world_from_calibration, float)
    # x_trial = T_R ZUP x_qualisys + T_t  ->  x_qualisys = ZUP^T T_R^T (x_trial - T_t)
    back = ZUP_TO_YUP.T @ T[:3, :3].T
    out = []
    for cam, view, off in zip(cameras, views, offsets):
        idx = np.arange(i0, i1) + off
        R = cam.R @ back
        t = cam.t - R @ T[:3, 3]
        pixels = cam.undistort(view.pixels[idx])
        out.append(CameraView(PinholeCamera(cam.name, cam.K, R, t), tuple(view.names), pixels,
                              np.array(view.visibility[idx], float)))
    return out


def camera_fit_unsupported(model_path: Path, marker_names: Sequence[str]) -> str | None:
    """Why the camera fit cannot fit this model (kinematic constraints such as knee couplers), or None."""
    from sam4dcap_biomech.streaming_ik import StreamingIK

    ik = StreamingIK(str(model_path), list(marker_names), min_markers=3)
    return None if ik.supports_jacobian else "the model has kinematic constraints (coordinate couplers)"


def fit_and_write(model_path: Path, markers: TimeSeries, views: Sequence[CameraView], settings: FitSettings, *,
                  out_mot: Path, out_errors: Path, out_confidence: Path, out_model: Path | None = None) -> FitResult:
    """Camera fit of a trial, written as the IK stage's files: coordinates (.mot, degrees), marker
    errors (.sto: model markers to the 3D markers, and the median reprojection error per frame),
    the per-coordinate confidence (`<trial>_ik_confidence.sto`, 0..1) and, with out_model, the
    model the coordinates belong to (`<trial>_fitted.osim`: the scaled model with its markers
    where the fit placed them; a copy of it when none was placed). Marker errors: the fit's
    (reprojection errors as distances at the markers' depth: `FitResult.marker_error_m`) and the
    distance to the 3D markers (`marker_to_3d_RMS`)."""
    from sam4dcap_biomech.marker_placement import write_placed_model
    from sam4dcap_biomech.storage import write_mot, write_sto
    from sam4dcap_biomech.streaming_ik import StreamingIK

    ik = StreamingIK(str(model_path), list(markers.names), min_markers=3)
    result = fit_trial(ik, markers, views, settings)
    if out_model is not None:
        write_placed_model(model_path, result.marker_offsets_m, out_model)
    # Frames without the person (markers NaN: lost, not bridged) get no pose: the trial-wide
    # smoothness would otherwise invent one across the gap.
    lost = np.isfinite(markers.values).all(axis=2).sum(axis=1) < 3
    if lost.any():
        result = dataclasses.replace(
            result, coordinates=result.coordinates.with_values(np.where(lost[:, None], np.nan,
                                                                        result.coordinates.values)),
            confidence=np.where(lost[:, None], 0.0, result.confidence),
            marker_error_m=np.where(lost[:, None], np.nan, result.marker_error_m),
            marker_to_3d_m=np.where(lost[:, None], np.nan, result.marker_to_3d_m),
            reprojection_px=np.where(lost[None, :, None], np.nan, result.reprojection_px))
    write_mot(out_mot, result.coordinates, name=Path(out_mot).stem)
    per_frame = result.reprojection_px.transpose(1, 0, 2).reshape(markers.n_frames, -1)
    reproj = np.array([np.median(row[np.isfinite(row)]) if np.isfinite(row).any() else np.nan for row in per_frame])
    to_3d = np.array([np.sqrt(np.mean(r[np.isfinite(r)] ** 2)) if np.isfinite(r).any() else np.nan
                      for r in result.marker_to_3d_m])
    errors = TimeSeries.from_dict(markers.time, {"marker_error_RMS": result.marker_rms_m,
                                                 "marker_error_max": result.marker_max_m,
                                                 "marker_to_3d_RMS": to_3d,
                                                 "reprojection_error_median_px": reproj}, unit="m")
    write_sto(out_errors, errors)
    write_sto(out_confidence, result.confidence_series())
    return result


def fit_summary(result: FitResult) -> dict:
    """Plain numbers for the stage summary and the report."""
    conf = result.confidence
    return {"fit": "camera", "views": int(result.info["views"]),
            "marker_rms_mean_m": float(np.nanmean(result.marker_rms_m)),
            "marker_max_m": float(np.nanmax(result.marker_max_m)),
            "reprojection_median_px": float(result.info["reprojection_median_px"]),
            "frames_at_range_limit_share": float(result.at_limit.any(axis=1).mean()),
            "markers_placed_mm": {n: round(1000 * float(np.linalg.norm(d)), 1)
                                  for n, d in result.marker_offsets_m.items()},
            "confidence_median": {n: float(np.median(conf[:, i])) for i, n in enumerate(result.coordinates.names)},
            "iterations": int(result.info["iterations"]), "seconds": float(result.info["seconds"])}
