"""MOT/STO round trips through our reader and OpenSim's TimeSeriesTable / Storage, and bad input."""

import numpy as np
import opensim
import pytest

from sam4dcap_biomech.errors import Sam4dcapError
from sam4dcap_biomech.storage import read_mot, write_mot, write_sto
from sam4dcap_biomech.timeseries import TimeSeries

COORDS = ("pelvis_tilt", "pelvis_tx", "pelvis_ty", "hip_flexion_r", "knee_angle_r", "ankle_angle_r")


def make_coordinates(n_frames=30, *, irregular=False):
    rng = np.random.default_rng(7)
    time = np.arange(n_frames) / 100.0
    if irregular:
        time = np.cumsum(rng.uniform(0.005, 0.015, n_frames))
    t = time[:, None]
    values = np.hstack([0.1 * np.sin(3 * t), 0.9 * t - 0.2, 0.95 + 0.01 * np.cos(5 * t),
                        0.6 * np.sin(4 * t), -1.1 + 0.8 * np.sin(2 * t), -0.3 * np.cos(6 * t)])
    return TimeSeries(time=time, names=COORDS, values=values, unit="rad",
                      channel_units={"pelvis_tx": "m", "pelvis_ty": "m"})


def opensim_table(path):
    table = opensim.TimeSeriesTable(str(path))
    matrix = table.getMatrix().to_numpy()
    return np.array(table.getIndependentColumn()), list(table.getColumnLabels()), matrix, table


def storage_values(path):
    storage = opensim.Storage(str(path))
    rows = []
    for i in range(storage.getSize()):
        sv = storage.getStateVector(i)
        data = sv.getData()
        rows.append([sv.getTime()] + [data.get(j) for j in range(data.getSize())])
    return np.array(rows), storage


@pytest.mark.parametrize("irregular", [False, True])
def test_mot_in_degrees_round_trip(tmp_path, irregular):
    coords = make_coordinates(irregular=irregular)
    path = write_mot(tmp_path / "ik.mot", coords, name="Coordinates")
    text = path.read_text().splitlines()
    assert text[:6] == ["Coordinates", "version=1", f"nRows={coords.n_frames}",
                        f"nColumns={len(COORDS) + 1}", "inDegrees=yes", "endheader"]

    back = read_mot(path)
    assert back.names == COORDS and back.unit == "rad" and back.meta["in_degrees"]
    assert back.channel_units == {"pelvis_tx": "m", "pelvis_ty": "m"}
    np.testing.assert_allclose(back.time, coords.time, atol=1e-9)
    np.testing.assert_allclose(back.values, coords.values, rtol=1e-9, atol=1e-10)

    # OpenSim sees degrees for rotations, metres for translations.
    times, labels, matrix, table = opensim_table(path)
    assert labels == list(COORDS) and table.getTableMetaDataAsString("inDegrees") == "yes"
    expected = coords.values.copy()
    rot = [0, 3, 4, 5]
    expected[:, rot] = np.degrees(expected[:, rot])
    np.testing.assert_allclose(matrix, expected, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(times, coords.time, atol=1e-9)

    rows, storage = storage_values(path)
    assert storage.isInDegrees() and rows.shape == (coords.n_frames, len(COORDS) + 1)
    np.testing.assert_allclose(rows[:, 1:], expected, rtol=1e-9, atol=1e-9)


def test_mot_in_radians_and_translational_override(tmp_path):
    coords = make_coordinates()
    path = write_mot(tmp_path / "rad.mot", coords, in_degrees=False)
    _, _, matrix, table = opensim_table(path)
    assert table.getTableMetaDataAsString("inDegrees") == "no"
    np.testing.assert_allclose(matrix, coords.values, rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(read_mot(path).values, coords.values, rtol=1e-9, atol=1e-10)

    # A deg file where a channel not named *_t? is translational: only the override knows.
    deg_path = write_mot(tmp_path / "deg.mot", coords)
    back = read_mot(deg_path, translational={"pelvis_tx", "pelvis_ty", "pelvis_tilt"})
    np.testing.assert_allclose(back.values[:, 0], np.degrees(coords.values[:, 0]), rtol=1e-9, atol=1e-10)
    assert back.unit_of("pelvis_tilt") == "m"


def test_sto_forces_not_converted_and_nan(tmp_path):
    time = np.linspace(0.4, 0.6, 11)
    forces = TimeSeries.from_dict(time, {"knee_angle_r_moment": -40.0 + 3 * time,
                                         "pelvis_tx_force": 120.0 * time,
                                         "hip_flexion_r_moment": np.r_[np.nan, 10.0 * time[1:]]},
                                  unit="N", channel_units={"knee_angle_r_moment": "N*m",
                                                           "hip_flexion_r_moment": "N*m"})
    path = write_sto(tmp_path / "id.sto", forces)
    back = read_mot(path)
    assert back.meta["kind"] == "forces" and back.unit == "N"
    assert back.unit_of("knee_angle_r_moment") == "N*m" and back.unit_of("pelvis_tx_force") == "N"
    np.testing.assert_allclose(back.values, forces.values, rtol=1e-9, equal_nan=True)
    _, labels, matrix, _ = opensim_table(path)
    assert labels == list(forces.names)
    np.testing.assert_allclose(matrix, forces.values, rtol=1e-9, equal_nan=True)


def test_grf_style_forces_with_in_degrees_yes_are_not_converted(tmp_path):
    text = ("grf.mot\nversion=1\nnRows=2\nnColumns=4\ninDegrees=yes\nendheader\n"
            "time\tground_force_vy\tground_force_px\tground_torque_y\n"
            "0\t745.5\t0.379\t13.5\n0.001\t746.0\t0.380\t13.6\n")
    (tmp_path / "grf.mot").write_text(text)
    grf = read_mot(tmp_path / "grf.mot")
    np.testing.assert_allclose(grf.values[0], [745.5, 0.379, 13.5])
    assert grf.unit_of("ground_force_px") == "m" and grf.unit_of("ground_torque_y") == "N*m"


def test_degree_series_written_as_radians_sto(tmp_path):
    coords = make_coordinates()
    deg = coords.to_unit("deg")
    path = write_sto(tmp_path / "states.sto", deg)
    _, _, matrix, _ = opensim_table(path)
    np.testing.assert_allclose(matrix, coords.values, rtol=1e-9, atol=1e-10)


def write_text(tmp_path, text, name="bad.mot"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_error_missing_file(tmp_path):
    with pytest.raises(Sam4dcapError, match="not found.*missing.mot"):
        read_mot(tmp_path / "missing.mot")


def test_error_no_endheader(tmp_path):
    path = write_text(tmp_path, "x\nversion=1\ntime\ta\n0\t1\n")
    with pytest.raises(Sam4dcapError, match="no 'endheader'"):
        read_mot(path)


def test_error_column_count_mismatch(tmp_path):
    path = write_text(tmp_path, "x\nnColumns=3\ninDegrees=yes\nendheader\ntime\ta\n0\t1\n")
    with pytest.raises(Sam4dcapError, match="nColumns=3 but line 5 has 2 labels"):
        read_mot(path)
    path = write_text(tmp_path, "x\nnColumns=2\nendheader\ntime\ta\n0\t1\t2\n")
    with pytest.raises(Sam4dcapError, match="line 5 has 3 values but there are 2 columns"):
        read_mot(path)


def test_error_first_column_not_time_and_nan_only(tmp_path):
    with pytest.raises(Sam4dcapError, match="first column must be 'time'"):
        read_mot(write_text(tmp_path, "x\nendheader\nframe\ta\n0\t1\n"))
    with pytest.raises(Sam4dcapError, match="NaN-only"):
        read_mot(write_text(tmp_path, "x\nendheader\ntime\ta\tb\n0\tNaN\tnan\n0.1\tNaN\tNaN\n"))


def test_error_writing_points_or_spaces(tmp_path):
    markers = TimeSeries(time=[0.0, 0.1], names=("A",), values=np.zeros((2, 1, 3)))
    with pytest.raises(Sam4dcapError, match="write_trc"):
        write_mot(tmp_path / "x.mot", markers)
    coords = TimeSeries.from_dict([0.0, 0.1], {"knee angle": [0.0, 0.1]}, unit="rad")
    with pytest.raises(Sam4dcapError, match="whitespace"):
        write_mot(tmp_path / "x.mot", coords)


def test_reads_what_opensim_writes(tmp_path):
    """OpenSim's STOFileAdapter writes; we read the same numbers (degrees converted)."""
    coords = make_coordinates()
    expected = coords.values.copy()
    expected[:, [0, 3, 4, 5]] = np.degrees(expected[:, [0, 3, 4, 5]])
    expected[3, 4] = np.nan
    matrix = opensim.Matrix(expected.shape[0], expected.shape[1])
    for i in range(expected.shape[0]):
        for j in range(expected.shape[1]):
            matrix.set(i, j, float(expected[i, j]))
    labels = opensim.StdVectorString()
    for n in COORDS:
        labels.append(n)
    table = opensim.TimeSeriesTable(list(coords.time), matrix, labels)
    table.addTableMetaDataString("inDegrees", "yes")
    opensim.STOFileAdapter.write(table, str(tmp_path / "os.sto"))
    back = read_mot(tmp_path / "os.sto")
    want = coords.values.copy()
    want[3, 4] = np.nan
    np.testing.assert_allclose(back.values, want, rtol=1e-7, atol=1e-9, equal_nan=True)
    np.testing.assert_allclose(back.time, coords.time, atol=1e-9)


def test_marker_error_file_and_state_paths(tmp_path):
    errors = ("ik_errors\nversion=1\nnRows=2\nnColumns=4\ninDegrees=yes\nendheader\n"
              "time\ttotal_squared_error\tmarker_error_RMS\tmarker_error_max\n"
              "0\t0.004\t0.01\t0.03\n0.01\t0.005\t0.011\t0.031\n")
    err = read_mot(write_text(tmp_path, errors, "e.sto"))
    assert err.meta["kind"] == "marker_errors" and err.unit_of("marker_error_RMS") == "m"
    np.testing.assert_allclose(err.values[0], [0.004, 0.01, 0.03])
    states = ("s\nnColumns=3\ninDegrees=yes\nendheader\n"
              "time\t/jointset/ground_pelvis/pelvis_tx/value\t/jointset/hip_r/hip_flexion_r/value\n"
              "0\t0.5\t90\n")
    st = read_mot(write_text(tmp_path, states, "s.sto"))
    np.testing.assert_allclose(st.values[0], [0.5, np.pi / 2])


def test_error_unwritable_path(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(Sam4dcapError, match="cannot write .*file/ik.mot"):
        write_mot(blocker / "ik.mot", make_coordinates())
