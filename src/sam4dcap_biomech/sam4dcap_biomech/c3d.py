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
`write_c3d` always writes from a fresh interpreter (`python -m sam4dcap_biomech.c3d`, ~0.3 s).
`read_c3d` reads in one too: ezc3d crashes or hangs on some corrupt files (found by the reader
fuzz test), which must not take the caller down with them.
"""

from __future__ import annotations

import logging
import math
import os
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from .errors import MissingDependencyError, Sam4dcapError
from .filters import sampling_rate_hz
from .timeseries import TimeSeries

log = logging.getLogger(__name__)

_TO_M = {"m": 1.0, "mm": 1e-3, "cm": 1e-2}
_READ_TIMEOUT_S = 60
# As in trc: a coordinate of 1e7 file units (10 km in mm) is a corrupt value, not a position.
_MAX_ABS_FILE_VALUE = 1e7


def _ezc3d():
    try:
        import ezc3d
    except ImportError as e:  # pragma: no cover - ezc3d is a pinned dependency
        raise MissingDependencyError("C3D needs the ezc3d package: pip install ezc3d") from e
    return ezc3d


def write_c3d(path, markers: TimeSeries, *, analogs: TimeSeries | None = None) -> Path:
    """Write markers (any length unit; stored in mm) and optional analogs as a C3D file."""
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


def _child_env() -> dict:
    env = dict(os.environ)
    package_root = str(Path(__file__).resolve().parents[1])  # importable even if not installed
    env["PYTHONPATH"] = package_root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def _write_in_subprocess(payload: dict, path: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="sam4dcap-c3d-") as tmp:
        npz = Path(tmp) / "payload.npz"
        np.savez(npz, **payload)
        proc = subprocess.run([sys.executable, "-m", "sam4dcap_biomech.c3d", str(npz), str(path)],
                              capture_output=True, text=True, timeout=120, env=_child_env())
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no error output"])[-1]
        raise Sam4dcapError(f"cannot write C3D file {path}: {last}")


def check_c3d_layout(path: Path) -> None:
    """Refuse a file whose C3D header/parameter section points past its end (cut short, corrupt):
    ezc3d reads such files forever instead of failing."""
    try:
        with path.open("rb") as f:
            head = f.read(512)
            size = path.stat().st_size
            if len(head) < 512 or head[1] != 0x50:
                raise Sam4dcapError(f"cannot read C3D file {path}: not a C3D file (no C3D header)")
            param_start = (head[0] - 1) * 512
            f.seek(max(param_start, 0))
            param_head = f.read(4)
    except OSError as e:
        raise Sam4dcapError(f"cannot read C3D file {path}: {e.strerror or e}") from None
    if param_start < 512 or len(param_head) < 4 or param_head[3] not in (84, 85, 86):
        raise Sam4dcapError(f"cannot read C3D file {path}: corrupt header (no parameter section where it points)")
    order = ">" if param_head[3] == 86 else "<"
    # Header words 2-9: points, analog values per frame, first/last frame, max gap, scale, data block.
    n_points, n_analog, first, last, _, scale, data_block = struct.unpack(order + "HHHHHfH", head[2:18])
    n_blocks = param_head[2]
    frames = last - first + 1
    negative = head[13] & 0x80 if param_head[3] == 85 else scale < 0   # DEC floats keep the sign in byte 2
    word = 4 if negative else 2   # a negative scale means float samples
    needed = max(param_start + n_blocks * 512, (data_block - 1) * 512 + max(frames, 0) * (4 * n_points + n_analog) * word)
    if n_blocks == 0 or data_block == 0 or frames < 0 or size < needed:
        raise Sam4dcapError(f"cannot read C3D file {path}: cut short or corrupt ({size} bytes, its header needs "
                            f"{needed})")


def _read(path: Path):
    ezc3d = _ezc3d()
    if not path.is_file():
        raise Sam4dcapError(f"C3D file not found: {path}")
    check_c3d_layout(path)
    try:
        return ezc3d.c3d(str(path), extract_forceplat_data=False)
    except Exception as e:  # ezc3d raises RuntimeError/IOError with C++ messages
        raise Sam4dcapError(f"cannot read C3D file {path}: {e}") from None


def read_c3d(path) -> TimeSeries:
    """Markers of a C3D file in metres (NaN for invalid points); analogs in meta["analogs"].

    ezc3d crashes (SIGSEGV) or loops forever on some corrupt parameter sections, so the file is
    read in a fresh interpreter (like `write_c3d`): a crash or a hang becomes one clear error.
    """
    path = Path(path)
    _ezc3d()
    if not path.is_file():
        raise Sam4dcapError(f"C3D file not found: {path}")
    check_c3d_layout(path)
    with tempfile.TemporaryDirectory(prefix="sam4dcap-c3d-") as tmp:
        npz = Path(tmp) / "series.npz"
        try:
            proc = subprocess.run([sys.executable, "-m", "sam4dcap_biomech.c3d", "--read", str(path), str(npz)],
                                  capture_output=True, text=True, timeout=_READ_TIMEOUT_S, env=_child_env())
        except subprocess.TimeoutExpired:
            raise Sam4dcapError(f"cannot read C3D file {path}: the reader did not finish in {_READ_TIMEOUT_S} s "
                                "(corrupt file?)") from None
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or [""])[-1]
            if proc.returncode == 2 and last:
                raise Sam4dcapError(last)
            raise Sam4dcapError(f"cannot read C3D file {path}: the C3D reader failed (exit {proc.returncode}): "
                                "corrupt file?")
        with np.load(npz) as d:
            return _series_from_arrays({k: d[k] for k in d.files})


def _series_to_arrays(series: TimeSeries) -> dict:
    out = {"time": series.time, "names": np.array(series.names, dtype=str), "values": series.values,
           "frame": np.array(series.frame), "rate": np.array(series.meta["data_rate_hz"]),
           "units": np.array(series.meta["file_units"]), "source": np.array(series.meta["source"])}
    a = series.meta.get("analogs")
    if a is not None:
        out.update(a_time=a.time, a_names=np.array(a.names, dtype=str), a_values=a.values, a_unit=np.array(a.unit),
                   a_units=np.array([a.unit_of(n) for n in a.names], dtype=str),
                   a_rate=np.array(a.meta["data_rate_hz"]))
    return out


def _series_from_arrays(d: dict) -> TimeSeries:
    units, source = str(d["units"]), str(d["source"])
    meta = {"data_rate_hz": float(d["rate"]), "file_units": units, "orig_units": units, "source": source}
    if "a_time" in d:
        a_names = tuple(str(n) for n in d["a_names"])
        unit = str(d["a_unit"])
        meta["analogs"] = TimeSeries(time=d["a_time"], names=a_names, values=d["a_values"], unit=unit,
                                     channel_units={n: str(u) for n, u in zip(a_names, d["a_units"]) if str(u) != unit},
                                     meta={"data_rate_hz": float(d["a_rate"]), "source": source})
    return TimeSeries(time=d["time"], names=tuple(str(n) for n in d["names"]), values=d["values"], unit="m",
                      frame=str(d["frame"]), meta=meta)


def _read_in_process(path: Path) -> TimeSeries:
    c3d = _read(path)
    try:
        return _markers_of(path, c3d)
    except (KeyError, IndexError, TypeError, ValueError, OverflowError) as exc:
        if isinstance(exc, Sam4dcapError):
            raise
        raise Sam4dcapError(f"{path}: malformed C3D parameters ({type(exc).__name__}: {exc})") from None


def _markers_of(path: Path, c3d) -> TimeSeries:
    params = c3d["parameters"]
    point = params["POINT"]
    labels = [str(n).strip() for n in point["LABELS"]["value"]]
    units_values = point["UNITS"]["value"] if "UNITS" in point else []
    units = str(units_values[0]).strip() if len(units_values) else "mm"
    if units not in _TO_M:
        raise Sam4dcapError(f"{path}: C3D POINT:UNITS {units!r} is neither m nor mm")
    rate = float(c3d["header"]["points"]["frame_rate"])
    if not math.isfinite(rate) or rate <= 0:
        raise Sam4dcapError(f"{path}: C3D point rate {rate} Hz is not a positive number")
    points = np.asarray(c3d["data"]["points"], float)
    if np.isinf(points[:3]).any() or (np.abs(np.nan_to_num(points[:3])) > _MAX_ABS_FILE_VALUE).any():
        bad = int(np.flatnonzero((~np.isfinite(points[:3]) & ~np.isnan(points[:3])).any(axis=(0, 1))
                                   | (np.abs(np.nan_to_num(points[:3])) > _MAX_ABS_FILE_VALUE).any(axis=(0, 1)))[0])
        raise Sam4dcapError(f"{path}: point frame {bad + 1} holds a non-finite or absurd coordinate "
                            "(corrupt file?)")
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
        if not math.isfinite(a_rate) or a_rate <= 0:
            raise Sam4dcapError(f"{path}: C3D analog rate {a_rate} Hz is not a positive number")
        a_values = analogs[0].T
        if not np.isfinite(a_values).all():
            raise Sam4dcapError(f"{path}: analog channels hold non-finite values (corrupt file?)")
        a_time = time[0] + np.arange(a_values.shape[0]) / a_rate
        unit = a_units[0] if a_units else ""
        meta["analogs"] = TimeSeries(time=a_time, names=tuple(a_labels), values=a_values, unit=unit,
                                     channel_units={n: u for n, u in zip(a_labels, a_units) if u != unit},
                                     meta={"data_rate_hz": a_rate, "source": str(path)})
    return TimeSeries(time=time, names=tuple(labels), values=values, unit="m", frame=frame, meta=meta)


if __name__ == "__main__":  # subprocess reader/writer (see read_c3d, _write_in_subprocess)
    if sys.argv[1] == "--read":
        try:
            np.savez(sys.argv[3], **_series_to_arrays(_read_in_process(Path(sys.argv[2]))))
        except Sam4dcapError as exc:
            print(str(exc).splitlines()[0], file=sys.stderr)
            sys.exit(2)
    else:
        with np.load(sys.argv[1]) as data:
            _write_payload({k: data[k] for k in data.files}, Path(sys.argv[2]))
