"""Trial recording: samples in, TRC/MOT/STO out, read back by OpenSim's own readers."""

import json
import math

import numpy as np
import opensim
import pytest

from sam4dcap_biomech.errors import Sam4dcapError
from sam4dcap_biomech.trial_recording import TrialRecording, trial_name_or_default

MARKERS = ("left_hip", "right_hip", "left_knee", "right_knee")
COORDS = ("pelvis_tx", "pelvis_ty", "hip_flexion_r", "knee_angle_r")
RATE_HZ = 50.0


def samples(n=40):
    t = 3.0 + np.arange(n) / RATE_HZ
    markers = np.stack([np.array([[0.1, 0.9, -0.1], [0.1, 0.9, 0.1], [0.15, 0.5, -0.1], [0.15, 0.5, 0.1]])
                        + [0.01 * i, 0, 0] for i in range(n)])
    markers[5, 2] = np.nan  # a missing marker on one frame
    q = np.stack([0.02 * np.arange(n), np.full(n, 0.93), 0.5 * np.sin(np.arange(n) / 8), -np.linspace(0, 1.2, n)], 1)
    forces = np.stack([np.full(n, 12.0), np.full(n, 680.0), 40 * np.cos(np.arange(n) / 8), -np.linspace(5, 20, n)], 1)
    return t, markers, q, forces


def table_numpy(table):
    matrix = table.getMatrix()
    return np.array(table.getIndependentColumn()), list(table.getColumnLabels()), matrix.to_numpy()


def test_write_and_read_back_with_opensim(tmp_path):
    t, markers, q, forces = samples()
    trial = TrialRecording("walk_01", tmp_path)
    for i in range(len(t)):
        trial.add_markers(t[i], MARKERS, markers[i], marker_set="blazepose33")
        trial.add_kinematics(t[i], COORDS, q[i], model_name="subject", marker_error_rms_m=0.01 + i * 1e-4,
                             marker_error_max_m=0.03, markers_used=4)
        trial.add_kinetics(t[i], COORDS, forces[i], no_external_loads=True)
    assert trial.counts == {"markers": 40, "kinematics": 40, "kinetics": 40}
    result = trial.write()
    assert result.problems == []
    folder = tmp_path / "walk_01"
    assert [p.name for p in result.files] == ["walk_01.trc", "walk_01_ik.mot", "walk_01_ik_errors.sto",
                                              "walk_01_id.sto", "walk_01_trial.json"]
    assert all(p.parent == folder and p.is_file() for p in result.files)

    trc = opensim.TimeSeriesTableVec3(str(folder / "walk_01.trc"))
    flat = trc.flatten()
    times, labels, values = table_numpy(flat)
    np.testing.assert_allclose(times, t, atol=1e-9)
    assert list(trc.getColumnLabels()) == list(MARKERS)
    assert trc.getTableMetaDataAsString("Units") == "m"
    np.testing.assert_allclose(values.reshape(len(t), 4, 3), markers, atol=1e-7, equal_nan=True)

    mot = opensim.TimeSeriesTable(str(folder / "walk_01_ik.mot"))
    times, labels, values = table_numpy(mot)
    assert labels == list(COORDS) and mot.getTableMetaDataAsString("inDegrees") == "yes"
    np.testing.assert_allclose(times, t, atol=1e-9)
    np.testing.assert_allclose(values[:, :2], q[:, :2], atol=1e-9)              # translations: metres
    np.testing.assert_allclose(values[:, 2:], np.degrees(q[:, 2:]), atol=1e-7)  # rotations: degrees

    # The legacy Storage parser is what InverseDynamics/analyses use: it must read all rows.
    storage = opensim.Storage(str(folder / "walk_01_id.sto"))
    assert storage.getSize() == len(t)
    array = storage.getColumnLabels()
    labels = [array.get(i) for i in range(array.getSize())]
    assert labels == ["time", "pelvis_tx_force", "pelvis_ty_force", "hip_flexion_r_moment", "knee_angle_r_moment"]
    sto = opensim.TimeSeriesTable(str(folder / "walk_01_id.sto"))
    np.testing.assert_allclose(table_numpy(sto)[2], forces, atol=1e-8)

    errors = opensim.TimeSeriesTable(str(folder / "walk_01_ik_errors.sto"))
    times, labels, values = table_numpy(errors)
    assert labels == ["marker_error_RMS", "marker_error_max", "markers_used"]
    np.testing.assert_allclose(values[:, 0], 0.01 + np.arange(40) * 1e-4, atol=1e-12)
    np.testing.assert_array_equal(values[:, 2], 4)

    summary = json.loads((folder / "walk_01_trial.json").read_text())
    assert summary["no_external_loads"] is True and summary["marker_set"] == "blazepose33"
    assert summary["counts"] == {"markers": 40, "kinematics": 40, "kinetics": 40}


def test_out_of_order_repeated_and_renamed_samples(tmp_path):
    trial = TrialRecording("mixed", tmp_path)
    trial.add_kinematics(0.2, ("a", "b"), [2.0, 20.0])
    trial.add_kinematics(0.1, ("a", "b"), [1.0, 10.0])     # late arrival: sorted in
    trial.add_kinematics(0.2, ("a", "b"), [2.5, 25.0])     # repeated stamp: last one wins
    trial.add_kinematics(0.3, ("b", "c"), [30.0, 300.0])   # model swap: channels change
    series = trial.coordinates()
    np.testing.assert_array_equal(series.time, [0.1, 0.2, 0.3])
    assert series.names == ("a", "b", "c")
    np.testing.assert_array_equal(series.values, [[1.0, 10.0, np.nan], [2.5, 25.0, np.nan], [np.nan, 30.0, 300.0]])


def test_only_streams_with_samples_are_written(tmp_path):
    t, markers, _, _ = samples(10)
    trial = TrialRecording("markers_only", tmp_path)
    for i in range(10):
        trial.add_markers(t[i], MARKERS, markers[i])
    result = trial.write()
    assert [p.name for p in result.files] == ["markers_only.trc", "markers_only_trial.json"]


def test_a_bad_stream_does_not_stop_the_others(tmp_path):
    t, _, q, _ = samples(10)
    trial = TrialRecording("partial", tmp_path)
    for i in range(10):
        trial.add_markers(t[i], MARKERS, np.full((4, 3), np.nan))  # every marker missing
        trial.add_kinematics(t[i], COORDS, q[i])
    result = trial.write()
    # No IK errors were reported either: that file is simply absent, not a problem.
    assert [p.name for p in result.files] == ["partial_ik.mot", "partial_trial.json"]
    assert len(result.problems) == 1 and result.problems[0].startswith("partial.trc:")
    assert "missing" in result.problems[0]


def test_bad_input_is_named(tmp_path):
    with pytest.raises(Sam4dcapError, match="received no markers, kinematics or kinetics"):
        TrialRecording("empty", tmp_path).write()
    assert not (tmp_path / "empty").exists() or not any((tmp_path / "empty").iterdir())
    with pytest.raises(Sam4dcapError, match="may only hold letters"):
        TrialRecording("../escape", tmp_path)
    trial = TrialRecording("shapes", tmp_path)
    with pytest.raises(Sam4dcapError, match=r"shape \(3, 3\) for 4 names"):
        trial.add_markers(0.0, MARKERS, np.zeros((3, 3)))
    with pytest.raises(Sam4dcapError, match="not finite"):
        trial.add_kinematics(math.nan, COORDS, np.zeros(4))
    assert trial.is_empty


def test_default_trial_name_is_time_stamped():
    assert trial_name_or_default("", now=0.0).startswith("trial_19")
    assert trial_name_or_default("  run-2_b ") == "run-2_b"
