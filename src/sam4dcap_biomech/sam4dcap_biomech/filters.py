"""Filters and gap handling for marker / coordinate `TimeSeries`.

Offline: `butterworth_zero_phase` (forward-backward Butterworth: zero phase, squared gain, so the
gain at `cutoff_hz` is 0.5 (-6 dB), not 1/sqrt(2)). Online: `CausalLowpass`, one sample at a
time, whose delay is reported from its exact transfer function (`lag_s`, `phase_lag_s(f)`) and
can be checked empirically (`measure_lag_s`). `CausalLowpass.low_lag` meets a lag budget
(one frame by default) with partial lag compensation (see the class).

Gaps: `fill_gaps` interpolates interior runs of missing samples up to `max_gap_frames` long;
longer runs and leading/trailing runs (nothing to interpolate from on one side) stay NaN and are
flagged. `unwrap_angles` removes +-pi jumps of rotational channels. `jitter` is the mean absolute
second difference (units / frame^2) used in reports. All filters assume uniform sampling at the
series' median rate (`TimeSeries.rate_hz`).
"""

from __future__ import annotations

import logging
import math
import re

import numpy as np
from scipy import signal

from .errors import Sam4dcapError
from .timeseries import TimeSeries

log = logging.getLogger(__name__)

_ANGLE_UNITS = {"rad": 2 * math.pi, "deg": 360.0}


# --- helpers ---------------------------------------------------------------------------------
def _as_2d(series: TimeSeries) -> tuple[np.ndarray, tuple[int, ...]]:
    """(N, C) view of the values, C = K or 3K; plus the original shape."""
    v = series.values
    return v.reshape(v.shape[0], -1), v.shape


def true_runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) index pairs of contiguous True runs in a 1-D bool array."""
    padded = np.concatenate([[False], np.asarray(mask, bool), [False]])
    edges = np.flatnonzero(np.diff(padded.astype(np.int8)))
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2])]


_valid_runs = true_runs


def sampling_rate_hz(series: TimeSeries) -> float:
    """The series' sampling rate: the nominal meta["data_rate_hz"] (a TRC header's DataRate) when
    the time stamps agree with it within 5% (TRC times are often rounded to 1 ms: 60 Hz files
    step 0.016/0.017 s, a median of 58.8 Hz), else the median rate of the time stamps."""
    median = series.rate_hz
    nominal = series.meta.get("data_rate_hz")
    try:
        nominal = float(nominal) if nominal is not None else None
    except (TypeError, ValueError):
        nominal = None
    if nominal and np.isfinite(median) and abs(nominal / median - 1.0) < 0.05:
        return nominal
    return median


def _check_rate(series: TimeSeries, cutoff_hz: float) -> float:
    if series.n_frames < 2:
        raise Sam4dcapError("cannot filter a series with fewer than 2 frames")
    rate = sampling_rate_hz(series)
    if not (0 < cutoff_hz < rate / 2):
        raise Sam4dcapError(f"cutoff_hz={cutoff_hz} must be between 0 and the Nyquist frequency "
                            f"{rate / 2:.3g} Hz of this series ({rate:.3g} Hz)")
    steps = np.diff(series.time)
    spread = (steps.max() - steps.min()) * rate
    if spread > 0.5 or abs(np.mean(steps) * rate - 1.0) > 0.05:
        log.warning("time steps vary by %.0f%% of a frame; filters assume uniform sampling at %.3g Hz",
                    100 * spread, rate)
    return rate


def _point_missing_mask(series: TimeSeries) -> np.ndarray:
    """(N, C) missing mask where every component of a point counts as missing if any is."""
    miss = series.missing()
    if series.is_points:
        miss = np.repeat(miss, 3, axis=1)
    return miss


# --- offline zero-phase ----------------------------------------------------------------------
def butterworth_sos(*, rate_hz: float, cutoff_hz: float, order: int) -> np.ndarray:
    if order < 1:
        raise Sam4dcapError(f"filter order must be >= 1 (got {order})")
    if not (0 < cutoff_hz < rate_hz / 2):
        raise Sam4dcapError(f"cutoff_hz={cutoff_hz} must be between 0 and Nyquist ({rate_hz / 2:.3g} Hz)")
    return signal.butter(order, cutoff_hz, btype="low", fs=rate_hz, output="sos")


def zero_phase_gain(freq_hz, *, rate_hz: float, cutoff_hz: float, order: int = 4) -> np.ndarray:
    """Analytic gain of `butterworth_zero_phase` at `freq_hz` (bilinear-warped Butterworth, squared)."""
    ratio = np.tan(np.pi * np.asarray(freq_hz, float) / rate_hz) / np.tan(np.pi * cutoff_hz / rate_hz)
    return 1.0 / (1.0 + ratio ** (2 * order))


def butterworth_zero_phase(series: TimeSeries, *, cutoff_hz: float, order: int = 4) -> TimeSeries:
    """Zero-phase low-pass (scipy sosfiltfilt) of every channel, NaN-aware.

    Each contiguous run of valid samples is filtered on its own (gaps stay NaN). Runs shorter
    than filtfilt's padding need (3 * (2 * sections + 1) samples, 15 for order 4) are returned
    unfiltered, and counted in meta["unfiltered_short_runs"].
    """
    rate = _check_rate(series, cutoff_hz)
    sos = butterworth_sos(rate_hz=rate, cutoff_hz=cutoff_hz, order=order)
    padlen = 3 * (2 * len(sos) + 1 - min((sos[:, 2] == 0).sum(), (sos[:, 5] == 0).sum()))
    flat, shape = _as_2d(series)
    miss = _point_missing_mask(series)
    out = np.full_like(flat, np.nan)
    short_runs = 0
    for c in range(flat.shape[1]):
        for start, stop in _valid_runs(~miss[:, c]):
            seg = flat[start:stop, c]
            if stop - start > padlen:
                out[start:stop, c] = signal.sosfiltfilt(sos, seg)
            else:
                out[start:stop, c] = seg
                short_runs += 1
    if short_runs:
        log.info("butterworth_zero_phase: %d valid runs shorter than %d samples left unfiltered",
                 short_runs, padlen + 1)
    meta = dict(series.meta, lowpass_cutoff_hz=cutoff_hz, lowpass_order=order, lowpass="butterworth_zero_phase",
                unfiltered_short_runs=short_runs)
    return series.with_values(out.reshape(shape), meta=meta)


# --- online causal -----------------------------------------------------------------------
def _lowpass_sos(*, rate_hz: float, cutoff_hz: float, order: int, compensate_lag: float) -> np.ndarray:
    """Butterworth sections, plus the lag-compensation section y + a*D*(y - y_prev) when a > 0."""
    sos = butterworth_sos(rate_hz=rate_hz, cutoff_hz=cutoff_hz, order=order)
    if compensate_lag:
        delay = compensate_lag * _group_delay_samples(sos, 1e-4 * cutoff_hz / rate_hz)
        sos = np.vstack([sos, [1.0 + delay, -delay, 0.0, 1.0, 0.0, 0.0]])
    return sos


def _passband_lag_samples(sos: np.ndarray, cutoff_over_rate: float) -> float:
    """Largest phase delay [samples] of a sine with frequency in (0, cutoff]."""
    w = np.linspace(1e-3, 1.0, 200) * cutoff_over_rate * 2 * np.pi
    _, h = signal.sosfreqz(sos, worN=w)
    return float(np.max(-np.unwrap(np.angle(h)) / w))


def _white_noise_jitter_gain(sos: np.ndarray) -> float:
    """RMS second difference of the output over that of the input, for white noise input."""
    w, h = signal.sosfreqz(sos, worN=1024)
    d2 = np.abs(1 - np.exp(-1j * w)) ** 4
    return float(np.sqrt(np.sum(np.abs(h) ** 2 * d2) / np.sum(d2)))


class CausalLowpass:
    """Causal low-pass for a live stream, fed one sample (all channels) at a time.

    Butterworth of `order` at `cutoff_hz`, in second-order sections. `lag_s` is the largest
    phase delay of a sine in the passband (0, cutoff], from the exact transfer function
    (`measure_lag_s` checks it by running the filter on a sine). Plain Butterworth at 60 Hz
    with an 8 Hz cutoff: order 1 -> 1.1 frames, order 2 -> 1.9 frames, order 4 -> 3.8 frames.

    `compensate_lag=a` (0..1, True = 1) appends y += a * D * (y - y_prev), D = the Butterworth's
    low-frequency group delay in samples: a first-order prediction that cancels that fraction of
    the delay of slow movements (still a linear causal filter, analysed exactly). Price: gain
    above 1 near the cutoff (`gain(f)`) and less noise rejection (`jitter_gain`).

    `CausalLowpass.low_lag(...)` picks, for a lag budget (default one frame), the order (1 or 2)
    and the smallest compensation meeting it with the best noise rejection: the option for
    stages that may add at most one frame of lag at their cutoff.

    NaN handling: a channel (a point, if any of its x/y/z is NaN) with NaN input outputs NaN and
    its state is reset; the next valid sample restarts it at steady state on that value, as the
    very first sample does (no start-up transient from zero).
    """

    def __init__(self, n_channels: int, *, rate_hz: float, cutoff_hz: float, order: int = 2,
                 compensate_lag: bool | float = False):
        if n_channels < 1:
            raise Sam4dcapError(f"n_channels must be >= 1 (got {n_channels})")
        compensate = float(compensate_lag)
        if not 0.0 <= compensate <= 1.0:
            raise Sam4dcapError(f"compensate_lag must be between 0 and 1 (got {compensate_lag})")
        self.n_channels = int(n_channels)
        self.rate_hz = float(rate_hz)
        self.cutoff_hz = float(cutoff_hz)
        self.order = int(order)
        self.compensate_lag = compensate
        self.sos = _lowpass_sos(rate_hz=self.rate_hz, cutoff_hz=self.cutoff_hz, order=self.order,
                                compensate_lag=compensate)
        self._state: np.ndarray | None = None   # (sections, 2, C)
        self._active: np.ndarray | None = None  # (C,) False until a channel has a valid sample
        self._shape: tuple[int, ...] | None = None

    @classmethod
    def low_lag(cls, n_channels: int, *, rate_hz: float, cutoff_hz: float,
                max_lag_frames: float = 1.0) -> "CausalLowpass":
        """The order-1/2 filter, with the least lag compensation, whose lag_s <= max_lag_frames
        frames and whose white-noise jitter gain is lowest."""
        best = None
        for order in (1, 2):
            base = butterworth_sos(rate_hz=rate_hz, cutoff_hz=cutoff_hz, order=order)
            for a in np.linspace(0.0, 1.0, 41):
                sos = _lowpass_sos(rate_hz=rate_hz, cutoff_hz=cutoff_hz, order=order, compensate_lag=a) \
                    if a else base
                if _passband_lag_samples(sos, cutoff_hz / rate_hz) <= max_lag_frames:
                    score = _white_noise_jitter_gain(sos)
                    if best is None or score < best[0]:
                        best = (score, order, float(a))
                    break  # more compensation only costs noise rejection
        if best is None:
            raise Sam4dcapError(f"no order-1/2 low-pass at {cutoff_hz} Hz / {rate_hz} Hz keeps the lag "
                                f"under {max_lag_frames} frames; raise the cutoff or the lag budget")
        return cls(n_channels, rate_hz=rate_hz, cutoff_hz=cutoff_hz, order=best[1], compensate_lag=best[2])

    # transfer-function analysis (exact, from the coefficients)
    def gain(self, freq_hz) -> np.ndarray:
        _, h = signal.sosfreqz(self.sos, worN=np.atleast_1d(np.asarray(freq_hz, float)), fs=self.rate_hz)
        return np.abs(h)

    def phase_lag_s(self, freq_hz: float) -> float:
        """Phase delay at `freq_hz` [s]: how late a sine of that frequency comes out."""
        # Unwrap along a grid from ~0 Hz: above 180 degrees of phase a single angle is ambiguous.
        grid = np.linspace(1e-4 * freq_hz, freq_hz, 256)
        _, h = signal.sosfreqz(self.sos, worN=grid, fs=self.rate_hz)
        return float(-np.unwrap(np.angle(h))[-1] / (2 * np.pi * freq_hz))

    @property
    def lag_s(self) -> float:
        """The filter's lag [s]: the largest phase delay of any sine in the passband (0, cutoff].

        For Butterworth order >= 2 that is the delay at the cutoff; for order 1 it is the
        low-frequency group delay `group_delay_s` (slow movements).
        """
        return _passband_lag_samples(self.sos, self.cutoff_hz / self.rate_hz) / self.rate_hz

    @property
    def lag_frames(self) -> float:
        return self.lag_s * self.rate_hz

    @property
    def group_delay_s(self) -> float:
        """Group delay near 0 Hz [s]: how late a slow movement (a ramp) comes out."""
        return _group_delay_samples(self.sos, 1e-4 * self.cutoff_hz / self.rate_hz) / self.rate_hz

    @property
    def jitter_gain(self) -> float:
        """Output/input ratio of the RMS second difference for white-noise input (< 1 = smoother)."""
        return _white_noise_jitter_gain(self.sos)

    def measure_lag_s(self, freq_hz: float, *, duration_s: float = 10.0) -> float:
        """Empirical phase delay: run a fresh copy of this filter on a sine, fit the output phase."""
        probe = CausalLowpass(1, rate_hz=self.rate_hz, cutoff_hz=self.cutoff_hz, order=self.order,
                              compensate_lag=self.compensate_lag)
        t = np.arange(int(duration_s * self.rate_hz)) / self.rate_hz
        x = np.sin(2 * np.pi * freq_hz * t)
        y = np.array([probe.step(np.array([v]))[0] for v in x])
        keep = t >= duration_s / 2  # past the start-up transient
        basis = np.stack([np.sin(2 * np.pi * freq_hz * t[keep]), np.cos(2 * np.pi * freq_hz * t[keep])], 1)
        (a, b), *_ = np.linalg.lstsq(basis, y[keep], rcond=None)
        # y = A sin(wt - phi) = A cos(phi) sin(wt) - A sin(phi) cos(wt)
        phi = np.arctan2(-b, a)
        # The fit knows the phase modulo one period: take the branch nearest the analytic delay.
        period_s = 1.0 / freq_hz
        lag = phi / (2 * np.pi * freq_hz)
        return float(lag + period_s * np.round((self.phase_lag_s(freq_hz) - lag) / period_s))

    def describe(self) -> str:
        return (f"causal Butterworth order {self.order} at {self.cutoff_hz:g} Hz"
                f"{f', lag compensation {self.compensate_lag:.2f}' if self.compensate_lag else ''}: "
                f"lag {self.lag_frames:.2f} frames ({1e3 * self.lag_s:.1f} ms) at {self.rate_hz:g} Hz")

    # streaming
    def reset(self) -> None:
        self._state = None
        self._active = None
        self._shape = None

    def step(self, x: np.ndarray) -> np.ndarray:
        """Filter one sample: x is (K,) or (K, 3) with K = n_channels; returns the same shape."""
        x = np.asarray(x, float)
        if x.shape[0] != self.n_channels or x.ndim not in (1, 2) or (x.ndim == 2 and x.shape[1] != 3):
            raise Sam4dcapError(f"CausalLowpass({self.n_channels}) got a sample of shape {x.shape}; "
                                f"expected ({self.n_channels},) or ({self.n_channels}, 3)")
        if self._shape is None:
            self._shape = x.shape
            n = x.size
            self._state = np.zeros((len(self.sos), 2, n))
            self._active = np.zeros(n, bool)
        elif x.shape != self._shape:
            raise Sam4dcapError(f"CausalLowpass sample shape changed from {self._shape} to {x.shape}")
        assert self._active is not None and self._state is not None   # set with the shape
        miss = np.isnan(x).any(axis=1) if x.ndim == 2 else np.isnan(x)
        if x.ndim == 2:
            miss = np.repeat(miss, 3)
        flat = x.reshape(-1)
        start = ~miss & ~self._active
        if start.any():
            self._init_steady(start, flat)
        self._active = ~miss
        y = flat.copy()
        z = self._state
        for s, (b0, b1, b2, _, a1, a2) in enumerate(self.sos):
            # Direct form II transposed, vectorised across channels.
            out = b0 * y + z[s, 0]
            z[s, 0] = b1 * y - a1 * out + z[s, 1]
            z[s, 1] = b2 * y - a2 * out
            y = out
        y[miss] = np.nan
        z[:, :, miss] = 0.0
        return y.reshape(x.shape)

    def _init_steady(self, channels: np.ndarray, x: np.ndarray) -> None:
        assert self._state is not None
        value = x[channels]
        for s, (b0, b1, b2, _, a1, a2) in enumerate(self.sos):
            out = value * (b0 + b1 + b2) / (1.0 + a1 + a2)
            self._state[s, 1, channels] = b2 * value - a2 * out
            self._state[s, 0, channels] = b1 * value - a1 * out + self._state[s, 1, channels]
            value = out


def _group_delay_samples(sos: np.ndarray, w_normalized: float) -> float:
    """Group delay [samples] of an SOS cascade at normalised frequency w (cycles/sample)."""
    total = 0.0
    for section in sos:
        _, gd = signal.group_delay((section[:3], section[3:]), w=[2 * np.pi * w_normalized])
        total += float(gd[0])
    return total


def filter_causal(series: TimeSeries, *, cutoff_hz: float, order: int = 2,
                  compensate_lag: bool | float = False, low_lag: bool = False) -> TimeSeries:
    """Run `CausalLowpass` over a whole series (what the live stream would have produced)."""
    rate = _check_rate(series, cutoff_hz)
    if low_lag:
        filt = CausalLowpass.low_lag(len(series.names), rate_hz=rate, cutoff_hz=cutoff_hz)
    else:
        filt = CausalLowpass(len(series.names), rate_hz=rate, cutoff_hz=cutoff_hz, order=order,
                             compensate_lag=compensate_lag)
    out = np.stack([filt.step(series.values[i]) for i in range(series.n_frames)])
    meta = dict(series.meta, lowpass="causal", lowpass_cutoff_hz=cutoff_hz, lowpass_order=filt.order,
                lowpass_lag_s=filt.lag_s, lowpass_compensate_lag=filt.compensate_lag)
    return series.with_values(out, meta=meta)


# --- gaps --------------------------------------------------------------------------------------
def fill_gaps(series: TimeSeries, *, max_gap_frames: int, method: str = "cubic") -> tuple[TimeSeries, np.ndarray]:
    """Interpolate interior gaps of up to `max_gap_frames` missing frames per channel.

    method "cubic" (natural cubic spline through the channel's valid samples; linear when fewer
    than 4) or "linear". Longer gaps, and gaps touching the start or end, stay NaN.
    Returns (filled series, flags (N, K) True where a sample is still missing).
    A point channel counts as missing when any of its x/y/z is NaN; all three are filled together.
    """
    if max_gap_frames < 0:
        raise Sam4dcapError(f"max_gap_frames must be >= 0 (got {max_gap_frames})")
    if method not in ("cubic", "linear"):
        raise Sam4dcapError(f"fill_gaps method {method!r}: choose cubic or linear")
    from scipy.interpolate import CubicSpline

    miss = series.missing()
    values = series.values.copy()
    t = series.time
    n = series.n_frames
    for k in range(len(series.names)):
        valid = ~miss[:, k]
        if valid.sum() < 2 or valid.all():
            continue
        fill = np.zeros(n, bool)
        for start, stop in _valid_runs(~valid):
            if start > 0 and stop < n and stop - start <= max_gap_frames:
                fill[start:stop] = True
        if not fill.any():
            continue
        known = values[valid, k]
        if method == "cubic" and valid.sum() >= 4:
            interp = CubicSpline(t[valid], known, axis=0, bc_type="natural")(t[fill])
        else:
            interp = np.stack([np.interp(t[fill], t[valid], c) for c in np.atleast_2d(known.T)], -1)
            interp = interp.reshape((fill.sum(),) + known.shape[1:])
        values[fill, k] = interp
    if series.is_points:
        # A partially-NaN point left unfilled is wholly missing.
        still = np.isnan(values).any(axis=2)
        values[still] = np.nan
    else:
        still = np.isnan(values)
    meta = dict(series.meta, gaps_filled_max_frames=max_gap_frames)
    return series.with_values(values, meta=meta), still


# --- angles ----------------------------------------------------------------------------------
def rotational_channels(series: TimeSeries) -> list[str]:
    """Channels holding angles: unit rad/deg, excluding translations (length channel_units or *_t[xyz])."""
    names = []
    for name in series.names:
        unit = series.unit_of(name)
        if unit not in _ANGLE_UNITS:
            continue
        if name not in series.channel_units and re.search(r"_t[xyz]$", name):
            continue
        names.append(name)
    return names


def unwrap_angles(series: TimeSeries) -> TimeSeries:
    """Remove +-pi (+-180 deg) jumps from rotational channels; NaN samples are skipped over."""
    if series.is_points:
        raise Sam4dcapError("unwrap_angles needs scalar angle channels, got a point series")
    values = series.values.copy()
    for name in rotational_channels(series):
        k = series.index(name)
        valid = ~np.isnan(values[:, k])
        if valid.sum() > 1:
            values[valid, k] = np.unwrap(values[valid, k], period=_ANGLE_UNITS[series.unit_of(name)])
    return series.with_values(values)


# --- metrics / resampling --------------------------------------------------------------------
def jitter(series: TimeSeries) -> dict[str, float]:
    """Mean absolute second difference per channel, in the series' unit per frame^2.

    Points: mean Euclidean norm of the 3-D second difference. Second differences touching a
    missing sample are skipped; NaN when a channel has none.
    """
    v = series.values
    d2 = v[2:] - 2 * v[1:-1] + v[:-2]
    mag = np.linalg.norm(d2, axis=2) if series.is_points else np.abs(d2)
    out = {}
    for k, name in enumerate(series.names):
        m = mag[:, k]
        m = m[~np.isnan(m)]
        out[name] = float(m.mean()) if m.size else float("nan")
    return out


def resample(series: TimeSeries, times) -> TimeSeries:
    """Linear interpolation at `times`; NaN outside the series' span or next to a missing sample."""
    times = np.asarray(times, float)
    flat, shape = _as_2d(series)
    out = np.full((times.size, flat.shape[1]), np.nan)
    if series.n_frames >= 2:
        idx = np.clip(np.searchsorted(series.time, times, side="right") - 1, 0, series.n_frames - 2)
        t0, t1 = series.time[idx], series.time[idx + 1]
        w = ((times - t0) / (t1 - t0))[:, None]
        out = (1 - w) * flat[idx] + w * flat[idx + 1]
        # An exact hit on a sample must not be poisoned by a NaN neighbour.
        exact = np.isclose(w[:, 0], 0.0)
        out[exact] = flat[idx[exact]]
        exact1 = np.isclose(w[:, 0], 1.0)
        out[exact1] = flat[idx[exact1] + 1]
        outside = (times < series.time[0]) | (times > series.time[-1])
        out[outside] = np.nan
    if series.is_points:
        out = out.reshape(times.size, shape[1], 3)
        out[np.isnan(out).any(axis=2)] = np.nan
    return series.with_values(out, time=times)
