"""Left/right consistency of a body estimator's keypoints: detect and undo its label swaps.

Monocular estimators sometimes label the body's left side as its right (BlazePose does in a
third of the frames of one Pose2Sim demo view, when it takes a back view for a front view).
Within one frame both labellings describe a person; over time only one is continuous: when the
estimator swaps, every left keypoint jumps to where its right partner was. Per frame there are
two hypotheses, the estimator's labels and the swapped ones (every left/right pair exchanged, in
2D, in 3D and in visibility), and between consecutive frames two costs: the motion of the paired
keypoints if the labelling is kept, and if it is switched ((motion / body size / sigma)^2).

A switch is accepted only where the evidence is decisive: keeping costs at least `min_jump` and
`margin` times more than switching. Elsewhere (left and right overlapping in the image, a jittery
frame) the labelling is kept: measured on the Pose2Sim demo, weak evidence is as often wrong as
right, and one wrong switch would invert every later frame. Offline, the switches toggle the
labelling along the trial, and of the two resulting labellings the one closer to the estimator's
is kept (fewer frames relabelled). Live (`CausalLRTracker`) the same rule runs causally, and a
labelling that has stayed swapped for `max_swapped_s` reverts to the estimator's at the next
frame with no evidence either way.

The 3D points of a swapped frame are exchanged the same way; when the estimator confused a back
view with a front view its 3D body faces the wrong way too, and the exchange alone leaves a
mirrored body (face behind the trunk): that frame's hip-centred 3D is then also reflected in
depth (`repaired_body`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

import numpy as np

log = logging.getLogger(__name__)

# Prefix pairs that name the two sides in the project's marker sets (BlazePose, OpenCap).
_SIDE_PREFIXES = (("left_", "right_"), ("L_", "r_"), ("L.", "r."), ("L", "R"))


def lr_pairs(names: Sequence[str]) -> list[tuple[int, int]]:
    """(left index, right index) of every keypoint whose name has a partner on the other side."""
    index = {n: i for i, n in enumerate(names)}
    pairs = []
    for i, n in enumerate(names):
        for left, right in _SIDE_PREFIXES:
            if n.startswith(left) and right + n[len(left):] in index:
                pairs.append((i, index[right + n[len(left):]]))
                break
        else:
            if n.startswith("mouth_left") and "mouth_right" in index:
                pairs.append((i, index["mouth_right"]))
    return pairs


def swap_permutation(names: Sequence[str]) -> np.ndarray:
    """Index array p such that x[p] is x with every left/right pair exchanged."""
    perm = np.arange(len(names))
    for a, b in lr_pairs(names):
        perm[a], perm[b] = b, a
    return perm


@dataclass(frozen=True)
class LRSettings:
    """Costs of the left/right decision (config `markers_node.lr_*`)."""
    enabled: bool = True
    sigma: float = 0.05            # expected frame-to-frame motion of a keypoint / body size
    min_jump: float = 4.0          # a switch needs keeping to cost at least this ((motion / size / sigma)^2)
    margin: float = 8.0            # ... and this many times more than switching
    min_visibility: float = 0.3    # keypoints below this do not take part in the evidence
    max_swapped_s: float = 2.0     # live: a swapped labelling reverts when evidence is absent after this

    @classmethod
    def from_params(cls, params) -> "LRSettings":
        return cls(enabled=bool(params["lr_repair"]), sigma=float(params["lr_sigma"]),
                   min_jump=float(params["lr_min_jump"]), margin=float(params["lr_margin"]),
                   max_swapped_s=float(params["lr_max_swapped_s"]))

    def decisive_switch(self, keep: float, switch: float) -> bool:
        return keep >= self.min_jump and keep >= self.margin * switch


def body_size_px(pixels: np.ndarray, visibility: np.ndarray, min_visibility: float) -> float:
    """Image size of the body (extent of the confident keypoints, larger side), px; NaN if none."""
    ok = np.isfinite(pixels).all(axis=-1) & (visibility >= min_visibility)
    if ok.sum() < 2:
        return float("nan")
    pts = pixels[ok]
    return float(np.max(pts.max(axis=0) - pts.min(axis=0)))


def _motion(a_pix, a_vis, b_pix, b_vis, idx, min_visibility, size) -> float:
    """RMS motion of keypoints `idx` between two frames / size; NaN when none is seen in both."""
    ok = (np.isfinite(a_pix[idx]).all(axis=1) & np.isfinite(b_pix[idx]).all(axis=1)
          & (a_vis[idx] >= min_visibility) & (b_vis[idx] >= min_visibility))
    if not ok.any() or not np.isfinite(size) or size <= 0:
        return float("nan")
    d = np.linalg.norm(a_pix[idx][ok] - b_pix[idx][ok], axis=1)
    return float(np.sqrt(np.mean(d ** 2)) / size)


def transition_evidence(prev_pix, prev_vis, pix, vis, perm, settings: LRSettings) -> tuple[float, float]:
    """(cost of keeping, cost of switching) the labelling between two frames."""
    paired = np.flatnonzero(perm != np.arange(len(perm)))
    size = np.nanmean([body_size_px(prev_pix, prev_vis, settings.min_visibility),
                       body_size_px(pix, vis, settings.min_visibility)])
    keep = _motion(prev_pix, prev_vis, pix, vis, paired, settings.min_visibility, size)
    switch = _motion(prev_pix, prev_vis, pix[perm], vis[perm], paired, settings.min_visibility, size)
    if not (np.isfinite(keep) and np.isfinite(switch)):
        return 0.0, 0.0
    return (keep / settings.sigma) ** 2, (switch / settings.sigma) ** 2


def consistent_labels(pixels: np.ndarray, visibility: np.ndarray, tracked: np.ndarray, names: Sequence[str],
                      settings: LRSettings = LRSettings()) -> np.ndarray:
    """Offline: (N,) bool, True where the estimator's left/right labels should be swapped.
    Frames without the person are never swapped; the evidence continues across them from the
    last tracked frame."""
    n = len(pixels)
    perm = swap_permutation(names)
    swapped = np.zeros(n, bool)
    frames = np.flatnonzero(np.asarray(tracked, bool))
    if not settings.enabled or frames.size == 0 or (perm == np.arange(len(perm))).all():
        return swapped
    parity = np.zeros(frames.size, bool)
    state = False
    for j in range(1, frames.size):
        a, b = frames[j - 1], frames[j]
        keep, switch = transition_evidence(pixels[a], visibility[a], pixels[b], visibility[b], perm, settings)
        if settings.decisive_switch(keep, switch):
            state = not state
        parity[j] = state
    if parity.sum() > frames.size - parity.sum():
        parity = ~parity               # the labelling closer to the estimator's
    swapped[frames] = parity
    return swapped


class CausalLRTracker:
    """Live: one decision per frame from the frames seen so far (see module docstring)."""

    def __init__(self, names: Sequence[str], settings: LRSettings = LRSettings()):
        self.settings = settings
        self.perm = swap_permutation(names)
        self.swapped = False
        self._prev: tuple[np.ndarray, np.ndarray] | None = None   # last frame, as output (labels fixed)
        self._swapped_since: float | None = None

    def push(self, time_s: float, pixels: np.ndarray, visibility: np.ndarray) -> bool:
        """True when this frame's labels should be swapped (by `perm`)."""
        if not self.settings.enabled or (self.perm == np.arange(len(self.perm))).all():
            return False
        pixels = np.asarray(pixels, float)
        visibility = np.asarray(visibility, float)
        if not np.isfinite(pixels).any():
            return False                       # person lost: nothing to label, keep the state
        current = self.perm if self.swapped else np.arange(len(self.perm))
        if self._prev is not None:
            keep, switch = transition_evidence(*self._prev, pixels[current], visibility[current], self.perm,
                                               self.settings)
            if self.settings.decisive_switch(keep, switch):
                self.swapped = not self.swapped
            elif (self.swapped and self._swapped_since is not None
                  and time_s - self._swapped_since >= self.settings.max_swapped_s
                  and max(keep, switch) < self.settings.min_jump):
                self.swapped = False             # no evidence either way: trust the estimator again
        if self.swapped and self._swapped_since is None:
            self._swapped_since = time_s
        elif not self.swapped:
            self._swapped_since = None
        current = self.perm if self.swapped else np.arange(len(self.perm))
        self._prev = (pixels[current], visibility[current])
        return self.swapped


def mirror_depth(body_points: np.ndarray) -> np.ndarray:
    """Hip-centred camera-axes points (K, 3) reflected along the camera's z axis about their origin."""
    out = np.array(body_points, float)
    out[..., 2] = -out[..., 2]
    return out


def facing(body_points: np.ndarray, names: Sequence[str]) -> np.ndarray:
    """Forward direction (unit) of a body's trunk, (K, 3) -> (3,) or (N, K, 3) -> (N, 3): trunk up
    x (left hip - right hip), forward for a right-handed frame and a correctly labelled body;
    NaN when hips/shoulders are missing."""
    idx = {n: i for i, n in enumerate(names)}
    pts = np.asarray(body_points, float)
    if any(n not in idx for n in ("left_hip", "right_hip", "left_shoulder", "right_shoulder")):
        return np.full(pts.shape[:-2] + (3,), np.nan)
    lh, rh = pts[..., idx["left_hip"], :], pts[..., idx["right_hip"], :]
    up = 0.5 * (pts[..., idx["left_shoulder"], :] + pts[..., idx["right_shoulder"], :]) - 0.5 * (lh + rh)
    f = np.cross(lh - rh, up)
    with np.errstate(invalid="ignore", divide="ignore"):
        return f / np.linalg.norm(f, axis=-1, keepdims=True)


def face_in_front(body_points: np.ndarray, names: Sequence[str]) -> float:
    """How far the nose lies in front of the ears along the trunk's forward direction (same units
    as the points): positive for a body whose labels and depth agree, negative for one that is
    mirrored (labels exchanged but depth not, or the reverse); NaN without nose/ears."""
    idx = {n: i for i, n in enumerate(names)}
    if any(n not in idx for n in ("nose", "left_ear", "right_ear")):
        return float("nan")
    pts = np.asarray(body_points, float)
    ears = 0.5 * (pts[idx["left_ear"]] + pts[idx["right_ear"]])
    return float(np.dot(pts[idx["nose"]] - ears, facing(pts, names)))


def repaired_body(body: np.ndarray, perm: np.ndarray, names: Sequence[str]) -> tuple[np.ndarray, bool]:
    """A swapped frame's 3D keypoints (K, 3) with the pairs exchanged, and mirrored in depth when
    the exchange alone leaves a mirrored body (face behind the trunk: the estimator took a back
    view for a front view and built its 3D that way). Returns (points, mirrored)."""
    swapped = np.asarray(body, float)[perm]
    if face_in_front(swapped, names) < 0:
        return mirror_depth(swapped), True
    return swapped, False


def repair_frame(pixels: np.ndarray, body: np.ndarray, visibility: np.ndarray, perm: np.ndarray,
                 names: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
    """One swapped frame relabelled: (pixels, body, visibility, depth mirrored)."""
    new_body, mirrored = repaired_body(body, perm, names)
    return np.asarray(pixels, float)[perm], new_body, np.asarray(visibility, float)[perm], mirrored


def repair_track(pixels: np.ndarray, body: np.ndarray, visibility: np.ndarray, swapped: np.ndarray,
                 names: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Offline: copies of (pixels (N,K,2), body (N,K,3), visibility (N,K)) with the frames of
    `swapped` relabelled, and the (N,) mask of frames whose 3D was also mirrored in depth."""
    perm = swap_permutation(names)
    pixels, body, visibility = (np.array(a, float) for a in (pixels, body, visibility))
    mirrored = np.zeros(len(pixels), bool)
    for i in np.flatnonzero(swapped):
        pixels[i], body[i], visibility[i], mirrored[i] = repair_frame(pixels[i], body[i], visibility[i], perm, names)
    return pixels, body, visibility, mirrored
