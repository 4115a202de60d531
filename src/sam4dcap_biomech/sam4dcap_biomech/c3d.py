"""C3D export/import of markers (and optional analog channels) through ezc3d.

Points are stored in millimetres (POINT:UNITS "mm", the usual C3D convention) as 32-bit floats
(~1e-4 mm resolution); missing markers are NaN, which ezc3d writes as invalid points (negative
residual) and reads back as NaN. C3D has one constant point rate and a first frame: times are
written as rate = the nominal rate (`filters.sampling_rate_hz`), first frame = round(time[0] * rate); irregular time stamps are
not representable (a warning names the largest error). Analogs must be sampled at an integer
multiple of the point rate with exactly that many samples per point frame. The series' frame id
is kept in a SAM4DCAP:FRAME parameter.

ezc3d and opensim share SWIG's runtime type table: in one process, whichever converts a Python
list to a std::vector first breaks the other's conversions (opensim.TimeSeriesTable(list, ...)
fails after an ezc3d write; an ezc3d write fails after opensim converted lists). So
`write_c3d` always writes from a fresh interpreter (`python -m sam4dcap_biomech.c3d`, ~0.3 s);
reading is safe in-process.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from .errors import MissingDependencyError, Sam4dcapError
from .timeseries import TimeSeries

log = logging.getLogger(__name__)

_TO_M = {"m": 1.0, "mm": 1e-3, "cm": 1e-2}


def _ezc3d():
    try:
        import ezc3d
    except ImportError as e:  # pragma: no cover - ezc3d is a pinned dependency
        raise MissingDependencyError("C3D needs the ezc3d package: pip install ezc3d") from e
    return ezc3d


def write_c3d(path, markers: TimeSeries, *, analogs: TimeSeries | None = None) -> Path:
    """Write markers (any length unit; stored in mm) and optional analogs as a C3D file."""
    from .filters import sampling_rate_hz

    _ezc3d()
    path = Path(path)
    if not markers.is_points:
        raise Sam4dcapError("write_c3d needs a point series (N, M, 3) of markers")
    if markers.unit not in _TO_M:
        raise Sam4dcapError(f"marker series unit {markers.unit!r} is not a length; cannot write {path}")
    if markers.n_frames < 1 or np.isnan(markers.values).all():
        raise Sam4dcapError(f"no valid marker samples to write to {path}")
    rate = float(sampling_rate_hz(markers)) if markers.n_frames > 1 \
        else float(markers.meta.get("data_rate_hz", 100.0))
    first_frame = int(round(markers.time[0] * rate))
    if first_frame < 0:
        raise Sam4dcapError(f"C3D cannot hold negative times (first time {markers.time[0]} s); shift the series")
    implied = (first_frame + np.arange(markers.n_frames)) / rate
    err = float(np.max(np.abs(implied - markers.time)))
    if err > 0.1 / rate:
        log.warning("%s: C3D stores a constant rate; time stamps move by up to %.2f ms", path, 1e3 * err)

    mm = markers.to_unit("mm").values  # (N, M, 3)
    points = np.ones((4, len(markers.names), markers.n_frames))
    points[:3] = np.transpose(mm, (2, 1, 0))
    payload = {"points": points, "labels": np.array(markers.names, dtype=str), "rate": np.array(rate),
               "first_frame": np.array(first_frame), "frame": np.array(markers.frame)}
    if analogs is not None:
        if analogs.is_points:
            raise Sam4dcapError("C3D analogs must be scalar channels (N, K)")
        ratio = analogs.n_frames / markers.n_frames
        if ratio < 1 or ratio != int(ratio):
            raise Sam4dcapError(f"C3D analogs need a whole number of samples per marker frame: "
                                f"{analogs.n_frames} analog samples for {markers.n_frames} marker frames")
        payload.update(analogs=np.nan_to_num(analogs.values.T[None, :, :], nan=0.0),
                       analog_labels=np.array(analogs.names, dtype=str),
                       analog_units=np.array([analogs.unit_of(n) for n in analogs.names], dtype=str),
                       analog_rate=np.array(rate * int(ratio)))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise Sam4dcapError(f"cannot write C3D file {path}: {e.strerror or e}") from None
    _write_in_subprocess(payload, path)
    return path


def _write_payload(payload: dict, path: Path) -> None:
    ezc3d = _ezc3d()
    c3d = ezc3d.c3d()
    c3d["parameters"]["POINT"]["RATE"]["value"] = [float(payload["rate"])]
    c3d["parameters"]["POINT"]["LABELS"]["value"] = tuple(str(n) for n in payload["labels"])
    c3d["parameters"]["POINT"]["UNITS"]["value"] = ["mm"]
    c3d["data"]["points"] = np.asarray(payload["points"], float)
    if "analogs" in payload:
        c3d["parameters"]["ANALOG"]["RATE"]["value"] = [float(payload["analog_rate"])]
        c3d["parameters"]["ANALOG"]["LABELS"]["value"] = tuple(str(n) for n in payload["analog_labels"])
        c3d["parameters"]["ANALOG"]["UNITS"]["value"] = [str(u) for u in payload["analog_units"]]
        c3d["data"]["analogs"] = np.asarray(payload["analogs"], float)
    c3d["header"]["points"]["first_frame"] = int(payload["first_frame"])
    if str(payload["frame"]):
        c3d.add_parameter("SAM4DCAP", "FRAME", [str(payload["frame"])])
    c3d.write(str(path))


def _write_in_subprocess(payload: dict, path: Path) -> None:
    import os
    import subprocess
    import sys
    import tempfile

    env = dict(os.environ)
    package_root = str(Path(__file__).resolve().parents[1])  # importable even if not installed
    env["PYTHONPATH"] = package_root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")

    with tempfile.TemporaryDirectory(prefix="sam4dcap-c3d-") as tmp:
        npz = Path(tmp) / "payload.npz"
        np.savez(npz, **payload)
        proc = subprocess.run([sys.executable, "-m", "sam4dcap_biomech.c3d", str(npz), str(path)],
                              capture_output=True, text=True, timeout=120, env=env)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no error output"])[-1]
        raise Sam4dcapError(f"cannot write C3D file {path}: {last}")


def _read(path: Path):
    ezc3d = _ezc3d()
    if not path.is_file():
        raise Sam4dcapError(f"C3D file not found: {path}")
    try:
        return ezc3d.c3d(str(path), extract_forceplat_data=False)
    except Exception as e:  # ezc3d raises RuntimeError/IOError with C++ messages
        raise Sam4dcapError(f"cannot read C3D file {path}: {e}") from None


def read_c3d(path) -> TimeSeries:
    """Markers of a C3D file in metres (NaN for invalid points); analogs in meta["analogs"]."""
    path = Path(path)
    c3d = _read(path)
    params = c3d["parameters"]
    point = params["POINT"]
    labels = [str(n).strip() for n in point["LABELS"]["value"]]
    units_values = point["UNITS"]["value"] if "UNITS" in point else []
    units = str(units_values[0]).strip() if len(units_values) else "mm"
    if units not in _TO_M:
        raise Sam4dcapError(f"{path}: C3D POINT:UNITS {units!r} is neither m nor mm")
    rate = float(c3d["header"]["points"]["frame_rate"])
    points = np.asarray(c3d["data"]["points"], float)
    if points.shape[1] != len(labels):
        raise Sam4dcapError(f"{path}: marker count mismatch: {len(labels)} POINT:LABELS but "
                            f"{points.shape[1]} points in the data")
    if points.shape[2] == 0 or np.isnan(points[:3]).all():
        raise Sam4dcapError(f"{path}: no valid marker samples (NaN-only or empty file)")
    values = np.transpose(points[:3], (2, 1, 0)) * _TO_M[units]
    first = int(c3d["header"]["points"]["first_frame"])
    time = (first + np.arange(values.shape[0])) / rate
    frame = "world"
    if "SAM4DCAP" in params and "FRAME" in params["SAM4DCAP"]:
        frame = str(params["SAM4DCAP"]["FRAME"]["value"][0])
    meta = {"data_rate_hz": rate, "file_units": units, "orig_units": units, "source": str(path)}
    analogs = np.asarray(c3d["data"]["analogs"], float)
    if analogs.size:
        a_params = params["ANALOG"]
        a_labels = [str(n).strip() for n in a_params["LABELS"]["value"]]
        a_units = [str(u).strip() for u in a_params["UNITS"]["value"]] if "UNITS" in a_params else []
        a_rate = float(c3d["header"]["analogs"]["frame_rate"])
        a_values = analogs[0].T
        a_time = time[0] + np.arange(a_values.shape[0]) / a_rate
        unit = a_units[0] if a_units else ""
        meta["analogs"] = TimeSeries(time=a_time, names=tuple(a_labels), values=a_values, unit=unit,
                                     channel_units={n: u for n, u in zip(a_labels, a_units) if u != unit},
                                     meta={"data_rate_hz": a_rate, "source": str(path)})
    return TimeSeries(time=time, names=tuple(labels), values=values, unit="m", frame=frame, meta=meta)


if __name__ == "__main__":  # subprocess writer (see _write_in_subprocess)
    import sys

    with np.load(sys.argv[1]) as data:
        _write_payload({k: data[k] for k in data.files}, Path(sys.argv[2]))
