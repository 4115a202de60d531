"""OpenSim Storage files (.mot coordinates, .sto forces/states) <-> scalar `TimeSeries`.

Layout written (accepted by `opensim.TimeSeriesTable(path)` and `opensim.Storage(path)`):

    <name>
    version=1
    nRows=<N>
    nColumns=<K + 1>          (the time column counts)
    inDegrees=yes|no
    endheader
    time  <name1>  <name2> ...     (tab separated)
    <t>   <v1>     <v2>  ...

Angles inside a TimeSeries are radians. With inDegrees=yes the rotational channels are stored
in degrees; translational channels (OpenSim naming `*_tx/_ty/_tz`, or a length in
`channel_units`) stay in metres. Force files (.sto from inverse dynamics, GRF .mot: names with
force/torque/moment) are never converted, even when their header says inDegrees=yes (OpenSim's
GRF example does).

NaN samples are written as `NaN`: `opensim.TimeSeriesTable` reads them, but the legacy
`opensim.Storage` parser (what InverseDynamicsTool and analyses load) stops at the first row
holding a NaN, so fill gaps before handing a file to those tools (a warning is logged).
"""

from __future__ import annotations

import logging
import math
import re
from pathlib import Path

import numpy as np

from .errors import Sam4dcapError
from .timeseries import TimeSeries

log = logging.getLogger(__name__)

_TRANSLATIONAL = re.compile(r"_t[xyz](/value|/speed)?$")
_FORCE_LIKE = re.compile(r"(force|torque|moment)", re.IGNORECASE)
_LENGTH_UNITS = {"m", "mm", "cm"}
_ANGLE_TO_RAD = {"rad": 1.0, "deg": math.pi / 180.0}
# No angle, length, force or moment of a human trial reaches 1e9 in any unit OpenSim writes:
# such a number is a corrupt cell.
_MAX_ABS_VALUE = 1e9


# InverseKinematicsTool's *_ik_marker_errors.sto columns (metres, squared metres).
_MARKER_ERROR_UNITS = {"total_squared_error": "m^2", "marker_error_RMS": "m", "marker_error_max": "m",
                       # the camera fit's (camera_fit / fit_views): distance to the 3D markers, 2D error
                       "marker_to_3d_RMS": "m", "reprojection_error_median_px": "px"}


def is_translational(name: str) -> bool:
    """OpenSim coordinate naming: pelvis_tx/ty/tz (also state paths .../pelvis_tx/value and
    marker *_tx columns of marker-location files)."""
    return bool(_TRANSLATIONAL.search(name))


def _force_channel_unit(name: str) -> str:
    low = name.lower()
    if "torque" in low or "moment" in low:
        return "N*m"
    if re.search(r"_p[xyz]$", low):  # centre of pressure
        return "m"
    if "force" in low:
        return "N"
    return ""


def _fail(path: Path, msg: str) -> Sam4dcapError:
    return Sam4dcapError(f"{path}: {msg}")


def _parse_float(text: str) -> float:
    t = text.strip()
    if t == "" or t.lower() in ("nan", "-nan", "na"):
        return math.nan
    return float(t)


def read_mot(path, *, translational: set[str] | frozenset[str] | None = None) -> TimeSeries:
    """Read a .mot/.sto file into a scalar TimeSeries.

    Coordinates (no force-like names): unit "rad"; if the header says inDegrees=yes, rotational
    channels are converted from degrees. Translational channels get channel_units "m"; they are
    the `*_tx/_ty/_tz` names, or exactly `translational` when given.
    Forces (any name with force/torque/moment): no conversion; unit "N" with channel_units
    "N*m" for torques/moments and "m" for centre-of-pressure `*_p[xyz]`.
    IK marker-error files (total_squared_error, marker_error_RMS/max): unit "m", no conversion.
    meta: name, in_degrees (as in the file), header (dict of key=value lines), kind
    ("coordinates", "forces" or "marker_errors"), source.
    """
    path = Path(path)
    lines = _read_lines(path)
    end, header, name = _mot_header(path, lines)
    label_idx, labels = _mot_labels(path, lines, end, header)
    time, values = _mot_rows(path, lines, label_idx, labels, header)
    meta = {"name": name, "in_degrees": header.get("inDegrees", "no").strip().lower() == "yes",
            "header": header, "source": str(path)}
    return _mot_series(path, time, labels[1:], values, meta, translational)


def _read_lines(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        raise Sam4dcapError(f"motion/storage file not found: {path}") from None
    except OSError as e:
        raise Sam4dcapError(f"cannot read motion/storage file {path}: {e.strerror or e}") from None
    return text.splitlines()


def _mot_header(path: Path, lines: list[str]) -> tuple[int, dict[str, str], str]:
    """(index of the endheader line, key=value lines, the name on the first line)."""
    end = next((i for i, ln in enumerate(lines) if ln.strip().lower() == "endheader"), None)
    if end is None:
        raise _fail(path, "malformed header: no 'endheader' line (an OpenSim .mot/.sto header ends with"
                          " a line 'endheader' before the column names)")
    header: dict[str, str] = {}
    name = ""
    for i, ln in enumerate(lines[:end]):
        s = ln.strip()
        if "=" in s:
            key, _, value = s.partition("=")
            header[key.strip()] = value.strip()
        elif i == 0:
            name = s
    return end, header, name


def _mot_labels(path: Path, lines: list[str], end: int, header: dict[str, str]) -> tuple[int, list[str]]:
    """(index of the column-label line, the labels, "time" first), checked against the header."""
    label_idx = next((i for i in range(end + 1, len(lines)) if lines[i].strip()), None)
    if label_idx is None:
        raise _fail(path, "no column-label line after 'endheader'")
    label_line = lines[label_idx].strip("\r\n")
    labels = [s.strip() for s in (label_line.split("\t") if "\t" in label_line else label_line.split())]
    while labels and labels[-1] == "":
        labels.pop()
    if not labels or labels[0].lower() != "time":
        raise _fail(path, f"line {label_idx + 1}: first column must be 'time' (got {labels[:1]!r})")
    names = labels[1:]
    if any(n == "" for n in names):
        raise _fail(path, f"line {label_idx + 1}: empty column name")
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise _fail(path, f"line {label_idx + 1}: column names repeat: {', '.join(dup)}")
    if "nColumns" in header:
        try:
            n_cols_header = int(header["nColumns"])
        except ValueError:
            raise _fail(path, f"malformed header: nColumns={header['nColumns']!r} is not an integer") from None
        if n_cols_header != len(labels):
            raise _fail(path, f"column count mismatch: header nColumns={n_cols_header} but line {label_idx + 1}"
                              f" has {len(labels)} labels (time included)")
    return label_idx, labels


def _mot_rows(path: Path, lines: list[str], label_idx: int, labels: list[str],
              header: dict[str, str]) -> tuple[np.ndarray, np.ndarray]:
    """(time, values) of the data rows: every cell a finite number of plausible size or NaN,
    time present and strictly increasing."""
    rows = []
    for line_no, ln in enumerate(lines[label_idx + 1:], start=label_idx + 2):
        if not ln.strip():
            continue
        fields = ln.split("\t") if "\t" in ln else ln.split()
        while len(fields) > len(labels) and fields[-1].strip() == "":
            fields.pop()
        if len(fields) != len(labels):
            raise _fail(path, f"line {line_no} has {len(fields)} values but there are {len(labels)} columns")
        try:
            rows.append([_parse_float(f) for f in fields])
        except ValueError:
            raise _fail(path, f"line {line_no}: non-numeric value ({ln.strip()[:60]!r})") from None
        bad = next((k for k, v in enumerate(rows[-1]) if math.isinf(v) or abs(v) > _MAX_ABS_VALUE), None)
        if bad is not None:
            raise _fail(path, f"line {line_no}: {labels[bad]} = {fields[bad].strip()!r} is not a finite value of "
                              "plausible size (use NaN for a missing sample)")
    if not rows:
        raise _fail(path, "no data rows after the column labels")
    data = np.asarray(rows, float)
    time, values = data[:, 0], data[:, 1:]
    if np.isnan(time).any():
        raise _fail(path, "time column has missing values")
    if time.size > 1 and np.any(np.diff(time) <= 0):
        bad = int(np.argmax(np.diff(time) <= 0))
        raise _fail(path, f"time not strictly increasing at row {bad + 2} ({time[bad]} then {time[bad + 1]})")
    if values.size and np.isnan(values).all():
        raise _fail(path, "every value is missing (NaN-only file); nothing to use")
    if "nRows" in header and header["nRows"].isdigit() and int(header["nRows"]) != len(rows):
        log.warning("%s: header nRows=%s but %d data rows; using the rows", path, header["nRows"], len(rows))
    return time, values


def _mot_series(path: Path, time: np.ndarray, names: list[str], values: np.ndarray, meta: dict,
                translational) -> TimeSeries:
    """The series of the file's kind: forces, IK marker errors or coordinates (degrees -> rad)."""
    if any(_FORCE_LIKE.search(n) for n in names):
        channel_units = {n: u for n in names if (u := _force_channel_unit(n)) and u != "N"}
        meta["kind"] = "forces"
        return TimeSeries(time=time, names=tuple(names), values=values, unit="N",
                          meta=meta, channel_units=channel_units)
    if names and all(n in _MARKER_ERROR_UNITS for n in names):
        meta["kind"] = "marker_errors"
        return TimeSeries(time=time, names=tuple(names), values=values, unit="m", meta=meta,
                          channel_units={n: _MARKER_ERROR_UNITS[n] for n in names if _MARKER_ERROR_UNITS[n] != "m"})
    trans = set(translational) if translational is not None else {n for n in names if is_translational(n)}
    unknown = trans - set(names)
    if unknown:
        raise _fail(path, f"translational channels not in the file: {', '.join(sorted(unknown))}")
    if meta["in_degrees"]:
        rot = np.array([n not in trans for n in names])
        values = values.copy()
        values[:, rot] *= math.pi / 180.0
    meta["kind"] = "coordinates"
    return TimeSeries(time=time, names=tuple(names), values=values, unit="rad",
                      meta=meta, channel_units={n: "m" for n in names if n in trans})


def _channel_kind(series: TimeSeries, name: str) -> str:
    """'angle', 'length' or 'other' for one channel (explicit channel_units win over naming)."""
    if name in series.channel_units:
        u = series.channel_units[name]
    elif is_translational(name) and series.unit in _ANGLE_TO_RAD:
        return "length"
    else:
        u = series.unit
    return "angle" if u in _ANGLE_TO_RAD else "length" if u in _LENGTH_UNITS else "other"


def _write_storage(path, series: TimeSeries, *, in_degrees: bool, name: str | None, default_name: str) -> Path:
    path = Path(path)
    if series.is_points:
        raise Sam4dcapError(f"{path.name}: .mot/.sto holds scalar channels; got a point series "
                            "(write markers with write_trc)")
    if series.n_frames == 0:
        raise Sam4dcapError(f"no frames to write to {path}")
    if series.values.size and np.isnan(series.values).all():
        raise Sam4dcapError(f"every value is missing (NaN); refusing to write an empty trial to {path}")
    bad = [n for n in series.names if not n.strip() or any(c.isspace() for c in n)]
    if bad:
        raise Sam4dcapError(f"column names with whitespace or empty cannot go in a .mot/.sto: {bad!r}")
    if np.isnan(series.values).any():
        # TimeSeriesTable reads NaN; the legacy opensim.Storage parser (used by ID and analyses)
        # silently stops at the first row holding a NaN.
        log.warning("%s: contains NaN samples; opensim.Storage-based tools stop reading at the first"
                    " NaN row: fill gaps first (filters.fill_gaps)", path)
    values = series.values.astype(float, copy=True)
    target = "deg" if in_degrees else "rad"
    for k, ch in enumerate(series.names):
        kind = _channel_kind(series, ch)
        if kind == "angle":
            values[:, k] *= _ANGLE_TO_RAD[series.unit_of(ch)] / _ANGLE_TO_RAD[target]
        elif kind == "length":
            u = series.channel_units.get(ch, series.unit)
            if u in _LENGTH_UNITS and u != "m":
                values[:, k] *= {"mm": 1e-3, "cm": 1e-2}[u]
    header = [
        name or series.meta.get("name") or default_name,
        "version=1",
        f"nRows={series.n_frames}",
        f"nColumns={len(series.names) + 1}",
        f"inDegrees={'yes' if in_degrees else 'no'}",
        "endheader",
        "time\t" + "\t".join(series.names),
    ]

    def fmt(v: float) -> str:
        return "NaN" if not math.isfinite(v) else f"{v:.10g}"

    body = [f"{series.time[i]:.9f}\t" + "\t".join(fmt(v) for v in values[i]) for i in range(series.n_frames)]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(header + body) + "\n", encoding="utf-8")
    except OSError as e:
        raise Sam4dcapError(f"cannot write {path}: {e.strerror or e}") from None
    return path


def write_mot(path, coordinates: TimeSeries, *, in_degrees: bool = True, name: str | None = None) -> Path:
    """Write coordinates as a .mot: rotational channels in degrees (in_degrees), translations in m."""
    return _write_storage(path, coordinates, in_degrees=in_degrees, name=name, default_name="Coordinates")


def write_sto(path, series: TimeSeries, *, in_degrees: bool = False) -> Path:
    """Write any scalar series (forces, states) as a .sto; angle channels in rad unless in_degrees."""
    return _write_storage(path, series, in_degrees=in_degrees, name=None, default_name=Path(path).stem)
