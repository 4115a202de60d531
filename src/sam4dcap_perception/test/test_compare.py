"""compare: time alignment by cross-correlation, per-channel metrics, the `sam4dcap compare` CLI."""

from dataclasses import replace

import numpy as np
import pytest

from sam4dcap_biomech.errors import Sam4dcapError
from sam4dcap_biomech.storage import write_mot
from sam4dcap_biomech.timeseries import TimeSeries
from sam4dcap_biomech.trc import write_trc
from sam4dcap_perception.cli import main
from sam4dcap_perception.compare import compare_series, load_series

RATE_HZ = 60.0
NAMES = ("pelvis_tx", "hip_flexion_r", "hip_flexion_l", "knee_angle_r", "knee_angle_l", "ankle_angle_r")


def gait_like(duration_s=4.0, rate_hz=RATE_HZ, t0=0.0):
    """Aperiodic multi-frequency signals (no lag ambiguity at one gait-cycle period)."""
    t = t0 + np.arange(int(duration_s * rate_hz)) / rate_hz
    chans = {}
    for k, name in enumerate(NAMES):
        if name == "pelvis_tx":
            chans[name] = 1.2 * t + 0.05 * np.sin(2 * np.pi * 1.9 * t)
        else:
            chans[name] = np.radians(25 * np.sin(2 * np.pi * (0.9 + 0.13 * k) * t + k)
                                     + 8 * np.sin(2 * np.pi * (2.3 + 0.07 * k) * t ** 1.1))
    return TimeSeries.from_dict(t, chans, unit="rad", channel_units={"pelvis_tx": "m"})


def test_against_itself_zero_error_and_zero_lag():
    s = gait_like()
    c = compare_series(s, s)
    assert abs(c.lag_s) < 1e-6
    assert c.result.n_frames == s.n_frames
    for m in c.metrics:
        assert m.rmse < 1e-6 and m.mae < 1e-6 and m.max_abs_error < 1e-6
        assert m.correlation == pytest.approx(1.0, abs=1e-9)
    assert c.metric("knee_angle_r").unit == "deg"
    assert c.metric("pelvis_tx").unit == "m"


@pytest.mark.parametrize("shift_s", [0.25, -0.4, 0.1234])
def test_finds_the_shift_of_a_shifted_copy(shift_s):
    s = gait_like()
    shifted = replace(s, time=s.time + shift_s)
    c = compare_series(s, shifted, max_lag_s=1.0)
    # Sub-sample refinement: well inside one frame (1/60 s).
    assert c.lag_s == pytest.approx(shift_s, abs=0.2 / RATE_HZ)
    assert c.alignment_score > 0.99
    # After alignment only interpolation error is left (signals change < 2 deg per frame).
    for m in c.metrics:
        assert m.max_abs_error < (0.5 if m.unit == "deg" else 0.005), m
    # The copy holds the same samples: once aligned it covers the whole result.
    assert c.result.time[-1] - c.result.time[0] == pytest.approx(s.time[-1] - s.time[0], abs=1.5 / RATE_HZ)


def test_shift_outside_the_window_is_not_found():
    s = gait_like()
    c = compare_series(s, replace(s, time=s.time + 0.8), max_lag_s=0.3)
    assert abs(c.lag_s) <= 0.3 + 1e-9
    assert abs(c.lag_s - 0.8) > 0.4


def test_known_offset_gives_exact_metrics():
    s = gait_like()
    ref = s.with_values(s.values - np.radians(5.0) * (np.array(s.names) == "knee_angle_r"))
    c = compare_series(s, ref, align_time=False)
    m = c.metric("knee_angle_r")
    assert m.rmse == pytest.approx(5.0, abs=1e-9)
    assert m.mae == pytest.approx(5.0, abs=1e-9)
    assert m.max_abs_error == pytest.approx(5.0, abs=1e-9)
    assert m.peak_difference == pytest.approx(5.0, abs=1e-9)
    assert m.correlation == pytest.approx(1.0, abs=1e-12)
    assert c.metric("hip_flexion_r").rmse < 1e-12


def test_other_frame_rate_is_resampled_or_refused():
    s = gait_like()
    ref = gait_like(rate_hz=100.0, t0=0.0)
    ref = replace(ref, time=ref.time + 0.15)
    c = compare_series(s, ref)
    assert c.reference_rate_hz == pytest.approx(100.0)
    assert c.lag_s == pytest.approx(0.15, abs=0.2 / RATE_HZ)
    assert max(m.max_abs_error for m in c.metrics if m.unit == "deg") < 0.5
    with pytest.raises(Sam4dcapError, match="frame rates differ"):
        compare_series(s, ref, allow_resample=False)


def test_reference_without_common_channels():
    s = gait_like()
    other = TimeSeries.from_dict(s.time, {"elbow_flex_r": s.values[:, 1]}, unit="rad")
    with pytest.raises(Sam4dcapError, match="no channel in common"):
        compare_series(s, other)


def test_no_time_overlap():
    s = gait_like(duration_s=2.0)
    with pytest.raises(Sam4dcapError, match="(overlap|align)"):
        compare_series(s, replace(s, time=s.time + 10.0), max_lag_s=0.5)


def test_markers_rigid_alignment_recovers_transform_and_lag():
    rng = np.random.default_rng(3)
    t = np.arange(180) / RATE_HZ
    base = rng.normal(size=(1, 8, 3)) * 0.3
    motion = np.stack([0.2 * np.sin(2 * np.pi * (0.7 + 0.1 * k) * t + k) for k in range(8)], axis=1)
    pts = base + motion[:, :, None] * np.array([1.0, 0.5, -0.3])
    res = TimeSeries(t, tuple(f"m{k}" for k in range(8)), pts, unit="m")
    a = np.radians(30)
    R = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    ref = TimeSeries(t + 0.1, res.names, pts @ R.T + np.array([1.0, 0.0, -2.0]), unit="m")
    c = compare_series(res, ref, rigid=True)
    assert c.kind == "markers"
    assert c.lag_s == pytest.approx(0.1, abs=0.2 / RATE_HZ)
    assert np.allclose(c.rigid_transform[:3, :3], R.T, atol=1e-3)
    assert max(m.rmse for m in c.metrics) < 0.005
    with pytest.raises(Sam4dcapError, match="cannot compare"):
        compare_series(res, gait_like())


def test_cli_compare_writes_report_and_finds_shift(tmp_path, capsys):
    s = gait_like()
    a = write_mot(tmp_path / "result_ik.mot", s)
    b = write_mot(tmp_path / "ref.mot", replace(s, time=s.time + 0.2))
    out = tmp_path / "cmp"
    assert main(["compare", str(a), str(b), "--out", str(out), "--max-lag", "0.5"]) == 0
    printed = capsys.readouterr().out
    assert "+0.20" in printed and "knee_angle_r" in printed
    for name in ("comparison.json", "overlay.png", "lag.png", "comparison.html"):
        assert (out / name).is_file(), name
    import json

    data = json.loads((out / "comparison.json").read_text())
    assert data["lag_s"] == pytest.approx(0.2, abs=0.2 / RATE_HZ)
    assert {c["name"] for c in data["channels"]} == set(NAMES)
    page = (out / "comparison.html").read_text()
    assert "data:image/png;base64," in page and "<script" not in page and "http" not in page


def test_cli_compare_markers_trc(tmp_path):
    t = np.arange(120) / RATE_HZ
    pts = np.stack([np.stack([np.sin(t + k), 1 + 0.1 * np.cos(2 * t + k), t * 0.5 + k], axis=1)
                    for k in range(5)], axis=1)
    s = TimeSeries(t, tuple(f"m{k}" for k in range(5)), pts, unit="m", frame="world")
    a = write_trc(tmp_path / "a.trc", s)
    assert load_series(a).is_points
    assert main(["compare", str(a), str(a), "--out", str(tmp_path / "o")]) == 0


@pytest.mark.parametrize("case", ["unknown_type", "missing", "no_common", "forces"])
def test_cli_compare_bad_input_one_line(tmp_path, capsys, case):
    s = gait_like()
    a = write_mot(tmp_path / "a.mot", s)
    if case == "unknown_type":
        b = tmp_path / "ref.csv"
        b.write_text("time,x\n0,1\n")
        expect = "unknown file type"
    elif case == "missing":
        b = tmp_path / "nope.mot"
        expect = "not found"
    elif case == "no_common":
        b = write_mot(tmp_path / "b.mot", TimeSeries.from_dict(s.time, {"elbow_flex_r": s.values[:, 1]}, unit="rad"))
        expect = "no channel in common"
    else:
        b = tmp_path / "f.sto"
        b.write_text("f\nversion=1\nnRows=2\nnColumns=2\ninDegrees=no\nendheader\ntime\tknee_angle_r_moment\n"
                     "0\t1\n0.1\t2\n")
        expect = "forces"
    assert main(["compare", str(a), str(b), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("sam4dcap compare: error:") and expect in err[0], err


def test_alignment_on_chosen_channels():
    s = gait_like()
    noisy = s.with_values(s.values + np.random.default_rng(0).normal(0, 0.5, s.values.shape)
                          * (np.array(s.names) != "knee_angle_r"))
    ref = replace(noisy, time=noisy.time + 0.3)
    c = compare_series(s, ref, align_channels=["knee_angle_r"])
    assert c.lag_s == pytest.approx(0.3, abs=0.2 / RATE_HZ)
    assert c.alignment_score > 0.99
    with pytest.raises(Sam4dcapError, match="alignment channels not in both"):
        compare_series(s, ref, align_channels=["elbow_flex_r"])


def test_given_lag_is_used_as_is():
    s = gait_like()
    ref = replace(s, time=s.time + 0.25)
    c = compare_series(s, ref, fixed_lag_s=0.25)
    assert c.lag_s == 0.25 and c.lag_source == "given"
    assert max(m.max_abs_error for m in c.metrics) < 1e-9
    c = compare_series(s, ref, fixed_lag_s=0.0)
    assert c.metric("knee_angle_r").rmse > 1.0       # a wrong given lag is not corrected
