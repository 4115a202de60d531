"""report: summary numbers against analytic values, PNG plots, the self-contained HTML page."""

import base64
import json
import re

import numpy as np
import pytest

from sam4dcap_biomech.timeseries import TimeSeries
from sam4dcap_perception import report as rp
from sam4dcap_perception.compare import compare_series

RATE_HZ = 50.0


def coords():
    t = np.arange(200) / RATE_HZ          # 4 s
    ch = {
        "hip_flexion_r": np.radians(10 + 30 * np.sin(2 * np.pi * 0.5 * t)),    # -20..40 deg
        "hip_flexion_l": np.radians(10 - 30 * np.sin(2 * np.pi * 0.5 * t)),
        "knee_angle_r": np.radians(-5 * t),                                   # linear ramp: zero jitter
        "knee_angle_l": np.full(t.size, np.nan),
        "pelvis_ty": 0.9 + 0.02 * np.sin(2 * np.pi * t),
    }
    return TimeSeries.from_dict(t, ch, unit="rad", channel_units={"pelvis_ty": "m"})


def png_pixels(path):
    import matplotlib.image as mpimg

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return mpimg.imread(path)


def test_coordinate_summary_matches_analytic_values():
    s = rp.coordinate_summary(coords())
    hip = s["hip_flexion_r"]
    assert hip["unit"] == "deg"
    assert hip["max"] == pytest.approx(40.0, abs=0.01)
    assert hip["min"] == pytest.approx(-20.0, abs=0.01)
    assert hip["range_of_motion"] == pytest.approx(60.0, abs=0.02)
    assert hip["max_time_s"] == pytest.approx(0.5, abs=1 / RATE_HZ)
    assert hip["min_time_s"] == pytest.approx(1.5, abs=1 / RATE_HZ)
    assert s["knee_angle_r"]["jitter_per_frame2"] == pytest.approx(0.0, abs=1e-9)
    # Sine: mean |second difference| = (2 pi f / rate)^2 * A * mean|sin| = ... * 2/pi.
    w = 2 * np.pi * 0.5 / RATE_HZ
    assert hip["jitter_per_frame2"] == pytest.approx(30 * w ** 2 * 2 / np.pi, rel=0.02)
    assert s["knee_angle_l"] == {"unit": "deg", "valid_frames": 0}
    assert s["pelvis_ty"]["unit"] == "m"
    assert s["pelvis_ty"]["range_of_motion"] == pytest.approx(0.04, abs=1e-4)


def test_low_confidence_frames_ranges():
    t = np.arange(10) / 10.0
    conf = np.array([0.9, 0.2, 0.3, 0.9, np.nan, 0.8, 0.1, 0.1, 0.1, 0.95])
    low = rp.low_confidence_frames(t, conf, threshold=0.5)
    assert low["count"] == 6
    assert [(r["first_frame"], r["last_frame"]) for r in low["ranges"]] == [(1, 2), (4, 4), (6, 8)]
    assert low["ranges"][2]["end_s"] == pytest.approx(0.8)


def test_plots_are_real_images(tmp_path):
    c = coords()
    img = png_pixels(rp.plot_joint_angles(c, tmp_path / "angles.png", title="t"))
    assert img.shape[0] > 400 and img.std() > 0.05      # not blank
    err = TimeSeries.from_dict(c.time, {"rms": 0.02 + 0 * c.time, "max": 0.05 + 0.01 * np.sin(c.time)})
    assert png_pixels(rp.plot_marker_error(err, tmp_path / "err.png")).std() > 0.01
    cmp = compare_series(c, c)
    assert png_pixels(rp.plot_comparison(cmp, tmp_path / "ov.png")).std() > 0.01
    assert png_pixels(rp.plot_lag_scores(cmp, tmp_path / "lag.png")).std() > 0.01


def test_html_is_self_contained(tmp_path):
    c = coords()
    summary = {"coordinates": rp.coordinate_summary(c),
               "low_confidence_frames": rp.low_confidence_frames(c.time, np.linspace(0, 1, c.n_frames), threshold=0.3)}
    rp.write_json(tmp_path / "summary.json", summary)
    assert json.loads((tmp_path / "summary.json").read_text())["coordinates"]["knee_angle_l"]["valid_frames"] == 0
    png = rp.plot_joint_angles(c, tmp_path / "a.png")
    page = rp.HtmlReport("Trial <1>")
    page.paragraph("a & b")
    rp.add_summary_tables(page, summary)
    page.image(png, "angles")
    rp.add_comparison(page, compare_series(c, c))
    path = page.save(tmp_path / "report.html")
    text = path.read_text()
    assert "Trial &lt;1&gt;" in text and "a &amp; b" in text
    # Nothing loaded from elsewhere: no scripts, stylesheets links, or URLs.
    assert not re.search(r"<script|<link|https?://|src=\"(?!data:)", text)
    blobs = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    assert len(blobs) == 1 and base64.b64decode(blobs[0]) == png.read_bytes()
    assert "hip_flexion_r" in text and "Range of motion" in text


def test_confidence_summary_names_the_untrusted_spans(tmp_path):
    """Per coordinate: the frames below the gate as time spans, in summary.json and in the report."""
    t = np.arange(20) / 10.0
    knee = np.full(20, 0.9)
    knee[3:6] = 0.2
    knee[15] = 0.4
    conf = TimeSeries(t, ["knee_angle_r", "mtp_angle_r", "hip_flexion_r"],
                      np.stack([knee, np.zeros(20), np.full(20, 0.8)], axis=1), unit="1")
    s = rp.coordinate_confidence_summary(conf)
    assert s["threshold"] == 0.5 and s["undetermined"] == ["mtp_angle_r"]
    spans = s["coordinates"]["knee_angle_r"]["untrusted"]
    assert [(r["first_frame"], r["last_frame"]) for r in spans] == [(3, 5), (15, 15)]
    assert s["coordinates"]["knee_angle_r"]["share_below"] == pytest.approx(0.2)
    assert s["coordinates"]["hip_flexion_r"]["untrusted"] == []
    page = rp.HtmlReport("t")
    rp.add_confidence_section(page, s)
    page.save(tmp_path / "r.html")
    text = (tmp_path / "r.html").read_text()
    assert "0.30-0.50, 1.50-1.50" in text and "untrusted" in text
