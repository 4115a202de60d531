"""Auto-prompt, subject tracking, and every person in view (no model code: works on boxes,
the detector's key points and image colours).

Auto-prompt: on the first frame with people, the highest-scoring person box with score >=
`prompt_min_score` becomes the prompt: that box plus its centroid as one positive point. The
prompt travels with every observation (and with the segmentation output).

Tracking: the estimator crops around the tracked person every frame (the landmark model runs on
a region of interest derived from that person's own landmarks in the previous frame), so other
people in view are never looked at while the track holds. `PromptTracker` keeps the identity:
  * `accept(box)` rejects a result whose box jumped further than `max_jump` box heights from
    the last one (an identity switch when people cross), which counts as a lost frame;
  * after a loss, `select(detections)` re-prompts: for `relock_s` seconds after the last good
    frame it takes the detection nearest the last box (within the jump gate, growing with the
    time lost), later the best-scoring one. The person id never changes: this is a
    single-subject pipeline and the id names the subject (REP-155 body id from the config).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import cast

import numpy as np

from sam4dcap_biomech.errors import Sam4dcapError

from .observations import Prompt

log = logging.getLogger(__name__)

Box = tuple[float, float, float, float]


def as_box(values) -> Box:
    """The four corners as floats (typed as a Box)."""
    return cast(Box, tuple(float(v) for v in values))


def box_iou(a: Box, b: Box) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def box_center(b: Box) -> np.ndarray:
    return np.array([0.5 * (b[0] + b[2]), 0.5 * (b[1] + b[3])])


def box_size(b: Box) -> float:
    """Larger side of the box [px]: the body's extent in the image (scale of the jump gate)."""
    return float(max(b[2] - b[0], b[3] - b[1]))


def prompt_from_box(box: Box, score: float, time_s: float, *, source: str) -> Prompt:
    """Box + its centroid as the one positive point."""
    c = box_center(box)
    return Prompt(time_s=float(time_s), box_xyxy=as_box(box),
                  points=c.reshape(1, 2), labels=np.ones(1, dtype=np.int32),
                  score=float(score), source=source)


@dataclass
class TrackState:
    box: Box
    time_s: float


class PromptTracker:
    """Keeps the prompt and the identity of the one tracked person."""

    def __init__(self, *, person_id: int, prompt_min_score: float, max_jump: float, relock_s: float):
        self.person_id = int(person_id)
        self.prompt_min_score = float(prompt_min_score)
        self.max_jump = float(max_jump)
        self.relock_s = float(relock_s)
        self.prompt: Prompt | None = None
        self.last: TrackState | None = None       # last accepted box
        self.tracking = False                     # True while consecutive frames are accepted
        self.n_prompts = 0

    def select(self, detections, time_s: float):
        """Choose the detection to (re-)prompt on, or None. `detections` have `.box_xyxy` and
        `.score`, best first. Sets `self.prompt` when one is chosen."""
        candidates = [d for d in detections if d.score >= self.prompt_min_score]
        if not candidates:
            return None
        chosen = None
        recent = self.last is not None and time_s - self.last.time_s <= self.relock_s
        if recent:
            assert self.last is not None   # recent
            # Gate grows with the time lost: people walk about one body height per second.
            size = box_size(self.last.box)
            gate = size * (self.max_jump + (time_s - self.last.time_s))
            c0 = box_center(self.last.box)
            dists = [float(np.linalg.norm(box_center(d.box_xyxy) - c0)) for d in candidates]
            i = int(np.argmin(dists))
            if dists[i] <= gate:
                chosen = candidates[i]
            else:
                return None     # others in view but not ours: keep waiting for ours to reappear
        if chosen is None:
            chosen = candidates[0]
        source = "auto" if self.prompt is None else "reprompt"
        self.prompt = prompt_from_box(chosen.box_xyxy, chosen.score, time_s, source=source)
        self.n_prompts += 1
        log.info("prompt %d (%s) at t=%.3f s: box %s score %.2f", self.n_prompts, source, time_s,
                 tuple(round(v, 1) for v in chosen.box_xyxy), chosen.score)
        return chosen

    def prompt_on(self, det, time_s: float, *, source: str) -> None:
        """(Re-)prompt on a detection chosen elsewhere (by `PeopleTracker` + `PersonChoice`)."""
        if self.prompt is not None and source != "user":
            source = "reprompt"
        self.prompt = prompt_from_box(det.box_xyxy, det.score, time_s, source=source)
        self.n_prompts += 1
        log.info("prompt %d (%s) at t=%.3f s: box %s score %.2f", self.n_prompts, source, time_s,
                 tuple(round(v, 1) for v in det.box_xyxy), det.score)

    def accept(self, box: Box, time_s: float) -> bool:
        """Is this result still our person? Updates the track if so."""
        if self.last is not None and self.tracking:
            jump = float(np.linalg.norm(box_center(box) - box_center(self.last.box)))
            if jump > self.max_jump * box_size(self.last.box):
                log.info("t=%.3f s: result jumped %.0f px from the tracked person: rejected", time_s, jump)
                self.mark_lost()
                return False
        self.last = TrackState(box=as_box(box), time_s=float(time_s))
        self.tracking = True
        return True

    def rescale(self, sx: float, sy: float) -> None:
        """The frames changed size: express the last box in the new pixels."""
        if self.last is not None:
            x0, y0, x1, y1 = self.last.box
            self.last = TrackState(box=(x0 * sx, y0 * sy, x1 * sx, y1 * sy), time_s=self.last.time_s)

    def mark_lost(self) -> None:
        self.tracking = False

    def reset(self) -> None:
        self.prompt = None
        self.last = None
        self.tracking = False


# --- every person in view -------------------------------------------------------------------
#
# `PeopleTracker` follows every person the detector finds, with ids that stay with the person
# through crossings and short occlusions. It works on detector output only (boxes + the
# detector's hip/shoulder key points) and the image, never on the landmark model, so a run
# without landmarks (`--list-people`) numbers people exactly as a full run does.
#
# Association per frame: greedy on a cost = centre distance to the track's predicted box (in
# track box sizes) + `appearance_weight` x appearance distance, gated by the distance. The
# appearance cue is an HSV hue/saturation histogram of the torso and of the legs (regions placed
# from the detector's hip and shoulder centres: clothing colour tells two people apart when their
# boxes overlap and box distance cannot); a track's appearance model is only updated while it
# overlaps nobody, so it is the person's own colours when an overlap ends.
# Overlap: two tracks whose boxes overlap (intersection over the smaller box > `overlap_frac`),
# or a track lost next to another one, are flagged for those frames; when the overlap ends the
# identities are re-checked against the appearance models from before it and put back if the
# association swapped them (logged, counted in `n_identity_corrections`). A detection matching no
# track is compared to recently lost tracks (appearance + where they were) before it gets a new id.

APPEARANCE_BINS = (16, 8)          # hue x saturation
PART_SIZE_PX = (24, 48)            # regions are resampled to this (w, h) before the histogram


def _part_hist(image: np.ndarray, centre, half_w: float, half_h: float) -> np.ndarray | None:
    import cv2

    h, w = image.shape[:2]
    x0, x1 = int(max(0, centre[0] - half_w)), int(min(w, centre[0] + half_w))
    y0, y1 = int(max(0, centre[1] - half_h)), int(min(h, centre[1] + half_h))
    if x1 - x0 < 4 or y1 - y0 < 4:
        return None
    patch = cv2.resize(image[y0:y1, x0:x1], PART_SIZE_PX, interpolation=cv2.INTER_AREA)
    hsv = cv2.cvtColor(patch, cv2.COLOR_RGB2HSV)
    # Dark and washed-out pixels have no reliable hue: they go to their own bin (value/saturation).
    hist = cv2.calcHist([hsv], [0, 1], None, list(APPEARANCE_BINS), [0, 180, 0, 256]).ravel()
    dark = float(np.count_nonzero(hsv[..., 2] < 40))
    out = np.concatenate([hist, [dark]]).astype(np.float32)
    s = out.sum()
    return out / s if s > 0 else None


def appearance_feature(image: np.ndarray, det) -> np.ndarray | None:
    """Torso + legs colour histograms of one detection (None when the regions are off-image).
    Regions from the detector's key points: 0 = hip centre, 2 = shoulder centre."""
    kp = np.asarray(det.keypoints_xy, float)
    if len(kp) < 3 or not np.isfinite(kp[:3]).all():
        return None
    hip, shoulder = kp[0], kp[2]
    torso = float(np.linalg.norm(shoulder - hip))
    if torso < 8:
        return None
    parts = [
        _part_hist(image, 0.5 * (hip + shoulder), 0.22 * torso, 0.4 * torso),                  # torso
        _part_hist(image, hip + np.array([0.0, 0.75 * torso]), 0.25 * torso, 0.55 * torso),   # thighs/shanks
    ]
    if any(p is None for p in parts):
        return None
    return np.concatenate(cast(list[np.ndarray], parts))   # none is None (checked above)


def appearance_distance(a: np.ndarray | None, b: np.ndarray | None) -> float:
    """Bhattacharyya distance of two features (0 same colours .. 1 disjoint), per part averaged;
    0.5 (uninformative) when either is missing."""
    if a is None or b is None:
        return 0.5
    n = len(a) // 2
    d = []
    for p, q in ((a[:n], b[:n]), (a[n:], b[n:])):
        bc = float(np.sum(np.sqrt(np.maximum(p, 0) * np.maximum(q, 0))))
        d.append(math.sqrt(max(0.0, 1.0 - bc)))
    return float(np.mean(d))


def core_box(det) -> Box:
    """The body's own extent from the detector's hip and shoulder centres (the detection box is
    the square around the whole-body circle, far wider than the person): torso +/- 0.4 torso
    lengths sideways, head above the shoulders, legs 1.7 torso lengths below the hips."""
    kp = np.asarray(det.keypoints_xy, float)
    if len(kp) < 3 or not np.isfinite(kp[:3]).all():
        return tuple(det.box_xyxy)
    hip, shoulder = kp[0], kp[2]
    torso = max(float(np.linalg.norm(shoulder - hip)), 1.0)
    return (min(hip[0], shoulder[0]) - 0.4 * torso, min(hip[1], shoulder[1]) - 0.7 * torso,
            max(hip[0], shoulder[0]) + 0.4 * torso, max(hip[1], shoulder[1]) + 1.7 * torso)


def overlap_fraction(a: Box, b: Box) -> float:
    """Intersection over the smaller box's area."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    small = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return float(ix * iy / small) if small > 0 else 0.0


@dataclass
class PersonTrack:
    """One person followed by `PeopleTracker`. Frames are frame indices of the stream."""
    track_id: int
    box: Box                         # last detected box [px]
    score: float
    first_frame: int
    last_frame: int                  # last frame with a detection
    first_time_s: float
    last_time_s: float
    core: Box | None = None          # last detected body extent (`core_box`) [px]
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(2))   # box centre [px/s]
    appearance: np.ndarray | None = None
    n_detected: int = 0
    visible: bool = False            # detected on the current frame
    overlap: bool = False            # overlapping another person on the current frame
    detection: object = None         # this frame's detection, if visible
    overlap_with: set = field(default_factory=set)   # ids overlapped since the overlap began
    thumbnail: np.ndarray | None = None
    thumbnail_score: float = -1.0

    def predicted_box(self, time_s: float, *, core: bool = False) -> Box:
        dt = min(max(time_s - self.last_time_s, 0.0), 0.5)
        dx, dy = self.velocity * dt
        x0, y0, x1, y1 = self.core if core and self.core is not None else self.box
        return (x0 + dx, y0 + dy, x1 + dx, y1 + dy)


class PeopleTracker:
    """Stable ids for every person the detector finds (see the comment above)."""

    def __init__(self, *, min_score: float = 0.5, max_jump: float = 0.5, appearance_weight: float = 2.0,
                 overlap_frac: float = 0.3, forget_s: float = 5.0, reid_max_distance: float = 0.35,
                 keep_thumbnails: bool = False):
        self.min_score = float(min_score)
        self.max_jump = float(max_jump)
        self.appearance_weight = float(appearance_weight)
        self.overlap_frac = float(overlap_frac)
        self.forget_s = float(forget_s)
        self.reid_max_distance = float(reid_max_distance)
        self.keep_thumbnails = bool(keep_thumbnails)
        self.tracks: dict[int, PersonTrack] = {}
        self._next_id = 1
        self.n_identity_corrections = 0
        self.frame_index = -1

    # A track is "active" while it may still be matched by position; older ones only by re-id.
    def _active(self, time_s: float) -> list[PersonTrack]:
        return [t for t in self.tracks.values() if time_s - t.last_time_s <= 1.0]

    def _gate(self, track: PersonTrack, time_s: float) -> float:
        # People walk about one body height per second: the gate grows with the time unseen.
        return self.max_jump + 1.5 * max(time_s - track.last_time_s, 0.0)

    def update(self, detections, image: np.ndarray, frame_index: int, time_s: float) -> list[PersonTrack]:
        """Associate this frame's detections (best first) with the tracks; returns the tracks
        seen on this frame or overlapped by one (each with `.visible`, `.overlap`)."""
        self.frame_index = int(frame_index)
        dets = [d for d in detections if d.score >= self.min_score]
        feats = [appearance_feature(image, d) for d in dets]
        for t in self.tracks.values():
            t.visible, t.detection = False, None
        active = self._active(time_s)
        pairs = []
        for ti, t in enumerate(active):
            pred = t.predicted_box(time_s)
            size = max(box_size(pred), 1.0)
            for di, d in enumerate(dets):
                dist = float(np.linalg.norm(box_center(d.box_xyxy) - box_center(pred))) / size
                if dist > self._gate(t, time_s):
                    continue
                cost = dist + self.appearance_weight * appearance_distance(t.appearance, feats[di])
                pairs.append((cost, ti, di))
        pairs.sort()
        used_t, used_d, assigned = set(), set(), {}
        for cost, ti, di in pairs:
            if ti in used_t or di in used_d:
                continue
            used_t.add(ti)
            used_d.add(di)
            assigned[active[ti].track_id] = di
        for di, d in enumerate(dets):
            if di in used_d:
                continue
            tid = self._reidentify(d, feats[di], time_s, exclude=set(assigned))
            if tid is None:
                # A second detection of a person already tracked (same hips) is no one new.
                if any(np.linalg.norm(np.subtract(d.hip_center_xy, dets[j].hip_center_xy))
                       < 0.25 * dets[j].body_radius_px for j in assigned.values()):
                    continue
                tid = self._new_track(d, frame_index, time_s)
            assigned[tid] = di
        self._flag_overlaps(assigned, dets, time_s)
        self._recheck_after_overlap(assigned, feats)
        for tid, di in assigned.items():
            self._observe(self.tracks[tid], dets[di], feats[di], image, frame_index, time_s)
        return [t for t in self.tracks.values() if t.visible or t.overlap]

    def coast(self, track_id: int, det, frame_index: int, time_s: float) -> list[PersonTrack]:
        """A frame the detector did not run on (the estimator scans at a low rate while its
        subject is tracked): track `track_id` is located by `det`, a detection-like object made
        from its own landmarks (same key points as the detector's); everyone else keeps its last
        detection, predicted forward, and is not `visible`. Overlaps are flagged against those
        predictions. No appearance update: colour models are learnt on detector frames only.
        Returns the tracks on this frame (the located one, and any it overlaps)."""
        self.frame_index = int(frame_index)
        for t in self.tracks.values():
            t.visible, t.detection = False, None
        t = self.tracks[int(track_id)]
        self._flag_overlaps({t.track_id: 0}, [det], time_s)
        self._observe(t, det, None, None, frame_index, time_s, learn=False)
        return [t for t in self.tracks.values() if t.visible or t.overlap]

    def near(self, track_id: int, time_s: float, *, margin: float = 0.5) -> list[PersonTrack]:
        """Other recently seen people whose predicted body extent comes within `margin` body
        sizes of track `track_id`'s (where identities can be confused: the estimator runs the
        detector on every frame while anyone is this near its subject)."""
        t = self.tracks.get(int(track_id))
        if t is None:
            return []
        x0, y0, x1, y1 = t.predicted_box(time_s, core=True)
        mx, my = margin * (x1 - x0), margin * (y1 - y0)
        zone = (x0 - mx, y0 - my, x1 + mx, y1 + my)
        return [o for o in self._active(time_s) if o.track_id != t.track_id
                and overlap_fraction(zone, o.predicted_box(time_s, core=True)) > 0.0]

    def _new_track(self, det, frame_index: int, time_s: float) -> int:
        tid = self._next_id
        self._next_id += 1
        self.tracks[tid] = PersonTrack(track_id=tid, box=tuple(det.box_xyxy), score=det.score, first_frame=frame_index,
                                       last_frame=frame_index, first_time_s=time_s, last_time_s=time_s)
        log.debug("frame %d: new person %d at %s", frame_index, tid, tuple(round(v) for v in det.box_xyxy))
        return tid

    def _reidentify(self, det, feat, time_s: float, *, exclude: set) -> int | None:
        """A lost track this detection is (appearance close, not absurdly far), or None."""
        best, best_d = None, self.reid_max_distance
        for t in self.tracks.values():
            if t.track_id in exclude or t.appearance is None or time_s - t.last_time_s > self.forget_s:
                continue
            if t.last_time_s >= time_s:      # seen on this very frame: not lost
                continue
            far = float(np.linalg.norm(box_center(det.box_xyxy) - box_center(t.box))) / max(box_size(t.box), 1.0)
            if far > 1.0 + 2.0 * (time_s - t.last_time_s):
                continue
            d = appearance_distance(t.appearance, feat)
            if d < best_d:
                best, best_d = t.track_id, d
        if best is not None:
            log.info("t=%.3f s: person %d re-identified (appearance distance %.2f)", time_s, best, best_d)
        return best

    def _flag_overlaps(self, assigned: dict, dets, time_s: float) -> None:
        boxes = {}
        for t in self._active(time_s):
            boxes[t.track_id] = core_box(dets[assigned[t.track_id]]) if t.track_id in assigned \
                else t.predicted_box(time_s, core=True)
        for tid in assigned:
            boxes.setdefault(tid, core_box(dets[assigned[tid]]))
        for t in self.tracks.values():
            t.overlap = False
        ids = sorted(boxes)
        for i, a in enumerate(ids):
            for b in ids[i + 1:]:
                # Only people on this frame (seen, or just lost next to someone seen) can overlap.
                if a not in assigned and b not in assigned:
                    continue
                if overlap_fraction(boxes[a], boxes[b]) > self.overlap_frac:
                    for x, y in ((a, b), (b, a)):
                        self.tracks[x].overlap = True
                        self.tracks[x].overlap_with.add(y)

    def _recheck_after_overlap(self, assigned: dict, feats) -> None:
        """For pairs whose overlap has ended (both seen, neither overlapping anyone now),
        compare the detections with the appearance models from before the overlap; swap the
        assignment back if crossed colours fit clearly better. A pair stays pending while one
        of the two is unseen (occluded) and is dropped when that one is forgotten."""
        for tid in list(assigned):
            t = self.tracks[tid]
            if t.overlap or not t.overlap_with:
                continue
            for oid in sorted(t.overlap_with):
                o = self.tracks.get(oid)
                if o is None:
                    t.overlap_with.discard(oid)
                    continue
                if oid not in assigned or o.overlap:
                    continue          # the other one still hidden or overlapping: check later
                t.overlap_with.discard(oid)
                o.overlap_with.discard(tid)
                if t.appearance is None or o.appearance is None:
                    continue
                ft, fo = feats[assigned[tid]], feats[assigned[oid]]
                same = appearance_distance(t.appearance, ft) + appearance_distance(o.appearance, fo)
                swap = appearance_distance(t.appearance, fo) + appearance_distance(o.appearance, ft)
                if swap + 0.1 < same:
                    assigned[tid], assigned[oid] = assigned[oid], assigned[tid]
                    self.n_identity_corrections += 1
                    log.info("frame %d: persons %d and %d re-checked after their overlap: swapped back "
                             "(appearance %.2f vs %.2f)", self.frame_index, tid, oid, swap, same)

    def _observe(self, t: PersonTrack, det, feat, image, frame_index: int, time_s: float, *,
                 learn: bool = True) -> None:
        dt = time_s - t.last_time_s
        if 0 < dt <= 0.5 and t.n_detected:
            v = (box_center(det.box_xyxy) - box_center(t.box)) / dt
            t.velocity = 0.6 * t.velocity + 0.4 * v
        elif dt > 0.5:
            t.velocity = np.zeros(2)
        t.box = as_box(det.box_xyxy)
        t.core = as_box(core_box(det))
        t.last_frame, t.last_time_s = int(frame_index), float(time_s)
        t.visible, t.detection = True, det
        if not learn:       # located by its own landmarks, not detected: score and colours unchanged
            return
        t.score = float(det.score)
        t.n_detected += 1
        if feat is not None and not t.overlap:
            t.appearance = feat if t.appearance is None else 0.9 * t.appearance + 0.1 * feat
        if self.keep_thumbnails and not t.overlap and det.score > t.thumbnail_score:
            t.thumbnail, t.thumbnail_score = _thumbnail(image, det.box_xyxy), float(det.score)

    def track(self, track_id: int) -> PersonTrack | None:
        return self.tracks.get(int(track_id))


def _thumbnail(image: np.ndarray, box: Box, height_px: int = 200) -> np.ndarray:
    import cv2

    x0, y0, x1, y1 = (int(round(v)) for v in box)
    crop = image[max(0, y0):max(y0 + 1, y1), max(0, x0):max(x0 + 1, x1)]
    s = height_px / max(crop.shape[0], 1)
    return cv2.resize(crop, (max(1, round(crop.shape[1] * s)), height_px), interpolation=cv2.INTER_AREA)


# --- which person is the subject ------------------------------------------------------------

PERSON_RULES = ("auto", "largest", "centre")


@dataclass(frozen=True)
class PersonChoice:
    """How the subject is chosen among the tracked people (`--person`, `body_estimator_node.person`):
    auto     the highest-scoring detection on the first frame with people (the original rule);
    largest  the largest box on the first frame with people;
    centre   the box whose centre is nearest the image centre on the first frame with people;
    ID       the person `--list-people` numbered ID, from the first frame it is seen;
    X,Y      the person whose box contains pixel (X, Y) on the first frame where one does
             (nearest box centre if several do)."""
    rule: str                                   # auto | largest | centre | id | point
    track_id: int | None = None
    point_xy: tuple[float, float] | None = None

    @property
    def prompt_source(self) -> str:
        return "auto" if self.rule == "auto" else "user"

    def __str__(self) -> str:
        if self.rule == "id":
            return str(self.track_id)
        if self.rule == "point":
            assert self.point_xy is not None   # rule "point" carries it
            return f"{self.point_xy[0]:g},{self.point_xy[1]:g}"
        return self.rule


def parse_person_choice(text) -> PersonChoice:
    s = str(text).strip().lower()
    if s in ("", "auto"):
        return PersonChoice("auto")
    if s in ("largest", "centre", "center"):
        return PersonChoice("centre" if s == "center" else s)
    if s.isdigit():
        return PersonChoice("id", track_id=int(s))
    parts = s.split(",")
    if len(parts) == 2:
        try:
            x, y = float(parts[0]), float(parts[1])
        except ValueError:
            x = y = math.nan
        if math.isfinite(x) and math.isfinite(y) and x >= 0 and y >= 0:
            return PersonChoice("point", point_xy=(x, y))
    raise Sam4dcapError(f"--person {text!r}: give auto, largest, centre, a person id from --list-people "
                        f"(e.g. 2) or a pixel X,Y on the person (e.g. 540,900)")


def choose_track(choice: PersonChoice, tracks, image_shape: tuple[int, int], *,
                 scale: float = 1.0) -> PersonTrack | None:
    """The subject among this frame's visible tracks, or None (not decided on this frame).
    `scale`: work pixels per source pixel (the point is given in source pixels)."""
    seen = [t for t in tracks if t.visible]
    if not seen:
        return None
    if choice.rule == "auto":
        return max(seen, key=lambda t: t.score)
    if choice.rule == "largest":
        return max(seen, key=lambda t: (t.box[2] - t.box[0]) * (t.box[3] - t.box[1]))
    if choice.rule == "centre":
        c = np.array([image_shape[1] - 1, image_shape[0] - 1]) / 2.0
        return min(seen, key=lambda t: float(np.linalg.norm(box_center(t.box) - c)))
    if choice.rule == "id":
        return next((t for t in seen if t.track_id == choice.track_id), None)
    return track_at(seen, np.asarray(choice.point_xy, float) * scale)


def track_at(tracks, point_xy) -> PersonTrack | None:
    """The track whose body (`core` extent) contains the point, nearest centre first."""
    p = np.asarray(point_xy, float)
    inside = [t for t in tracks if t.core is not None and t.core[0] <= p[0] <= t.core[2] and t.core[1] <= p[1] <= t.core[3]]
    if not inside:
        return None
    return min(inside, key=lambda t: float(np.linalg.norm((box_center(t.core) - p) / max(box_size(t.core), 1.0))))


class BodyIds:
    """REP-155 body numbers of tracked people: the subject is always `subject_body` (the
    configured person_id, whose joints are solved and published); the others keep numbers of
    their own, allocated after it. Selecting another track as the subject swaps the two numbers."""

    def __init__(self, subject_body: int):
        self.subject_body = int(subject_body)
        self._number: dict[int, int] = {}        # track id -> body number
        self._subject_track: int | None = None
        self._next = self.subject_body + 1

    def select(self, track_id: int) -> None:
        track_id = int(track_id)
        if track_id == self._subject_track:
            return
        old = self._subject_track
        freed = self._number.get(track_id)
        self._number[track_id] = self.subject_body
        if old is not None:
            self._number[old] = freed if freed is not None else self._allocate()
        self._subject_track = track_id

    def _allocate(self) -> int:
        n = self._next
        self._next += 1
        return n

    def body(self, track_id: int) -> int:
        track_id = int(track_id)
        if track_id not in self._number:
            self._number[track_id] = self._allocate()
        return self._number[track_id]
