"""Video -> world-frame virtual markers: the one offline entry point.

    result = video_to_markers("walk.mp4", height_m=1.75)      # MarkerResult
    trc.write_trc("walk.trc", result.filtered)

Used by `sam4dcap markers`, `sam4dcap process` and (through `virtual_markers`) the ROS markers
node. Parameters come from `config/sam4dcap.yaml`: `markers_node` (filters, ground, world
frame), `body_estimator_node` (backend) and `video_source_node.horizontal_fov_deg` (intrinsics
when no calibration is given: a pinhole with that horizontal field of view and the principal
point at the image centre, `CameraIntrinsics.from_fov`).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

from sam4dcap_biomech.config import Config, load_config
from sam4dcap_biomech.errors import Sam4dcapError

from .body_estimator import create_estimator
from .camera_calibration import load_camera_info_file
from .observations import CameraIntrinsics
from .video_source import open_source
from .virtual_markers import MarkerResult, markers_from_observations, offline_marker_settings
from .world_frame import load_extrinsics
from .tracking import parse_person_choice

log = logging.getLogger(__name__)


def _config(config) -> Config:
    if config is None:
        return load_config()
    if isinstance(config, Config):
        return config
    return load_config(config)


def video_to_markers(video, *, height_m: float, backend: str = "blazepose", start_s: float = 0.0,
                     end_s: float | None = None, config=None, progress: bool = False,
                     intrinsics: CameraIntrinsics | None = None, horizontal_fov_deg: float | None = None,
                     extrinsics_file: str | None = None, keep_observations: bool = True,
                     estimator_overrides: dict | None = None) -> MarkerResult:
    """Run the body estimator over `video` (file, image folder, camera:N) and place its
    keypoints as markers in the world frame. Raises `Sam4dcapError` when no person is found."""
    cfg = _config(config)
    marker_params = cfg.params("markers_node", {"subject_height_m": height_m})
    est_params = cfg.params("body_estimator_node", {"backend": backend, **(estimator_overrides or {})})
    source_params = cfg.params("video_source_node")
    fov = horizontal_fov_deg
    if fov is None:
        fov = source_params["horizontal_fov_deg"]
    # The config's own range (one validator for the config file, --fov and the node parameter).
    fov = cfg.specs("video_source_node")["horizontal_fov_deg"].validate(float(fov), node="video_source_node")
    extrinsics_file = extrinsics_file if extrinsics_file is not None else marker_params["extrinsics_file"]
    extrinsics = load_extrinsics(extrinsics_file) if extrinsics_file else None

    source = open_source(video, start_s=start_s, end_s=end_s,
                         image_folder_fps=source_params["image_folder_fps"] or None)
    if intrinsics is None and source_params["camera_info_file"]:
        intrinsics = load_camera_info_file(source_params["camera_info_file"], source.width, source.height)
    if intrinsics is None:
        intrinsics = source.intrinsics_default(float(fov))
        log.debug("intrinsics: %.0f deg horizontal field of view -> f = %.0f px (%dx%d)",
                 fov, intrinsics.fx, intrinsics.width, intrinsics.height)
    choice = parse_person_choice(est_params.get("person", "auto"))
    if choice.rule == "point" and choice.point_xy is not None and not (choice.point_xy[0] < source.width and choice.point_xy[1] < source.height):
        source.close()
        raise Sam4dcapError(f"--person {choice}: pixel outside the {source.width}x{source.height} image of {video}")
    estimator = create_estimator(est_params)
    observations = []
    try:
        frames = iter(source)
        if progress:
            from tqdm import tqdm

            frames = tqdm(frames, total=source.n_frames_hint, unit="frame", desc="body")
        for frame in frames:
            # Masks (H x W per frame) are not needed for markers and would fill the memory on
            # long videos.
            observations.append(replace(estimator.process(frame), mask=None))
    finally:
        estimator.close()
        source.close()
    if not observations:
        raise Sam4dcapError(f"{video}: no frames in the time window [{start_s}, {end_s or 'end'}] s")
    n_tracked = sum(1 for o in observations if o.tracked)
    if n_tracked == 0:
        whom = "no person" if choice.rule == "auto" else f"person {choice} (--person) not"
        raise Sam4dcapError(f"{video}: {whom} found in any of {len(observations)} frames")
    name = Path(str(video)).name
    result = markers_from_observations(
        observations, height_m=height_m, intrinsics=intrinsics, extrinsics=extrinsics, source=name,
        keep_observations=keep_observations, **offline_marker_settings(marker_params))
    result.quality["source_truncated"] = bool(getattr(source, "truncated", False))
    result.quality["horizontal_fov_deg"] = float(fov)
    log.debug("%s: %d frames, %.0f%% tracked, scale %.3f, camera %.2f m above the ground",
             name, result.quality["frames"], 100 * result.tracked_fraction, result.world.scale,
             result.world_from_camera.translation[1])
    return result
