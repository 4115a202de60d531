"""The bad-input corpus: files, CLI arguments, config files and node parameters a new user gets
wrong, each with the behaviour the README promises.

Every case is generated here from the project's own model and synthetic gait (no shared data):
a valid trial (model, static and walking markers, coordinates, ground forces and their
ExternalLoads XML) is written once, then each case breaks one thing. Expected outcomes:

* "error": the CLI exits 2 with exactly one line `sam4dcap CMD: error: ...` naming the problem
  (no traceback); an API call raises `Sam4dcapError` with a one-line message naming it;
* "warn": exit 0 (or a result) with a warning naming the problem, where the result is usable.

Most cases run the CLI in-process (`main(argv)`); a few run it as a real subprocess. Live faults
(signals to nodes and the runner) are covered by the ROS graph tests.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from sam4dcap_biomech import model_builder, synthetic
from sam4dcap_biomech.c3d import read_c3d, write_c3d
from sam4dcap_biomech.config import load_config
from sam4dcap_biomech.errors import Sam4dcapError
from sam4dcap_biomech.inverse_kinematics import run_ik
from sam4dcap_biomech.storage import read_mot, write_mot
from sam4dcap_biomech.timeseries import TimeSeries
from sam4dcap_biomech.trc import write_trc
from sam4dcap_perception.bag_io import BagWriter, bag_topics
from sam4dcap_perception.cli import main
from sam4dcap_perception.video_source import open_source

ROOT = Path(__file__).resolve().parents[1]
HEIGHT, MASS = 1.75, 70.0
GRF_COLUMNS = ("ground_force_vx", "ground_force_vy", "ground_force_vz", "ground_force_px", "ground_force_py",
               "ground_force_pz", "ground_torque_x", "ground_torque_y", "ground_torque_z")
LOADS_XML = """<?xml version="1.0" encoding="UTF-8" ?>
<OpenSimDocument Version="40000">
  <ExternalLoads name="loads">
    <objects>
      <ExternalForce name="right">
        <applied_to_body>calcn_r</applied_to_body>
        <force_expressed_in_body>ground</force_expressed_in_body>
        <point_expressed_in_body>ground</point_expressed_in_body>
        <force_identifier>ground_force_v</force_identifier>
        <point_identifier>ground_force_p</point_identifier>
        <torque_identifier>ground_torque_</torque_identifier>
        <data_source_name>grf</data_source_name>
      </ExternalForce>
    </objects>
    <groups />
    <datafile>{datafile}</datafile>
  </ExternalLoads>
</OpenSimDocument>
"""
SCALE_SETUP_XML = """<?xml version="1.0" encoding="UTF-8" ?>
<OpenSimDocument Version="40000">
  <ScaleTool name="subject">
    <mass>70</mass>
    <height>1750</height>
    <GenericModelMaker><model_file>Unassigned</model_file><marker_set_file>Unassigned</marker_set_file></GenericModelMaker>
    <ModelScaler>
      <apply>true</apply>
      <scaling_order> measurements</scaling_order>
      <MeasurementSet><objects>
        <Measurement name="pelvis"><apply>true</apply>
          <MarkerPairSet><objects><MarkerPair><markers> RASI LASI</markers></MarkerPair></objects></MarkerPairSet>
          <BodyScaleSet><objects><BodyScale name="pelvis"><axes> X Y Z</axes></BodyScale></objects></BodyScaleSet>
        </Measurement>
        <Measurement name="thigh"><apply>true</apply>
          <MarkerPairSet><objects><MarkerPair><markers> RHJC_study r_knee_study</markers></MarkerPair></objects></MarkerPairSet>
          <BodyScaleSet><objects><BodyScale name="femur_r"><axes> X Y Z</axes></BodyScale></objects></BodyScaleSet>
        </Measurement>
      </objects></MeasurementSet>
    </ModelScaler>
    <MarkerPlacer><apply>false</apply></MarkerPlacer>
  </ScaleTool>
</OpenSimDocument>
"""


@dataclass(frozen=True)
class Data:
    tmp: Path
    model: Path
    walk_trc: Path
    static_trc: Path
    walk_mot: Path
    grf_mot: Path
    loads_xml: Path
    config: Path
    coords: TimeSeries
    markers: TimeSeries
    static: TimeSeries
    readonly: Path | None      # a read-only filesystem (None when mounting is not possible here)
    full: Path | None          # a full filesystem


def _mount_tmpfs(where: Path, options: str) -> bool:
    where.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True)
    return proc.returncode == 0


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("corpus")
    model = model_builder.build_model(height_m=HEIGHT, mass_kg=MASS, markers="opencap43")
    model_path = tmp / "model.osim"
    model.printToXML(str(model_path))
    coords = synthetic.gait_trajectory(duration_s=1.0, rate_hz=60.0, height_m=HEIGHT)
    markers = synthetic.markers_from_coordinates(model, coords)
    static = synthetic.markers_from_coordinates(model, synthetic.static_trajectory(1.0, 60.0, height_m=HEIGHT))
    t = coords.time
    grf = np.zeros((t.size, len(GRF_COLUMNS)))
    grf[:, 1] = MASS * 9.81 * (1 + 0.2 * np.sin(2 * np.pi * t))
    grf[:, 3] = 0.1 + 0.5 * t
    grf_ts = TimeSeries(time=t, names=GRF_COLUMNS, values=grf, unit="N",
                        channel_units={"ground_force_px": "m", "ground_force_py": "m", "ground_force_pz": "m"})
    grf_path = tmp / "grf.mot"
    write_mot(grf_path, grf_ts, in_degrees=False, name="grf")
    loads = tmp / "loads.xml"
    loads.write_text(LOADS_XML.format(datafile="grf.mot"))
    config = tmp / "sam4dcap.yaml"
    shutil.copy(ROOT / "config" / "sam4dcap.yaml", config)
    ro, full = tmp / "readonly_fs", tmp / "full_fs"
    readonly = ro if _mount_tmpfs(ro, "ro,size=1m") else None
    if _mount_tmpfs(full, "size=64k"):
        with contextlib.suppress(OSError), (full / "filler").open("wb") as f:
            f.write(b"\0" * (1 << 20))
    else:
        full = None
    yield Data(tmp=tmp, model=model_path, walk_trc=write_trc(tmp / "walk.trc", markers),
               static_trc=write_trc(tmp / "static.trc", static), walk_mot=write_mot(tmp / "walk.mot", coords),
               grf_mot=grf_path, loads_xml=loads, config=config, coords=coords, markers=markers, static=static,
               readonly=readonly, full=full)
    for mount in (ro, full):
        subprocess.run(["umount", str(mount)], capture_output=True)


# --- helpers building broken variants ---------------------------------------------------------------


def _variant(d: Data, base: Path, name: str, edit: Callable[[list[str]], list[str]]) -> Path:
    """A copy of `base` with its lines edited (tab-separated TRC/MOT text)."""
    lines = base.read_text().split("\n")
    out = d.tmp / name
    out.write_text("\n".join(edit(list(lines))))
    return out


def _cell(line_no: int, field: int, text: str):
    def edit(lines):
        f = lines[line_no].split("\t")
        f[field] = text
        lines[line_no] = "\t".join(f)
        return lines
    return edit


def _trc(d, name, edit):
    return _variant(d, d.walk_trc, name, edit)


def _mot(d, name, edit):
    return _variant(d, d.walk_mot, name, edit)


def _mot_data_start(lines) -> int:
    return next(i for i, ln in enumerate(lines) if ln.startswith("time")) + 1


def _ik(d, trc, *extra):
    return ["ik", "--model", str(d.model), "--trc", str(trc), "--out", str(d.tmp / "out" / "ik.mot"), *extra]


def _id(d, mot, *extra):
    return ["id", "--model", str(d.model), "--coordinates", str(mot), "--out", str(d.tmp / "out" / "id.sto"), *extra]


def _scale(d, static, *extra):
    return ["scale", "--model", str(d.model), "--static", str(static), "--height", str(HEIGHT), "--mass",
            str(MASS), "--out", str(d.tmp / "out" / "scaled.osim"), *extra]


def _graph(d, *extra):
    return ["graph", "--video", str(d.walk_trc), "--height", "1.75", *extra]


def _config_variant(d, name, old, new):
    text = (ROOT / "config" / "sam4dcap.yaml").read_text()
    assert old in text
    p = d.tmp / name
    p.write_text(text.replace(old, new, 1))
    return p


def _time_shift(seconds):
    def edit(lines):
        for i in range(_mot_data_start(lines), len(lines)):
            if lines[i].strip():
                f = lines[i].split("\t")
                f[0] = f"{float(f[0]) + seconds:.6f}"
                lines[i] = "\t".join(f)
        return lines
    return edit


def _renamed_markers(d, name, prefix, keep=None, static=False):
    m = d.static if static else d.markers
    names = [n for n in m.names if keep is None or n in keep]
    sel = m.select(names)
    return write_trc(d.tmp / name, TimeSeries(time=sel.time, names=tuple(prefix + n for n in names),
                                              values=sel.values, unit="m", frame="world"))


def _static_with_nan(d, name, nan_markers, frames=slice(None)):
    v = d.static.values.copy()
    for n in nan_markers:
        v[frames, d.static.index(n)] = np.nan
    return write_trc(d.tmp / name, d.static.with_values(v))


def _shifted_walk(d, name, seconds):
    c = d.coords
    return write_mot(d.tmp / name, TimeSeries(time=c.time + seconds, names=c.names, values=c.values, unit="rad",
                                              channel_units=c.channel_units))


def _absurd_series(d):
    v = d.markers.values.copy()
    v[10, d.markers.index(d_names(5)), 1] = 1e300
    return d.markers.with_values(v)


def _shaken_walk(d):
    """Plausible angles (±1 rad) shaken at 25 Hz: accelerations, hence moments, no human reaches."""
    c = d.coords
    v = c.values.copy()
    v[:, c.names.index("hip_flexion_r")] += np.sin(2 * np.pi * 25.0 * c.time)
    return write_mot(d.tmp / "shaken.mot", c.with_values(v))


def _loads_with(d, name, datafile):
    p = d.tmp / name
    p.write_text(LOADS_XML.format(datafile=datafile))
    return p


def _truncated_grf(d):
    text = d.grf_mot.read_text()
    p = d.tmp / "grf_cut.mot"
    p.write_text(text[:len(text) * 2 // 3 + 7])    # ends inside a data row
    return _loads_with(d, "loads_cut.xml", p.name), p


def _prefixed_model(d):
    """The model with its markers renamed (a marker set sam4dcap does not know: equal IK weights)."""
    text = d.model.read_text()
    for n in d.markers.names:
        text = text.replace(f'<Marker name="{n}">', f'<Marker name="g_{n}">')
    p = d.tmp / "model_g.osim"
    p.write_text(text)
    return p


def _image_folder(d):
    import cv2

    folder = d.tmp / "frames"
    folder.mkdir(exist_ok=True)
    for i in range(2):
        cv2.imwrite(str(folder / f"{i:03d}.png"), np.full((32, 32, 3), 40 * i, np.uint8))
    return folder


def _bag(d, name, n=20):
    from sam4dcap_perception.bag_io import typestore

    store = typestore()
    JointState = store.types["sensor_msgs/msg/JointState"]
    Header = store.types["std_msgs/msg/Header"]
    Time = store.types["builtin_interfaces/msg/Time"]
    path = d.tmp / name
    with BagWriter(path) as w:
        w.add_topic("/js", "sensor_msgs/msg/JointState")
        for i in range(n):
            msg = JointState(header=Header(stamp=Time(sec=i, nanosec=0), frame_id="x"), name=["a"],
                             position=np.array([0.1 * i]), velocity=np.zeros(0), effort=np.zeros(0))
            w.write("/js", i * 1_000_000_000, bytes(store.serialize_cdr(msg, "sensor_msgs/msg/JointState")))
            w.flush()
    return path


def _cut_bag(d):
    bag = _bag(d, "bag_cut")
    mcap = next(bag.glob("*.mcap"))
    data = mcap.read_bytes()
    mcap.write_bytes(data[:len(data) // 2])
    return bag


def _needs(d, what):
    fs = getattr(d, what)
    if fs is None:
        pytest.skip(f"cannot mount a tmpfs here (not root?): no {what} filesystem to test with")
    return fs


# --- the corpus -------------------------------------------------------------------------------------


def d_names(i):
    """Marker name i of the corpus trial (the generated model's OpenCap-43 set, in its order)."""
    from sam4dcap_biomech.markersets import OPENCAP43

    return OPENCAP43[i]


@dataclass(frozen=True)
class Case:
    id: str
    make: Callable[[Data], object]    # CLI argv (list) or a zero-argument callable
    words: tuple[str, ...]            # all must appear in the error/warning line (case-insensitive)
    outcome: str = "error"            # "error" | "warn"


def C(id, make, *words, outcome="error"):
    return Case(id, make, tuple(words), outcome)


CASES = [
    # TRC files, through `sam4dcap ik`
    C("trc_inf_cell", lambda d: _ik(d, _trc(d, "inf.trc", _cell(8, 5, "inf"))), "line 9", "not a finite"),
    C("trc_1e300_cell", lambda d: _ik(d, _trc(d, "huge.trc", _cell(8, 5, "1e300"))), "line 9", "plausible"),
    C("trc_minus_inf_cell", lambda d: _ik(d, _trc(d, "minf.trc", _cell(7, 2, "-Infinity"))), "line 8", "finite"),
    C("trc_nan_time", lambda d: _ik(d, _trc(d, "nantime.trc", _cell(9, 1, "nan"))), "line 10", "time"),
    C("trc_text_camera_rate", lambda d: _ik(d, _trc(d, "camrate.trc", _cell(2, 1, "sixty"))), "CameraRate"),
    C("trc_inf_orig_start_frame", lambda d: _ik(d, _trc(d, "startframe.trc", _cell(2, 6, "inf"))),
      "OrigDataStartFrame"),
    C("trc_zero_data_rate", lambda d: _ik(d, _trc(d, "rate0.trc", _cell(2, 0, "0"))), "DataRate"),
    C("trc_negative_data_rate", lambda d: _ik(d, _trc(d, "rateneg.trc", _cell(2, 0, "-60"))), "DataRate"),
    C("trc_time_in_ms", lambda d: _ik(d, _trc(d, "ms.trc", lambda L: L[:6] + [
        "\t".join([f[0], f"{float(f[1]) * 1000:.3f}"] + f[2:]) if len(f := ln.split("\t")) > 2 else ln
        for ln in L[6:]])), "milliseconds"),
    C("trc_row_cut_inside_marker", lambda d: _ik(d, _trc(d, "cut.trc", lambda L: L[:-2] + [
        "\t".join(L[-2].split("\t")[:-2])])), "cut short"),
    C("trc_marker_count_mismatch", lambda d: _ik(d, _trc(d, "count.trc", _cell(2, 3, "44"))), "NumMarkers"),
    C("trc_not_a_trc", lambda d: _ik(d, _trc(d, "nottrc.trc", lambda L: ["hello"] + L[1:])), "PathFileType"),
    C("trc_repeated_names", lambda d: _ik(d, _trc(d, "dup.trc", lambda L: [L[0], L[1], L[2], L[3].replace(
        d.markers.names[1], d.markers.names[0]), *L[4:]])), "repeat"),
    C("trc_time_backwards", lambda d: _ik(d, _trc(d, "back.trc", lambda L: L[:6] + [L[7], L[6]] + L[8:])),
      "not strictly increasing"),
    C("trc_units_cm", lambda d: _ik(d, _trc(d, "cm.trc", _cell(2, 4, "cm"))), "Units", "cm"),
    C("trc_mm_values_labelled_m", lambda d: _ik(d, _variant(
        d, write_trc(d.tmp / "mm_src.trc", d.markers, units="mm"), "mm_as_m.trc", _cell(2, 4, "m"))),
      "millimetres"),
    C("trc_all_nan", lambda d: _ik(d, write_trc_raw(d, "allnan.trc")), "NaN"),
    C("trc_empty_file", lambda d: _ik(d, _trc(d, "empty.trc", lambda L: [])), "not a TRC"),
    C("trc_header_only", lambda d: _ik(d, _trc(d, "header.trc", lambda L: L[:6])), "no data rows"),
    C("trc_missing_file", lambda d: _ik(d, d.tmp / "nowhere.trc"), "not found"),
    C("trc_no_marker_in_common", lambda d: _ik(d, _renamed_markers(d, "renamed.trc", "x_")), "in common"),
    C("trc_three_markers_in_common", lambda d: _ik(d, _renamed_markers(
        d, "three.trc", "", keep=[d_names(i) for i in range(3)])), "3 marker(s) in common", d_names(0)),
    C("trc_model_markers_missing_warns", lambda d: ["ik", "--model", str(_prefixed_model(d)), "--trc",
                                                   str(_renamed_markers(d, "g_most.trc", "g_",
                                                                        keep=[d_names(i) for i in range(3, 43)])),
                                                   "--out", str(d.tmp / "out" / "g.mot")],
      "not in the marker data", "g_" + d_names(0), outcome="warn"),
    C("ik_series_with_1e300", lambda d: lambda: run_ik(d.model, _absurd_series(d)), "not a position",
      d_names(5)),
    # MOT/STO files and external loads, through `sam4dcap id`
    C("mot_degrees_labelled_radians", lambda d: _id(d, _mot(d, "deg_as_rad.mot", lambda L: [
        "inDegrees=no" if ln.startswith("inDegrees") else ln for ln in L])), "look like degrees", "inDegrees=no"),
    C("mot_no_indegrees_line", lambda d: _id(d, _mot(d, "no_indeg.mot", lambda L: [
        ln for ln in L if not ln.startswith("inDegrees")])), "look like degrees", "no inDegrees line"),
    C("mot_1e30_cell", lambda d: _id(d, _mot(d, "e30.mot", lambda L: _cell(_mot_data_start(L) + 3, 4, "1e30")(L))),
      "plausible"),
    C("mot_inf_cell", lambda d: _id(d, _mot(d, "inf.mot", lambda L: _cell(_mot_data_start(L) + 3, 4, "inf")(L))),
      "not a finite"),
    C("mot_nan_time", lambda d: _id(d, _mot(d, "nant.mot", lambda L: _cell(_mot_data_start(L) + 3, 0, "nan")(L))),
      "time"),
    C("mot_no_endheader", lambda d: _id(d, _mot(d, "noend.mot", lambda L: [ln for ln in L if ln != "endheader"])),
      "endheader"),
    C("mot_ncolumns_mismatch", lambda d: _id(d, _mot(d, "ncol.mot", lambda L: [
        "nColumns=3" if ln.startswith("nColumns") else ln for ln in L])), "nColumns"),
    C("mot_short_row", lambda d: _id(d, _mot(d, "short.mot", lambda L: L[:-2] + ["\t".join(L[-2].split("\t")[:5])])),
      "values but there are"),
    C("mot_text_cell", lambda d: _id(d, _mot(d, "text.mot", lambda L: _cell(_mot_data_start(L) + 1, 2, "abc")(L))),
      "non-numeric"),
    C("mot_missing_file", lambda d: _id(d, d.tmp / "nowhere.mot"), "not found"),
    C("mot_wrong_model", lambda d: _id(d, _mot(d, "other.mot", lambda L: [
        "\t".join(["time"] + [f"c{i}" for i in range(len(ln.split("\t")) - 1)]) if ln.startswith("time") else ln
        for ln in L])), "none of the coordinate columns"),
    C("mot_nan_gap", lambda d: _id(d, _mot(d, "gap.mot", lambda L: _cell(_mot_data_start(L) + 5, 3, "NaN")(L))),
      "missing values"),
    C("mot_three_frames", lambda d: _id(d, _mot(d, "three.mot", lambda L: L[:_mot_data_start(L) + 3])),
      "at least 4"),
    C("id_lowpass_above_nyquist", lambda d: _id(d, d.walk_mot, "--lowpass-hz", "40"), "Nyquist"),
    C("id_out_not_sto", lambda d: ["id", "--model", str(d.model), "--coordinates", str(d.walk_mot), "--out",
                                   str(d.tmp / "x.txt")], "must end in .sto"),
    C("id_outside_grf_time_range", lambda d: _id(d, _shifted_walk(d, "late.mot", 100.0), "--external-loads",
                                                 str(d.loads_xml)), "ground-force time range", "100.000"),
    C("id_grf_data_file_missing", lambda d: _id(d, d.walk_mot, "--external-loads",
                                                str(_loads_with(d, "loads_nofile.xml", "gone.mot"))),
      "gone.mot", "not found"),
    C("id_grf_data_file_truncated", lambda d: _id(d, d.walk_mot, "--external-loads", str(_truncated_grf(d)[0])),
      "grf_cut.mot"),
    C("id_loads_not_xml", lambda d: _id(d, d.walk_mot, "--external-loads", str(_text_file(d, "loads_bad.xml",
                                                                                         "<ExternalLoads"))),
      "not valid XML"),
    C("id_loads_without_datafile", lambda d: _id(d, d.walk_mot, "--external-loads", str(_text_file(
        d, "loads_empty.xml", "<OpenSimDocument><ExternalLoads name='x'/></OpenSimDocument>"))), "datafile"),
    C("id_loads_missing", lambda d: _id(d, d.walk_mot, "--external-loads", str(d.tmp / "none.xml")), "not found"),
    C("id_without_loads_warns", lambda d: _id(d, d.walk_mot), "not physical", outcome="warn"),
    C("id_moments_beyond_human_warn", lambda d: _id(d, _shaken_walk(d), "--lowpass-hz", "0"),
      "beyond human ranges", "hip_flexion_r_moment", outcome="warn"),
    # models and setups
    C("osim_missing", lambda d: _ik(d, d.walk_trc)[:2] + [str(d.tmp / "none.osim")] + _ik(d, d.walk_trc)[3:],
      "model file not found"),
    C("osim_not_xml", lambda d: ["ik", "--model", str(_text_file(d, "bad.osim", "not a model")), "--trc",
                                 str(d.walk_trc), "--out", str(d.tmp / "o.mot")], "cannot read OpenSim model"),
    C("osim_truncated", lambda d: ["ik", "--model", str(_text_file(d, "cut.osim", d.model.read_text()[:5000])),
                                   "--trc", str(d.walk_trc), "--out", str(d.tmp / "o.mot")],
      "cannot read OpenSim model"),
    C("ik_accuracy_negative", lambda d: _ik(d, d.walk_trc, "--accuracy", "-1"), "accuracy", "out of range"),
    C("ik_accuracy_too_coarse", lambda d: _ik(d, d.walk_trc, "--accuracy", "0.5"), "accuracy", "out of range"),
    C("ik_out_not_mot", lambda d: ["ik", "--model", str(d.model), "--trc", str(d.walk_trc), "--out",
                                   str(d.tmp / "o.txt")], "must end in .mot"),
    C("ik_time_range_empty", lambda d: _ik(d, d.walk_trc, "--start", "50", "--end", "60"), "no marker frames"),
    C("ik_setup_not_xml", lambda d: _ik(d, d.walk_trc, "--setup", str(_text_file(d, "ik_bad.xml", "<a"))),
      "not valid XML"),
    C("ik_setup_not_ik", lambda d: _ik(d, d.walk_trc, "--setup", str(_text_file(
        d, "ik_other.xml", "<OpenSimDocument><ScaleTool/></OpenSimDocument>"))), "InverseKinematicsTool"),
    C("ik_setup_missing", lambda d: _ik(d, d.walk_trc, "--setup", str(d.tmp / "none.xml")), "not found"),
    # scaling
    C("scale_height_in_cm", lambda d: _scale(d, d.static_trc)[:6] + ["175"] + _scale(d, d.static_trc)[7:],
      "height"),
    C("scale_mass_zero", lambda d: _scale(d, d.static_trc)[:8] + ["0"] + _scale(d, d.static_trc)[9:], "mass"),
    C("scale_window_outside_trial", lambda d: _scale(d, d.static_trc, "--window", "50", "60"), "outside the trial"),
    C("scale_window_all_nan", lambda d: _scale(d, _static_with_nan(d, "nanwin.trc", d.static.names,
                                                                   slice(0, 30)), "--window", "0.05", "0.4"),
      "no marker has data"),
    C("scale_pelvis_markers_nan", lambda d: _scale(d, _static_with_nan(
        d, "nopelvis.trc", ["r.ASIS_study", "L.ASIS_study", "r.PSIS_study", "L.PSIS_study"]),
        "--window", "0.2", "0.8"), "cannot scale pelvis", "r.ASIS_study"),
    C("scale_setup_markers_missing", lambda d: _scale(d, d.static_trc, "--setup", str(_text_file(
        d, "scale_setup.xml", SCALE_SETUP_XML)), "--window", "0.2", "0.8"), "cannot scale pelvis", "LASI", "RASI"),
    C("scale_no_markers_on_model", lambda d: _scale(d, _renamed_markers(d, "static_x.trc", "x_", static=True)), "on the model"),
    # config files
    C("config_cutoff_below_range", lambda d: lambda: load_config(_config_variant(
        d, "c1.yaml", "offline_filter_cutoff_hz: 6.0", "offline_filter_cutoff_hz: 0.01")),
      "offline_filter_cutoff_hz", "out of range"),
    C("config_fov_above_range", lambda d: lambda: load_config(_config_variant(
        d, "c2.yaml", "horizontal_fov_deg: 60.0", "horizontal_fov_deg: 175")), "horizontal_fov_deg", "out of range"),
    C("config_unknown_choice", lambda d: lambda: load_config(_config_variant(
        d, "c3.yaml", "backend: blazepose ", "backend: openpose ")), "backend", "choose one of"),
    C("config_text_for_float", lambda d: lambda: load_config(_config_variant(
        d, "c4.yaml", "subject_mass_kg: 70.0", "subject_mass_kg: seventy")), "subject_mass_kg", "expected a number"),
    C("config_not_yaml", lambda d: lambda: load_config(_text_file(d, "c5.yaml", "a: [1, 2\nb: {")), "not valid YAML"),
    C("config_no_ros_parameters", lambda d: lambda: load_config(_text_file(d, "c6.yaml", "ik_node:\n  x: 1\n")),
      "ros__parameters"),
    C("config_no_description", lambda d: lambda: load_config(_text_file(
        d, "c7.yaml", "ik_node:\n  ros__parameters:\n    accuracy: 1.0e-6\n")), "description"),
    C("config_missing", lambda d: lambda: load_config(d.tmp / "none.yaml"), "not found"),
    C("config_bad_file_in_cli", lambda d: _graph(d, "--config", str(_config_variant(
        d, "c8.yaml", "accuracy: 1.0e-6", "accuracy: -1.0"))), "ik_node.accuracy", "out of range"),
    # node parameters (`graph --set`), refused before any node starts
    C("set_misspelt_node", lambda d: _graph(d, "--set", "ik_nod.accuracy=1e-5"), "no node 'ik_nod'", "ik_node"),
    C("set_unknown_parameter", lambda d: _graph(d, "--set", "ik_node.acuracy=1e-5"), "unknown parameter",
      "ik_node.acuracy"),
    C("set_out_of_range", lambda d: _graph(d, "--set", "ik_node.accuracy=-1"), "ik_node.accuracy", "out of range"),
    C("set_text_for_int", lambda d: _graph(d, "--set", "ik_node.min_markers=abc"), "min_markers", "expected int"),
    C("set_float_for_int", lambda d: _graph(d, "--set", "ik_node.min_markers=8.5"), "min_markers", "expected int"),
    C("set_bad_choice", lambda d: _graph(d, "--set", "body_estimator_node.backend=openpose"), "backend",
      "choose one of"),
    C("set_no_value", lambda d: _graph(d, "--set", "ik_node.accuracy"), "NODE.PARAM=VALUE"),
    C("set_disabled_node_checked", lambda d: _graph(d, "--set", "id_node.lowpass_cutoff_hz=100"),
      "id_node.lowpass_cutoff_hz", "out of range"),
    C("graph_record_exists", lambda d: _graph(d, "--record", str(d.tmp)), "exists already"),
    C("graph_without_required_node", lambda d: _graph(d, "--without", "markers_node"), "--without", "markers_node",
      "optional nodes"),
    C("graph_video_missing", lambda d: ["graph", "--video", str(d.tmp / "none.mp4"), "--height", "1.75"],
      "not found"),
    C("graph_record_unwritable", lambda d: _graph(d, "--record", str(_needs(d, "readonly") / "bag")),
      "not writable"),
    # videos and bags
    C("video_empty_file", lambda d: ["markers", str(_text_file(d, "empty.mp4", "")), "--height", "1.75", "--out",
                                     str(d.tmp / "m.trc")], "empty"),
    C("video_not_a_video", lambda d: ["markers", str(_text_file(d, "text.mp4", "not a video\n" * 100)),
                                      "--height", "1.75", "--out", str(d.tmp / "m.trc")], "cannot read video file"),
    C("person_pixel_outside_image", lambda d: ["markers", str(_blank_video(d)), "--height", "1.75", "--person",
                                               "99999,5", "--out", str(d.tmp / "m.trc")],
      "99999,5", "outside the 64x48 image"),
    C("video_missing", lambda d: ["markers", str(d.tmp / "none.mp4"), "--height", "1.75", "--out",
                                  str(d.tmp / "m.trc")], "not found"),
    C("video_fov_out_of_range", lambda d: ["markers", str(d.walk_trc), "--height", "1.75", "--fov", "175", "--out",
                                           str(d.tmp / "m.trc")], "horizontal_fov_deg", "out of range"),
    C("video_height_in_cm", lambda d: ["markers", str(d.walk_trc), "--height", "175", "--out",
                                       str(d.tmp / "m.trc")], "height"),
    C("image_folder_without_rate", lambda d: lambda: open_source(_image_folder(d)), "image_folder_fps"),
    C("bag_without_mcap", lambda d: lambda: bag_topics(_empty_dir(d, "notabag")), "no .mcap"),
    C("bag_folder_unwritable", lambda d: lambda: BagWriter(_needs(d, "readonly") / "bag"), "cannot create bag"),
    C("bag_mcap_cut_short_recovered", lambda d: lambda: bag_topics(_cut_bag(d)), "recovered bag", outcome="warn"),
    C("c3d_not_c3d", lambda d: lambda: read_c3d(_text_file(d, "bad.c3d", "x" * 2000)), "not a C3D file"),
    C("c3d_missing", lambda d: lambda: read_c3d(d.tmp / "none.c3d"), "not found"),
    C("c3d_truncated", lambda d: lambda: read_c3d(_cut_c3d(d)), "C3D"),
    # outputs: other filesystems, read-only and full disks, files in the way
    C("process_out_is_a_file", lambda d: ["process", str(d.walk_trc), "--height", "1.75", "--mass", "70", "--out",
                                          str(d.walk_mot)], "is a file"),
    C("ik_out_read_only", lambda d: _ik(d, d.walk_trc)[:5] + ["--out", str(_needs(d, "readonly") / "o.mot")],
      "read-only"),
    C("ik_out_disk_full", lambda d: _ik(d, d.walk_trc)[:5] + ["--out", str(_needs(d, "full") / "o.mot")],
      "no space left"),
    C("model_out_read_only", lambda d: ["model", "--height", "1.75", "--mass", "70", "--out",
                                        str(_needs(d, "readonly") / "m.osim")], "m.osim", "writable"),
    C("trc_write_read_only", lambda d: lambda: write_trc(_needs(d, "readonly") / "x.trc", d.markers),
      "cannot write TRC", "read-only"),
]


def write_trc_raw(d, name):
    v = np.full_like(d.markers.values, np.nan)
    lines = write_trc(d.tmp / "tmp_src.trc", d.markers).read_text().split("\n")
    out = lines[:6] + ["\t".join([ln.split("\t")[0], ln.split("\t")[1]] + ["NaN"] * (3 * v.shape[1]))
                       for ln in lines[6:] if ln.strip()]
    p = d.tmp / name
    p.write_text("\n".join(out) + "\n")
    return p


def _text_file(d, name, text):
    p = d.tmp / name
    p.write_text(text)
    return p


def _blank_video(d):
    """A readable 64x48 video of 10 grey frames (nobody in it)."""
    import cv2

    p = d.tmp / "blank.mp4"
    writer = cv2.VideoWriter(str(p), cv2.VideoWriter_fourcc(*"mp4v"), 30.0, (64, 48))
    for _ in range(10):
        writer.write(np.full((48, 64, 3), 128, np.uint8))
    writer.release()
    return p


def _empty_dir(d, name):
    p = d.tmp / name
    p.mkdir(exist_ok=True)
    return p


def _cut_c3d(d):
    src = write_c3d(d.tmp / "full.c3d", d.markers.select(d.markers.names[:5]))
    p = d.tmp / "cut.c3d"
    p.write_bytes(src.read_bytes()[:600])
    return p


def test_corpus_is_large_enough():
    assert len(CASES) >= 60 and len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case, data, capsys, caplog):
    target = case.make(data)
    term = signal.getsignal(signal.SIGTERM)   # `graph` installs its own SIGTERM handler
    config = os.environ.get("SAM4DCAP_CONFIG")  # and `graph --config` sets this for its nodes
    try:
        with caplog.at_level(logging.WARNING):
            if isinstance(target, list):
                rc = main(target)
                cap = capsys.readouterr()
                _check_cli(case, target[0], rc, cap.err, caplog.text)
            elif case.outcome == "error":
                with pytest.raises(Sam4dcapError) as info:
                    target()
                _check_line(case, str(info.value))
            else:
                target()
                _check_warning(case, caplog.text)
    finally:
        signal.signal(signal.SIGTERM, term)
        if config is None:
            os.environ.pop("SAM4DCAP_CONFIG", None)
        else:
            os.environ["SAM4DCAP_CONFIG"] = config


def _check_line(case, line):
    assert "\n" not in line.strip(), f"not one line: {line!r}"
    for w in case.words:
        assert w.lower() in line.lower(), f"{w!r} not named in: {line}"


def _check_warning(case, text):
    lines = [ln for ln in text.splitlines() if all(w.lower() in ln.lower() for w in case.words)]
    assert lines, f"no warning naming {case.words} in:\n{text}"


def _check_cli(case, command, rc, err, logged):
    assert "Traceback" not in err, err
    if case.outcome == "error":
        lines = [ln for ln in err.splitlines() if ln.startswith(f"sam4dcap {command}: error:")]
        assert rc == 2 and len(lines) == 1, (rc, err)
        _check_line(case, lines[0])
    else:
        assert rc == 0, err
        _check_warning(case, err + "\n" + logged)


# --- findings checked beyond one line -----------------------------------------------------------------


def test_id_rows_are_the_input_time_grid(data):
    """`sam4dcap id` writes one row per input frame at the input's times (not the tool's own grid)."""
    out = data.tmp / "grid" / "walk_id.sto"
    assert main(["id", "--model", str(data.model), "--coordinates", str(data.walk_mot), "--out", str(out)]) == 0
    forces, coords = read_mot(out), read_mot(data.walk_mot)
    assert forces.n_frames == coords.n_frames
    np.testing.assert_allclose(forces.time, coords.time, atol=1e-6)
    assert forces.meta["name"].startswith("Inverse Dynamics (NO EXTERNAL LOADS")


def test_id_with_overlapping_loads_runs(data, capsys):
    out = data.tmp / "loads" / "walk_id.sto"
    assert main(["id", "--model", str(data.model), "--coordinates", str(data.walk_mot), "--external-loads",
                 str(data.loads_xml), "--out", str(out)]) == 0
    assert read_mot(out).n_frames == data.coords.n_frames
    assert "not physical" not in capsys.readouterr().err


def test_ik_out_on_another_filesystem(data):
    """IK's temporary folder and --out on different filesystems (/dev/shm is a tmpfs here)."""
    shm = Path("/dev/shm")
    if not shm.is_dir() or os.stat(shm).st_dev == os.stat(data.tmp).st_dev:
        pytest.skip("no second filesystem (/dev/shm) to write to")
    out_dir = Path(shutil.os.path.join(shm, f"sam4dcap-xdev-{os.getpid()}"))
    try:
        out = out_dir / "walk_ik.mot"
        assert main(_ik(data, data.walk_trc)[:5] + ["--out", str(out)]) == 0
        assert read_mot(out).n_frames == data.markers.n_frames
        assert (out_dir / "walk_ik_marker_errors.sto").is_file()
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)


def test_int_for_float_parameter_reaches_the_node_as_float(data, tmp_path):
    from sam4dcap_perception.graph import GraphOptions
    from sam4dcap_perception.graph_runner import GraphRun, write_params_file

    run = GraphRun(GraphOptions(video=str(data.walk_trc), height_m=2, mass_kg=70,
                                extra={"ik_node": {"subject_mass_kg": 80, "min_markers": 9}}), log_dir=tmp_path)
    p = run.params["ik_node"]
    assert p["subject_mass_kg"] == 80.0 and isinstance(p["subject_mass_kg"], float)
    assert p["subject_height_m"] == 2.0 and isinstance(p["subject_height_m"], float)
    assert p["min_markers"] == 9 and isinstance(p["min_markers"], int)
    text = write_params_file({"ik_node": p}, tmp_path / "ik.yaml").read_text()
    assert "subject_mass_kg: 80.0" in text and "subject_height_m: 2.0" in text


def test_cli_as_subprocess_one_line_and_debug_traceback(data):
    exe = Path(sys.executable).parent / "sam4dcap"
    bad = _trc(data, "sub_inf.trc", _cell(8, 5, "inf"))
    argv = [str(exe), "ik", "--model", str(data.model), "--trc", str(bad), "--out", str(data.tmp / "s.mot")]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and lines[-1].startswith("sam4dcap ik: error:") and "Traceback" not in proc.stderr
    proc = subprocess.run([str(exe), "--debug"] + argv[1:], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "Traceback" in proc.stderr and "Sam4dcapError" in proc.stderr


def test_unreadable_video_is_not_called_corrupt(demo_video):
    """A video the user may not read is reported as such: the CLI runs as an unprivileged user
    (after its imports, which need the root-owned venv)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to run the command as another user")
    folder = Path(f"/tmp/sam4dcap-unreadable-{os.getpid()}")
    folder.mkdir(mode=0o755)
    try:
        video = folder / "walk.mp4"
        shutil.copy(demo_video, video)
        video.chmod(0o600)
        code = ("import os, sys, cv2\n"
                "from sam4dcap_perception import body_estimator, cli, marker_pipeline, video_source\n"
                "from sam4dcap_biomech.config import load_config\n"
                "load_config()\n"
                "from sam4dcap_perception.commands import markers\n"
                "os.setgid(65534); os.setuid(65534)\n"
                "sys.exit(cli.main(sys.argv[1:]))\n")
        proc = subprocess.run([sys.executable, "-c", code, "markers", str(video), "--height", "1.75", "--out",
                               str(folder / "never.trc")], capture_output=True, text=True, timeout=120)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("sam4dcap markers: error:")]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert "permission denied" in lines[0].lower() and "corrupt" not in lines[0], lines[0]


def test_raw_h264_stream_uses_its_declared_rate(demo_video, tmp_path):
    """A raw H.264 stream (no container) of the 60 fps demo: stamped at 60 fps, not FFmpeg's 25."""
    from sam4dcap_perception.video_source import h264_sps_frame_rate

    raw = tmp_path / "walk.h264"
    raw.write_bytes(_annexb_from_mp4(demo_video, max_samples=12))
    assert h264_sps_frame_rate(raw.read_bytes()) == pytest.approx(60.0, rel=1e-3)
    src = open_source(raw)
    times = [f.time_s for _, f in zip(range(6), src)]
    assert len(times) == 6
    np.testing.assert_allclose(np.diff(times), 1 / 60.0, rtol=1e-6)


def _annexb_from_mp4(mp4: Path, *, max_samples: int) -> bytes:
    """The first video samples of an mp4 as a raw Annex-B H.264 stream (SPS/PPS from avcC first)."""
    import struct

    data = mp4.read_bytes()

    def boxes(start, end):
        while start + 8 <= end:
            size, kind = struct.unpack(">I4s", data[start:start + 8])
            header = 8
            if size == 1:
                size, header = struct.unpack(">Q", data[start + 8:start + 16])[0], 16
            yield kind.decode("latin1"), start + header, start + (size or end - start)
            start += size or end - start

    def find(path, start=0, end=len(data)):
        for kind, body, stop in boxes(start, end):
            if kind == path[0]:
                if len(path) == 1:
                    return body, stop
                skip = {"stsd": 8, "avc1": 78}.get(kind, 0)
                found = find(path[1:], body + skip, stop)
                if found:
                    return found
        return None

    for kind, body, stop in boxes(0, len(data)):
        if kind != "moov":
            continue
        for tkind, tbody, tstop in boxes(body, stop):
            if tkind != "trak":
                continue
            avcc = find(["mdia", "minf", "stbl", "stsd", "avc1", "avcC"], tbody, tstop)
            if avcc is None:
                continue
            stbl = find(["mdia", "minf", "stbl"], tbody, tstop)
            a = avcc[0]
            length_size = (data[a + 4] & 3) + 1
            out = b""
            pos = a + 5
            for count_pos_mask in (0x1F, 0xFF):
                n = data[pos] & count_pos_mask
                pos += 1
                for _ in range(n):
                    ln = struct.unpack(">H", data[pos:pos + 2])[0]
                    out += b"\x00\x00\x00\x01" + data[pos + 2:pos + 2 + ln]
                    pos += 2 + ln
            stsz = find(["stsz"], *stbl)
            sizes = struct.unpack(f">{struct.unpack('>I', data[stsz[0] + 8:stsz[0] + 12])[0]}I",
                                  data[stsz[0] + 12:stsz[1]])
            stco = find(["stco"], *stbl)
            offsets = struct.unpack(f">{struct.unpack('>I', data[stco[0] + 4:stco[0] + 8])[0]}I",
                                    data[stco[0] + 8:stco[1]])
            stsc = find(["stsc"], *stbl)
            entries = struct.unpack(f">{3 * struct.unpack('>I', data[stsc[0] + 4:stsc[0] + 8])[0]}I",
                                    data[stsc[0] + 8:stsc[1]])
            per_chunk = []
            for k in range(len(offsets)):   # samples per chunk from the stsc runs
                run = max(i for i in range(0, len(entries), 3) if entries[i] <= k + 1)
                per_chunk.append(entries[run + 1])
            sample = 0
            for chunk, offset in enumerate(offsets):
                for _ in range(per_chunk[chunk]):
                    if sample >= max_samples:
                        return out
                    p, end = offset, offset + sizes[sample]
                    while p < end:
                        ln = int.from_bytes(data[p:p + length_size], "big")
                        out += b"\x00\x00\x00\x01" + data[p + length_size:p + length_size + ln]
                        p += length_size + ln
                    offset += sizes[sample]
                    sample += 1
            return out
    raise AssertionError(f"{mp4}: no H.264 track")


def test_batch_log_lines_carry_their_trial(tmp_path):
    """One pool worker runs trials in turn: each failure line is labelled with its own trial."""
    code = ("from sam4dcap_perception.offline_process import ProcessOptions, _trial_worker\n"
            "import sys\n"
            "opts = ProcessOptions(height_m=1.75, mass_kg=70.0, backend='blazepose')\n"
            "for name in ('first_trial', 'second_trial'):\n"
            "    _trial_worker(f'{sys.argv[1]}/{name}.mp4', f'{sys.argv[1]}/out_{name}', opts, False)\n")
    for name in ("first_trial", "second_trial"):
        (tmp_path / f"{name}.mp4").write_text("not a video")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=120)
    failed = [ln for ln in proc.stderr.splitlines() if "trial failed" in ln]
    assert len(failed) == 2, proc.stderr
    assert "[first_trial]" in failed[0] and "first_trial.mp4" in failed[0]
    assert "[second_trial]" in failed[1] and "second_trial.mp4" in failed[1]


def test_messages_recommend_only_flags_that_exist():
    """No message or help text tells the user to pass a flag no `sam4dcap` command has."""
    import re

    from sam4dcap_perception.cli import build_parser

    parser = build_parser()
    flags = {s for a in parser._actions for s in a.option_strings}
    for sub in parser._subparsers._group_actions[0].choices.values():
        flags |= {s for a in sub._actions for s in a.option_strings}
    # Passed to node processes and to the C3D child process, not to sam4dcap.
    ros_flags = {"--ros-args", "--params-file", "--read"}
    named = {}
    for path in (ROOT / "src").glob("*/sam4dcap_*/**/*.py"):
        for flag in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]+", path.read_text()):
            named.setdefault(flag, path.name)
    unknown = {f: where for f, where in named.items() if f not in flags | ros_flags}
    assert not unknown, f"flags named in messages but no command has them: {unknown}"
