"""`sam4dcap scale | ik | id` end to end on files, and their one-line errors (exit code 2)."""

from __future__ import annotations

import numpy as np
import pytest

from sam4dcap_biomech import model_builder, synthetic
from sam4dcap_biomech.storage import read_mot
from sam4dcap_biomech.trc import write_trc
from sam4dcap_perception.cli import main

SUBJECT_H = 1.80


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli_biomech")
    generic = tmp / "generic.osim"
    model_builder.write_model(generic, height_m=1.70, mass_kg=70.0, markers="opencap43")
    subject = model_builder.build_model(height_m=SUBJECT_H, mass_kg=75.0, markers="opencap43")
    static = synthetic.markers_from_coordinates(subject, synthetic.static_trajectory(1.0, 60.0, height_m=SUBJECT_H))
    coords = synthetic.squat_trajectory(duration_s=1.0, rate_hz=60.0, height_m=SUBJECT_H)
    trial = synthetic.markers_from_coordinates(subject, coords)
    return {"tmp": tmp, "generic": generic, "static": write_trc(tmp / "static.trc", static, units="mm"),
            "trial": write_trc(tmp / "squat.trc", trial, units="m"), "coords": coords}


def test_scale_ik_id_chain(files, capsys):
    tmp = files["tmp"]
    assert main(["scale", "--model", str(files["generic"]), "--static", str(files["static"]), "--height",
                 str(SUBJECT_H), "--mass", "75", "--out", str(tmp / "scaled.osim")]) == 0
    out = capsys.readouterr().out
    assert "scaled.osim" in out and "static window" in out
    assert main(["ik", "--model", str(tmp / "scaled.osim"), "--trc", str(files["trial"]),
                 "--out", str(tmp / "squat_ik.mot")]) == 0
    assert main(["ik", "--model", str(tmp / "scaled.osim"), "--trc", str(files["trial"]),
                 "--out", str(tmp / "squat_ik_streaming.mot"), "--streaming"]) == 0
    out = capsys.readouterr().out
    assert "InverseKinematicsTool" in out and "streaming" in out
    batch, streaming = read_mot(tmp / "squat_ik.mot"), read_mot(tmp / "squat_ik_streaming.mot")
    truth = files["coords"]
    for result in (batch, streaming):
        err = np.rad2deg(np.abs(result.get("knee_angle_r") - truth.get("knee_angle_r")))
        assert err.max() < 0.5
    assert (tmp / "squat_ik_marker_errors.sto").is_file() and (tmp / "squat_ik_streaming_marker_errors.sto").is_file()
    assert main(["id", "--model", str(tmp / "scaled.osim"), "--coordinates", str(tmp / "squat_ik.mot"),
                 "--out", str(tmp / "squat_id.sto")]) == 0
    captured = capsys.readouterr()
    assert "squat_id.sto" in captured.out and "not physical" in captured.err
    forces = read_mot(tmp / "squat_id.sto")
    assert "knee_angle_r_moment" in forces.names and forces.meta["kind"] == "forces"


@pytest.mark.parametrize("argv, message", [
    (["ik", "--model", "{generic}", "--trc", "{tmp}/missing.trc", "--out", "{tmp}/x.mot"], "not found"),
    (["ik", "--model", "{generic}", "--trc", "{trial}", "--out", "{tmp}/x.txt"], "must end in .mot"),
    (["id", "--model", "{generic}", "--coordinates", "{trial}", "--out", "{tmp}/x.sto"], "endheader"),
    (["scale", "--model", "{generic}", "--static", "{trial}", "--height", "1.8", "--mass", "75",
      "--out", "{tmp}/x.osim"], "no static window"),
    (["scale", "--model", "{tmp}/none.osim", "--static", "{static}", "--height", "1.8", "--mass", "75",
      "--out", "{tmp}/x.osim"], "model file not found"),
])
def test_cli_errors_are_one_line(files, capsys, argv, message):
    argv = [a.format(**{k: str(v) for k, v in files.items()}) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"sam4dcap {argv[0]}: error:") and message in err[0], err
