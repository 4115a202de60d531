"""Every person in a video: the tracks `--list-people` prints and draws, numbered exactly as the
body estimator numbers them (same detector, same `PeopleTracker`, same frames), so an id from
the list is a valid `--person ID`.

    tracks, n_frames = list_people("walk.mp4")
    write_contact_sheet("people.png", tracks)
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from sam4dcap_biomech.config import load_config
from sam4dcap_biomech.errors import Sam4dcapError

from .blazepose import MAX_SIDE_PX, MIN_SIDE_PX
from .person_detector import PersonDetector
from .tracking import PeopleTracker, PersonTrack
from .video_source import as_rgb8, open_source

log = logging.getLogger(__name__)


def list_people(video, *, start_s: float = 0.0, end_s: float | None = None, config=None,
                progress: bool = False) -> tuple[list[PersonTrack], int]:
    """(tracks sorted by id, frames read). Track boxes and frames are in the source's pixels
    and frame indices; each track keeps a thumbnail of its best-scoring frame alone."""
    import cv2

    cfg = config if config is not None else load_config()
    p = cfg.params("body_estimator_node")
    source_params = cfg.params("video_source_node")
    detector = PersonDetector(min_score=float(p["min_detection_confidence"]))
    tracker = PeopleTracker(min_score=float(p["prompt_min_score"]), max_jump=float(p["track_max_jump"]),
                            keep_thumbnails=True)
    source = open_source(video, start_s=start_s, end_s=end_s, image_folder_fps=source_params["image_folder_fps"] or None)
    n = 0
    scale = 1.0
    t0 = time.perf_counter()
    try:
        frames = iter(source)
        if progress:
            from tqdm import tqdm

            frames = tqdm(frames, total=source.n_frames_hint, unit="frame", desc="people")
        for frame in frames:
            n += 1
            image = as_rgb8(frame.image, name=f"frame {frame.index}")
            h, w = image.shape[:2]
            if min(h, w) < MIN_SIDE_PX:
                continue
            scale = 1.0
            if max(h, w) > MAX_SIDE_PX:    # as the estimator does
                scale = MAX_SIDE_PX / max(h, w)
                image = cv2.resize(image, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
            tracker.update(detector.detect(image), image, frame.index, frame.time_s)
    finally:
        detector.close()
        source.close()
    if n == 0:
        raise Sam4dcapError(f"{video}: no frames in the time window [{start_s}, {end_s or 'end'}] s")
    tracks = sorted(tracker.tracks.values(), key=lambda t: t.track_id)
    if scale != 1.0:
        for t in tracks:
            x0, y0, x1, y1 = t.box
            t.box = (x0 / scale, y0 / scale, x1 / scale, y1 / scale)
    log.info("%s: %d people in %d frames (%.1f s)", video, len(tracks), n, time.perf_counter() - t0)
    return tracks, n


def describe_tracks(tracks, n_frames: int) -> list[str]:
    """One line per track: id, frames, share of frames detected, where."""
    lines = [f"{'id':>4}  {'frames':>11}  {'detected':>8}  box centre x,y [px] (last seen)"]
    for t in tracks:
        cx, cy = 0.5 * (t.box[0] + t.box[2]), 0.5 * (t.box[1] + t.box[3])
        span = t.last_frame - t.first_frame + 1
        lines.append(f"{t.track_id:>4}  {t.first_frame:>5}-{t.last_frame:<5}  {100 * t.n_detected / span:>7.0f}%  "
                     f"{cx:.0f},{cy:.0f}")
    if not tracks:
        lines.append(f"  no person found in {n_frames} frames")
    return lines


def write_contact_sheet(path, tracks, *, thumb_h: int = 200) -> Path:
    """A PNG with one thumbnail per track, labelled with its id and frame range."""
    import cv2

    path = Path(path)
    cells = []
    for t in tracks:
        thumb = t.thumbnail if t.thumbnail is not None else np.full((thumb_h, thumb_h // 2, 3), 90, np.uint8)
        s = thumb_h / thumb.shape[0]
        thumb = cv2.resize(thumb, (max(1, round(thumb.shape[1] * s)), thumb_h))
        label = f"id {t.track_id}"
        frames = f"{t.first_frame}-{t.last_frame}"
        width = max(thumb.shape[1], 8 + 11 * max(len(label), len(frames)))
        cell = np.full((thumb_h + 52, width, 3), 255, np.uint8)
        cell[:thumb_h, (width - thumb.shape[1]) // 2:(width - thumb.shape[1]) // 2 + thumb.shape[1]] = thumb
        cv2.putText(cell, label, (4, thumb_h + 22), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (0, 0, 0), 2)
        cv2.putText(cell, frames, (4, thumb_h + 46), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (60, 60, 60), 1)
        cells.append(cell)
    if not cells:
        sheet = np.full((60, 360, 3), 255, np.uint8)
        cv2.putText(sheet, "no person found", (8, 38), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (0, 0, 0), 2)
    else:
        gap = np.full((thumb_h + 52, 6, 3), 255, np.uint8)
        row = [c for cell in cells for c in (cell, gap)][:-1]
        sheet = np.concatenate(row, axis=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR)):
        raise Sam4dcapError(f"could not write the contact sheet {path}")
    return path
