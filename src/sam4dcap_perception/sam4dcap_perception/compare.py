"""Compare a result with a reference: automatic time alignment, then per-channel errors.

Works on coordinates (.mot, errors in degrees for rotations and metres for translations) and on
markers (.trc, errors are 3D distances in metres). The reference is shifted in time by the lag
that maximises the mean correlation of the common channels over a lag window, then resampled
onto the result's time stamps (linear interpolation) over the overlapping span.

Lag convention: `lag_s > 0` means events happen `lag_s` later in the reference than in the
result; the aligned reference is reference(t + lag_s).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from sam4dcap_biomech.errors import Sam4dcapError
from sam4dcap_biomech.storage import read_mot
from sam4dcap_biomech.timeseries import TimeSeries
from sam4dcap_biomech.trc import read_trc

log = logging.getLogger(__name__)

# Channels with less spread than this carry no timing information (locked coordinates).
_FLAT_STD = 1e-6
# The aligned series must overlap on at least this share of the shorter one.
_MIN_OVERLAP_SHARE = 0.5


@dataclass(frozen=True)
class ChannelMetrics:
    name: str
    unit: str               # deg, m
    rmse: float
    mae: float
    max_abs_error: float    # largest |result - reference| over the overlap ("peak error")
    peak_difference: float  # max(result) - max(reference): error of the peak value itself
    correlation: float      # Pearson r (NaN when a side is flat)
    n_samples: int

    def as_dict(self) -> dict:
        return {k: (None if isinstance(v, float) and not np.isfinite(v) else v)
                for k, v in self.__dict__.items()}


@dataclass
class Comparison:
    kind: str                       # "coordinates" | "markers"
    lag_s: float
    max_lag_s: float
    alignment_score: float          # mean correlation at the chosen lag
    lag_scores: tuple[np.ndarray, np.ndarray]   # (lags_s, mean correlation) over the window
    result: TimeSeries              # over the overlap, in report units (deg / m)
    reference: TimeSeries           # aligned and resampled onto result.time, same units
    metrics: list[ChannelMetrics]
    result_rate_hz: float
    reference_rate_hz: float
    rigid_transform: np.ndarray | None = None   # (4, 4) reference -> result world, markers only
    only_in_result: tuple[str, ...] = ()
    only_in_reference: tuple[str, ...] = ()
    sources: dict = field(default_factory=dict)
    lag_source: str = "search"      # search | given (same clock) | none

    def metric(self, name: str) -> ChannelMetrics:
        for m in self.metrics:
            if m.name == name:
                return m
        raise Sam4dcapError(f"no metrics for channel {name!r}")

    def as_dict(self) -> dict:
        return {
            "kind": self.kind,
            "lag_s": self.lag_s,
            "lag_source": self.lag_source,
            "max_lag_s": self.max_lag_s,
            "alignment_correlation": self.alignment_score,
            "overlap_s": [float(self.result.time[0]), float(self.result.time[-1])],
            "result_rate_hz": self.result_rate_hz,
            "reference_rate_hz": self.reference_rate_hz,
            "rigid_transform": None if self.rigid_transform is None else self.rigid_transform.tolist(),
            "only_in_result": list(self.only_in_result),
            "only_in_reference": list(self.only_in_reference),
            "sources": dict(self.sources),
            "channels": [m.as_dict() for m in self.metrics],
        }


# --- loading ---------------------------------------------------------------------------------
def load_series(path: str | Path) -> TimeSeries:
    """A result or reference file: .mot/.sto coordinates or .trc markers. A `sam4dcap process`
    output folder stands for its IK motion."""
    path = Path(path)
    if path.is_dir():
        motions = sorted(path.glob("*_ik.mot")) or sorted(path.glob("*.mot"))
        if not motions:
            raise Sam4dcapError(f"{path}: folder holds no IK .mot (expected a `sam4dcap process` output folder)")
        path = motions[0]
    if not path.exists():
        raise Sam4dcapError(f"file not found: {path}")
    suffix = path.suffix.lower()
    if suffix in (".mot", ".sto"):
        series = read_mot(path)
        if series.meta.get("kind") == "forces":
            raise Sam4dcapError(f"{path}: holds forces, not coordinates; compare IK results (.mot) or markers (.trc)")
        return series
    if suffix == ".trc":
        return read_trc(path)
    raise Sam4dcapError(f"{path}: unknown file type {suffix or '(none)'!r}; use .mot/.sto (coordinates) or .trc (markers)")


# --- helpers ---------------------------------------------------------------------------------
def _report_units(series: TimeSeries) -> TimeSeries:
    """Coordinates in degrees (translations stay metres); markers in metres."""
    if series.is_points:
        return series.to_unit("m") if series.unit != "m" else series
    return series.to_unit("deg") if series.unit in ("rad", "deg") else series


def _flat_channels(series: TimeSeries) -> np.ndarray:
    """(N, C) scalar view: markers as x, y, z per marker."""
    v = series.values
    return v.reshape(v.shape[0], -1) if v.ndim == 3 else v


def _interp(t_src: np.ndarray, values: np.ndarray, t_new: np.ndarray) -> np.ndarray:
    """Linear interpolation per column, NaN outside the source span and across NaN gaps."""
    out = np.full((t_new.size, values.shape[1]), np.nan)
    inside = (t_new >= t_src[0] - 1e-9) & (t_new <= t_src[-1] + 1e-9)
    if not inside.any():
        return out
    idx = np.clip(np.searchsorted(t_src, t_new[inside], side="right") - 1, 0, t_src.size - 2) \
        if t_src.size > 1 else np.zeros(inside.sum(), int)
    if t_src.size == 1:
        out[inside] = values[0]
        return out
    t0, t1 = t_src[idx], t_src[idx + 1]
    w = ((t_new[inside] - t0) / (t1 - t0))[:, None]
    # NaN on either neighbour propagates: a gap is never bridged by interpolation.
    out[inside] = values[idx] * (1.0 - w) + values[idx + 1] * w
    return out


def _mean_correlation(a: np.ndarray, b: np.ndarray, min_samples: int) -> float:
    """Mean Pearson r over columns with enough common finite samples and spread."""
    rs = []
    for j in range(a.shape[1]):
        ok = np.isfinite(a[:, j]) & np.isfinite(b[:, j])
        if ok.sum() < min_samples:
            continue
        x, y = a[ok, j], b[ok, j]
        sx, sy = x.std(), y.std()
        if sx < _FLAT_STD or sy < _FLAT_STD:
            continue
        rs.append(float(np.mean((x - x.mean()) * (y - y.mean())) / (sx * sy)))
    return float(np.mean(rs)) if rs else float("nan")


def estimate_lag(result: TimeSeries, reference: TimeSeries, *, max_lag_s: float,
                 ) -> tuple[float, float, np.ndarray, np.ndarray]:
    """Lag (s) maximising the mean correlation of the common channels within +-max_lag_s.

    Both series must hold the same channel names in the same order. Returns
    (lag_s, score, lags_s, scores); the lag is refined below one sample by a parabola through
    the peak and its neighbours.
    """
    a = _flat_channels(result)
    b = _flat_channels(reference)
    dt = 1.0 / result.rate_hz if result.n_frames > 1 else 0.0
    if dt <= 0 or max_lag_s <= 0:
        return 0.0, _mean_correlation(a, _interp(reference.time, b, result.time), 3), np.zeros(1), np.zeros(1)
    n_lags = int(np.floor(max_lag_s / dt))
    lags = np.arange(-n_lags, n_lags + 1) * dt
    shorter = min(result.time[-1] - result.time[0], reference.time[-1] - reference.time[0])
    min_samples = max(3, int(_MIN_OVERLAP_SHARE * shorter / dt))
    scores = np.array([_mean_correlation(a, _interp(reference.time, b, result.time + lag), min_samples)
                       for lag in lags])
    if not np.isfinite(scores).any():
        raise Sam4dcapError(
            f"cannot align in time: no lag within +-{max_lag_s:g} s gives an overlap of at least "
            f"{_MIN_OVERLAP_SHARE:.0%} with varying common channels (widen --max-lag or check the reference)")
    k = int(np.nanargmax(scores))
    lag = float(lags[k])
    if 0 < k < len(lags) - 1 and np.isfinite(scores[k - 1]) and np.isfinite(scores[k + 1]):
        denom = scores[k - 1] - 2 * scores[k] + scores[k + 1]
        if denom < 0:
            lag += float(0.5 * (scores[k - 1] - scores[k + 1]) / denom) * dt
    return lag, float(scores[k]), lags, scores


def _kabsch(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Rigid (4, 4) transform minimising |R src + t - dst| over rows with finite values."""
    ok = np.isfinite(src).all(axis=1) & np.isfinite(dst).all(axis=1)
    if ok.sum() < 3:
        raise Sam4dcapError("rigid alignment needs at least 3 markers seen in both trials")
    p, q = src[ok], dst[ok]
    pc, qc = p.mean(axis=0), q.mean(axis=0)
    u, _, vt = np.linalg.svd((p - pc).T @ (q - qc))
    d = np.sign(np.linalg.det(vt.T @ u.T))
    R = vt.T @ np.diag([1.0, 1.0, d]) @ u.T
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = qc - R @ pc
    return T


def _metrics(name: str, unit: str, res: np.ndarray, ref: np.ndarray) -> ChannelMetrics:
    """res/ref (N,) scalars or (N, 3) points over common times."""
    if res.ndim == 2:
        ok = np.isfinite(res).all(axis=1) & np.isfinite(ref).all(axis=1)
        err = np.linalg.norm(res[ok] - ref[ok], axis=1)
        # Points: correlation per axis, averaged; peaks on the vertical (y up) coordinate.
        rs = [np.corrcoef(res[ok, i], ref[ok, i])[0, 1] for i in range(3)
              if ok.sum() > 2 and res[ok, i].std() > _FLAT_STD and ref[ok, i].std() > _FLAT_STD]
        r = float(np.mean(rs)) if rs else float("nan")
        peak = float(res[ok, 1].max() - ref[ok, 1].max()) if ok.any() else float("nan")
    else:
        ok = np.isfinite(res) & np.isfinite(ref)
        err = np.abs(res[ok] - ref[ok])
        x, y = res[ok], ref[ok]
        r = float(np.corrcoef(x, y)[0, 1]) if ok.sum() > 2 and x.std() > _FLAT_STD and y.std() > _FLAT_STD \
            else float("nan")
        peak = float(x.max() - y.max()) if ok.any() else float("nan")
    n = int(ok.sum())
    if n == 0:
        return ChannelMetrics(name, unit, *(float("nan"),) * 5, 0)
    return ChannelMetrics(name, unit, float(np.sqrt(np.mean(err ** 2))), float(np.mean(err)),
                          float(np.max(err)), peak, r, n)


# --- main entry ------------------------------------------------------------------------------
def compare_series(result: TimeSeries, reference: TimeSeries, *, max_lag_s: float = 1.0,
                   align_time: bool = True, rigid: bool = False, allow_resample: bool = True,
                   align_channels: Sequence[str] | None = None, fixed_lag_s: float | None = None) -> Comparison:
    """Align `reference` to `result` in time (and optionally space, markers), then measure.
    `align_channels`: the channels the lag is estimated on (default: every common channel).
    `fixed_lag_s`: a lag known from the recording (same clock), used instead of a search."""
    if result.is_points != reference.is_points:
        kinds = {True: "markers (.trc)", False: "coordinates (.mot)"}
        raise Sam4dcapError(f"cannot compare {kinds[result.is_points]} with {kinds[reference.is_points]}: "
                            "give a reference of the same kind")
    common = [n for n in result.names if n in reference.names]
    if not common:
        raise Sam4dcapError(
            f"reference has no channel in common with the result (result: {', '.join(result.names[:6])}...; "
            f"reference: {', '.join(reference.names[:6])}...): same model/marker set needed")
    for s, label in ((result, "result"), (reference, "reference")):
        if s.n_frames < 3:
            raise Sam4dcapError(f"{label} has {s.n_frames} frame(s); at least 3 are needed to compare")
    res_rate, ref_rate = result.rate_hz, reference.rate_hz
    if not allow_resample and abs(res_rate - ref_rate) > 1e-3 * max(res_rate, ref_rate):
        raise Sam4dcapError(f"frame rates differ: result {res_rate:.3f} Hz, reference {ref_rate:.3f} Hz "
                            "(allow resampling or resample the reference)")
    res = _report_units(result.select(common))
    ref = _report_units(reference.select(common))
    # Channels constant in either trial carry no information on timing or shape.
    kind = "markers" if res.is_points else "coordinates"

    transform = None
    if rigid:
        if not res.is_points:
            raise Sam4dcapError("rigid alignment applies to markers (.trc) only")
    if fixed_lag_s is not None:
        lag, score, lags, scores = float(fixed_lag_s), float("nan"), np.zeros(1), np.zeros(1)
        if rigid:
            transform = np.eye(4)          # replaced by the fit on the time-aligned data below
    elif align_time:
        if rigid:
            # Timing from the shape alone: first align space at zero lag, then re-estimate.
            transform = _kabsch(_interp(ref.time, ref.values.reshape(ref.n_frames, -1), res.time)
                                .reshape(-1, 3), res.values.reshape(-1, 3))
            ref = _apply_rigid(ref, transform)
        if align_channels:
            unknown = [n for n in align_channels if n not in common]
            if unknown:
                raise Sam4dcapError(f"alignment channels not in both trials: {', '.join(unknown)}")
            lag, score, lags, scores = estimate_lag(res.select(align_channels), ref.select(align_channels),
                                                    max_lag_s=max_lag_s)
        else:
            lag, score, lags, scores = estimate_lag(res, ref, max_lag_s=max_lag_s)
    else:
        lag, score, lags, scores = 0.0, float("nan"), np.zeros(1), np.zeros(1)

    t_lo = max(res.time[0], ref.time[0] - lag)
    t_hi = min(res.time[-1], ref.time[-1] - lag)
    res_o = res.slice_time(t_lo - 1e-9, t_hi + 1e-9)
    if res_o.n_frames < 3:
        raise Sam4dcapError(f"result and reference do not overlap in time after a lag of {lag:+.3f} s "
                            f"(result {res.time[0]:.2f}..{res.time[-1]:.2f} s, reference "
                            f"{ref.time[0]:.2f}..{ref.time[-1]:.2f} s)")
    flat_ref = _interp(ref.time, ref.values.reshape(ref.n_frames, -1), res_o.time + lag)
    ref_o = TimeSeries(time=res_o.time, names=ref.names, values=flat_ref.reshape(res_o.values.shape),
                       unit=ref.unit, frame=ref.frame, meta=dict(ref.meta), channel_units=ref.channel_units)
    if rigid:
        # Final spatial fit on the time-aligned data (replaces the zero-lag estimate).
        ref_raw = _report_units(reference.select(common))
        raw_o = _interp(ref_raw.time, ref_raw.values.reshape(ref_raw.n_frames, -1), res_o.time + lag)
        transform = _kabsch(raw_o.reshape(-1, 3), res_o.values.reshape(-1, 3))
        ref_o = _apply_rigid(ref_o.with_values(raw_o.reshape(res_o.values.shape)), transform)

    metrics = []
    for i, name in enumerate(common):
        unit = "m" if res_o.is_points else ("m" if res_o.unit_of(name) == "m" else "deg")
        metrics.append(_metrics(name, unit, res_o.values[:, i], ref_o.values[:, i]))
    if all(m.n_samples == 0 for m in metrics):
        raise Sam4dcapError("no overlapping valid samples between result and reference")
    return Comparison(
        kind=kind, lag_s=lag, max_lag_s=max_lag_s, alignment_score=score, lag_scores=(lags, scores),
        result=res_o, reference=ref_o, metrics=metrics, result_rate_hz=res_rate, reference_rate_hz=ref_rate,
        rigid_transform=transform,
        only_in_result=tuple(n for n in result.names if n not in reference.names),
        only_in_reference=tuple(n for n in reference.names if n not in result.names),
        sources={"result": str(result.meta.get("source", "")), "reference": str(reference.meta.get("source", ""))},
        lag_source="given" if fixed_lag_s is not None else "search" if align_time else "none",
    )


def _apply_rigid(series: TimeSeries, transform: np.ndarray) -> TimeSeries:
    v = series.values @ transform[:3, :3].T + transform[:3, 3]
    return series.with_values(v)


def compare_files(result_path: str | Path, reference_path: str | Path, **options) -> Comparison:
    """`compare_series` on two files (see `load_series`)."""
    result = load_series(result_path)
    reference = load_series(reference_path)
    return compare_series(result, reference, **options)
