"""Find the still part of a static (calibration) trial: the window where the markers move least.

Marker speed is measured on low-passed positions (2 Hz zero-phase Butterworth: a still subject
has no content above it, and video keypoint jitter would otherwise read as motion), per frame as
the median speed over the markers present (robust to one jittery marker), then averaged over
sliding windows of `min_duration_s`. The slowest window is kept if its mean speed is below
`max_speed_m_s`, and grown on both sides while frames stay below the threshold. No window at or
under the threshold is a user-fixable error that says how still the trial got.
"""

from __future__ import annotations

import logging

import numpy as np

from .errors import Sam4dcapError
from .filters import butterworth_zero_phase
from .settings import StaticWindowSettings
from .timeseries import TimeSeries

log = logging.getLogger(__name__)

_SMOOTH_CUTOFF_HZ = 2.0


def marker_speed(markers: TimeSeries) -> np.ndarray:
    """Per-frame median marker speed [m/s] of low-passed positions; NaN where no marker is present."""
    series = markers if markers.unit == "m" else markers.to_unit("m")
    rate = series.rate_hz
    smoothed = series
    if rate > 4 * _SMOOTH_CUTOFF_HZ and series.n_frames >= 16:
        try:
            smoothed = butterworth_zero_phase(series, cutoff_hz=_SMOOTH_CUTOFF_HZ, order=2)
        except Sam4dcapError as exc:  # too short/gappy to filter: raw positions still work
            log.debug("static window: no smoothing (%s)", exc)
    pos = smoothed.values
    vel = np.gradient(pos, series.time, axis=0)
    speed = np.linalg.norm(vel, axis=2)                     # (N, K), NaN where missing
    per_frame = np.full(series.n_frames, np.nan)
    rows = np.isfinite(speed).any(axis=1)
    per_frame[rows] = np.nanmedian(speed[rows], axis=1)
    return per_frame


def find_static_window(markers: TimeSeries, *, min_duration_s: float | None = None,
                       max_speed_m_s: float | None = None,
                       settings: StaticWindowSettings | None = None) -> tuple[float, float]:
    """(start_s, end_s) of the stillest window of at least `min_duration_s`.

    Defaults come from `settings` (None = the config's: ik_node.static_min_duration_s /
    static_max_speed_m_s).
    """
    settings = settings if settings is not None else StaticWindowSettings.from_config()
    min_duration_s = float(settings.min_duration_s if min_duration_s is None else min_duration_s)
    max_speed_m_s = float(settings.max_speed_m_s if max_speed_m_s is None else max_speed_m_s)
    if not markers.is_points:
        raise Sam4dcapError("static window detection needs marker positions (a point TimeSeries)")
    if markers.n_frames < 3:
        raise Sam4dcapError(f"static trial has {markers.n_frames} frame(s); record at least "
                            f"{min_duration_s:.1f} s of the subject standing still")
    span = markers.time[-1] - markers.time[0]
    dt = float(np.median(np.diff(markers.time)))
    n = max(int(round(min_duration_s / dt)) + 1, 2)
    if n > markers.n_frames:
        raise Sam4dcapError(f"static trial lasts {span:.2f} s, shorter than the {min_duration_s:.2f} s still "
                            "window scaling needs; record a longer static trial (or lower "
                            "ik_node.static_min_duration_s)")
    speed = marker_speed(markers)
    valid = np.isfinite(speed)
    filled = np.where(valid, speed, np.inf)
    # Sliding mean over n frames; windows touching a frame with no markers are invalid (inf).
    csum = np.concatenate([[0.0], np.cumsum(np.where(valid, speed, 0.0))])
    cbad = np.concatenate([[0], np.cumsum(~valid)])
    means = (csum[n:] - csum[:-n]) / n
    means[(cbad[n:] - cbad[:-n]) > 0] = np.inf
    best = int(np.argmin(means))
    if not np.isfinite(means[best]) or means[best] > max_speed_m_s:
        slowest = f"{means[best]:.3f} m/s" if np.isfinite(means[best]) else "no window with markers"
        raise Sam4dcapError(
            f"no static window: the stillest {min_duration_s:.2f} s of the trial moves at {slowest} "
            f"(median marker speed; limit {max_speed_m_s:.3f} m/s). Record the subject standing still "
            "for a moment, or raise ik_node.static_max_speed_m_s")
    start, end = best, best + n - 1
    while start > 0 and filled[start - 1] <= max_speed_m_s:
        start -= 1
    while end < markers.n_frames - 1 and filled[end + 1] <= max_speed_m_s:
        end += 1
    window = (float(markers.time[start]), float(markers.time[end]))
    log.info("static window %.3f-%.3f s (mean marker speed %.4f m/s)", *window, means[best])
    return window
