"""Auto-prompt and single-person tracking logic (no model code: works on boxes).

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
from dataclasses import dataclass

import numpy as np

from .observations import Prompt

log = logging.getLogger(__name__)

Box = tuple[float, float, float, float]


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
    return Prompt(time_s=float(time_s), box_xyxy=tuple(float(v) for v in box),
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

    def accept(self, box: Box, time_s: float) -> bool:
        """Is this result still our person? Updates the track if so."""
        if self.last is not None and self.tracking:
            jump = float(np.linalg.norm(box_center(box) - box_center(self.last.box)))
            if jump > self.max_jump * box_size(self.last.box):
                log.info("t=%.3f s: result jumped %.0f px from the tracked person: rejected", time_s, jump)
                self.mark_lost()
                return False
        self.last = TrackState(box=tuple(float(v) for v in box), time_s=float(time_s))
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
