"""`sam4dcap model` through the real CLI entry point, loading the written file with OpenSim."""

import opensim
import pytest

from sam4dcap_biomech.markersets import OPENCAP43
from sam4dcap_biomech.model_builder import COORDINATE_NAMES, standing_height_m
from sam4dcap_perception.cli import main


@pytest.mark.parametrize("markers,count", [("blazepose", 33), ("opencap43", 43), ("none", 0)])
def test_model_command_writes_a_loadable_model(tmp_path, capsys, markers, count):
    out = tmp_path / "sub" / "model.osim"
    rc = main(["model", "--height", "1.62", "--mass", "58", "--markers", markers, "--out", str(out),
               "--name", "subject7"])
    assert rc == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert len(printed) == 1 and str(out) in printed[0] and "1.620 m" in printed[0] and "58.00 kg" in printed[0]
    model = opensim.Model(str(out))
    state = model.initSystem()
    assert model.getName() == "subject7"
    assert model.getMarkerSet().getSize() == count
    assert model.getCoordinateSet().getSize() == len(COORDINATE_NAMES)
    assert model.getTotalMass(state) == pytest.approx(58.0)
    assert standing_height_m(model) == pytest.approx(1.62, rel=0.01)


def test_model_command_with_marker_xml(tmp_path):
    first = tmp_path / "a.osim"
    assert main(["model", "--height", "1.8", "--mass", "80", "--markers", "opencap43", "--out", str(first)]) == 0
    xml = tmp_path / "markers.xml"
    source = opensim.Model(str(first))  # keep the model alive while its marker set is printed
    source.getMarkerSet().printToXML(str(xml))
    second = tmp_path / "b.osim"
    assert main(["model", "--height", "1.6", "--mass", "60", "--markers", str(xml), "--out", str(second)]) == 0
    model = opensim.Model(str(second))
    assert {model.getMarkerSet().get(i).getName() for i in range(model.getMarkerSet().getSize())} == set(OPENCAP43)


@pytest.mark.parametrize("args,words", [
    (["--height", "-1.75", "--mass", "70"], "height"),
    (["--height", "1.75", "--mass", "0"], "mass"),
    (["--height", "1.75", "--mass", "70", "--markers", "coco17"], "unknown marker set"),
    (["--height", "1.75", "--mass", "70", "--markers", "/nonexistent/set.xml"], "does not exist"),
])
def test_model_command_bad_input_exits_2_with_one_line(tmp_path, capsys, args, words):
    out = tmp_path / "m.osim"
    assert main(["model", *args, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("sam4dcap model: error:") and words in err[0]
    assert not out.exists()


def test_model_command_rejects_non_osim_output(tmp_path, capsys):
    assert main(["model", "--height", "1.75", "--mass", "70", "--out", str(tmp_path / "m.txt")]) == 2
    assert ".osim" in capsys.readouterr().err
