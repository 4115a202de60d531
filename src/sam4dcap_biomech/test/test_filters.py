"""Filters checked against analytic responses: Butterworth gain, phase, ramp delay, gaps, jitter."""

import math

import numpy as np
import pytest

from sam4dcap_biomech.errors import Sam4dcapError
from sam4dcap_biomech.filters import (CausalLowpass, butterworth_zero_phase, fill_gaps,
                                      filter_causal, jitter, resample, sampling_rate_hz,
                                      unwrap_angles)
from sam4dcap_biomech.timeseries import TimeSeries

RATE = 100.0


def sine_series(freq_hz, *, seconds=6.0, rate=RATE, amplitude=1.0):
    t = np.arange(int(seconds * rate)) / rate
    return TimeSeries.from_dict(t, {"a": amplitude * np.sin(2 * np.pi * freq_hz * t)}, unit="rad")


def fit_sine(t, y, freq_hz):
    """Amplitude and phase (rad) of y ~ A sin(2 pi f t + phase)."""
    basis = np.stack([np.sin(2 * np.pi * freq_hz * t), np.cos(2 * np.pi * freq_hz * t)], 1)
    (a, b), *_ = np.linalg.lstsq(basis, y, rcond=None)
    return math.hypot(a, b), math.atan2(b, a)


def butterworth_power_gain(freq_hz, cutoff_hz, order, rate):
    """|H|^2 of a digital (bilinear, prewarped) Butterworth: filtfilt applies it as a real gain."""
    ratio = math.tan(math.pi * freq_hz / rate) / math.tan(math.pi * cutoff_hz / rate)
    return 1.0 / (1.0 + ratio ** (2 * order))


def test_zero_phase_passes_low_sine_unchanged():
    series = sine_series(1.5)
    out = butterworth_zero_phase(series, cutoff_hz=6.0, order=4)
    mid = slice(100, 500)  # away from the ends' padding effects
    amp, phase = fit_sine(series.time[mid], out.values[mid, 0], 1.5)
    assert abs(amp - 1.0) < 0.01
    assert abs(phase) < 1e-3  # zero phase: no shift at all, not just a small one
    assert out.meta["lowpass_cutoff_hz"] == 6.0


@pytest.mark.parametrize("freq_hz", [6.0, 9.0, 15.0])
def test_zero_phase_attenuates_as_butterworth_formula(freq_hz):
    series = sine_series(freq_hz)
    out = butterworth_zero_phase(series, cutoff_hz=6.0, order=4)
    mid = slice(150, 450)
    amp, phase = fit_sine(series.time[mid], out.values[mid, 0], freq_hz)
    expected = butterworth_power_gain(freq_hz, 6.0, 4, RATE)
    assert amp == pytest.approx(expected, rel=0.02, abs=1e-4)
    if freq_hz == 6.0:
        assert amp == pytest.approx(0.5, rel=0.02)  # -6 dB at the cutoff for forward-backward
    assert abs(phase) < 5e-3


def test_zero_phase_nan_runs_and_short_runs():
    t = np.arange(200) / RATE
    x = np.sin(2 * np.pi * 1.0 * t) + 0.2 * np.sin(2 * np.pi * 30 * t)
    x[100:110] = np.nan       # gap splits into two long runs
    x[150:160] = np.nan
    x[170:180] = np.nan       # run 160..170 (10 samples) is too short for filtfilt padding
    series = TimeSeries.from_dict(t, {"a": x}, unit="m")
    out = butterworth_zero_phase(series, cutoff_hz=5.0, order=4)
    np.testing.assert_array_equal(np.isnan(out.values[:, 0]), np.isnan(x))
    np.testing.assert_array_equal(out.values[160:170, 0], x[160:170])
    assert out.meta["unfiltered_short_runs"] == 1
    # The 30 Hz component is gone from a long run (gain^2 ~ 1e-8), the 1 Hz one is kept.
    clean = np.sin(2 * np.pi * 1.0 * t)
    assert np.max(np.abs(out.values[20:80, 0] - clean[20:80])) < 0.01


def test_zero_phase_on_points_keeps_shape_and_missing_points():
    t = np.arange(120) / RATE
    values = np.stack([np.stack([np.sin(t), np.cos(t), t], 1)] * 2, 1)
    values[30:35, 1, 2] = np.nan  # one component missing -> whole point missing
    series = TimeSeries(time=t, names=("p", "q"), values=values)
    out = butterworth_zero_phase(series, cutoff_hz=6.0)
    assert out.values.shape == values.shape
    assert np.isnan(out.values[30:35, 1]).all() and not np.isnan(out.values[:, 0]).any()
    np.testing.assert_allclose(out.values[40:80, 0], values[40:80, 0], atol=2e-3)


@pytest.mark.parametrize("order", [1, 2, 4])
def test_causal_lag_measured_equals_transfer_function(order):
    filt = CausalLowpass(1, rate_hz=60.0, cutoff_hz=8.0, order=order)
    for freq in (2.0, 8.0):
        assert filt.measure_lag_s(freq) == pytest.approx(filt.phase_lag_s(freq), abs=1e-4)
    # Plain Butterworth: -3 dB at the cutoff (causal, applied once).
    assert filt.gain(8.0)[0] == pytest.approx(1 / math.sqrt(2), rel=1e-6)
    # lag_s is the largest phase delay of the passband.
    assert filt.lag_s >= filt.phase_lag_s(8.0) - 1e-6 and filt.lag_s >= filt.group_delay_s - 1e-6


@pytest.mark.parametrize("order,compensate", [(2, 0.0), (1, 0.0), (2, 0.5), (1, 1.0), (2, 1.0)])
def test_causal_ramp_is_delayed_by_group_delay(order, compensate):
    rate = 60.0
    filt = CausalLowpass(1, rate_hz=rate, cutoff_hz=6.0, order=order, compensate_lag=compensate)
    t = np.arange(400) / rate
    # Steady start on a constant, then a ramp of slope 0.5/s from t = 1 s.
    x = np.where(t < 1.0, 0.5, 0.5 + 0.5 * (t - 1.0))
    y = np.array([filt.step(np.array([v]))[0] for v in x])
    late = t > 4.0
    delay_s = np.mean((x[late] - y[late]) / 0.5)
    # A linear filter's steady-state ramp delay is its DC group delay.
    assert delay_s == pytest.approx(filt.group_delay_s, abs=1e-6)
    if compensate == 0.0 and order == 1:
        # Analytic: 1 / Omega_c with the bilinear transform's prewarped Omega_c = 2 fs tan(pi fc / fs).
        assert filt.group_delay_s == pytest.approx(1 / (2 * rate * np.tan(np.pi * 6.0 / rate)), rel=1e-4)
    if compensate == 1.0:
        assert abs(delay_s) < 1e-6


@pytest.mark.parametrize("rate_hz,cutoff_hz", [(60.0, 8.0), (30.0, 8.0), (60.0, 4.0), (30.0, 6.0), (25.0, 6.0),
                                               (120.0, 8.0)])
def test_low_lag_option_adds_at_most_one_frame(rate_hz, cutoff_hz):
    filt = CausalLowpass.low_lag(1, rate_hz=rate_hz, cutoff_hz=cutoff_hz)
    assert filt.lag_frames <= 1.0
    # Measured by running it: at the cutoff and at a slow frequency.
    assert 0.0 <= filt.measure_lag_s(cutoff_hz) * rate_hz <= 1.0
    assert 0.0 <= filt.measure_lag_s(cutoff_hz / 10) * rate_hz <= 1.0
    # Still smooths: white-noise jitter at most half of the input's, and a plain order-2
    # Butterworth at that cutoff is slower than one frame whenever compensation was needed.
    assert filt.jitter_gain < 0.5
    if filt.compensate_lag:
        assert CausalLowpass(1, rate_hz=rate_hz, cutoff_hz=cutoff_hz, order=2).lag_frames > 1.0
    with pytest.raises(Sam4dcapError, match="lag"):
        CausalLowpass.low_lag(1, rate_hz=rate_hz, cutoff_hz=cutoff_hz, max_lag_frames=0.0)


def test_jitter_gain_matches_white_noise_simulation():
    filt = CausalLowpass(1, rate_hz=60.0, cutoff_hz=8.0, order=2)
    noise = np.random.default_rng(0).normal(size=20000)
    out = np.array([filt.step(np.array([v]))[0] for v in noise])
    ratio = np.std(np.diff(out[100:], 2)) / np.std(np.diff(noise[100:], 2))
    assert ratio == pytest.approx(filt.jitter_gain, rel=0.05)


def test_causal_nan_resets_channel_and_restarts_steady():
    filt = CausalLowpass(2, rate_hz=30.0, cutoff_hz=5.0, order=2)
    first = filt.step(np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]))
    np.testing.assert_allclose(first, [[1, 2, 3], [4, 5, 6]])  # steady start, no transient
    for _ in range(5):
        filt.step(np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]))
    out = filt.step(np.array([[np.nan, 2.0, 3.0], [4.0, 5.0, 6.0]]))
    assert np.isnan(out[0]).all() and not np.isnan(out[1]).any()
    out = filt.step(np.array([[7.0, 8.0, 9.0], [4.0, 5.0, 6.0]]))
    np.testing.assert_allclose(out, [[7, 8, 9], [4, 5, 6]])  # restarted at the new value
    with pytest.raises(Sam4dcapError, match="shape"):
        filt.step(np.zeros(2))
    with pytest.raises(Sam4dcapError, match="shape"):
        CausalLowpass(3, rate_hz=30.0, cutoff_hz=5.0).step(np.zeros(4))


def test_filter_causal_series_matches_step_loop():
    series = sine_series(3.0, seconds=1.0)
    out = filter_causal(series, cutoff_hz=8.0, order=2)
    filt = CausalLowpass(1, rate_hz=RATE, cutoff_hz=8.0, order=2)
    expected = [filt.step(series.values[i])[0] for i in range(series.n_frames)]
    np.testing.assert_allclose(out.values[:, 0], expected)
    assert out.meta["lowpass_lag_s"] == pytest.approx(filt.lag_s)


def test_fill_gaps_exact_on_linear_signal_and_flags_long_gaps():
    t = np.arange(60) / 30.0
    x = 2.0 - 3.0 * t
    y = x.copy()
    y[0:2] = np.nan        # leading: nothing before it -> stays missing
    y[10:13] = np.nan      # 3 frames: filled
    y[30:40] = np.nan      # 10 frames: too long
    series = TimeSeries.from_dict(t, {"x": y, "z": x}, unit="m")
    for method in ("cubic", "linear"):
        filled, flags = fill_gaps(series, max_gap_frames=5, method=method)
        np.testing.assert_allclose(filled.values[10:13, 0], x[10:13], atol=1e-12)
        expected_flags = np.zeros((60, 2), bool)
        expected_flags[0:2, 0] = expected_flags[30:40, 0] = True
        np.testing.assert_array_equal(flags, expected_flags)
        assert np.isnan(filled.values[30:40, 0]).all()


def test_fill_gaps_points_fill_all_components():
    t = np.arange(20) / 10.0
    pts = np.stack([t, 2 * t, -t], 1)[:, None, :]
    vals = pts.copy()
    vals[5:7, 0, 1] = np.nan  # partial NaN point
    series = TimeSeries(time=t, names=("m",), values=vals)
    filled, flags = fill_gaps(series, max_gap_frames=2)
    np.testing.assert_allclose(filled.values, pts, atol=1e-12)
    assert not flags.any()
    _, flags = fill_gaps(series, max_gap_frames=1)
    assert flags[5:7, 0].all()
    with pytest.raises(Sam4dcapError, match="max_gap_frames"):
        fill_gaps(series, max_gap_frames=-1)


def test_unwrap_angles_wrapped_ramp_and_leaves_translations():
    t = np.arange(100) / 50.0
    ramp = -3.0 + 4.0 * t  # rad, passes +pi once (and about -1 rad/frame^0 slope 0.08 rad/frame)
    wrapped = np.angle(np.exp(1j * ramp))
    assert np.max(np.abs(np.diff(wrapped))) > 6.0  # really wrapped
    tx = np.where(t > 1.0, 5.0, 0.0)  # a 5 m step in a translation must survive
    wrapped_with_nan = wrapped.copy()
    wrapped_with_nan[50] = np.nan
    series = TimeSeries.from_dict(t, {"pelvis_rotation": wrapped_with_nan, "pelvis_tx": tx}, unit="rad")
    out = unwrap_angles(series)
    valid = ~np.isnan(wrapped_with_nan)
    np.testing.assert_allclose(out.values[valid, 0], ramp[valid], atol=1e-12)
    np.testing.assert_array_equal(out.values[:, 1], tx)
    deg = TimeSeries.from_dict(t, {"knee": np.degrees(wrapped)}, unit="deg")
    np.testing.assert_allclose(unwrap_angles(deg).values[:, 0], np.degrees(ramp), atol=1e-9)


def test_jitter_of_quadratics():
    n = np.arange(50, dtype=float)
    scalars = TimeSeries.from_dict(n / 30.0, {"a": 0.5 * n ** 2, "b": -2.0 * n ** 2 + 3 * n}, unit="rad")
    assert jitter(scalars) == pytest.approx({"a": 1.0, "b": 4.0})
    pts = np.stack([0.3 * n ** 2, 0.4 * n ** 2, 7 + 0 * n], 1)[:, None, :]
    pts[10] = np.nan  # second differences touching frame 10 are skipped
    points = TimeSeries(time=n / 30.0, names=("m",), values=pts)
    assert jitter(points)["m"] == pytest.approx(2 * 0.5)


def test_resample_linear_exact_and_nan_outside():
    t = np.arange(10) / 10.0
    series = TimeSeries.from_dict(t, {"a": 3 * t + 1}, unit="m")
    new_t = np.array([-0.05, 0.0, 0.05, 0.43, 0.9, 0.95])
    out = resample(series, new_t)
    np.testing.assert_allclose(out.values[1:5, 0], 3 * new_t[1:5] + 1, atol=1e-12)
    assert np.isnan(out.values[0, 0]) and np.isnan(out.values[5, 0])


def test_filter_bad_input():
    series = sine_series(1.0, seconds=1.0)
    with pytest.raises(Sam4dcapError, match="Nyquist"):
        butterworth_zero_phase(series, cutoff_hz=60.0)
    with pytest.raises(Sam4dcapError, match="order"):
        butterworth_zero_phase(series, cutoff_hz=6.0, order=0)
    with pytest.raises(Sam4dcapError, match="Nyquist"):
        CausalLowpass(2, rate_hz=30.0, cutoff_hz=20.0)
    with pytest.raises(Sam4dcapError, match="fewer than 2 frames"):
        butterworth_zero_phase(series.frames(slice(0, 1)), cutoff_hz=6.0)


def test_sampling_rate_uses_nominal_rate_for_rounded_times():
    times = np.round(np.arange(151) / 60.0, 3)  # TRC-style 1 ms rounding: median step 0.017 s
    series = TimeSeries.from_dict(times, {"a": np.zeros(151)}, unit="m", meta={"data_rate_hz": 60.0})
    assert series.rate_hz == pytest.approx(1 / 0.017)
    assert sampling_rate_hz(series) == 60.0
    far = TimeSeries.from_dict(times, {"a": np.zeros(151)}, unit="m", meta={"data_rate_hz": 100.0})
    assert sampling_rate_hz(far) == pytest.approx(1 / 0.017)  # header contradicts the stamps
