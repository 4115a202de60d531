"""Offline stage "markers": video or recorded bag -> virtual markers (TRC), keypoints, camera
and per-frame quality files."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from sam4dcap_biomech.config import load_config
from sam4dcap_biomech.errors import Sam4dcapError
from sam4dcap_biomech.timeseries import TimeSeries
from sam4dcap_biomech.trc import write_trc

from . import bag_io
from .fit_views import write_camera_file
from .marker_pipeline import video_to_markers
from .observations import BodyObservation
from .stage_runner import ProcessOptions, StageRunner, jsonable
from .virtual_markers import FRAME_LOST, FRAME_TRACKED

log = logging.getLogger(__name__)


# --- markers: from a video or from a recorded bag --------------------------------------------------
def frame_confidence(confidence: np.ndarray, tracked: np.ndarray) -> np.ndarray:
    """One number per frame: mean keypoint confidence, NaN where no person was tracked."""
    conf = np.asarray(confidence, float)
    out = np.full(conf.shape[0], np.nan)
    ok = np.asarray(tracked, bool)
    if ok.any():
        out[ok] = conf[ok].mean(axis=1)
    return out


def write_keypoints(npz_path: Path, json_path: Path, observations: Sequence, *, source: str,
                    lr_swapped: np.ndarray | None = None) -> None:
    """Per-frame 2D/3D keypoints of the tracked person (NaN when missing) as .npz and .json, as the
    estimator gave them; `lr_swapped` (N,): frames whose left/right labels the markers stage
    exchanged (`lr_consistency`), stored so later stages (the camera fit) read the same labels."""
    obs = list(observations)
    names = next((tuple(o.names) for o in obs if o.tracked and o.names), ())
    k = len(names)
    n = len(obs)
    time_s = np.array([o.time_s for o in obs], float)
    tracked = np.array([bool(o.tracked) for o in obs])
    # Another person overlapped the subject: identity held by appearance only (confidence lowered).
    overlap = np.array([bool(o.extra.get("overlap", False)) for o in obs])
    # The landmarks' colours drifted from the subject's typical ones (a possible mixed skeleton).
    identity_doubt = np.array([bool(o.extra.get("identity_doubt", False)) for o in obs])
    k2 = np.full((n, k, 2), np.nan)
    k3 = np.full((n, k, 3), np.nan)
    conf = np.zeros((n, k))
    vis = np.zeros((n, k))
    for i, o in enumerate(obs):
        if not o.tracked or not k:
            continue
        if o.keypoints_2d is not None:
            k2[i] = o.keypoints_2d
        if o.keypoints_3d is not None:
            k3[i] = o.keypoints_3d
        if o.confidence is not None:
            conf[i] = o.confidence
        if o.visibility is not None:
            vis[i] = o.visibility
    skeleton = next((o.skeleton for o in obs if o.tracked), "")
    np.savez_compressed(npz_path, time_s=time_s, names=np.array(names), tracked=tracked, overlap=overlap,
                        identity_doubt=identity_doubt, keypoints_2d=k2,
                        keypoints_3d=k3, confidence=conf, visibility=vis, skeleton=skeleton, source=source,
                        lr_swapped=np.zeros(n, bool) if lr_swapped is None else np.asarray(lr_swapped, bool))

    def r(a, digits):
        return [[None if not np.isfinite(x) else round(float(x), digits) for x in row] for row in a]

    frames = [{"index": i, "time_s": round(float(time_s[i]), 6), "tracked": bool(tracked[i]),
               "overlap": bool(overlap[i]), "identity_doubt": bool(identity_doubt[i]),
               "keypoints_2d_px": r(k2[i], 2) if tracked[i] else None,
               "keypoints_3d_m": r(k3[i], 4) if tracked[i] else None,
               "confidence": [round(float(c), 3) for c in conf[i]] if tracked[i] else None,
               "visibility": [round(float(v), 3) for v in vis[i]] if tracked[i] else None}
              for i in range(n)]
    json_path.write_text(json.dumps({"source": source, "skeleton": skeleton, "names": list(names),
                                     "keypoints_2d": "pixels, x right, y down",
                                     "keypoints_3d": "metres, camera axes, hip-centred (estimator output)",
                                     "frames": frames}) + "\n")


def _marker_stage_paths(out: Path, stem: str) -> tuple[Path, Path, Path, Path]:
    """Files of the markers stage, whatever the source: TRC, keypoints npz/json, quality."""
    return (out / f"{stem}_markers.trc", out / f"{stem}_keypoints.npz", out / f"{stem}_keypoints.json",
            out / f"{stem}_markers_quality.json")


def _camera_path(out: Path, stem: str) -> Path:
    """The camera the markers stage placed the world in (intrinsics, world<-camera): the camera fit's."""
    return out / f"{stem}_camera.json"


def markers_from_video(runner: StageRunner, video: Path, stem: str, opts: ProcessOptions, *,
                       progress: bool) -> dict[str, Path]:
    out = runner.out_dir
    trc_path, npz_path, json_path, quality_path = _marker_stage_paths(out, stem)
    camera_path = _camera_path(out, stem)

    def markers():
        result = video_to_markers(video, height_m=opts.height, backend=opts.backend, start_s=opts.start_s,
                                  end_s=opts.end_s, progress=progress, keep_observations=True,
                                     estimator_overrides={"person": opts.person} if opts.person else None)
        write_trc(trc_path, result.filtered)
        write_keypoints(npz_path, json_path, result.observations or [], source=video.name,
                        lr_swapped=result.flags.get("lr_swapped"))
        write_camera_file(camera_path, result.intrinsics, result.world_from_camera)
        usable = np.asarray(result.flags["frame_status"]) != FRAME_LOST
        conf = frame_confidence(result.confidence, usable)
        quality_path.write_text(json.dumps(jsonable({
            "quality": {k: v for k, v in result.quality.items() if isinstance(v, (int, float, str, bool))},
            # Frames where another person overlapped the subject (identity uncertain, confidence lowered).
            "overlap_frames": sum(bool(o.extra.get("overlap")) for o in result.observations or []),
            "identity_doubt_frames": sum(bool(o.extra.get("identity_doubt")) for o in result.observations or []),
            "time_s": result.filtered.time.tolist(),
            "frame_confidence": [None if not np.isfinite(c) else float(c) for c in conf],
            "frame_status": [str(x) for x in result.flags["frame_status"]],
            "lost_intervals_s": result.quality.get("lost_intervals_s", []),
            "marker_set": result.filtered.meta.get("marker_set"),
        })) + "\n")
        return {"marker_set": result.filtered.meta.get("marker_set"), "frames": result.filtered.n_frames}

    cfg = config_snapshot(("markers_node", "body_estimator_node", "video_source_node"))
    runner.run("markers", markers, inputs={"video": video},
               params={"height_m": opts.height_m, "backend": opts.backend, "start_s": opts.start_s,
                       "end_s": opts.end_s, "config": cfg, **({"person": opts.person} if opts.person else {}),
                       # 2: the keypoints file carries lr_swapped (older ones are rewritten).
                       "keypoints_file": 2},
               outputs=[trc_path, npz_path, json_path, quality_path, camera_path])
    return {"markers_trc": trc_path, "keypoints_npz": npz_path, "keypoints_json": json_path,
            "markers_quality": quality_path, "camera": camera_path}


def config_snapshot(sections: Iterable[str]) -> dict:
    """The config values a stage depends on (a changed default reruns it)."""
    cfg = load_config()
    return {s: cfg.params(s) for s in sections if s in cfg.nodes}


VIRTUAL_MARKERS_TYPE = "sam4dcap_msgs/msg/VirtualMarkers"


BODY_KEYPOINTS_TYPE = "sam4dcap_msgs/msg/BodyKeypoints"


def _points(msg_points) -> np.ndarray:
    return np.array([[p.x, p.y, p.z] for p in msg_points], float).reshape(-1, 3)


def markers_from_bag(runner: StageRunner, bag: Path, stem: str, opts: ProcessOptions) -> dict[str, Path]:
    """The markers a live session recorded (VirtualMarkers), stamped with capture times."""
    out = runner.out_dir
    trc_path, npz_path, json_path, quality_path = _marker_stage_paths(out, stem)

    def markers():
        topics = bag_io.bag_topics(bag)
        mk = [t for t in topics.values() if t.msgtype == VIRTUAL_MARKERS_TYPE and t.count]
        if not mk:
            have = ", ".join(f"{t.name} ({t.msgtype})" for t in topics.values()) or "nothing"
            raise Sam4dcapError(f"bag {bag} has no {VIRTUAL_MARKERS_TYPE} messages to process (has: {have})")
        by_time: dict[int, Any] = {}
        for _, _, _, msg in bag_io.read_messages(bag, [mk[0].name]):
            by_time[bag_io.stamp_ns(msg)] = msg          # a repeated stamp keeps the last message
        stamps = sorted(by_time)
        names: list[str] = []
        for s in stamps:
            for n in by_time[s].names:
                if n not in names:
                    names.append(n)
        pts = np.full((len(stamps), len(names), 3), np.nan)
        conf = np.zeros((len(stamps), len(names)))
        for i, s in enumerate(stamps):
            msg = by_time[s]
            p = _points(msg.positions)
            for j, n in enumerate(msg.names):
                pts[i, names.index(n)] = p[j]
                if len(msg.confidence) > j:
                    conf[i, names.index(n)] = float(msg.confidence[j])
        time_s = np.array(stamps, float) * 1e-9
        markers_ts = TimeSeries(time_s, tuple(names), pts, unit="m", frame=str(by_time[stamps[0]].header.frame_id),
                                meta={"marker_set": str(by_time[stamps[0]].marker_set), "source": bag.name})
        write_trc(trc_path, markers_ts)
        tracked = np.isfinite(pts).all(axis=2).any(axis=1)
        _bag_keypoints(bag, topics, npz_path, json_path)
        fc = frame_confidence(conf, tracked)
        quality_path.write_text(json.dumps({
            "quality": {"frames": len(stamps), "topic": mk[0].name},
            "time_s": time_s.tolist(),
            "frame_confidence": [None if not np.isfinite(c) else float(c) for c in fc],
            "frame_status": [FRAME_TRACKED if t else FRAME_LOST for t in tracked],
            "marker_set": markers_ts.meta["marker_set"]}) + "\n")
        return {"marker_set": markers_ts.meta["marker_set"], "frames": len(stamps)}

    runner.run("markers", markers, inputs={"bag": bag}, params={"height_m": opts.height_m},
               outputs=[trc_path, npz_path, json_path, quality_path])
    return {"markers_trc": trc_path, "keypoints_npz": npz_path, "keypoints_json": json_path,
            "markers_quality": quality_path}


def _bag_keypoints(bag: Path, topics, npz_path: Path, json_path: Path) -> None:
    """BodyKeypoints of the bag as keypoint files (empty files when none were recorded)."""
    kp = [t for t in topics.values() if t.msgtype == BODY_KEYPOINTS_TYPE and t.count]
    obs = []
    if kp:
        for i, (_, _, _, msg) in enumerate(bag_io.read_messages(bag, [kp[0].name])):
            conf = np.asarray(msg.confidence, float)
            obs.append(BodyObservation(
                frame_index=i, time_s=bag_io.stamp_ns(msg) * 1e-9, person_id=int(msg.person_id),
                tracked=len(msg.names) > 0, skeleton=str(msg.skeleton), names=tuple(msg.names),
                keypoints_2d=_points(msg.keypoints_2d)[:, :2], keypoints_3d=_points(msg.keypoints_3d),
                confidence=conf, visibility=np.asarray(msg.visibility, float)))
    write_keypoints(npz_path, json_path, obs, source=bag.name)
