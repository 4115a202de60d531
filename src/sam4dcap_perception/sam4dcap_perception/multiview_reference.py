"""Multi-view reference trial: the offline stages run on calibrated synchronised views.

`multiview_reference` detects the 2D keypoints of each view, triangulates them (`multiview`),
filters them like the monocular path, and runs the same model, scaling, IK and camera fit
(`offline_process.biomech_stages`, with `fit_views.calibrated_views`), so that `compare` can
set a monocular result against it. It sits above the offline stages; `multiview` keeps the
geometry (calibration, triangulation, synchronisation) that `fit_views` builds on.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from sam4dcap_biomech.config import load_config
from sam4dcap_biomech.errors import Sam4dcapError
from sam4dcap_biomech.filters import butterworth_zero_phase, fill_gaps
from sam4dcap_biomech.ik_problem import closest_marker_set
from sam4dcap_biomech.trc import read_trc, write_trc

from . import offline_process as op
from .fit_views import calibrated_views
from .multiview import (ViewKeypoints, apply_transform, check_views, detect_view_keypoints, estimate_frame_offsets,
                        heading_alignment, match_views, read_qualisys_calibration, reprojection_summary,
                        triangulate_views)
from .report import write_json


@dataclass
class MultiviewReference:
    out_dir: Path
    markers_trc: Path
    coordinates_mot: Path
    scaled_model: Path
    reprojection: dict           # per view: median/mean/p90 px over used and all observations
    cameras: list[str]
    frame_offsets: dict | None = None   # per view: frames after view 0's that show the same instant
    videos: dict | None = None          # per view: the video file
    rate_hz: float = 0.0
    fitted_model: Path | None = None    # the camera fit's model (markers placed), None with marker IK

    def lag_for_view_s(self, view: str) -> float:
        """Lag (compare's convention) of this reference against a result made from `view`'s
        video: the reference runs on view 0's clock, `view` shows the same instant
        frame_offsets[view] frames later."""
        return -float((self.frame_offsets or {}).get(view, 0)) / self.rate_hz + 0.0 if self.rate_hz else 0.0

    def view_of(self, video: str | Path) -> str | None:
        """The view whose video `video` is (same file), if any."""
        target = Path(video)
        for name, path in (self.videos or {}).items():
            p = Path(path)
            try:
                if p.resolve() == target.resolve() or (p.name == target.name and p.stat().st_size ==
                                                       target.stat().st_size):
                    return name
            except OSError:
                continue
        return None


def multiview_reference(videos: Sequence[str | Path], calibration: str | Path, *, out_dir: str | Path,
                        height_m: float, mass_kg: float | None, backend: str = "blazepose", start_s: float = 0.0,
                        end_s: float | None = None, force: bool = False, progress: bool = False,
                        max_error_px: float = 25.0, max_gap_s: float = 0.25, synchronise: bool = True,
                        max_offset_s: float = 0.25, fit: str | None = None) -> MultiviewReference:
    """Reference trial from calibrated synchronised views: 2D keypoints per view, triangulation,
    the same zero-phase marker filter as the monocular path, then the same model, scaling and IK
    (`offline_process.biomech_stages`). Stages are reused like `sam4dcap process`."""
    out = Path(out_dir)
    opts = op.ProcessOptions(height_m=height_m, mass_kg=mass_kg, backend=backend, start_s=start_s, end_s=end_s,
                             force=force, fit=fit)
    opts.check()
    cameras = read_qualisys_calibration(calibration)
    pairs = match_views(cameras, [Path(v) for v in videos])
    runner = op.StageRunner(out, force=force)
    kp_paths = []
    for cam, video in pairs:
        path = out / f"keypoints_{cam.name}.npz"

        def detect(cam=cam, video=video, path=path):
            detect_view_keypoints(video, name=cam.name, backend=backend, start_s=start_s, end_s=end_s,
                                  progress=progress).save(path)
        runner.run(f"keypoints_{cam.name}", detect, inputs={"video": video},
                   params={"backend": backend, "start_s": start_s, "end_s": end_s,
                           "config": op.config_snapshot(("body_estimator_node",))},
                   outputs=[path])
        kp_paths.append(path)

    trc_path = out / "multiview_markers.trc"
    calib_trc_path = out / "multiview_markers_calibration_world.trc"
    reproj_path = out / "multiview_reprojection.json"
    cutoff_hz = float(load_config().params("markers_node")["offline_filter_cutoff_hz"])

    def triangulation():
        views = [ViewKeypoints.load(p) for p in kp_paths]
        cams = [c for c, _ in pairs]
        check_views(cams, views)
        offsets, sync = estimate_frame_offsets(cams, views, max_offset_s=max_offset_s) if synchronise \
            else ([0] * len(views), {})
        markers, errors, used = triangulate_views(cams, views, max_error_px=max_error_px, frame_offsets=offsets)
        # Short gaps (rejected samples) are bridged before the same low-pass as the monocular path.
        filled, _ = fill_gaps(markers, max_gap_frames=int(round(max_gap_s * views[0].rate_hz)))
        smooth = butterworth_zero_phase(filled, cutoff_hz=cutoff_hz)
        write_trc(calib_trc_path, smooth)
        heading = heading_alignment(smooth)
        write_trc(trc_path, apply_transform(smooth, heading))
        summary = reprojection_summary(views, errors, used)
        write_json(reproj_path, {
            "calibration": str(calibration), "max_error_px": max_error_px, "views": summary,
            "calibration_world": f"{calib_trc_path.name}: Qualisys world turned y up ((x, y, z) = (y, z, x) of Qualisys)",
            "trial_world": f"{trc_path.name}: the same turned about y to face +x, pelvis over the origin at the start",
            "trial_from_calibration_world": heading.tolist(),
            "frame_offsets": dict(zip((v.name for v in views), offsets)), "synchronisation": sync,
            "missing_share": float(np.isnan(markers.values).any(axis=2).mean())})
        return {"views": summary, "frame_offsets": dict(zip((v.name for v in views), offsets)),
                "rate_hz": views[0].rate_hz}
    extra = runner.run("triangulation", triangulation, inputs={"calibration": calibration,
                                                               **{p.stem: p for p in kp_paths}},
                       params={"max_error_px": max_error_px, "cutoff_hz": cutoff_hz, "max_gap_s": max_gap_s,
                               "synchronise": synchronise, "max_offset_s": max_offset_s},
                       outputs=[trc_path, calib_trc_path, reproj_path])
    marker_set = closest_marker_set(read_trc(trc_path).names)
    if marker_set is None:
        raise Sam4dcapError(f"{trc_path}: triangulated keypoints match no project marker set")

    def fit_views():
        # The same camera fit as the monocular path, with every calibrated camera.
        info = json.loads(reproj_path.read_text())
        views = [ViewKeypoints.load(p) for p in kp_paths]
        offsets = [int(info["frame_offsets"][v.name]) for v in views]
        return calibrated_views([c for c, _ in pairs], views, offsets, np.array(info["trial_from_calibration_world"]))
    arts = op.biomech_stages(runner, trc_path, "multiview", opts, marker_set=marker_set, fit_views=fit_views,
                             fit_inputs={"calibration": Path(calibration), "reprojection": reproj_path,
                                         **{p.stem: p for p in kp_paths}})
    return MultiviewReference(out_dir=out, markers_trc=trc_path, coordinates_mot=arts["ik_mot"],
                              scaled_model=arts["scaled_model"], reprojection=extra.get("views", {}),
                              cameras=[c.name for c, _ in pairs], frame_offsets=extra.get("frame_offsets", {}),
                              videos={c.name: str(v) for c, v in pairs}, rate_hz=float(extra.get("rate_hz", 0.0)),
                              fitted_model=arts.get("fitted_model"))
