"""TRC marker files (OpenSim / Motion Analysis format) <-> `TimeSeries` of points.

Layout written (the one `opensim.TimeSeriesTableVec3(path)` reads, tab separated):

    PathFileType  4  (X/Y/Z)  <file name>
    DataRate  CameraRate  NumFrames  NumMarkers  Units  OrigDataRate  OrigDataStartFrame  OrigNumFrames
    <rate>  <rate>  <N>  <M>  <m|mm>  <rate>  1  <N>
    Frame#  Time  <name1>  ""  ""  <name2> ...
    ""  ""  X1  Y1  Z1  X2 ...
    <blank line>
    1  <t0>  x y z ...          (Frame# is 1-based)

Missing markers are written as `NaN` (what OpenSim's own TRC writer emits, spelled `nan`).
Empty fields are read, but are not written: OpenSim's tokenizer drops trailing empty fields, so
a missing *last* marker written as blanks makes the row too short for OpenSim.

`read_trc` always returns metres (unit "m", frame "world"); the unit found in the file is kept
in `meta["file_units"]` (and `meta["orig_units"]`). A file whose values contradict its Units
header (mm-sized distances labelled m, or the reverse) is refused with the fix named.
"""

from __future__ import annotations

import difflib
import logging
import math
from pathlib import Path

import numpy as np

from .errors import Sam4dcapError
from .filters import sampling_rate_hz
from .timeseries import TimeSeries

log = logging.getLogger(__name__)

_UNIT_TO_M = {"m": 1.0, "mm": 1e-3}
_HEADER_KEYS = ("DataRate", "CameraRate", "NumFrames", "NumMarkers", "Units",
                "OrigDataRate", "OrigDataStartFrame", "OrigNumFrames")
# A human body's markers span < 2.5 m; median inter-marker distance beyond this many "metres"
# means the numbers are millimetres, below this many metres means metres labelled as mm.
_MM_SUSPECT_MEDIAN_DIST_M = 10.0
_M_AS_MM_SUSPECT_MEDIAN_DIST_M = 1e-3
# No marker of a capture volume lies 1e7 file units (10 km in mm, 10 000 km in m) from the origin:
# such a number is a corrupt cell, not a position.
_MAX_ABS_FILE_VALUE = 1e7


def median_marker_distance(points_xyz: np.ndarray) -> float:
    """Median over frames of the median pairwise distance between valid markers (file units).

    Returns NaN when no frame has two valid markers (a lone marker's scale says nothing).
    """
    pts = np.asarray(points_xyz, float)
    n_frames = pts.shape[0]
    # Sample at most ~50 frames: the check is about orders of magnitude, not precision.
    rows = pts[np.linspace(0, n_frames - 1, min(n_frames, 50)).astype(int)] if n_frames else pts
    per_frame = []
    for frame in rows:
        valid = frame[~np.isnan(frame).any(axis=1)]
        if len(valid) >= 2:
            diff = valid[:, None, :] - valid[None, :, :]
            dist = np.sqrt((diff ** 2).sum(-1))[np.triu_indices(len(valid), 1)]
            per_frame.append(np.median(dist))
    return float(np.median(per_frame)) if per_frame else float("nan")


def markers_in_mm_suspected(series: TimeSeries) -> bool:
    """True when a point series whose unit says metres holds millimetre-sized numbers."""
    if not series.is_points:
        return False
    scale = _UNIT_TO_M.get(series.unit, {"cm": 1e-2}.get(series.unit, 1.0))
    dist_m = median_marker_distance(series.values) * scale
    return bool(np.isfinite(dist_m) and dist_m > _MM_SUSPECT_MEDIAN_DIST_M)


def require_markers(series: TimeSeries, expected, *, source: str = "") -> None:
    """Raise naming every expected marker absent from `series` (and a likely misnaming of it).

    Case-insensitive matches and close spellings are suggested ("R.ASIS" for "r.ASIS").
    """
    have = list(series.names)
    missing = [n for n in expected if n not in have]
    if not missing:
        return
    lower = {h.lower(): h for h in have}
    parts = []
    for name in missing:
        guess = lower.get(name.lower()) or next(iter(difflib.get_close_matches(name, have, n=1, cutoff=0.75)), None)
        parts.append(f"{name} (found {guess!r}: rename it?)" if guess else name)
    where = f" in {source}" if source else ""
    raise Sam4dcapError(f"{len(missing)} expected marker(s) missing{where}: {', '.join(parts)}")


def _fail(path: Path, msg: str) -> Sam4dcapError:
    return Sam4dcapError(f"{path}: {msg}")


def _parse_float(text: str) -> float:
    text = text.strip()
    if text == "" or text.lower() in ("nan", "-nan", "na", "n/a"):
        return math.nan
    return float(text)


def read_trc(path) -> TimeSeries:
    """Read a TRC file into a point `TimeSeries` in metres (missing markers NaN).

    meta: data_rate_hz, camera_rate_hz, file_units, orig_units, orig_data_rate_hz,
    orig_data_start_frame, frame_numbers (1-based as in the file), source, path_file_type.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        raise Sam4dcapError(f"TRC file not found: {path}") from None
    except OSError as e:
        raise Sam4dcapError(f"cannot read TRC file {path}: {e.strerror or e}") from None
    lines = text.splitlines()
    if len(lines) < 5 or not lines[0].startswith("PathFileType"):
        raise _fail(path, "not a TRC file: line 1 must start with 'PathFileType' and the file needs"
                          " 5 header lines (PathFileType, key names, key values, Frame#/Time/names, X1/Y1/Z1)")
    keys = [k.strip() for k in lines[1].split("\t")]
    vals = [v.strip() for v in lines[2].split("\t")]
    header = dict(zip(keys, vals))
    for needed in ("DataRate", "NumMarkers", "Units"):
        if needed not in header or header[needed] == "":
            raise _fail(path, f"malformed TRC header, line 2/3: no value for {needed!r} (line 2 was: {lines[1]!r})")
    units = header["Units"]
    if units not in _UNIT_TO_M:
        raise _fail(path, f"TRC Units {units!r} (header line 3) is neither 'm' nor 'mm'; fix the header")
    numbers = {}
    for key in ("DataRate", "CameraRate", "NumFrames", "NumMarkers", "OrigDataRate", "OrigDataStartFrame",
                "OrigNumFrames"):
        if header.get(key):
            try:
                numbers[key] = float(header[key])
            except ValueError:
                numbers[key] = math.nan
            if not math.isfinite(numbers[key]) or numbers[key] < 0 or (
                    key not in ("DataRate", "CameraRate", "OrigDataRate") and not numbers[key].is_integer()):
                raise _fail(path, f"malformed TRC header, line 3: {key}={header[key]!r} is not a valid "
                                  f"{'rate' if 'Rate' in key else 'count'} ({lines[2][:80]!r})")
    data_rate = numbers["DataRate"]
    if data_rate <= 0:
        raise _fail(path, f"malformed TRC header, line 3: DataRate={header['DataRate']!r} must be > 0")
    n_markers_header = int(numbers["NumMarkers"])
    n_frames_header = int(numbers["NumFrames"]) if "NumFrames" in numbers else None

    name_fields = lines[3].split("\t")
    if len(name_fields) < 2 or name_fields[0].strip() != "Frame#" or name_fields[1].strip() != "Time":
        raise _fail(path, f"malformed TRC header, line 4 must start with 'Frame#<TAB>Time' (got {lines[3][:60]!r})")
    names = [n.strip() for n in name_fields[2:] if n.strip()]
    if len(names) != n_markers_header:
        raise _fail(path, f"marker count mismatch: header NumMarkers={n_markers_header} but line 4 names "
                          f"{len(names)} markers ({', '.join(names[:8])}{', ...' if len(names) > 8 else ''})")
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise _fail(path, f"marker names repeat on line 4: {', '.join(dup)}; rename them")

    n_cols = 2 + 3 * len(names)
    frame_numbers, times, rows = [], [], []
    for line_no, line in enumerate(lines[5:], start=6):
        if not line.strip():
            continue
        fields = line.rstrip("\r\n").split("\t")
        # Trailing missing markers are often truncated away (and OpenSim drops trailing blanks).
        while len(fields) > n_cols and fields[-1].strip() == "":
            fields.pop()
        if len(fields) > n_cols:
            raise _fail(path, f"line {line_no} has {len(fields)} columns but {len(names)} markers need {n_cols}"
                              " (marker count mismatch between header and data)")
        if len(fields) < n_cols and (len(fields) < 2 or (len(fields) - 2) % 3):
            # Whole trailing markers may be left out (missing); a row ending inside a marker is cut.
            raise _fail(path, f"line {line_no} is cut short: {len(fields)} of {n_cols} columns, ending inside "
                              f"marker {names[max(len(fields) - 2, 0) // 3]!r}")
        fields += [""] * (n_cols - len(fields))
        try:
            frame_numbers.append(int(float(fields[0])))
            times.append(float(fields[1]))
            rows.append([_parse_float(f) for f in fields[2:]])
        except (ValueError, OverflowError):
            raise _fail(path, f"line {line_no}: non-numeric value in data row ({line[:60]!r})") from None
        if not math.isfinite(times[-1]):
            raise _fail(path, f"line {line_no}: time {fields[1].strip()!r} is not a finite number")
        bad = next((k for k, v in enumerate(rows[-1]) if math.isinf(v) or abs(v) > _MAX_ABS_FILE_VALUE), None)
        if bad is not None:
            raise _fail(path, f"line {line_no}: marker {names[bad // 3]} {'XYZ'[bad % 3]} = {fields[2 + bad].strip()!r} "
                              "is not a finite coordinate of plausible size (use NaN for a missing marker)")
    if not rows:
        raise _fail(path, "TRC file has a header but no data rows")
    if n_frames_header is not None and n_frames_header != len(rows):
        log.warning("%s: header NumFrames=%d but %d data rows; using the rows", path, n_frames_header, len(rows))
    values = np.asarray(rows, float).reshape(len(rows), len(names), 3)
    if np.isnan(values).all():
        raise _fail(path, "every marker value is missing (NaN-only file); nothing to use")
    times_arr = np.asarray(times, float)
    if times_arr.size > 1 and np.any(np.diff(times_arr) <= 0):
        bad = int(np.argmax(np.diff(times_arr) <= 0))
        raise _fail(path, f"Time column not strictly increasing at frame {frame_numbers[bad + 1]} "
                          f"({times_arr[bad]} then {times_arr[bad + 1]})")

    if times_arr.size > 2:
        step = float(np.median(np.diff(times_arr)))
        if 500 < step * data_rate < 2000:
            raise _fail(path, f"the Time column looks like milliseconds (median step {step:g} with DataRate "
                              f"{data_rate:g} Hz); TRC times are seconds: divide the Time column by 1000")

    dist = median_marker_distance(values) * _UNIT_TO_M[units]
    if np.isfinite(dist) and dist > _MM_SUSPECT_MEDIAN_DIST_M:
        raise _fail(path, f"values look like millimetres but the header says Units={units} (median distance "
                          f"between markers {dist:.0f} m); set Units to mm on header line 3")
    # dist == 0: coincident markers (degenerate test data), not evidence of a unit mix-up.
    if np.isfinite(dist) and 0 < dist < _M_AS_MM_SUSPECT_MEDIAN_DIST_M:
        raise _fail(path, f"values look like metres but the header says Units={units} (median distance "
                          f"between markers {dist * 1e3:.4f} mm); set Units to m on header line 3")

    path_type = lines[0].split("\t")
    meta = {
        "data_rate_hz": data_rate,
        "camera_rate_hz": numbers.get("CameraRate", data_rate),
        "file_units": units,
        "orig_units": header.get("Units", units),
        "orig_data_rate_hz": numbers.get("OrigDataRate", data_rate),
        "orig_data_start_frame": int(numbers.get("OrigDataStartFrame", 1)),
        "frame_numbers": np.asarray(frame_numbers, int),
        "source": str(path),
        "path_file_type": path_type[1].strip() if len(path_type) > 1 else "4",
    }
    return TimeSeries(time=times_arr, names=tuple(names), values=values * _UNIT_TO_M[units],
                      unit="m", frame="world", meta=meta)


def _fmt(x: float, digits: int) -> str:
    return "NaN" if not math.isfinite(x) else f"{x:.{digits}f}"


def _rate_for_header(series: TimeSeries) -> float:
    if series.n_frames >= 2:
        return float(sampling_rate_hz(series))
    return float(series.meta.get("data_rate_hz") or 1.0)


def write_trc(path, markers: TimeSeries, *, units: str = "m") -> Path:
    """Write a point series as a TRC file in `units` ("m" or "mm"), converted from its unit.

    DataRate/CameraRate come from the median time step (or meta["data_rate_hz"] when the time
    stamps agree with it within 5%, e.g. 1 ms-rounded times); Frame# runs from 1; NaN -> "NaN".
    """
    path = Path(path)
    if not markers.is_points:
        raise Sam4dcapError(f"write_trc needs a point series (N, M, 3); got scalar channels {markers.names[:4]}")
    if units not in _UNIT_TO_M:
        raise Sam4dcapError(f"TRC units {units!r} must be 'm' or 'mm'")
    if markers.n_frames == 0:
        raise Sam4dcapError(f"no frames to write to {path}")
    if markers.unit not in ("m", "mm", "cm"):
        raise Sam4dcapError(f"marker series unit {markers.unit!r} is not a length; cannot write {path}")
    if np.isnan(markers.values).all():
        raise Sam4dcapError(f"every marker value is missing (NaN); refusing to write an empty trial to {path}")
    bad_names = [n for n in markers.names if not n.strip() or any(c in n for c in "\t\r\n")]
    if bad_names:
        raise Sam4dcapError(f"marker names with tabs/newlines or empty cannot go in a TRC: {bad_names!r}")
    values = markers.to_unit(units).values
    rate = _rate_for_header(markers)
    n_frames, n_markers = values.shape[:2]
    digits = 5 if units == "mm" else 8  # 10 nm either way
    out = [
        f"PathFileType\t4\t(X/Y/Z)\t{path.name}",
        "\t".join(_HEADER_KEYS),
        f"{rate:.6g}\t{rate:.6g}\t{n_frames}\t{n_markers}\t{units}\t{rate:.6g}\t1\t{n_frames}",
        "Frame#\tTime\t" + "\t".join(f"{n}\t\t" for n in markers.names).rstrip("\t"),
        "\t\t" + "\t".join(f"X{i}\tY{i}\tZ{i}" for i in range(1, n_markers + 1)),
        "",
    ]
    flat = values.reshape(n_frames, n_markers * 3)
    for i in range(n_frames):
        out.append(f"{i + 1}\t{markers.time[i]:.9f}\t" + "\t".join(_fmt(v, digits) for v in flat[i]))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(out) + "\n", encoding="utf-8")
    except OSError as e:
        raise Sam4dcapError(f"cannot write TRC file {path}: {e.strerror or e}") from None
    return path
