"""Streaming inverse dynamics: a pendulum against its closed-form torque, and the project's model
against OpenSim's InverseDynamicsTool (inverse_dynamics.run_id) on the same gait."""

import math

import numpy as np
import opensim
import pytest

from sam4dcap_biomech.errors import Sam4dcapError
from sam4dcap_biomech.streaming_id import StreamingID

G = 9.80665
MASS_KG, COM_M, I_CM = 3.0, 0.4, 0.05   # pendulum: mass, pivot -> centre of mass, inertia about the COM


def pendulum_model() -> opensim.Model:
    model = opensim.Model()
    model.setName("pendulum")
    model.setGravity(opensim.Vec3(0, -G, 0))
    body = opensim.Body("arm", MASS_KG, opensim.Vec3(0, -COM_M, 0), opensim.Inertia(I_CM, I_CM, I_CM))
    model.addBody(body)
    zero = opensim.Vec3(0)
    joint = opensim.PinJoint("pivot", model.getGround(), opensim.Vec3(0, 1, 0), zero, body, zero, zero)
    joint.upd_coordinates(0).setName("swing")
    model.addJoint(joint)
    model.finalizeConnections()
    return model


def run_stream(sid, time, names, values):
    frames = [sid.add(float(t), names, v) for t, v in zip(time, values)]
    return [f for f in frames if f is not None]


def test_pendulum_matches_closed_form_torque():
    rate, amp, freq = 60.0, 0.8, 1.0
    time = 5.0 + np.arange(int(3 * rate)) / rate
    w = 2 * np.pi * freq
    q = amp * np.sin(w * (time - 5.0))
    sid = StreamingID(pendulum_model(), lowpass_cutoff_hz=6.0, delay_s=0.3)
    frames = run_stream(sid, time, ["swing"], q[:, None])
    # One output per input once the window holds 16 frames of history, each delay_s behind.
    delay_frames = round(0.3 * rate)
    out_t = np.array([f.time_s for f in frames])
    np.testing.assert_array_equal(out_t, time[15:len(time) - delay_frames])
    tau = np.array([f.generalized_forces[0] for f in frames])
    qs = amp * np.sin(w * (out_t - 5.0))
    qddot = -amp * w**2 * np.sin(w * (out_t - 5.0))
    # tau = (I_cm + m L^2) qddot + m g L sin(q): 1 Hz motion, 6 Hz filter, 60 Hz differences.
    expected = (I_CM + MASS_KG * COM_M**2) * qddot + MASS_KG * G * COM_M * np.sin(qs)
    scale = np.abs(expected).max()
    assert np.abs(tau - expected).max() < 0.005 * scale, np.abs(tau - expected).max() / scale
    assert all(f.no_external_loads for f in frames)


def test_matches_the_inverse_dynamics_tool_on_gait(tmp_path):
    from sam4dcap_biomech.inverse_dynamics import run_id
    from sam4dcap_biomech.model_builder import write_model
    from sam4dcap_biomech.synthetic import gait_trajectory

    model = write_model(tmp_path / "model.osim", height_m=1.75, mass_kg=70.0)
    coords = gait_trajectory(2.0, 60.0)
    reference = run_id(str(model), coords, lowpass_cutoff_hz=6.0).forces
    sid = StreamingID(str(model), lowpass_cutoff_hz=6.0, delay_s=0.3)
    frames = run_stream(sid, coords.time, coords.names, coords.values)
    times = np.array([f.time_s for f in frames])
    ours = np.stack([f.generalized_forces for f in frames])
    names = sid.coordinate_names
    inner = (times > 0.5) & (times < 1.5)   # away from both trials' filter start-up
    rel = {}
    for j, n in enumerate(names):
        column = f"{n}_force" if n in ("pelvis_tx", "pelvis_ty", "pelvis_tz") else f"{n}_moment"
        ref = np.interp(times[inner], reference.time, reference.get(column))
        rms_ref = np.sqrt(np.mean(ref**2))
        if rms_ref < 1.0:  # near-zero channels (N*m / N): relative error meaningless
            continue
        rel[n] = np.sqrt(np.mean((ours[inner, j] - ref) ** 2)) / rms_ref
    # Same dynamics, different filter implementation (Butterworth sosfiltfilt on a 1 s window
    # vs OpenSim's IIR on the whole trial) and derivatives (differences vs GCV spline).
    # (Ankle moments are < 1 N*m without ground reaction: only the foot swings.)
    for n in ("hip_flexion_r", "knee_angle_r", "hip_flexion_l", "knee_angle_l", "pelvis_ty", "lumbar_extension"):
        assert rel[n] < 0.05, (n, rel[n])
    assert np.median(list(rel.values())) < 0.03
    assert max(rel.values()) < 0.1, max(rel.items(), key=lambda kv: kv[1])


def test_bad_input_is_named():
    sid = StreamingID(pendulum_model(), lowpass_cutoff_hz=6.0, delay_s=0.1)
    with pytest.raises(Sam4dcapError, match="swing.*missing"):
        sid.add(0.0, ["elbow"], [0.1])
    with pytest.raises(Sam4dcapError, match="non-finite"):
        sid.add(0.0, ["swing"], [math.nan])
    with pytest.raises(Sam4dcapError, match="Nyquist"):
        slow = StreamingID(pendulum_model(), lowpass_cutoff_hz=6.0, delay_s=0.0, window_s=5.0)
        run_stream(slow, np.arange(40) / 10.0, ["swing"], np.zeros((40, 1)))
    with pytest.raises(Sam4dcapError, match="model file not found"):
        StreamingID("/no/such/model.osim")


def test_gap_or_restart_starts_a_new_window():
    sid = StreamingID(pendulum_model(), lowpass_cutoff_hz=6.0, delay_s=0.1)
    time = np.arange(30) / 60.0
    assert run_stream(sid, time, ["swing"], np.zeros((30, 1)))
    # Time jumps back (a source restarted): no output until the new window has history again.
    assert run_stream(sid, time[:20], ["swing"], np.zeros((20, 1))) == []
