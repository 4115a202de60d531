#!/usr/bin/env python
"""Jitter (mean absolute second difference) raw vs online vs offline filtering, and each filter's lag.

Trials: the Gait2354 walk markers (subject01_walk1.trc, 60 Hz mocap, taken as the clean truth)
from ../shared/data/gait2354 when present, and always a synthetic 60 Hz trial (43 markers
moving as sums of 0.3-3 Hz sines). "Raw" = truth + white noise of 8 mm SD per axis (the order
of monocular keypoint jitter). Filters compared, all on the same raw data in one run:
online causal Butterworth order 2 at 8 Hz (markers_node's default cutoff), the low-lag online
option (CausalLowpass.low_lag, <= 1 frame) at 8 Hz, and offline zero-phase Butterworth order 4
at 6 Hz and 8 Hz. Lag: from the transfer function (lag_s, largest phase delay in the passband)
and measured as the time shift that best aligns the filtered trial with the truth.
Writes bench/results/filters_jitter.md; the last stdout line is the summary (figure last).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
GAIT2354 = ROOT.parent / "shared" / "data" / "gait2354"
if not GAIT2354.is_dir():
    GAIT2354 = Path("/work/shared/data/gait2354")
NOISE_SD_M = 0.008
ONLINE_CUTOFF_HZ = 8.0


def synthetic_truth(rate_hz=60.0, seconds=10.0, n_markers=43):
    from sam4dcap_biomech.timeseries import TimeSeries

    rng = np.random.default_rng(1)
    t = np.arange(int(rate_hz * seconds)) / rate_hz
    values = np.zeros((t.size, n_markers, 3))
    for m in range(n_markers):
        for axis in range(3):
            for _ in range(3):
                f = rng.uniform(0.3, 3.0)
                values[:, m, axis] += rng.uniform(0.02, 0.15) * np.sin(2 * np.pi * f * t + rng.uniform(0, 6.3))
    values += rng.uniform(-1, 1, (1, n_markers, 3))
    return TimeSeries(time=t, names=tuple(f"m{i}" for i in range(n_markers)), values=values, frame="world")


def mean_jitter_mm(series) -> float:
    from sam4dcap_biomech.filters import jitter

    return 1000.0 * float(np.nanmean(list(jitter(series).values())))


def rmse_mm(a, b, keep) -> float:
    d = np.linalg.norm(a.values[keep] - b.values[keep], axis=2)
    return 1000.0 * float(np.sqrt(np.nanmean(d ** 2)))


def measured_lag_s(filtered, truth, keep) -> float:
    """Shift tau minimising || filtered(t) - truth(t - tau) || (truth interpolated), +-3 frames."""
    from sam4dcap_biomech.filters import resample

    from sam4dcap_biomech.filters import sampling_rate_hz

    dt = 1.0 / sampling_rate_hz(truth)
    taus = np.arange(-3.0, 3.0001, 0.01) * dt
    errs = []
    for tau in taus:
        shifted = resample(truth, truth.time - tau)
        d = filtered.values[keep] - shifted.values[keep]
        errs.append(np.nanmean(d ** 2))
    i = int(np.argmin(errs))
    return float(taus[i])


def run_trial(label, truth):
    from sam4dcap_biomech.filters import CausalLowpass, butterworth_zero_phase, filter_causal, sampling_rate_hz

    rng = np.random.default_rng(2)
    raw = truth.with_values(truth.values + rng.normal(0.0, NOISE_SD_M, truth.values.shape))
    rate = sampling_rate_hz(truth)  # the TRC's DataRate (its times are rounded to 1 ms)
    keep = np.zeros(truth.n_frames, bool)
    keep[int(rate):-int(rate)] = True  # skip 1 s at each end (start-up transients, padding)
    low_lag = CausalLowpass.low_lag(1, rate_hz=rate, cutoff_hz=ONLINE_CUTOFF_HZ)
    plain = CausalLowpass(1, rate_hz=rate, cutoff_hz=ONLINE_CUTOFF_HZ, order=2)
    variants = [
        ("raw (truth + noise)", raw, 0.0),
        (f"online Butterworth order 2, {ONLINE_CUTOFF_HZ:g} Hz", filter_causal(raw, cutoff_hz=ONLINE_CUTOFF_HZ, order=2),
         plain.lag_s),
        (f"online low-lag (order {low_lag.order}, compensation {low_lag.compensate_lag:.2f}), "
         f"{ONLINE_CUTOFF_HZ:g} Hz", filter_causal(raw, cutoff_hz=ONLINE_CUTOFF_HZ, low_lag=True), low_lag.lag_s),
        ("offline zero-phase order 4, 6 Hz", butterworth_zero_phase(raw, cutoff_hz=6.0, order=4), 0.0),
        ("offline zero-phase order 4, 8 Hz", butterworth_zero_phase(raw, cutoff_hz=8.0, order=4), 0.0),
    ]
    raw_jitter = mean_jitter_mm(raw)
    rows = []
    for name, series, lag_tf in variants:
        j = mean_jitter_mm(series)
        rows.append(dict(name=name, jitter=j, ratio=j / raw_jitter, rmse=rmse_mm(series, truth, keep),
                         lag_tf_ms=1000 * lag_tf, lag_meas_ms=1000 * measured_lag_s(series, truth, keep),
                         rate=rate))
    return dict(label=label, truth_jitter=mean_jitter_mm(truth), rows=rows, rate=rate, n=truth.n_frames)


def main() -> int:
    from sam4dcap_biomech.trc import read_trc

    trials = []
    gait_path = GAIT2354 / "subject01_walk1.trc"
    if gait_path.is_file():
        trials.append(run_trial("Gait2354 subject01_walk1 (41 markers, 60 Hz, 2.5 s)", read_trc(gait_path)))
        gait_note = f"Gait2354 trial read from {gait_path}."
    else:
        gait_note = f"Gait2354 reference data ABSENT ({gait_path}): synthetic trial only."
        print(f"filters_jitter: {gait_note}", file=sys.stderr)
    trials.append(run_trial("synthetic (43 markers, 0.3-3 Hz sines, 60 Hz, 10 s)", synthetic_truth()))

    lines = ["# Filter jitter and lag", "",
             f"Raw = truth + white noise {NOISE_SD_M * 1000:g} mm SD per axis. Jitter = mean absolute second "
             "difference (3-D norm) per marker, averaged over markers [mm/frame^2]. RMSE to the truth over "
             "the trial minus 1 s at each end. Lag: transfer function = largest phase delay of a sine in the "
             "passband (CausalLowpass.lag_s); measured = time shift best aligning the filtered trial with the "
             f"truth (0.01-frame steps). {gait_note}", ""]
    for trial in trials:
        lines += [f"## {trial['label']}", "",
                  f"Truth jitter {trial['truth_jitter']:.3f} mm/frame^2; {trial['n']} frames at {trial['rate']:.0f} Hz.",
                  "", "| signal | jitter mm/frame^2 | vs raw | RMSE to truth mm | lag (transfer fn) ms / frames "
                  "| lag measured ms / frames |", "|---|---|---|---|---|---|"]
        for r in trial["rows"]:
            fr = r["rate"] / 1000.0
            lines.append(f"| {r['name']} | {r['jitter']:.3f} | {r['ratio']:.3f} | {r['rmse']:.2f} | "
                         f"{r['lag_tf_ms']:.1f} / {r['lag_tf_ms'] * fr:.2f} | "
                         f"{r['lag_meas_ms']:.1f} / {r['lag_meas_ms'] * fr:.2f} |")
        lines.append("")
    lines += ["The measured lag on a trial is the delay of its dominant (slow) movements, so it sits near the "
              "low-frequency group delay; the transfer-function figure is the worst case over the passband. "
              "Zero-phase filters add no lag but need the whole trial (offline only)."]
    out = ROOT / "bench" / "results" / "filters_jitter.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")

    t = trials[0]
    raw, on, ll, off = t["rows"][0], t["rows"][1], t["rows"][2], t["rows"][3]
    print(f"filters_jitter: {t['label']}: jitter raw {raw['jitter']:.2f} mm/frame^2; online order-2 8 Hz "
          f"{on['ratio']:.2f}x raw, lag {on['lag_meas_ms'] * on['rate'] / 1000:.2f} frames; offline zero-phase "
          f"6 Hz {off['ratio']:.3f}x raw, lag {off['lag_meas_ms'] * off['rate'] / 1000:.2f} frames; online "
          f"low-lag 8 Hz {ll['ratio']:.2f}x raw, measured lag {ll['lag_meas_ms'] * ll['rate'] / 1000:.2f} frames")
    return 0


if __name__ == "__main__":
    sys.exit(main())
