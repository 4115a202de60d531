"""Seeded mutation fuzz of the TRC, MOT, STO and C3D readers.

Every mutant of a valid file (generated here from the project's own model and synthetic gait)
must either be refused with `Sam4dcapError` or read into finite times and finite-or-NaN values
of plausible size: no other exception, no ±inf, no NaN time. The mutants are seeded (the same
every run) and bounded in number (300 per text format, 40 C3D files: each C3D read starts a
Python process), so the test takes seconds; raise FUZZ_MUTANTS / FUZZ_C3D_MUTANTS to fuzz longer.
"""

from __future__ import annotations

import os
import random
import re
from pathlib import Path

import numpy as np
import pytest

from sam4dcap_biomech import model_builder, synthetic
from sam4dcap_biomech.c3d import read_c3d, write_c3d
from sam4dcap_biomech.errors import Sam4dcapError
from sam4dcap_biomech.storage import read_mot, write_mot, write_sto
from sam4dcap_biomech.timeseries import TimeSeries
from sam4dcap_biomech.trc import read_trc, write_trc

MUTANTS = int(os.environ.get("FUZZ_MUTANTS", "300"))
C3D_MUTANTS = int(os.environ.get("FUZZ_C3D_MUTANTS", "40"))
# Cell texts that broke readers before: non-finite spellings, overflow, text, empty.
BAD_CELLS = ("inf", "-inf", "Infinity", "nan", "NaN", "1e300", "-1e300", "1e400", "abc", "", "0x10", "--1",
             "1,5", "1e", "∞", "+inf", "9" * 400, " ")
_NUMBER = re.compile(r"-?\d+(\.\d+)?([eE][-+]?\d+)?")


@pytest.fixture(scope="module")
def originals(tmp_path_factory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("fuzz")
    model = model_builder.build_model(height_m=1.75, mass_kg=70.0, markers="opencap43")
    coords = synthetic.gait_trajectory(duration_s=0.5, rate_hz=60.0, height_m=1.75)
    markers = synthetic.markers_from_coordinates(model, coords)
    t = coords.time
    forces = TimeSeries.from_dict(t, {"ground_force_vx": 10 * np.sin(t), "ground_force_vy": 700 + 50 * np.cos(t),
                                      "ground_force_px": 0.1 * t, "ground_torque_y": np.sin(3 * t)}, unit="N")
    return {"trc": write_trc(tmp / "walk.trc", markers.select(markers.names[:12]), units="mm"),
            "mot": write_mot(tmp / "walk.mot", coords),
            "sto": write_sto(tmp / "grf.sto", forces),
            "c3d": write_c3d(tmp / "walk.c3d", markers.select(markers.names[:12]))}


def _mutate_text(text: str, rng: random.Random) -> str:
    lines = text.split("\n")
    kind = rng.randrange(8)
    i = rng.randrange(len(lines))
    if kind <= 2:      # one numeric cell (header or data) replaced by a bad spelling
        spots = [(k, m) for k, ln in enumerate(lines) for m in _NUMBER.finditer(ln)]
        k, m = rng.choice(spots)
        lines[k] = lines[k][:m.start()] + rng.choice(BAD_CELLS) + lines[k][m.end():]
    elif kind == 3:    # a line removed or duplicated
        if rng.random() < 0.5:
            del lines[i]
        else:
            lines.insert(i, lines[i])
    elif kind == 4:    # a field removed or added
        fields = lines[i].split("\t")
        if len(fields) > 1 and rng.random() < 0.5:
            del fields[rng.randrange(len(fields))]
        else:
            fields.insert(rng.randrange(len(fields) + 1), rng.choice(BAD_CELLS + ("1.0",)))
        lines[i] = "\t".join(fields)
    elif kind == 5:    # file cut at a random character
        return text[:rng.randrange(len(text))]
    elif kind == 6:    # two lines swapped
        j = rng.randrange(len(lines))
        lines[i], lines[j] = lines[j], lines[i]
    else:              # random characters inserted
        pos = rng.randrange(len(lines[i]) + 1)
        junk = "".join(rng.choice("\t 0123456789.-eE+naifNI\x00\r") for _ in range(rng.randint(1, 6)))
        lines[i] = lines[i][:pos] + junk + lines[i][pos:]
    return "\n".join(lines)


def _mutate_bytes(data: bytes, rng: random.Random) -> bytes:
    b = bytearray(data)
    kind = rng.randrange(4)
    if kind == 0:      # cut short
        return bytes(b[:rng.randrange(len(b))])
    if kind == 1:      # bytes flipped (header and parameter section mostly: the first 2 blocks)
        for _ in range(rng.randint(1, 4)):
            b[rng.randrange(min(len(b), 1024))] = rng.randrange(256)
    elif kind == 2:    # a float32 of the data section set to inf/nan/huge
        pos = rng.randrange(1024, len(b) - 4) & ~3
        b[pos:pos + 4] = np.array([rng.choice([np.inf, -np.inf, np.nan, 3e38])], "<f4").tobytes()
    else:              # bytes flipped anywhere
        for _ in range(rng.randint(1, 8)):
            b[rng.randrange(len(b))] = rng.randrange(256)
    return bytes(b)


def _check_accepted(series: TimeSeries) -> None:
    assert np.isfinite(series.time).all(), "a non-finite time was accepted"
    values = np.asarray(series.values, float)
    assert not np.isinf(values).any(), "an infinite value was accepted"
    assert not (np.abs(np.nan_to_num(values)) > 1e9).any(), "an absurd value was accepted"
    assert series.n_frames > 0 and len(series.names) > 0


def _fuzz(reader, original: Path, mutate, n: int, seed: int, tmp: Path) -> dict:
    rng = random.Random(seed)
    binary = original.suffix == ".c3d"
    data = original.read_bytes() if binary else original.read_text()
    counts = {"refused": 0, "accepted": 0}
    crashes = []
    for k in range(n):
        mutant = mutate(data, rng)
        path = tmp / f"m{k}{original.suffix}"
        path.write_bytes(mutant) if binary else path.write_text(mutant)
        try:
            series = reader(path)
        except Sam4dcapError:
            counts["refused"] += 1
            continue
        except Exception as exc:  # noqa: BLE001 - the finding this test exists for
            crashes.append(f"mutant {k}: {type(exc).__name__}: {exc}")
            continue
        try:
            _check_accepted(series)
        except AssertionError as exc:
            crashes.append(f"mutant {k}: {exc}")
            continue
        counts["accepted"] += 1
    assert not crashes, f"{len(crashes)} of {n} mutants of {original.name}:\n" + "\n".join(crashes[:10])
    return counts


@pytest.mark.parametrize("kind, reader", [("trc", read_trc), ("mot", read_mot), ("sto", read_mot)])
def test_text_readers_survive_mutants(originals, kind, reader, tmp_path):
    counts = _fuzz(reader, originals[kind], _mutate_text, MUTANTS, seed=13, tmp=tmp_path)
    # Both outcomes occur: the mutations reach the checks, and harmless ones still read.
    assert counts["refused"] > MUTANTS // 10 and counts["accepted"] > 0, counts


def test_c3d_reader_survives_mutants(originals, tmp_path, monkeypatch):
    """ezc3d crashes or hangs on some mutants: read_c3d reads in a child process, so each mutant
    costs a Python start; fewer of them, and a shorter hang limit than the product's."""
    from sam4dcap_biomech import c3d

    monkeypatch.setattr(c3d, "_READ_TIMEOUT_S", 5)
    counts = _fuzz(read_c3d, originals["c3d"], _mutate_bytes, C3D_MUTANTS, seed=13, tmp=tmp_path)
    assert counts["refused"] > 0 and counts["accepted"] > 0, counts


def test_originals_read_back(originals):
    for kind, reader in (("trc", read_trc), ("mot", read_mot), ("sto", read_mot), ("c3d", read_c3d)):
        _check_accepted(reader(originals[kind]))
