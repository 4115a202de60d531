"""C3D round trips through ezc3d (written by us, read back by our reader and raw ezc3d)."""

import ezc3d
import numpy as np
import pytest

from sam4dcap_biomech.c3d import read_c3d, write_c3d
from sam4dcap_biomech.errors import Sam4dcapError
from sam4dcap_biomech.timeseries import TimeSeries

NAMES = ("r.ASIS_study", "L.ASIS_study", "r_knee.lateral.marker_long_name_study_xx")


def make_markers(n_frames=30, rate=100.0, start_s=0.5):
    rng = np.random.default_rng(11)
    time = start_s + np.arange(n_frames) / rate
    values = rng.uniform(-1.2, 1.6, (n_frames, len(NAMES), 3))
    values[4, 1] = np.nan
    values[10:13, 2] = np.nan
    return TimeSeries(time=time, names=NAMES, values=values, unit="m", frame="world")


def test_round_trip_markers_and_analogs(tmp_path):
    markers = make_markers()
    analog_time = markers.time[0] + np.arange(markers.n_frames * 10) / 1000.0
    analogs = TimeSeries.from_dict(analog_time, {"Fz": 700 + 50 * np.sin(analog_time), "Mx": np.cos(analog_time)},
                                   unit="N", channel_units={"Mx": "N*m"})
    path = write_c3d(tmp_path / "trial.c3d", markers, analogs=analogs)

    back = read_c3d(path)
    assert back.names == NAMES and back.unit == "m" and back.frame == "world"
    assert back.meta["file_units"] == "mm" and back.meta["data_rate_hz"] == pytest.approx(100.0)
    np.testing.assert_allclose(back.time, markers.time, atol=1e-9)
    np.testing.assert_array_equal(np.isnan(back.values), np.isnan(markers.values))
    # float32 millimetres: ~1e-4 mm at metre scale
    np.testing.assert_allclose(back.values, markers.values, atol=1e-6, equal_nan=True)

    a = back.meta["analogs"]
    assert a.names == ("Fz", "Mx") and a.unit == "N" and a.unit_of("Mx") == "N*m"
    np.testing.assert_allclose(a.values, analogs.values, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(a.time, analog_time, atol=1e-9)

    # Raw ezc3d sees millimetres, 1000 Hz analogs, first frame 50 (0.5 s at 100 Hz).
    raw = ezc3d.c3d(str(path))
    assert list(raw["parameters"]["POINT"]["UNITS"]["value"]) == ["mm"]
    assert raw["header"]["analogs"]["frame_rate"] == pytest.approx(1000.0)
    assert raw["header"]["points"]["first_frame"] == 50
    np.testing.assert_allclose(raw["data"]["points"][:3, 0, 0], markers.values[0, 0] * 1000, atol=1e-3)


def test_millimetre_series_written_as_is(tmp_path):
    markers = make_markers().to_unit("mm")
    back = read_c3d(write_c3d(tmp_path / "mm.c3d", markers))
    np.testing.assert_allclose(back.values * 1000, markers.values, atol=1e-3, equal_nan=True)


def test_c3d_errors(tmp_path):
    markers = make_markers()
    with pytest.raises(Sam4dcapError, match="not found.*none.c3d"):
        read_c3d(tmp_path / "none.c3d")
    (tmp_path / "bad.c3d").write_bytes(b"this is not a c3d file" * 20)
    with pytest.raises(Sam4dcapError, match="cannot read C3D file .*bad.c3d"):
        read_c3d(tmp_path / "bad.c3d")
    with pytest.raises(Sam4dcapError, match="whole number of samples"):
        write_c3d(tmp_path / "x.c3d", markers,
                  analogs=TimeSeries.from_dict(np.arange(45) / 150.0, {"a": np.zeros(45)}, unit="V"))
    with pytest.raises(Sam4dcapError, match="no valid marker samples"):
        write_c3d(tmp_path / "x.c3d", markers.with_values(np.full_like(markers.values, np.nan)))
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(Sam4dcapError, match="cannot write C3D file .*file/sub/x.c3d"):
        write_c3d(blocker / "sub" / "x.c3d", markers)
    with pytest.raises(Sam4dcapError, match="point series"):
        write_c3d(tmp_path / "x.c3d", TimeSeries.from_dict([0.0, 0.1], {"a": [1.0, 2.0]}, unit="m"))


def test_c3d_and_opensim_coexist_in_one_process(tmp_path):
    """In-process, an ezc3d write and opensim's list -> std::vector conversions break each other
    (shared SWIG type table); write_c3d must leave opensim working and work after opensim."""
    import opensim

    markers = make_markers()

    def opensim_table_from_lists():
        labels = opensim.StdVectorString()
        labels.append("a")
        return opensim.TimeSeriesTable([0.0, 0.1], opensim.Matrix(2, 1), labels)

    write_c3d(tmp_path / "first.c3d", markers)
    assert opensim_table_from_lists().getNumRows() == 2
    back = read_c3d(write_c3d(tmp_path / "after_opensim.c3d", markers))
    assert back.names == NAMES and back.frame == "world"
    np.testing.assert_allclose(back.values, markers.values, atol=1e-6, equal_nan=True)
    assert opensim_table_from_lists().getNumRows() == 2
