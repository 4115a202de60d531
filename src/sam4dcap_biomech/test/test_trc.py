"""TRC round trips through our reader and OpenSim's own TimeSeriesTableVec3, and bad input."""

import numpy as np
import opensim
import pytest

from sam4dcap_biomech.errors import Sam4dcapError
from sam4dcap_biomech.timeseries import TimeSeries
from sam4dcap_biomech.trc import markers_in_mm_suspected, read_trc, require_markers, write_trc

NAMES = ("r.ASIS_study", "L.ASIS_study", "C7", "r_knee.lateral.marker_long_name_study")


def make_markers(n_frames=40, *, irregular=False, unit="m"):
    rng = np.random.default_rng(3)
    dt = 1 / 60
    time = 0.25 + np.arange(n_frames) * dt
    if irregular:
        time = 0.25 + np.cumsum(rng.uniform(0.5 * dt, 1.5 * dt, n_frames))
    base = np.array([[0.12, 0.95, 0.13], [0.10, 0.94, -0.14], [-0.05, 1.45, 0.0], [0.03, 0.5, 0.11]])
    # Negative coordinates on purpose (x moves through zero).
    walk = np.stack([np.linspace(-0.7, 0.7, n_frames), np.zeros(n_frames), np.zeros(n_frames)], 1)
    values = base[None] + walk[:, None] + rng.normal(0, 0.003, (n_frames, 4, 3))
    values[5, 0] = np.nan      # first marker missing one frame
    values[7:10, 3] = np.nan   # LAST marker missing: the case OpenSim's tokenizer is picky about
    series = TimeSeries(time=time, names=NAMES, values=values, unit="m", frame="world")
    return series.to_unit(unit) if unit != "m" else series


def opensim_points(path):
    table = opensim.TimeSeriesTableVec3(str(path))
    flat = table.flatten()
    matrix = flat.getMatrix().to_numpy()
    times = np.array(table.getIndependentColumn())
    labels = list(table.getColumnLabels())
    units = table.getTableMetaDataAsString("Units")
    return times, labels, matrix.reshape(matrix.shape[0], -1, 3), units


@pytest.mark.parametrize("units", ["m", "mm"])
@pytest.mark.parametrize("irregular", [False, True])
def test_round_trip_ours_and_opensim(tmp_path, units, irregular):
    markers = make_markers(irregular=irregular)
    path = write_trc(tmp_path / "trial.trc", markers, units=units)

    back = read_trc(path)
    assert back.names == NAMES and back.unit == "m" and back.frame == "world"
    assert back.meta["file_units"] == units
    np.testing.assert_array_equal(back.meta["frame_numbers"], np.arange(1, markers.n_frames + 1))
    np.testing.assert_allclose(back.time, markers.time, atol=1e-9)
    np.testing.assert_array_equal(np.isnan(back.values), np.isnan(markers.values))
    np.testing.assert_allclose(back.values, markers.values, atol=1e-7, equal_nan=True)
    assert back.meta["data_rate_hz"] == pytest.approx(markers.rate_hz, rel=1e-5)

    times, labels, points, file_units = opensim_points(path)
    assert labels == list(NAMES) and file_units == units
    np.testing.assert_allclose(times, markers.time, atol=1e-9)
    scale = 1000.0 if units == "mm" else 1.0
    np.testing.assert_allclose(points, markers.values * scale, atol=1e-7 * scale, equal_nan=True)
    assert np.isnan(points[7:10, 3]).all() and np.isnan(points[5, 0]).all()


def test_writes_from_millimetre_series_and_reads_mm_as_metres(tmp_path):
    markers_mm = make_markers(unit="mm")
    path = write_trc(tmp_path / "a.trc", markers_mm, units="m")
    back = read_trc(path)
    np.testing.assert_allclose(back.values, markers_mm.values / 1000.0, atol=1e-7, equal_nan=True)


def test_reads_blank_fields_and_truncated_rows_as_missing(tmp_path):
    text = ("PathFileType\t4\t(X/Y/Z)\tx.trc\n"
            "DataRate\tCameraRate\tNumFrames\tNumMarkers\tUnits\tOrigDataRate\tOrigDataStartFrame\tOrigNumFrames\n"
            "100\t100\t3\t2\tmm\t100\t1\t3\n"
            "Frame#\tTime\tA\t\t\tB\t\t\n\t\tX1\tY1\tZ1\tX2\tY2\tZ2\n\n"
            "1\t0.00\t100\t200\t300\t400\t500\t600\n"
            "2\t0.01\t\t\t\t400\t500\t-600\n"
            "3\t0.02\t100\t200\t300\n")
    (tmp_path / "x.trc").write_text(text)
    series = read_trc(tmp_path / "x.trc")
    expected = np.array([[[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]],
                         [[np.nan] * 3, [0.4, 0.5, -0.6]],
                         [[0.1, 0.2, 0.3], [np.nan] * 3]])
    np.testing.assert_allclose(series.values, expected, equal_nan=True)


def write_raw(tmp_path, *, units="m", n_markers_header=2, names=("A", "B"), rows=None):
    rows = rows or ["1\t0.00\t0.1\t0.2\t0.3\t0.4\t0.5\t0.6", "2\t0.01\t0.1\t0.2\t0.3\t0.4\t0.5\t0.6"]
    text = ("PathFileType\t4\t(X/Y/Z)\tx.trc\n"
            "DataRate\tCameraRate\tNumFrames\tNumMarkers\tUnits\tOrigDataRate\tOrigDataStartFrame\tOrigNumFrames\n"
            f"100\t100\t{len(rows)}\t{n_markers_header}\t{units}\t100\t1\t{len(rows)}\n"
            "Frame#\tTime\t" + "\t".join(f"{n}\t\t" for n in names) + "\n"
            "\t\t" + "\t".join(f"X{i}\tY{i}\tZ{i}" for i in range(1, len(names) + 1)) + "\n\n"
            + "\n".join(rows) + "\n")
    path = tmp_path / "bad.trc"
    path.write_text(text)
    return path


def test_error_missing_file(tmp_path):
    with pytest.raises(Sam4dcapError, match="not found.*nope.trc"):
        read_trc(tmp_path / "nope.trc")


def test_error_not_a_trc(tmp_path):
    (tmp_path / "x.trc").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(Sam4dcapError, match="not a TRC file"):
        read_trc(tmp_path / "x.trc")


def test_error_marker_count_mismatch_header(tmp_path):
    path = write_raw(tmp_path, n_markers_header=3)
    with pytest.raises(Sam4dcapError, match="marker count mismatch: header NumMarkers=3 .* 2 markers"):
        read_trc(path)


def test_error_marker_count_mismatch_data(tmp_path):
    path = write_raw(tmp_path, rows=["1\t0.00\t0.1\t0.2\t0.3\t0.4\t0.5\t0.6\t0.7\t0.8\t0.9"])
    with pytest.raises(Sam4dcapError, match="line 7 has 11 columns"):
        read_trc(path)


def test_error_bad_units(tmp_path):
    with pytest.raises(Sam4dcapError, match="Units 'inch'.*neither 'm' nor 'mm'"):
        read_trc(write_raw(tmp_path, units="inch"))


def test_error_mm_values_labelled_m(tmp_path):
    rows = ["1\t0.00\t617\t1055\t170\t639\t1044\t-88", "2\t0.01\t618\t1053\t168\t641\t1042\t-90"]
    with pytest.raises(Sam4dcapError, match="look like millimetres.*Units=m.*set Units to mm"):
        read_trc(write_raw(tmp_path, units="m", rows=rows))


def test_error_m_values_labelled_mm(tmp_path):
    with pytest.raises(Sam4dcapError, match="look like metres.*Units=mm.*set Units to m"):
        read_trc(write_raw(tmp_path, units="mm"))


def test_error_nan_only(tmp_path):
    rows = ["1\t0.00\tNaN\tNaN\tNaN\tNaN\tNaN\tNaN", "2\t0.01\t\t\t\t\t\t"]
    with pytest.raises(Sam4dcapError, match="NaN-only"):
        read_trc(write_raw(tmp_path, rows=rows))


def test_error_malformed_header_line(tmp_path):
    path = write_raw(tmp_path)
    lines = path.read_text().splitlines()
    lines[3] = "Frame\tT\tA\t\t\tB"
    path.write_text("\n".join(lines))
    with pytest.raises(Sam4dcapError, match="line 4 must start with 'Frame#<TAB>Time'"):
        read_trc(path)


def test_mm_suspected_helper_and_write_errors(tmp_path):
    markers = make_markers()
    assert not markers_in_mm_suspected(markers)
    mislabeled = markers.with_values(markers.values * 1000.0)  # mm numbers, unit still "m"
    assert markers_in_mm_suspected(mislabeled)
    assert not markers_in_mm_suspected(markers.to_unit("mm"))
    with pytest.raises(Sam4dcapError, match="must be 'm' or 'mm'"):
        write_trc(tmp_path / "x.trc", markers, units="cm")
    with pytest.raises(Sam4dcapError, match="every marker value is missing"):
        write_trc(tmp_path / "x.trc", markers.with_values(np.full_like(markers.values, np.nan)))


def test_header_rate_from_nominal_rate_with_rounded_times(tmp_path):
    markers = make_markers(n_frames=151)
    rounded = markers.with_values(markers.values, time=np.round(np.arange(151) / 60.0, 3),
                                  meta={"data_rate_hz": 60.0})
    back = read_trc(write_trc(tmp_path / "r.trc", rounded))
    assert back.meta["data_rate_hz"] == pytest.approx(60.0)
    plain = read_trc(write_trc(tmp_path / "p.trc", markers))
    assert plain.meta["data_rate_hz"] == pytest.approx(60.0, rel=1e-6)


def test_reads_what_opensim_writes(tmp_path):
    """OpenSim's TRCFileAdapter writes (NaN as `nan`, mm); we read the same numbers in metres."""
    markers = make_markers(n_frames=12).to_unit("mm")
    labels = opensim.StdVectorString()
    for n in NAMES:
        labels.append(n)
    matrix = opensim.MatrixVec3(markers.n_frames, len(NAMES))
    for i in range(markers.n_frames):
        for j in range(len(NAMES)):
            matrix.set(i, j, opensim.Vec3(*[float(v) for v in markers.values[i, j]]))
    table = opensim.TimeSeriesTableVec3(list(markers.time), matrix, labels)
    table.addTableMetaDataString("DataRate", "60")
    table.addTableMetaDataString("Units", "mm")
    opensim.TRCFileAdapter.write(table, str(tmp_path / "os.trc"))
    back = read_trc(tmp_path / "os.trc")
    assert back.names == NAMES and back.meta["file_units"] == "mm"
    np.testing.assert_allclose(back.values, markers.values / 1000.0, atol=1e-6, equal_nan=True)
    assert np.isnan(back.values[7:10, 3]).all()


def test_require_markers_names_missing_and_misnamed():
    markers = make_markers(n_frames=12)
    require_markers(markers, ["C7", "r.ASIS_study"])
    with pytest.raises(Sam4dcapError, match=r"2 expected marker\(s\) missing in x.trc: R.ASIS_study "
                                            r"\(found 'r.ASIS_study': rename it\?\), RHEE$"):
        require_markers(markers, ["R.ASIS_study", "C7", "RHEE"], source="x.trc")


def test_error_unwritable_path(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(Sam4dcapError, match="cannot write TRC file .*file/sub/a.trc"):
        write_trc(blocker / "sub" / "a.trc", make_markers(n_frames=12))
