"""Subject calibration from any trial (no still moment needed): robust segment lengths -> scaled model.

Segment lengths are measured between the marker pairs of the project's measurement sets
(`scaling.MEASUREMENTS`: hip-knee for the thigh, knee-ankle for the shank, ...). Per pair, the
length is the median over the trial's *confident* frames: both markers present with confidence
>= `min_confidence`, in frames where at least `min_visible_share` of the measured markers are
present and confident (a body seen nearly whole; partly seen bodies are where estimators guess).
A measurement's ratio is the mean over its pairs (left and right together: one body, two sides)
of trial length / the same distance on the model in its default pose, exactly as OpenSim's
measurement-based scaling forms it.

Consistency with the given height: the height-sized model already has the subject's stature.
The ratios are taken as the subject's *proportions*, each bounded to 1 +- `max_deviation`
(anthropometric spread around de Leva's proportions; a single video's depth errors can stretch a
segment further than any body does), and the whole set is then renormalised so that the scaled
model's standing height equals the given height (standing height is homogeneous of degree one
in the factors, so one correction is exact).

Applied with OpenSim's ScaleTool as *manual* scale factors (`scaling.scale_model_manual`): the
robust per-segment numbers are the measurement; building a synthetic "static" trial to feed the
measurement scaler would only reproduce the same ratios through a detour. Mass is distributed
as in the generic model (preserve_mass_distribution), as in static-window scaling.

Not done: refining where each marker sits on its body (OpenSim's MarkerPlacer needs one
representative pose; moving trial-averaged keypoints onto the model would absorb the monocular
depth bias into the marker positions). Markers move with their scaled bodies.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np

from .errors import Sam4dcapError
from .timeseries import TimeSeries

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrialCalibrationSettings:
    """How trial calibration selects frames and bounds the result (config `ik_node.trial_*`)."""
    min_confidence: float = 0.7          # a marker's confidence (keypoint visibility) to be measured
    min_visible_share: float = 0.9       # share of measured markers confident in a usable frame
    min_frames: int = 10                 # usable frames needed
    max_deviation: float = 0.2           # a segment's ratio to the height-sized model: 1 +- this

    @classmethod
    def from_params(cls, params: Mapping) -> "TrialCalibrationSettings":
        return cls(min_confidence=float(params["trial_min_confidence"]),
                   min_visible_share=float(params["trial_min_visible_share"]),
                   min_frames=int(params["trial_min_frames"]),
                   max_deviation=float(params["trial_max_deviation"]))


@dataclass(frozen=True)
class SegmentLength:
    measurement: str
    pairs: tuple[tuple[str, str], ...]
    trial_m: tuple[float, ...]           # per pair: median length over the usable frames
    model_m: tuple[float, ...]           # per pair: the model's default-pose distance
    spread: float                        # mean relative IQR of the pairs' lengths over frames
    raw_ratio: float                     # mean of trial / model over the pairs
    ratio: float                         # bounded, before the height normalisation
    factor: float                        # final uniform scale factor of the measurement's bodies
    bodies: tuple[str, ...]


@dataclass(frozen=True)
class TrialCalibration:
    segments: dict[str, SegmentLength]
    body_factors: dict[str, float]
    frames_used: int
    frames_total: int
    height_correction: float             # factor applied to every ratio so stature = height
    bounded: tuple[str, ...]             # measurements whose ratio hit the bounds
    extra: dict = field(default_factory=dict)

    def summary(self) -> dict:
        """Plain numbers for summaries and logs."""
        return {"frames_used": self.frames_used, "frames_total": self.frames_total,
                "height_correction": self.height_correction, "bounded": list(self.bounded),
                "segments": {k: {"ratio_raw": s.raw_ratio, "factor": s.factor, "spread": s.spread,
                                 "trial_m": list(s.trial_m), "model_m": list(s.model_m)}
                             for k, s in self.segments.items()}}


def usable_frames(markers: TimeSeries, names, confidence: np.ndarray | None, settings: TrialCalibrationSettings
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(frame mask (N,), per-sample mask (N, len(names))) of confident measured markers."""
    idx = [markers.index(n) for n in names]
    ok = np.isfinite(markers.values[:, idx]).all(axis=2)
    if confidence is not None:
        conf = np.asarray(confidence, float)
        if conf.shape != markers.values.shape[:2]:
            raise Sam4dcapError(f"confidence has shape {conf.shape}, markers {markers.values.shape[:2]}")
        ok &= np.nan_to_num(conf[:, idx], nan=0.0) >= settings.min_confidence
    frames = ok.mean(axis=1) >= settings.min_visible_share if idx else np.zeros(markers.n_frames, bool)
    return frames, ok


def model_marker_distances(model, pairs) -> dict[tuple[str, str], float]:
    """Distance of each marker pair on `model` (opensim.Model) in its default pose."""
    state = model.initSystem()
    model.realizePosition(state)
    ms = model.getMarkerSet()
    out = {}
    for a, b in pairs:
        pa = ms.get(a).getLocationInGround(state)
        pb = ms.get(b).getLocationInGround(state)
        out[(a, b)] = float(math.dist([pa.get(i) for i in range(3)], [pb.get(i) for i in range(3)]))
    return out


def measured_marker_names(marker_set: str) -> tuple[str, ...]:
    """Markers of the measurement set of `marker_set` (those trial calibration looks at)."""
    from .scaling import MEASUREMENTS

    out: list[str] = []
    for pairs, _ in MEASUREMENTS.get(marker_set, {}).values():
        out += [n for p in pairs for n in p if n not in out]
    return tuple(out)


def estimate_segment_ratios(markers: TimeSeries, model, *, marker_set: str, confidence: np.ndarray | None = None,
                            settings: TrialCalibrationSettings = TrialCalibrationSettings(),
                            expected_ratio: float = 1.0) -> tuple[dict[str, SegmentLength], int]:
    """Robust per-measurement ratios trial/model (bounded to `expected_ratio` * (1 +- max_deviation),
    not yet height-normalised) and the number of usable frames. Raises Sam4dcapError when too
    few frames show the body."""
    from .scaling import MEASUREMENTS

    if marker_set not in MEASUREMENTS:
        raise Sam4dcapError(f"trial calibration: no measurement set for marker set {marker_set!r}")
    series = markers if markers.unit == "m" else markers.to_unit("m")
    ms = model.getMarkerSet()
    on_model = {ms.get(i).getName() for i in range(ms.getSize())}
    body_names = {model.getBodySet().get(i).getName() for i in range(model.getBodySet().getSize())}
    measured = [n for n in measured_marker_names(marker_set) if n in series.names and n in on_model]
    if not measured:
        raise Sam4dcapError("trial calibration: none of the measured markers is in both the trial and the model")
    frames, ok = usable_frames(series, measured, confidence, settings)
    n_used = int(frames.sum())
    if n_used < settings.min_frames:
        raise Sam4dcapError(f"trial calibration: {n_used} of {series.n_frames} frames show the body with "
                            f">= {settings.min_visible_share:.0%} of its markers at confidence >= "
                            f"{settings.min_confidence:g}; {settings.min_frames} are needed")
    col = {n: j for j, n in enumerate(measured)}
    all_pairs = [p for pairs, _ in MEASUREMENTS[marker_set].values() for p in pairs
                 if p[0] in col and p[1] in col]
    model_d = model_marker_distances(model, all_pairs)
    segments = {}
    for name, (pairs, bodies) in MEASUREMENTS[marker_set].items():
        used_bodies = tuple(b for b in bodies if b in body_names)
        usable = [p for p in pairs if p in model_d and model_d[p] > 1e-6]
        if not used_bodies or not usable:
            continue
        trial, model_len, ratios, spreads = [], [], [], []
        for a, b in usable:
            sel = frames & ok[:, col[a]] & ok[:, col[b]]
            if sel.sum() < settings.min_frames:
                continue
            d = np.linalg.norm(series.get(a)[sel] - series.get(b)[sel], axis=1)
            med = float(np.median(d))
            q25, q75 = np.percentile(d, [25, 75])
            trial.append(med)
            model_len.append(model_d[(a, b)])
            ratios.append(med / model_d[(a, b)])
            spreads.append(float((q75 - q25) / med) if med > 0 else float("nan"))
        if not ratios:
            continue
        raw = float(np.mean(ratios))
        ratio = float(np.clip(raw, expected_ratio * (1.0 - settings.max_deviation),
                              expected_ratio * (1.0 + settings.max_deviation)))
        segments[name] = SegmentLength(name, tuple(usable[:len(trial)]), tuple(trial), tuple(model_len),
                                       float(np.nanmean(spreads)), raw, ratio, ratio, used_bodies)
    if not segments:
        raise Sam4dcapError("trial calibration: no segment could be measured")
    return segments, n_used


def _with_factor(seg: SegmentLength, factor: float) -> SegmentLength:
    return SegmentLength(seg.measurement, seg.pairs, seg.trial_m, seg.model_m, seg.spread, seg.raw_ratio,
                         seg.ratio, float(factor), seg.bodies)


def scale_model_from_trial(model_path, markers, *, height_m: float, mass_kg: float, out_path,
                           marker_set: str = "blazepose33", confidence: np.ndarray | None = None,
                           settings: TrialCalibrationSettings = TrialCalibrationSettings(), log_file=None):
    """Scale the (height-sized) model at `model_path` to the segment proportions of a trial.

    `markers`: TimeSeries or TRC path (world frame, any motion); `confidence` (N, K) per marker
    or None (every present marker counts as confident). Returns `scaling.ScaleResult` whose
    `extra["trial_calibration"]` is the `TrialCalibration`. Raises Sam4dcapError when the trial
    shows too little of the body.
    """
    from .inverse_kinematics import load_markers
    from .model_builder import standing_height_m
    from .scaling import scale_model_manual
    from .model_builder import load_model

    model_path = Path(model_path)
    series = load_markers(markers)
    generic = load_model(model_path)
    # The model may be sized for another height (a live recalibration with a new height).
    expected = float(height_m) / standing_height_m(generic)
    segments, n_used = estimate_segment_ratios(series, generic, marker_set=marker_set, confidence=confidence,
                                               settings=settings, expected_ratio=expected)
    # Bodies no measurement covers keep the model's proportions (ratio 1) and follow the height.
    bodies = generic.getBodySet()
    body_ratio = {bodies.get(i).getName(): expected for i in range(bodies.getSize())}
    body_ratio.update({b: s.ratio for s in segments.values() for b in s.bodies})
    out_path = Path(out_path)
    # First pass with the bounded ratios, then one uniform correction to the given height.
    first = scale_model_manual(model_path, body_ratio, mass_kg=mass_kg, out_path=out_path, log_file=log_file)
    stature = standing_height_m(load_model(first.scaled_model))
    correction = float(height_m) / stature if stature > 0 else 1.0
    factors = {b: r * correction for b, r in body_ratio.items()}
    result = scale_model_manual(model_path, factors, mass_kg=mass_kg, out_path=out_path, log_file=log_file)
    final_h = standing_height_m(load_model(result.scaled_model))
    bounded = tuple(k for k, s in segments.items() if s.ratio != s.raw_ratio)
    calib = TrialCalibration(segments={k: _with_factor(s, s.ratio * correction) for k, s in segments.items()},
                             body_factors=factors, frames_used=n_used, frames_total=series.n_frames,
                             height_correction=correction, bounded=bounded,
                             extra={"standing_height_m": final_h})
    log.info("trial calibration from %d/%d frames: %s; height correction %.3f (standing height %.3f m)%s",
             n_used, series.n_frames, ", ".join(f"{k} {s.factor:.3f}" for k, s in calib.segments.items()),
             correction, final_h, f"; bounded: {', '.join(bounded)}" if bounded else "")
    result.extra["trial_calibration"] = calib
    return result
