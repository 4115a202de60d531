"""Inverse dynamics (OpenSim InverseDynamicsTool) on the project's model against analytic values:
a body moved only vertically needs pelvis_ty_force = M (g + y''), and ground reaction forces
carrying the weight take that residual to zero."""

from __future__ import annotations

import numpy as np
import pytest

from sam4dcap_biomech import model_builder, synthetic
from sam4dcap_biomech.errors import Sam4dcapError
from sam4dcap_biomech.inverse_dynamics import NO_LOADS_NAME, run_id
from sam4dcap_biomech.storage import read_mot, write_mot, write_sto
from sam4dcap_biomech.timeseries import TimeSeries

MASS_KG, G = 70.0, 9.80665
RATE_HZ, AMPLITUDE_M, FREQ_HZ = 100.0, 0.05, 1.0


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("id") / "model.osim"
    model_builder.write_model(path, height_m=1.75, mass_kg=MASS_KG, markers="blazepose33")
    return path


@pytest.fixture(scope="module")
def bobbing():
    """Standing still but for a 1 Hz, 5 cm vertical oscillation of the whole body."""
    static = synthetic.static_trajectory(duration_s=2.0, rate_hz=RATE_HZ, height_m=1.75)
    values = static.values.copy()
    k = static.index("pelvis_ty")
    values[:, k] += AMPLITUDE_M * np.sin(2 * np.pi * FREQ_HZ * static.time)
    return static.with_values(values)


def _inner(series: TimeSeries, margin_s=0.3) -> np.ndarray:
    # Filter end effects stay out of the comparison.
    return (series.time >= series.time[0] + margin_s) & (series.time <= series.time[-1] - margin_s)


def test_vertical_bobbing_without_loads_matches_newton(model_path, bobbing, tmp_path):
    result = run_id(model_path, bobbing, out_sto=tmp_path / "id.sto")
    f = result.forces
    assert result.no_external_loads
    keep = _inner(f)
    t = f.time[keep]
    w = 2 * np.pi * FREQ_HZ
    expected = MASS_KG * (G - AMPLITUDE_M * w ** 2 * np.sin(w * t))
    np.testing.assert_allclose(f.get("pelvis_ty_force")[keep], expected, rtol=0.01)
    np.testing.assert_allclose(f.get("pelvis_tx_force")[keep], 0.0, atol=0.5)
    np.testing.assert_allclose(f.get("pelvis_tz_force")[keep], 0.0, atol=0.5)
    assert f.channel_units["knee_angle_r_moment"] == "N*m"
    # The file says it has no external loads, in its name and header; OpenSim still reads it.
    text = (tmp_path / "id.sto").read_text()
    assert text.splitlines()[0] == NO_LOADS_NAME and "external_loads=none" in text
    assert read_mot(tmp_path / "id.sto").meta["header"]["external_loads"].startswith("none")
    import opensim

    table = opensim.TimeSeriesTable(str(tmp_path / "id.sto"))
    assert table.getNumRows() == f.n_frames


def _grf_files(folder, time, force_y_each):
    """Two vertical ground forces (one per foot) of OpenSim's GRF layout, and their ExternalLoads XML."""
    n = time.size
    cols = {}
    for prefix in ("", "1_"):
        cols.update({f"{prefix}ground_force_vx": np.zeros(n), f"{prefix}ground_force_vy": np.full(n, force_y_each),
                     f"{prefix}ground_force_vz": np.zeros(n), f"{prefix}ground_force_px": np.zeros(n),
                     f"{prefix}ground_force_py": np.zeros(n), f"{prefix}ground_force_pz": np.zeros(n)})
    for prefix in ("", "1_"):
        cols.update({f"{prefix}ground_torque_x": np.zeros(n), f"{prefix}ground_torque_y": np.zeros(n),
                     f"{prefix}ground_torque_z": np.zeros(n)})
    write_sto(folder / "grf.mot", TimeSeries.from_dict(time, cols, unit="N"))
    forces = ""
    for name, body, prefix in (("right", "calcn_r", ""), ("left", "calcn_l", "1_")):
        forces += f"""<ExternalForce name="{name}"><applied_to_body>{body}</applied_to_body>
<force_expressed_in_body>ground</force_expressed_in_body><point_expressed_in_body>ground</point_expressed_in_body>
<force_identifier>{prefix}ground_force_v</force_identifier><point_identifier>{prefix}ground_force_p</point_identifier>
<torque_identifier>{prefix}ground_torque_</torque_identifier></ExternalForce>"""
    xml = folder / "grf.xml"
    xml.write_text(f"""<?xml version="1.0" encoding="UTF-8" ?>
<OpenSimDocument Version="40000"><ExternalLoads name="grf"><objects>{forces}</objects><groups/>
<datafile>grf.mot</datafile></ExternalLoads></OpenSimDocument>""")
    return xml


def test_ground_forces_carrying_the_weight_cancel_the_residual(model_path, tmp_path):
    static = synthetic.static_trajectory(duration_s=1.0, rate_hz=RATE_HZ, height_m=1.75)
    xml = _grf_files(tmp_path, static.time, MASS_KG * G / 2)
    result = run_id(model_path, static, external_loads_xml=xml, out_sto=tmp_path / "id_grf.sto")
    assert not result.no_external_loads
    assert "external_loads=none" not in (tmp_path / "id_grf.sto").read_text()
    f = result.forces
    np.testing.assert_allclose(f.get("pelvis_ty_force"), 0.0, atol=0.01 * MASS_KG * G)
    without = run_id(model_path, static).forces
    np.testing.assert_allclose(without.get("pelvis_ty_force"), MASS_KG * G, rtol=0.01)


def test_lowpass_cutoff_default_from_config_and_override(model_path, bobbing):
    from sam4dcap_biomech.config import load_config

    default = run_id(model_path, bobbing)
    assert default.lowpass_cutoff_hz == load_config().params("id_node")["lowpass_cutoff_hz"]
    unfiltered = run_id(model_path, bobbing, lowpass_cutoff_hz=0)
    assert unfiltered.lowpass_cutoff_hz == 0
    with pytest.raises(Sam4dcapError, match="Nyquist"):
        run_id(model_path, bobbing, lowpass_cutoff_hz=60.0)


def test_id_bad_input(model_path, bobbing, tmp_path):
    with pytest.raises(Sam4dcapError, match="hip_flexion_r"):
        run_id(model_path, bobbing.select([n for n in bobbing.names if n != "hip_flexion_r"]))
    wrong = TimeSeries.from_dict(bobbing.time, {"foo": np.zeros(bobbing.n_frames)}, unit="rad")
    with pytest.raises(Sam4dcapError, match="wrong model or wrong file"):
        run_id(model_path, wrong)
    values = bobbing.values.copy()
    values[50, 3] = np.nan
    with pytest.raises(Sam4dcapError, match="missing values.*fill the gaps"):
        run_id(model_path, bobbing.with_values(values))
    with pytest.raises(Sam4dcapError, match="not found"):
        run_id(model_path, tmp_path / "none.mot")
    garbage = tmp_path / "garbage.mot"
    garbage.write_text("no header here\n1 2 3\n")
    with pytest.raises(Sam4dcapError, match="endheader"):
        run_id(model_path, garbage)
    with pytest.raises(Sam4dcapError, match="external loads file not found"):
        run_id(model_path, bobbing, external_loads_xml=tmp_path / "none.xml")
    mot = write_mot(tmp_path / "ok.mot", bobbing)
    assert run_id(model_path, mot, start_s=0.5, end_s=1.0).forces.time[0] >= 0.5 - 1e-6
